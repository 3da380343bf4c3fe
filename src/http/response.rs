//! What every Herald response is made of: the response `Body` type (a whole buffer or a stream of
//! frames), the headers every response carries (the module's no-cache headers and Herald's
//! version), and `Finish`, which ends a response builder so that a header that cannot be built
//! becomes a logged 500, never an empty 200.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, SizeHint};
use hyper::http::response::Builder;
use hyper::{header, Response, StatusCode};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The module's explanation header for errors and DELETE.
pub const EXPLAIN_HEADER: &str = "X-Nginx-PushStream-Explain";

/// Why a streamed body ended early.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: a whole buffer, or a stream of chunks (live subscriber answers).
pub struct Body(UnsyncBoxBody<Bytes, BodyError>);

impl Body {
    /// No bytes.
    pub fn empty() -> Body {
        Body(Empty::new().map_err(|never| match never {}).boxed_unsync())
    }

    /// The chunks of `stream`, each sent as it comes.
    pub fn from_stream<S, E>(stream: S) -> Body
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BodyError> + 'static,
    {
        Body(StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync())
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = hyper::body::Body::size_hint(&self.0);
        f.debug_struct("Body").field("size", &size).finish()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body(
            Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::from(Bytes::from(text))
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from(bytes))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Body {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Body {
        Body::from(Bytes::from_static(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// A response builder with the status and the common headers.
pub fn base_response(status: StatusCode) -> Builder {
    Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::EXPIRES, "Thu, 01 Jan 1970 00:00:01 GMT")
        .header("X-Herald-Version", env!("CARGO_PKG_VERSION"))
}

/// Ends a response builder.
pub trait Finish {
    /// The response with `body`; when the builder holds an invalid part (a header value that is
    /// not one), a 500 that says so, and a log line.
    fn finish(self, body: impl Into<Body>) -> Response<Body>;
}

impl Finish for Builder {
    fn finish(self, body: impl Into<Body>) -> Response<Body> {
        match self.body(body.into()) {
            Ok(response) => response,
            Err(err) => {
                tracing::error!(error = %err, "cannot build a response");
                let mut response = Response::new(Body::from(
                    "Internal error: the response could not be built.\n",
                ));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }
}
