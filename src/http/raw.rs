//! The lean path for long-lived HTTP subscribers. Herald reads the first request head of each
//! connection itself (a small buffer, freed once parsed): a `GET` for a streaming or EventSource
//! subscriber is answered here, writing the chunked body straight to the socket with one vectored
//! write per batch of frames, so an idle subscriber costs its cursor and a small task instead of a
//! full HTTP connection's buffers. Everything else (and anything unusual: HTTP/1.0, upgrades, bodies)
//! goes to hyper with the bytes already read replayed in front of the socket. Both paths call the
//! same request handler, so routing, access checks, headers and metrics are identical.

use super::response::Body;
use super::router::Handler;
use super::AppState;
use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Request, Response};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Most headers the lean path parses; requests with more go to hyper.
const MAX_HEADERS: usize = 48;

/// What the first read of a connection found.
pub enum FirstRequest {
    /// A streaming/EventSource subscribe request, parsed.
    Subscriber(Request<http_body_util::Empty<Bytes>>),
    /// Anything else: hand the connection to hyper with these bytes in front.
    Other(Vec<u8>),
    /// The client closed or sent nothing in time.
    Gone,
}

/// Reads the first request head (up to `max_head` bytes) and decides which path serves it.
pub async fn read_first_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    state: &AppState,
    max_head: usize,
    timeout: std::time::Duration,
) -> FirstRequest {
    let mut buf = Vec::with_capacity(1024);
    let read = tokio::time::timeout(timeout, async {
        loop {
            if buf.len() == buf.capacity() {
                if buf.len() >= max_head {
                    return Some(false);
                }
                buf.reserve(buf.len());
            }
            let spare = buf.capacity() - buf.len();
            let start = buf.len();
            buf.resize(start + spare, 0);
            match stream.read(&mut buf[start..]).await {
                Ok(0) | Err(_) => {
                    buf.truncate(start);
                    return None;
                }
                Ok(n) => buf.truncate(start + n),
            }
            match head_status(&buf) {
                HeadStatus::Partial => continue,
                HeadStatus::Complete => return Some(true),
                HeadStatus::Invalid => return Some(false),
            }
        }
    })
    .await;
    if read.is_err() {
        crate::metrics::count_limit_refusal("header_read_timeout");
    }
    match read {
        // Out of time: closed here, not handed to hyper for a second header_read_timeout.
        Err(_) => FirstRequest::Gone,
        Ok(None) if buf.is_empty() => FirstRequest::Gone,
        Ok(None) => FirstRequest::Other(buf),
        Ok(Some(false)) => FirstRequest::Other(buf),
        Ok(Some(true)) => match lean_request(&buf, state) {
            Some(request) => FirstRequest::Subscriber(request),
            None => FirstRequest::Other(buf),
        },
    }
}

enum HeadStatus {
    Partial,
    Complete,
    Invalid,
}

fn head_status(buf: &[u8]) -> HeadStatus {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => HeadStatus::Complete,
        Ok(httparse::Status::Partial) => HeadStatus::Partial,
        Err(_) => HeadStatus::Invalid,
    }
}

/// The request, when it is one the lean path serves: a complete HTTP/1.1 `GET` with no body and no
/// upgrade, whose location is a streaming or EventSource subscriber (after the mode header).
fn lean_request(buf: &[u8], state: &AppState) -> Option<Request<http_body_util::Empty<Bytes>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(buf).ok()? else {
        return None;
    };
    if head_len != buf.len() || parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = hyper::header::HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = hyper::header::HeaderValue::from_bytes(header.value).ok()?;
        map.append(name, value);
    }
    let body_or_upgrade = [
        hyper::header::UPGRADE,
        hyper::header::CONTENT_LENGTH,
        hyper::header::TRANSFER_ENCODING,
    ]
    .iter()
    .any(|h| map.contains_key(h));
    if body_or_upgrade {
        return None;
    }
    let uri: hyper::Uri = parsed.path?.parse().ok()?;
    let routes = state.routes();
    let (location, _) = routes
        .router
        .route(uri.path(), uri.query().unwrap_or(""), &map)?;
    let Handler::Subscriber(settings) = &location.handler else {
        return None;
    };
    use crate::config::SubscriberMode;
    match super::subscriber::requested_mode(settings.mode, &map) {
        SubscriberMode::Streaming | SubscriberMode::EventSource => {}
        _ => return None,
    }
    let mut request = Request::get(uri).body(http_body_util::Empty::new()).ok()?;
    *request.headers_mut() = map;
    Some(request)
}

