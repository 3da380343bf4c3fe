//! Minimal HTTP/1.1 on raw bytes: request builders and an incremental response reader.
//!
//! [`ResponseReader`] parses the status line and the few headers the tool needs, then decodes the
//! body (`Content-Length`, `chunked`, or until the connection closes) and hands the body bytes to
//! a callback without copying them. It keeps its state between reads, so one response may arrive in
//! any number of pieces, and it can read several responses in turn on a keep-alive connection.

use std::fmt;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// An error in a server's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn err(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// The parts of a response head the tool uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`, when given.
    pub content_length: Option<u64>,
    /// The server will close the connection after this response (`Connection: close`, or HTTP/1.0
    /// without keep-alive).
    pub close: bool,
    /// `Last-Modified`, verbatim.
    pub last_modified: Option<String>,
    /// `Etag`, verbatim.
    pub etag: Option<String>,
}

/// What [`ResponseReader::feed`] stopped at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The input was used up; feed more.
    NeedMore,
    /// A response head is complete (its body follows).
    Head(Head),
    /// The body of the current response is complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// Skipping a chunk extension until the line feed.
    Extension { value: u64 },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CR LF after chunk data.
    DataEnd,
    /// Trailer lines after the last chunk; `empty` = the current line has no bytes yet.
    Trailer { empty: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Reading a head.
    Head,
    /// Reading a body of this many remaining bytes.
    Length(u64),
    /// Reading a chunked body.
    Chunked(Chunk),
    /// Reading a body that ends when the connection closes.
    UntilClose,
}

/// Incremental reader of HTTP/1.1 responses (see the module docs).
#[derive(Debug)]
pub struct ResponseReader {
    head: Vec<u8>,
    body: Body,
}

impl Default for ResponseReader {
    fn default() -> Self {
        ResponseReader {
            head: Vec::with_capacity(512),
            body: Body::Head,
        }
    }
}

impl ResponseReader {
    /// True while the reader is inside a body that ends when the connection closes.
    pub fn reading_until_close(&self) -> bool {
        self.body == Body::UntilClose
    }

    /// Consumes bytes of `input` until an event; returns how many bytes were used and the event.
    /// Body bytes go to `body`. Call again with the rest of the input after `Head` or `End`.
    pub fn feed(
        &mut self,
        input: &[u8],
        body: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, Event), ProtocolError> {
        match self.body {
            Body::Head => self.feed_head(input),
            Body::Length(remaining) => {
                let take = remaining.min(input.len() as u64) as usize;
                if take > 0 {
                    body(&input[..take]);
                }
                let left = remaining - take as u64;
                if left == 0 {
                    self.body = Body::Head;
                    Ok((take, Event::End))
                } else {
                    self.body = Body::Length(left);
                    Ok((take, Event::NeedMore))
                }
            }
            Body::UntilClose => {
                if !input.is_empty() {
                    body(input);
                }
                Ok((input.len(), Event::NeedMore))
            }
            Body::Chunked(state) => self.feed_chunked(state, input, body),
        }
    }

    fn feed_head(&mut self, input: &[u8]) -> Result<(usize, Event), ProtocolError> {
        let searched_from = self.head.len().saturating_sub(3);
        let before = self.head.len();
        self.head.extend_from_slice(input);
        let Some(pos) = find(&self.head[searched_from..], b"\r\n\r\n") else {
            if self.head.len() > MAX_HEAD {
                return Err(err("response head too large"));
            }
            return Ok((input.len(), Event::NeedMore));
        };
        let end = searched_from + pos + 4;
        let used = end - before;
        let head = parse_head(&self.head[..end])?;
        self.head.clear();
        let no_body = head.status == 204 || head.status == 304 || (100..200).contains(&head.status);
        self.body = if head.status == 101 {
            // The connection switches protocol: the caller takes over the bytes.
            Body::UntilClose
        } else if no_body {
            Body::Length(0)
        } else if head.chunked {
            Body::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            })
        } else if let Some(length) = head.content_length {
            Body::Length(length)
        } else {
            Body::UntilClose
        };
        Ok((used, Event::Head(head)))
    }

    fn feed_chunked(
        &mut self,
        mut state: Chunk,
        input: &[u8],
        body: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, Event), ProtocolError> {
        let mut i = 0;
        while i < input.len() {
            if let Chunk::Data(remaining) = state {
                let take = remaining.min((input.len() - i) as u64) as usize;
                body(&input[i..i + take]);
                i += take;
                let left = remaining - take as u64;
                state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                continue;
            }
            let byte = input[i];
            i += 1;
            state = match state {
                Chunk::Size { value, digits } => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(err("chunk size too large"));
                        }
                        let digit = match byte {
                            b'0'..=b'9' => byte - b'0',
                            b'a'..=b'f' => byte - b'a' + 10,
                            _ => byte - b'A' + 10,
                        };
                        Chunk::Size {
                            value: value * 16 + u64::from(digit),
                            digits: digits + 1,
                        }
                    }
                    b'\r' | b';' | b' ' | b'\t' if digits > 0 => Chunk::Extension { value },
                    b'\n' if digits > 0 => chunk_after_size(value),
                    _ => return Err(err("bad chunk size")),
                },
                Chunk::Extension { value } => {
                    if byte == b'\n' {
                        chunk_after_size(value)
                    } else {
                        Chunk::Extension { value }
                    }
                }
                Chunk::DataEnd => match byte {
                    b'\r' => Chunk::DataEnd,
                    b'\n' => Chunk::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err(err("missing CRLF after chunk")),
                },
                Chunk::Trailer { empty } => match byte {
                    b'\r' => Chunk::Trailer { empty },
                    b'\n' if empty => {
                        self.body = Body::Head;
                        return Ok((i, Event::End));
                    }
                    b'\n' => Chunk::Trailer { empty: true },
                    _ => Chunk::Trailer { empty: false },
                },
                Chunk::Data(_) => state,
            };
        }
        self.body = Body::Chunked(state);
        Ok((i, Event::NeedMore))
    }
}

