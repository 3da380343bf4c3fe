//! Headers every Herald response carries (the module's no-cache headers and Herald's version).

use hyper::http::response::Builder;
use hyper::{header, Response, StatusCode};

/// The module's explanation header for errors and DELETE.
pub const EXPLAIN_HEADER: &str = "X-Nginx-PushStream-Explain";

/// A response builder with the status and the common headers.
pub fn base_response(status: StatusCode) -> Builder {
    Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::EXPIRES, "Thu, 01 Jan 1970 00:00:01 GMT")
        .header("X-Herald-Version", env!("CARGO_PKG_VERSION"))
}
