//! The subscriber location: parses the channels path (`ch1/ch2.b5`) and the client's recovery point
//! (`Last-Event-ID`, `If-Modified-Since` + `If-None-Match`, or the configured variables), subscribes,
//! and hands the subscription to the transport of the location's mode (or of the mode asked for with
//! `X-Nginx-PushStream-Mode`).

use super::access::LocationAccess;
use super::channels_path::{parse_subscriber_path, ChannelsPathExpr, RequestVars};
use super::error::HttpError;
use super::io::ConnectionGuard;
use super::response::base_response;
use super::response::{Body, Finish};
use super::router::{FormatVariant, SubscriberSettings};
use super::AppState;
use crate::broker::{BrokerError, Recovery, StartAt, SubscribeTo};
use crate::config::SubscriberMode;
use crate::metrics::ConnectionMetrics;
use crate::transport::live::{live_body, LiveOptions};
use crate::transport::longpoll::{self, PollAnswer};
use crate::transport::websocket::{self, WebSocketOptions};
use hyper::http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper::{header, HeaderMap, Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::{Duration, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The header that switches a streaming/polling/long-polling request to another mode.
const MODE_HEADER: &str = "X-Nginx-PushStream-Mode";

/// What a request needs to become a WebSocket: hyper's upgrade handle and the connection's guard
/// (its connection slot and drain handle), which the WebSocket's task keeps until it ends.
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    connection: ConnectionGuard,
}

impl Upgrade {
    /// Takes both from a request's extensions; `None` when the connection cannot be upgraded.
    pub fn take(extensions: &mut hyper::http::Extensions) -> Option<Upgrade> {
        let on_upgrade = extensions.remove::<OnUpgrade>()?;
        let connection = extensions.remove::<ConnectionGuard>()?;
        Some(Upgrade {
            on_upgrade,
            connection,
        })
    }
}

/// Handles one request to a subscriber location.
pub async fn handle(
    state: &AppState,
    settings: &SubscriberSettings,
    (access, client): (&LocationAccess, std::net::IpAddr),
    parts: &Parts,
    upgrade: Option<Upgrade>,
    vars: &RequestVars<'_>,
    channels_path: &str,
) -> Result<Response<Body>, HttpError> {
    if parts.method == Method::OPTIONS {
        return Ok(base_response(StatusCode::OK)
            .header(header::ALLOW, "GET")
            .header(header::CONTENT_LENGTH, "0")
            .finish(Body::empty()));
    }
    if parts.method != Method::GET {
        return Err(HttpError::method_not_allowed("GET"));
    }
    let mode = requested_mode(settings.mode, &parts.headers);
    let variant = settings.variant_for(vars).clone();
    if mode == SubscriberMode::WebSocket {
        let handshake = check_websocket_handshake(&parts.headers)?;
        let targets = subscribe_targets(state, settings, &parts.headers, vars, channels_path);
        if let Ok(targets) = &targets {
            authorize(state, access, vars, &parts.headers, targets).await?;
        }
        return Ok(upgrade_websocket(
            state,
            settings,
            variant,
            handshake,
            upgrade,
            targets,
            access.publish_gate(client, &parts.headers),
        )
        .await);
    }
    let targets = subscribe_targets(state, settings, &parts.headers, vars, channels_path)?;
    authorize(state, access, vars, &parts.headers, &targets).await?;
    match mode {
        SubscriberMode::LongPolling | SubscriberMode::Polling => {
            poll(
                state,
                settings,
                &variant,
                vars,
                &parts.headers,
                &targets,
                mode,
            )
            .await
        }
        _ => {
            let subscription = state.engine.subscribe(&targets, &settings.policy).await?;
            let recovery = subscription.recovery();
            let body = live_body(
                subscription,
                live_options(settings, &variant, mode),
                state.shutdown.clone(),
            );
            Ok(with_recovery(base_response(StatusCode::OK), recovery)
                .header(header::CONTENT_TYPE, variant.framer.content_type())
                .header("X-Accel-Buffering", "no")
                .finish(Body::from_stream(body)))
        }
    }
}

/// Header telling a client that named a recovery point whether it got everything after it.
pub const RECOVERY_HEADER: &str = "X-Herald-Recovery";

fn with_recovery(
    builder: hyper::http::response::Builder,
    recovery: Recovery,
) -> hyper::http::response::Builder {
    match recovery {
        Recovery::NotAsked => builder,
        other => builder.header(RECOVERY_HEADER, other.as_str()),
    }
}

fn live_options(
    settings: &SubscriberSettings,
    variant: &FormatVariant,
    mode: SubscriberMode,
) -> LiveOptions {
    LiveOptions {
        format: variant.format,
        framer: variant.framer.clone(),
        ping_interval: settings.ping_interval,
        connection_ttl: settings.connection_ttl,
        transport: mode.name(),
    }
}

/// The location's mode, or the one `X-Nginx-PushStream-Mode` asks for (streaming, polling and
/// long-polling locations only).
pub(crate) fn requested_mode(configured: SubscriberMode, headers: &HeaderMap) -> SubscriberMode {
    let switchable = matches!(
        configured,
        SubscriberMode::Streaming | SubscriberMode::Polling | SubscriberMode::LongPolling
    );
    let asked = headers
        .get(MODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match asked.as_deref() {
        Some("polling") if switchable => SubscriberMode::Polling,
        Some("long-polling") if switchable => SubscriberMode::LongPolling,
        _ => configured,
    }
}

/// Reads a value from the configured expression, else from the request header.
fn recovery_value(
    expr: &Option<ChannelsPathExpr>,
    vars: &RequestVars<'_>,
    headers: &HeaderMap,
    name: &str,
) -> Option<String> {
    let value = match expr {
        Some(expr) => expr.eval(vars),
        None => headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
    };
    let value = value.trim().to_string();
    (!value.is_empty()).then_some(value)
}

/// Parses an Etag / `If-None-Match` tag: `W/` prefix, quotes and sign are ignored.
fn parse_tag(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text.trim_matches('"').trim_start_matches(['+', '-']);
    text.parse().ok()
}

/// Parses an HTTP date into seconds since the epoch.
fn parse_time(text: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(text).ok()?;
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Where the client says it stands: `Last-Event-ID` first, then `If-Modified-Since` (+ tag).
fn client_start(
    settings: &SubscriberSettings,
    vars: &RequestVars<'_>,
    headers: &HeaderMap,
) -> StartAt {
    if let Some(event_id) = recovery_value(&settings.last_event_id, vars, headers, "Last-Event-ID")
    {
        return StartAt::AfterEventId(event_id);
    }
    let time = recovery_value(
        &settings.last_received_message_time,
        vars,
        headers,
        "If-Modified-Since",
    )
    .and_then(|t| parse_time(&t));
    let tag = recovery_value(
        &settings.last_received_message_tag,
        vars,
        headers,
        "If-None-Match",
    )
    .and_then(|t| parse_tag(&t));
    match time {
        Some(time) => StartAt::After { time, tag },
        None => StartAt::Live,
    }
}

/// The channels to subscribe and where each starts (`.bN` wins over the client's recovery point).
/// Token, upstream and private-channel checks of the location, for the channels asked for.
async fn authorize(
    state: &AppState,
    access: &LocationAccess,
    vars: &RequestVars<'_>,
    headers: &HeaderMap,
    targets: &[SubscribeTo],
) -> Result<(), HttpError> {
    let channels: Vec<&str> = targets.iter().map(|t| t.channel.as_str()).collect();
    access
        .check_subscriber(
            vars,
            headers,
            &channels,
            &state.routes().private_channel_prefixes,
        )
        .await
}

fn subscribe_targets(
    state: &AppState,
    settings: &SubscriberSettings,
    headers: &HeaderMap,
    vars: &RequestVars<'_>,
    channels_path: &str,
) -> Result<Vec<SubscribeTo>, HttpError> {
    let requested = parse_subscriber_path(channels_path);
    if requested.is_empty() {
        return Err(BrokerError::NoChannelId.into());
    }
    let routes = state.routes();
    if let Some(max) = routes.max_channels_per_subscription {
        if requested.len() as u64 > max {
            crate::metrics::count_limit_refusal("max_channels_per_subscription");
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!("Too many channels in one subscription. Limit: max_channels_per_subscription = {max}."),
            ));
        }
    }
    let client = client_start(settings, vars, headers);
    let mut targets: Vec<SubscribeTo> = Vec::with_capacity(requested.len());
    for channel in &requested {
        let id = routes.rules.parse(channel.id)?;
        let start = if channel.backtrack > 0 {
            StartAt::Backtrack(channel.backtrack)
        } else {
            client.clone()
        };
        match targets.iter_mut().find(|t| t.channel == id) {
            // The same channel twice: one cursor; the later mention wins.
            Some(existing) => existing.start = start,
            None => targets.push(SubscribeTo { channel: id, start }),
        }
    }
    Ok(targets)
}

fn http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Long-polling and polling.
async fn poll(
    state: &AppState,
    settings: &SubscriberSettings,
    variant: &FormatVariant,
    vars: &RequestVars<'_>,
    headers: &HeaderMap,
    targets: &[SubscribeTo],
    mode: SubscriberMode,
) -> Result<Response<Body>, HttpError> {
    let callback = vars.arg("callback").filter(|v| !v.is_empty());
    if let Some(name) = &callback {
        if !longpoll::valid_callback(name) {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "Invalid callback name: use letters, digits, _, $, . and [] only.",
            ));
        }
    }
    let (watermark, mut subscription) = state
        .engine
        .subscribe_with_watermark(targets, &settings.policy)
        .await?;
    let recovery = subscription.recovery();
    let mut metrics = ConnectionMetrics::open(mode.name());
    let wait = mode == SubscriberMode::LongPolling;
    let answer = longpoll::poll(
        state.engine.broker(),
        &mut subscription,
        watermark,
        wait,
        settings.longpolling_ttl,
        state.shutdown.clone(),
    )
    .await;
    drop(subscription);
    let content_type = if callback.is_some() {
        "application/javascript"
    } else {
        variant.framer.content_type()
    };
    let respond = |status: StatusCode, last_modified: String, etag: String, body: Body| {
        with_recovery(base_response(status), recovery)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::LAST_MODIFIED, last_modified)
            .header(header::ETAG, etag)
            .finish(body)
    };
    Ok(match answer {
        PollAnswer::Messages { messages, newest } => {
            for message in &messages {
                // Bytes of the frame as written (rendered once per location and cached).
                let frame = message.frame(variant.format, |m| variant.framer.message(m));
                metrics.delivered(frame.len(), message.published_at);
            }
            let body = longpoll::render_body(
                &*variant.framer,
                variant.format,
                &messages,
                callback.as_deref(),
            );
            respond(
                StatusCode::OK,
                http_date(newest.0),
                format!("W/{}", newest.1),
                Body::from(body),
            )
        }
        PollAnswer::NothingNew => {
            // Echo the client's point so that it keeps its place.
            let echo = |name: header::HeaderName| {
                headers
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            let mut builder = with_recovery(base_response(StatusCode::NOT_MODIFIED), recovery);
            let (since, tag) = (echo(header::IF_MODIFIED_SINCE), echo(header::IF_NONE_MATCH));
            if !since.is_empty() {
                builder = builder.header(header::LAST_MODIFIED, since);
            }
            if !tag.is_empty() {
                builder = builder.header(header::ETAG, tag);
            }
            builder.finish(Body::empty())
        }
        PollAnswer::TimedOut { point } if settings.timeout_with_body => {
            let timed_out = [longpoll::timed_out_message()];
            let body = longpoll::render_body(
                &*variant.framer,
                variant.format,
                &timed_out,
                callback.as_deref(),
            );
            respond(
                StatusCode::OK,
                http_date(point.0),
                format!("W/{}", point.1),
                Body::from(body),
            )
        }
        PollAnswer::TimedOut { point } => respond(
            StatusCode::NOT_MODIFIED,
            http_date(point.0),
            format!("W/{}", point.1),
            Body::empty(),
        ),
    })
}

