//! Raw HTTP/1.1 over a `TcpStream`, for what a normal client cannot send or would hide: reading a
//! response head, reading until the server closes, whole exchanges on a new connection, and the
//! status and headers of a raw head.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server sent on one raw connection, and whether it closed (or reset) the connection
/// before the wait ran out.
pub struct Reply {
    pub bytes: Vec<u8>,
    pub closed: bool,
}

impl Reply {
    /// Everything received, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The first 300 bytes, as text (for failure messages).
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(300)]).into_owned()
    }

    /// The status of the first response, if any.
    pub fn status(&self) -> Option<u16> {
        status_of(&self.bytes)
    }
}

/// The status of a response starting at `bytes` (`HTTP/1.x NNN`), if it is one.
pub fn status_of(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Reads until the end of the response head; returns the head (with its blank line) and the bytes
/// read after it. Err on EOF or a read error first.
pub async fn read_head(stream: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read head: {e}"))?;
        if n == 0 {
            return Err(format!(
                "EOF before the response head; got {:?}",
                String::from_utf8_lossy(&received)
            ));
        }
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    Ok((head, received[head_end..].to_vec()))
}

/// The status code and the headers (names in lower case, values trimmed) of a response head.
pub fn parse_head(head: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

/// The value of header `name` among parsed head headers, or "".
pub fn raw_header(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Reads (after `bytes`, what was already received) until the server closes or resets the
/// connection, or `wait` passes.
pub async fn read_to_close(stream: &mut TcpStream, mut bytes: Vec<u8>, wait: Duration) -> Reply {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return Reply {
                    bytes,
                    closed: false,
                }
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Reply {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` on a new connection, half-closes it when `half_close`, and reads everything the
/// server sends until it closes the connection (or `wait` passes).
pub async fn exchange(addr: SocketAddr, request: &[u8], half_close: bool, wait: Duration) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may refuse and close before reading everything: write errors are expected.
    let _ = stream.write_all(request).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    read_to_close(&mut stream, Vec::new(), wait).await
}