/// Writes `response` on `stream`: the head (with `Connection: close`), then the body, chunked when
/// its length is unknown, batching the frames that are ready into one vectored write. Stops when the
/// body ends or the client goes away (a read returns end-of-file or an error).
pub async fn write_response<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    response: Response<Body>,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let length = hyper::body::Body::size_hint(&body).exact();
    let head = response_head(&parts, length);
    drop(parts);
    stream.write_all(&head).await?;
    drop(head);
    let chunked = length.is_none();
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut probe = [0u8; 64];
    loop {
        let first = tokio::select! {
            frame = body.frame() => frame,
            read = stream.read(&mut probe) => match read {
                // The client closed (or reset) the connection: stop at once.
                Ok(0) | Err(_) => return Ok(()),
                // Pipelined bytes after a streaming request are ignored.
                Ok(_) => continue,
            },
        };
        let mut ended = false;
        let mut next = first;
        let mut framing = bytes::BytesMut::with_capacity(64);
        loop {
            match next {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            if chunked {
                                // Size lines share one buffer per batch: no allocation per chunk.
                                use std::fmt::Write;
                                let _ = write!(framing, "{:x}\r\n", data.len());
                                pieces.push(framing.split().freeze());
                                pieces.push(data);
                                pieces.push(Bytes::from_static(b"\r\n"));
                            } else {
                                pieces.push(data);
                            }
                        }
                    }
                }
                Some(Err(_)) | None => {
                    ended = true;
                    break;
                }
            }
            // Take whatever else is ready without waiting, for one write.
            match body.frame().now_or_never() {
                Some(frame) => next = frame,
                None => break,
            }
        }
        if ended && chunked {
            pieces.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        write_all_vectored(stream, &mut pieces).await?;
        if ended {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

/// The head of a response written by Herald itself: status line, headers, date, the length (or
/// chunked) and `Connection: close`.
pub fn response_head(parts: &hyper::http::response::Parts, length: Option<u64>) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!(
            "date: {}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        )
        .as_bytes(),
    );
    match length {
        Some(length) => head.extend_from_slice(format!("content-length: {length}\r\n").as_bytes()),
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

/// Writes every piece, in as few vectored writes as the socket takes.
async fn write_all_vectored<S: AsyncWrite + Unpin>(
    stream: &mut S,
    pieces: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut first = 0;
    while first < pieces.len() {
        let slices: Vec<IoSlice<'_>> = pieces[first..]
            .iter()
            .take(64)
            .map(|p| IoSlice::new(p))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        drop(slices);
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "connection closed while writing",
            ));
        }
        while written > 0 && first < pieces.len() {
            let len = pieces[first].len();
            if written >= len {
                written -= len;
                first += 1;
            } else {
                let rest = pieces[first].slice(written..);
                pieces[first] = rest;
                written = 0;
            }
        }
    }
    pieces.clear();
    Ok(())
}

/// An I/O stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Option<Bytes>,
    inner: T,
}

impl<T> Rewind<T> {
    /// Replays `prefix` before reading from `inner`.
    pub fn new(inner: T, prefix: Vec<u8>) -> Rewind<T> {
        let prefix = (!prefix.is_empty()).then(|| Bytes::from(prefix));
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut prefix) = self.prefix.take() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if !prefix.is_empty() {
                self.prefix = Some(prefix);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::forward_write::forward_async_write!(Rewind);
