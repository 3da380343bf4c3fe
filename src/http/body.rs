//! Request bodies, read whole before they are published: each read must come within
//! `body_read_timeout` of the previous one (408 and close past it, nginx's `client_body_timeout`), a
//! body holds at most `max_body_size` bytes (413), and all bodies being read at once (with the
//! unfinished WebSocket messages) hold at most `max_buffered_body_size` bytes (the server's
//! `ByteBudget`; 503 and close past it).
//!
//! A body larger than `SMALL_BODY` (16 KiB) reserves the bytes its buffer holds as it grows (never
//! more than its declared `Content-Length`), so a client has to send bytes to hold memory; a body whose declared length no
//! longer fits is refused before anything is read, and a chunked body is refused when it would grow
//! past what is left. The buffer is Herald's own copy, so hyper's read buffer is not pinned by the
//! pieces of a slow body.

use super::error::HttpError;
use super::AppState;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{header, HeaderMap, StatusCode};
use std::time::Duration;

/// Bodies up to this size are not counted in the server-wide budget: they cost no more than the
/// connection's own read buffer already does (bounded by `max_connections`), and a backend's usual
/// small publishes must not be refused because large slow bodies or unfinished WebSocket messages
/// hold the budget.
pub const SMALL_BODY: u64 = 16 << 10;

/// The limits a body is read under.
struct BodyLimits {
    max_body_size: u64,
    max_buffered: u64,
    read_timeout: Duration,
}

impl BodyLimits {
    fn too_large(&self, key: &'static str, limit: u64) -> HttpError {
        crate::metrics::count_limit_refusal(key);
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is too large. Limit: {key} = {limit} bytes."),
        )
    }

    /// 413 when `len` bytes are more than one body may have.
    fn check_size(&self, len: u64) -> Result<(), HttpError> {
        if len > self.max_body_size {
            return Err(self.too_large("max_body_size", self.max_body_size));
        }
        if len > self.max_buffered {
            return Err(self.too_large("max_buffered_body_size", self.max_buffered));
        }
        Ok(())
    }

    /// 503: the server holds as many body bytes as it may; the connection is closed (the rest of
    /// the body is not read).
    fn server_full(&self) -> HttpError {
        crate::metrics::count_limit_refusal("max_buffered_body_size");
        let mut refusal = HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Too many request bodies are being received at once; retry later. Limit: max_buffered_body_size = {} bytes.",
                self.max_buffered
            ),
        );
        refusal.headers.push((header::RETRY_AFTER, "5".to_string()));
        refusal
            .headers
            .push((header::CONNECTION, "close".to_string()));
        refusal
    }

    /// 408: nothing arrived for `read_timeout`; the connection is closed.
    fn timed_out(&self) -> HttpError {
        crate::metrics::count_limit_refusal("body_read_timeout");
        let mut refusal = HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "Request body timed out: nothing received for {:?}. Limit: body_read_timeout.",
                self.read_timeout
            ),
        );
        refusal
            .headers
            .push((header::CONNECTION, "close".to_string()));
        refusal
    }
}

/// Reads the whole request body under the server's body limits (see the module comment).
pub async fn read<B>(state: &AppState, headers: &HeaderMap, body: B) -> Result<Bytes, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let routes = state.routes();
    let limits = BodyLimits {
        max_body_size: routes.max_body_size,
        max_buffered: routes.max_buffered_body_size,
        read_timeout: routes.body_read_timeout,
    };
    drop(routes);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared {
        limits.check_size(declared)?;
        let left = limits
            .max_buffered
            .saturating_sub(state.buffered_bytes.reserved());
        if declared > SMALL_BODY && declared > left {
            return Err(limits.server_full());
        }
    }
    let mut reservation = state.buffered_bytes.share();
    let mut buffer: Vec<u8> = Vec::new();
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout(limits.read_timeout, body.frame()).await {
            Err(_) => return Err(limits.timed_out()),
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Could not read the request body: {}", err.into()),
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let len = buffer.len() + data.len();
        limits.check_size(len as u64)?;
        if len > buffer.capacity() {
            // Double (fewer copies), but never past the declared length.
            let doubled = (buffer.capacity() * 2).max(len);
            let capacity = declared
                .and_then(|d| usize::try_from(d).ok())
                .map_or(doubled, |d| doubled.min(d))
                .max(len);
            if capacity as u64 > SMALL_BODY
                && !reservation.grow_to(capacity as u64, limits.max_buffered)
            {
                return Err(limits.server_full());
            }
            buffer.reserve_exact(capacity - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    if buffer.capacity() - buffer.len() > buffer.len() / 8 {
        buffer.shrink_to_fit();
    }
    Ok(Bytes::from(buffer))
}
