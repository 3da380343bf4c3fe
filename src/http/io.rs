//! Connection liveness at the socket: `TimedIo` fails a write that cannot make progress within the
//! send timeout (a client that stopped reading), so the connection ends and its subscriber slot is
//! freed at once; `enable_keepalive` turns on TCP keepalive for accepted sockets. Connection
//! admission: `ConnectionCounts` (the connection limits), the `ConnectionGuard` each connection's
//! owner holds (its slot and its part in the shutdown drain), and the 503 refusal.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail with `TimedOut` after `timeout` without progress.
#[derive(Debug)]
pub struct TimedIo<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> TimedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, timeout: Duration) -> TimedIo<T> {
        TimedIo {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Called when a write is pending: starts the stall timer, or fails once it ran out.
    fn check_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                crate::metrics::count_dead_connection("send_timeout");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("client did not read for {timeout:?} (send_timeout)"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<R>(
        &mut self,
        result: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Ready(done) => {
                self.stalled = None;
                Poll::Ready(done)
            }
            Poll::Pending => match self.check_stall(cx) {
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                _ => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Turns on TCP keepalive (probes after `idle`, then every `idle / 3`).
pub fn enable_keepalive(stream: &tokio::net::TcpStream, idle: Duration) -> io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval((idle / 3).max(Duration::from_secs(1)));
    socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Open connections, in total and per peer address, for `max_connections` and
/// `max_connections_per_address`.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    total: std::sync::atomic::AtomicU64,
    per_address: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, u64>>,
}

/// Holds one connection's place in `ConnectionCounts`; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: std::sync::Arc<ConnectionCounts>,
    address: std::net::IpAddr,
}

impl ConnectionCounts {
    /// Admits a connection from `address`, or names the limit that refuses it.
    pub fn admit(
        counts: &std::sync::Arc<ConnectionCounts>,
        address: std::net::IpAddr,
        max_total: Option<u64>,
        max_per_address: Option<u64>,
    ) -> Result<ConnectionSlot, &'static str> {
        use std::sync::atomic::Ordering;
        let total = counts.total.fetch_add(1, Ordering::AcqRel) + 1;
        if max_total.is_some_and(|max| total > max) {
            counts.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections");
        }
        let mut per_address = counts.per_address.lock();
        let open = per_address.entry(address).or_insert(0);
        if max_per_address.is_some_and(|max| *open >= max) {
            drop(per_address);
            counts.total.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections_per_address");
        }
        *open += 1;
        Ok(ConnectionSlot {
            counts: counts.clone(),
            address,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts
            .total
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut per_address = self.counts.per_address.lock();
        if let Some(open) = per_address.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                per_address.remove(&self.address);
            }
        }
    }
}

/// One accepted connection's hold on the server: its place in `ConnectionCounts` and its part in
/// the shutdown drain (the server waits until every drain sender is gone). The connection task
/// holds it; on the hyper path every request carries a clone, and an upgraded WebSocket's task
/// keeps its clone, so a WebSocket counts toward `max_connections` and `max_connections_per_address`
/// and holds the drain until it has closed. Both are released when the last clone drops.
#[derive(Debug, Clone)]
pub struct ConnectionGuard {
    _hold: std::sync::Arc<ConnectionHold>,
}

#[derive(Debug)]
struct ConnectionHold {
    _slot: ConnectionSlot,
    _drain: tokio::sync::mpsc::Sender<()>,
}

impl ConnectionGuard {
    /// Holds `slot` and `drain` until the last clone is dropped.
    pub fn new(slot: ConnectionSlot, drain: tokio::sync::mpsc::Sender<()>) -> ConnectionGuard {
        ConnectionGuard {
            _hold: std::sync::Arc::new(ConnectionHold {
                _slot: slot,
                _drain: drain,
            }),
        }
    }
}

/// Refusals answered after reading the request (below) at once; past this, refusals are answered
/// without reading (`answer_at_once`), so that a flood of refused clients holds few descriptors.
const MAX_POLITE_REFUSALS: usize = 32;
/// How long a refused client gets to send its request head.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes of a refused client's request read.
const REFUSAL_READ_LIMIT: usize = 8 << 10;

static POLITE_REFUSALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The 503 for a connection refused by `limit`.
fn refusal(limit: &str) -> super::error::HttpError {
    let mut refusal = super::error::HttpError::new(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        format!("Too many connections. Limit: {limit}."),
    );
    refusal
        .headers
        .push((hyper::header::RETRY_AFTER, "5".to_string()));
    refusal
}

/// The 503 for a connection refused by `limit`, as the bytes to write (head and body).
pub fn refusal_bytes(limit: &str) -> Vec<u8> {
    use futures_util::FutureExt;
    use http_body_util::BodyExt;
    let (parts, body) = refusal(limit).into_response().into_parts();
    // A full body: its one frame is ready at once.
    let body = body
        .collect()
        .now_or_never()
        .and_then(Result::ok)
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let mut bytes = super::raw::response_head(&parts, Some(body.len() as u64));
    bytes.extend_from_slice(&body);
    bytes
}

/// Answers `answer` without waiting: reads what the client already sent (so that closing does not
/// reset the connection and lose the answer), writes what the socket takes, and closes.
pub fn answer_at_once(stream: &tokio::net::TcpStream, answer: &[u8]) {
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(answer);
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Answers a connection refused by a limit, then closes it: `GET /healthz` is answered 200 (the
/// process is alive; liveness probes get through at the limit), anything else a 503 naming the
/// limit. The request head is read first (at most 8 KiB within 1 s; at most 32 refusals at once,
/// past that the 503 is written without reading).
pub async fn refuse_connection(mut stream: tokio::net::TcpStream, limit: &'static str) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// One of the polite refusals in progress; released on drop.
    struct Turn;
    impl Drop for Turn {
        fn drop(&mut self) {
            POLITE_REFUSALS.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let turn = Turn;
    if POLITE_REFUSALS.fetch_add(1, Ordering::AcqRel) >= MAX_POLITE_REFUSALS {
        drop(turn);
        answer_at_once(&stream, &refusal_bytes(limit));
        return;
    }
    let mut head = Vec::with_capacity(1024);
    let _ = tokio::time::timeout(REFUSAL_READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while head.len() < REFUSAL_READ_LIMIT && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let response = if asks_for_liveness(&head) {
        super::liveness_response()
    } else {
        refusal(limit).into_response()
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = super::raw::write_response(&mut stream, response).await;
        let _ = stream.shutdown().await;
    })
    .await;
    drop(turn);
}

/// Whether a request head is `GET /healthz`.
fn asks_for_liveness(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if request.parse(head).is_err() {
        return false;
    }
    let path = request.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    request.method == Some("GET") && path == "/healthz"
}
