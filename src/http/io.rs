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

/// Answers a connection refused by a limit with a 503 naming it, then closes it.
pub async fn refuse_connection(mut stream: tokio::net::TcpStream, limit: &'static str) {
    use tokio::io::AsyncWriteExt;
    let mut refusal = super::error::HttpError::new(
        hyper::StatusCode::SERVICE_UNAVAILABLE,
        format!("Too many connections. Limit: {limit}."),
    );
    refusal
        .headers
        .push((hyper::header::RETRY_AFTER, "5".to_string()));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = super::raw::write_response(&mut stream, refusal.into_response()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
