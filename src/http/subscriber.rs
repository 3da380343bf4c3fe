//! The subscriber location: parses the channels path (`ch1/ch2.b5`), validates ids, subscribes, and
//! answers with a long-lived body produced by `transport::live` in the location's mode.

use super::channels_path::parse_subscriber_path;
use super::error::HttpError;
use super::response::base_response;
use super::router::SubscriberSettings;
use super::AppState;
use crate::broker::{BrokerError, SubscribeTo};
use crate::transport::live::live_body;
use axum::body::Body;
use hyper::{header, Method, Response, StatusCode};

/// Handles one request to a subscriber location.
pub fn handle(
    state: &AppState,
    settings: &SubscriberSettings,
    method: &Method,
    channels_path: &str,
) -> Result<Response<Body>, HttpError> {
    if method == Method::OPTIONS {
        return Ok(base_response(StatusCode::OK)
            .header(header::ALLOW, "GET")
            .header(header::CONTENT_LENGTH, "0")
            .body(Body::empty())
            .unwrap_or_default());
    }
    if method != Method::GET {
        return Err(HttpError::method_not_allowed("GET"));
    }
    let requested = parse_subscriber_path(channels_path);
    if requested.is_empty() {
        return Err(BrokerError::NoChannelId.into());
    }
    let mut targets = Vec::with_capacity(requested.len());
    for channel in &requested {
        let id = state.rules.parse(channel.id)?;
        match targets
            .iter_mut()
            .find(|t: &&mut SubscribeTo| t.channel == id)
        {
            // The same channel twice: one cursor, the larger backtrack.
            Some(existing) => existing.backtrack = existing.backtrack.max(channel.backtrack),
            None => targets.push(SubscribeTo {
                channel: id,
                backtrack: channel.backtrack,
            }),
        }
    }
    let subscription = state.broker.subscribe(&targets)?;
    let body = live_body(subscription, settings.live.clone(), state.shutdown.clone());
    Ok(base_response(StatusCode::OK)
        .header(header::CONTENT_TYPE, settings.live.framer.content_type())
        .header("X-Accel-Buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_default())
}
