//! The publisher location: GET = channel info, POST/PUT = publish the body (with `Event-Id` and
//! `Event-Type` kept; `Idempotency-Key` makes a repeated publish a no-op), DELETE = delete channels
//! (admin locations only), OPTIONS = preflight.

use super::channels_path::split_channels;
use super::error::HttpError;
use super::response::{base_response, EXPLAIN_HEADER};
use super::response::{Body, Finish};
use super::router::PublisherSettings;
use super::stats::{channel_info_response, doc_response, group_doc, infos_response, InfoFormat};
use super::AppState;
use crate::broker::{ChannelId, Publish};
use bytes::Bytes;
use hyper::http::request::Parts;
use hyper::{header, HeaderMap, Method, Response, StatusCode};

/// Handles one request to a publisher location.
pub async fn handle<B>(
    state: &AppState,
    settings: &PublisherSettings,
    parts: &Parts,
    body: B,
    query: &str,
    channels_path: &str,
) -> Result<Response<Body>, HttpError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let allow = allowed_methods(settings);
    let method = parts.method.clone();
    let format = InfoFormat::negotiate(&parts.headers, query);
    if method == Method::OPTIONS {
        return Ok(base_response(StatusCode::OK)
            .header(header::ALLOW, allow)
            .header(header::CONTENT_LENGTH, "0")
            .finish(Body::empty()));
    }
    let ids = distinct_channels(state, channels_path)?;
    match method {
        Method::GET => {
            for id in &ids {
                state.routes().rules.check_shape(id)?;
            }
            infos_response(state, &ids, format).await
        }
        Method::POST | Method::PUT => {
            let channels = parse_ids(state, &ids)?;
            let publish = Publish {
                event_id: header_text(&parts.headers, "Event-Id"),
                event_type: header_text(&parts.headers, "Event-Type"),
                store: settings.store_messages,
                idempotency_key: idempotency_key(&parts.headers)?,
                text: super::body::read(state, &parts.headers, body).await?,
            };
            if publish.text.is_empty() {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "Empty post requests are not allowed.",
                ));
            }
            let published = state.engine.publish(&channels, publish).await?;
            let (replayed_channels, replayed) = replayed_header(&published);
            crate::metrics::count_publish_replays(replayed_channels);
            let mut response = if !settings.channel_info_on_publish {
                base_response(StatusCode::OK).finish(Body::empty())
            } else {
                let infos: Vec<_> = published.into_iter().map(|p| p.info).collect();
                match infos.as_slice() {
                    [one] => channel_info_response(one, format),
                    // Channel counts as of the last heartbeat with Redis: no round trip to every
                    // shard.
                    many => {
                        doc_response(&group_doc(state, many, state.engine.group_totals()), format)
                    }
                }
            };
            if let Some(value) = replayed {
                response
                    .headers_mut()
                    .insert(REPLAYED_HEADER, header::HeaderValue::from_static(value));
            }
            Ok(response)
        }
        Method::DELETE if settings.admin => {
            let channels = parse_ids(state, &ids)?;
            let text = super::body::read(state, &parts.headers, body).await?;
            let text = (!text.is_empty()).then_some(text);
            let deleted = state.engine.delete(&channels, text).await?;
            if deleted.is_empty() {
                return Err(HttpError::new(StatusCode::NOT_FOUND, "Channel not found."));
            }
            Ok(base_response(StatusCode::OK)
                .header(EXPLAIN_HEADER, "Channel deleted.")
                .finish(Body::empty()))
        }
        _ => Err(HttpError::method_not_allowed(allow)),
    }
}

/// The methods a publisher location accepts (the `Allow` header).
pub fn allowed_methods(settings: &PublisherSettings) -> &'static str {
    if settings.admin {
        "GET, POST, PUT, DELETE"
    } else {
        "GET, POST, PUT"
    }
}

/// The channels a request names, each once (`a/b/a` publishes to `a` and `b` once each), at least
/// one and at most `max_channels_per_publish`.
fn distinct_channels<'a>(
    state: &AppState,
    channels_path: &'a str,
) -> Result<Vec<&'a str>, HttpError> {
    let mut ids = split_channels(channels_path);
    if ids.is_empty() {
        return Err(crate::broker::BrokerError::NoChannelId.into());
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.retain(|id| seen.insert(*id));
    if let Some(max) = state.routes().max_channels_per_publish {
        if ids.len() as u64 > max {
            crate::metrics::count_limit_refusal("max_channels_per_publish");
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Too many channels in one request. Limit: max_channels_per_publish = {max}."
                ),
            ));
        }
    }
    Ok(ids)
}

fn parse_ids(state: &AppState, ids: &[&str]) -> Result<Vec<ChannelId>, HttpError> {
    ids.iter()
        .map(|id| state.routes().rules.parse(id).map_err(HttpError::from))
        .collect()
}

/// Answer header saying that channels had already taken this `Idempotency-Key`: `true` when every
/// channel had (nothing was published), `partial` when some had.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 128;

/// How many distinct channels replayed, and the `Idempotent-Replayed` value. A channel named twice
/// (`a/a`) is replayed only if no occurrence published.
fn replayed_header(published: &[crate::broker::Published]) -> (u64, Option<&'static str>) {
    // The usual case (no key, or a first publish) needs no map.
    if !published.iter().any(|p| p.replayed) {
        return (0, None);
    }
    let mut replayed_by_channel = std::collections::HashMap::new();
    for p in published {
        *replayed_by_channel.entry(&p.info.channel).or_insert(true) &= p.replayed;
    }
    let replayed = replayed_by_channel.values().filter(|r| **r).count();
    let header = match replayed {
        0 => None,
        n if n == replayed_by_channel.len() => Some("true"),
        _ => Some("partial"),
    };
    (replayed as u64, header)
}

/// The `Idempotency-Key` header: 1 to 128 visible ASCII characters, optionally in double quotes
/// (the IETF draft's structured-field string); 400 otherwise, or when it comes twice.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<Box<str>>, HttpError> {
    let mut values = headers.get_all("Idempotency-Key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be given once.",
        ));
    }
    let bytes = value.as_bytes();
    let key = match bytes {
        [b'"', inner @ .., b'"'] => inner,
        _ => bytes,
    };
    // Quotes only around the whole key; no backslash escapes.
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LENGTH
        || !key
            .iter()
            .all(|b| (0x21..=0x7e).contains(b) && *b != b'"' && *b != b'\\')
    {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} visible ASCII characters other than '\"' and '\\', optionally in double quotes (got {} bytes).",
                key.len()
            ),
        ));
    }
    Ok(Some(String::from_utf8_lossy(key).into()))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|v| !v.is_empty())
}