fn chunk_after_size(value: u64) -> Chunk {
    if value == 0 {
        Chunk::Trailer { empty: true }
    } else {
        Chunk::Data(value)
    }
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn parse_head(raw: &[u8]) -> Result<Head, ProtocolError> {
    let text = std::str::from_utf8(raw).map_err(|_| err("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(err(format!(
            "not an HTTP/1 response: {:?}",
            truncate(status_line)
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err(format!("bad status line: {:?}", truncate(status_line))))?;
    let mut head = Head {
        status,
        close: version == "HTTP/1.0",
        ..Head::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| err(format!("bad Content-Length {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                head.close = true;
            } else if value.contains("keep-alive") {
                head.close = false;
            }
        } else if name.eq_ignore_ascii_case("last-modified") {
            head.last_modified = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_string());
        }
    }
    Ok(head)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A GET request for a long-lived subscriber (`accept` adds an `Accept` header).
pub fn get_request(host: &str, path: &str, accept: Option<&str>) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: herald-loadtest\r\n");
    if let Some(accept) = accept {
        req.push_str("Accept: ");
        req.push_str(accept);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A long-polling GET carrying the client's point (`If-Modified-Since`, `If-None-Match`).
pub fn longpoll_request(
    host: &str,
    path: &str,
    last_modified: Option<&str>,
    etag: Option<&str>,
) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: herald-loadtest\r\n");
    if let Some(value) = last_modified {
        req.push_str("If-Modified-Since: ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    if let Some(value) = etag {
        req.push_str("If-None-Match: ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A WebSocket upgrade request (RFC 6455, version 13, a fixed key: the tool does not check the
/// accept hash).
pub fn websocket_request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: herald-loadtest\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Writes a POST of `body` to `path` into `out` (cleared first).
pub fn post_request(out: &mut Vec<u8>, host: &str, path: &str, body: &[u8]) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: herald-loadtest\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns heads, body bytes and end count.
    fn run(input: &[u8], step: usize) -> (Vec<Head>, Vec<u8>, usize) {
        let mut reader = ResponseReader::default();
        let mut heads = Vec::new();
        let mut body = Vec::new();
        let mut ends = 0;
        for piece in input.chunks(step) {
            let mut rest = piece;
            loop {
                let (used, event) = reader
                    .feed(rest, &mut |b: &[u8]| body.extend_from_slice(b))
                    .expect("valid response");
                rest = &rest[used..];
                match event {
                    Event::NeedMore => break,
                    Event::Head(h) => heads.push(h),
                    Event::End => ends += 1,
                }
            }
        }
        (heads, body, ends)
    }

    #[test]
    fn chunked_and_length_bodies_in_any_pieces() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nEtag: W/3\r\n\r\n5\r\nhello\r\na;x=1\r\n0123456789\r\n0\r\n\r\nHTTP/1.1 304 Not Modified\r\nLast-Modified: Thu\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        for step in 1..input.len() {
            let (heads, body, ends) = run(input, step);
            assert_eq!(heads.len(), 3, "step {step}");
            assert_eq!(body, b"hello0123456789abc", "step {step}");
            assert_eq!(ends, 3, "step {step}");
            assert!(heads[0].chunked);
            assert_eq!(heads[0].etag.as_deref(), Some("W/3"));
            assert_eq!(heads[1].status, 304);
            assert_eq!(heads[1].last_modified.as_deref(), Some("Thu"));
            assert!(heads[2].close);
        }
    }

    #[test]
    fn rejects_garbage() {
        let mut reader = ResponseReader::default();
        assert!(reader
            .feed(b"SSH-2.0-OpenSSH\r\n\r\n", &mut |_: &[u8]| {})
            .is_err());
    }
}
