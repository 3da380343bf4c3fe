//! Static files (the browser client, demo page and dashboard under `static/`), compiled into the
//! binary so that `cargo run --release` serves them with no extra files. A `static` location serves the
//! file named by its channels path expression (the path after the location by default): `""` is
//! `index.html`, and `name` also finds `name.html`.

use super::error::HttpError;
use super::response::base_response;
use super::response::{Body, Finish};
use bytes::Bytes;
use hyper::{header, Method, Response, StatusCode};

#[derive(rust_embed::Embed)]
#[folder = "static/"]
struct Assets;

/// The classic-script build of `static/herald.js`, made by build.rs.
const HERALD_UMD: &str = include_str!(concat!(env!("OUT_DIR"), "/herald.umd.js"));

/// Answers `GET`/`HEAD` for the embedded file at `path`.
pub fn handle(method: &Method, path: &str) -> Result<Response<Body>, HttpError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(HttpError::method_not_allowed("GET, HEAD"));
    }
    let path = path.trim_start_matches('/');
    let candidates = if path.is_empty() || path.ends_with('/') {
        vec![format!("{path}index.html")]
    } else {
        vec![
            path.to_string(),
            format!("{path}.html"),
            format!("{path}/index.html"),
        ]
    };
    if path == "herald.umd.js" {
        return Ok(file_response(
            method,
            "text/javascript; charset=utf-8".into(),
            Bytes::from_static(HERALD_UMD.as_bytes()),
        ));
    }
    let Some((name, file)) = candidates
        .into_iter()
        .find_map(|name| Assets::get(&name).map(|file| (name, file)))
    else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("No file /{path} here."),
        ));
    };
    // TypeScript typings are text; a guess by extension would call `.ts` an MPEG stream.
    let mime = if name.ends_with(".ts") {
        "text/plain"
    } else {
        file.metadata.mimetype()
    };
    let content_type = if mime.starts_with("text/") || mime.ends_with("javascript") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    tracing::trace!(file = %name, "static file");
    // Embedded files are static data: served without a copy.
    let data = match file.data {
        std::borrow::Cow::Borrowed(data) => Bytes::from_static(data),
        std::borrow::Cow::Owned(data) => Bytes::from(data),
    };
    Ok(file_response(method, content_type, data))
}

fn file_response(method: &Method, content_type: String, data: Bytes) -> Response<Body> {
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(data)
    };
    base_response(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .finish(body)
}