/// The `Sec-WebSocket-Key` of a valid handshake.
struct Handshake {
    key: String,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn check_websocket_handshake(headers: &HeaderMap) -> Result<Handshake, HttpError> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok());
    let version = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok());
    let (Some(key), Some(version), true, true) = (
        key,
        version,
        header_has_token(headers, header::CONNECTION, "upgrade"),
        header_has_token(headers, header::UPGRADE, "websocket"),
    ) else {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "Don't have at least one of the mandatory headers: Connection, Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version",
        ));
    };
    let key = key.trim();
    if !is_websocket_key(key) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "Invalid Sec-WebSocket-Key: it must be the base64 encoding of 16 bytes (24 characters).",
        ));
    }
    if !matches!(version.trim(), "8" | "13") {
        let mut err = HttpError::new(
            StatusCode::BAD_REQUEST,
            "Version not supported. Supported versions: 8, 13",
        );
        err.headers
            .push((header::SEC_WEBSOCKET_VERSION, "8, 13".into()));
        return Err(err);
    }
    Ok(Handshake {
        key: key.to_string(),
    })
}

/// RFC 6455 4.2.1: `Sec-WebSocket-Key` is the base64 encoding (with padding) of 16 random bytes.
fn is_websocket_key(key: &str) -> bool {
    use base64::Engine;
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|nonce| nonce.len() == 16)
}

/// Answers 101 and runs the subscriber on the upgraded connection. A refused subscription is told in
/// a close frame after the handshake, as the module does, since browsers cannot read HTTP errors.
async fn upgrade_websocket(
    state: &AppState,
    settings: &SubscriberSettings,
    variant: FormatVariant,
    handshake: Handshake,
    upgrade: Option<Upgrade>,
    targets: Result<Vec<SubscribeTo>, HttpError>,
    publish_gate: Option<crate::transport::websocket::PublishGate>,
) -> Response<Body> {
    let Some(Upgrade {
        on_upgrade,
        connection,
    }) = upgrade
    else {
        return HttpError::new(
            StatusCode::BAD_REQUEST,
            "This connection cannot be upgraded.",
        )
        .into_response();
    };
    let subscription = match targets {
        Ok(t) => state
            .engine
            .subscribe(&t, &settings.policy)
            .await
            .map_err(HttpError::from),
        Err(err) => Err(err),
    };
    let recovery = subscription
        .as_ref()
        .map_or(Recovery::NotAsked, |s| s.recovery());
    let routes = state.routes();
    let options = WebSocketOptions {
        live: live_options(settings, &variant, SubscriberMode::WebSocket),
        allow_publish: settings.websocket_allow_publish,
        publish_gate,
        max_message_size: usize::try_from(routes.max_body_size).unwrap_or(usize::MAX),
        message_timeout: routes.websocket_message_timeout,
        buffered_bytes: Some((state.buffered_bytes.clone(), routes.max_buffered_body_size)),
    };
    let engine = state.engine.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        // The connection's slot and drain handle stay with the WebSocket until it ends.
        let _connection = connection;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(error = %err, "websocket upgrade failed");
                return;
            }
        };
        let io = TokioIo::new(upgraded);
        match subscription {
            Ok(subscription) => websocket::run(io, subscription, options, engine, shutdown).await,
            Err(err) => websocket::refuse(io, &options, err.status.as_u16(), &err.explain).await,
        }
    });
    with_recovery(base_response(StatusCode::SWITCHING_PROTOCOLS), recovery)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(handshake.key.as_bytes()),
        )
        .finish(Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_times_parse_like_the_module() {
        assert_eq!(parse_tag("W/5"), Some(5));
        assert_eq!(parse_tag("\"7\""), Some(7));
        assert_eq!(parse_tag("-3"), Some(3));
        assert_eq!(parse_tag("x"), None);
        assert_eq!(parse_time("Thu, 01 Jan 1970 00:00:10 GMT"), Some(10));
        assert_eq!(parse_time("yesterday"), None);
    }
}
