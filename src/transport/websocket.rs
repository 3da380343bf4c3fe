//! WebSocket subscribers: the header template, backtracked and new messages (one text frame each,
//! through the location's template), ping frames at the interval, the footer and a normal close when
//! the server ends the connection. Text frames from the client are published to the subscribed
//! channels when the location allows it; binary frames, invalid UTF-8 and oversized messages end the
//! connection with the matching close code, and so does a message the client leaves unfinished for
//! longer than `websocket_message_timeout` (`unfinished` follows the client's frames for that). Any
//! failed write ends the connection and frees the subscriber.
//!
//! Outgoing data is bounded per connection: the loop reads the client only when everything queued
//! before (frames, a pong, at most the 16 KiB write buffer plus one frame) has been written, so a
//! client that stops reading stops being read, and `send_timeout` ends it.

mod unfinished;

use super::live::{connection_timers, LiveOptions};
use crate::broker::{Event, Publish, Subscription};
use crate::engine::Engine;
use crate::metrics::ConnectionMetrics;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use unfinished::FrameBoundaries;

/// How one WebSocket location runs its subscribers.
#[derive(Clone)]
pub struct WebSocketOptions {
    /// Format, framer, ping interval and lifetime, as for other long-lived connections.
    pub live: LiveOptions,
    /// Publish the client's text frames to the subscribed channels.
    pub allow_publish: bool,
    /// Takes each publish from the client's budget (`publish_rate_limit`); a refusal closes the
    /// connection with 1008 and the refusal's text.
    pub publish_gate: Option<PublishGate>,
    /// Largest message from the client (the sum of its fragments) and largest frame
    /// (`max_body_size`); larger ones close the connection with 1009.
    pub max_message_size: usize,
    /// A message the client started must be complete within this time
    /// (`websocket_message_timeout`); otherwise the connection is closed with 1008.
    pub message_timeout: Duration,
    /// The server's budget for buffered request bytes and its limit (`max_buffered_body_size`): an
    /// unfinished message holds its bytes in it; when it does not fit, the connection is closed
    /// with 1013 (try again later).
    pub buffered_bytes: Option<(std::sync::Arc<crate::budget::ByteBudget>, u64)>,
}

impl std::fmt::Debug for WebSocketOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketOptions")
            .field("live", &self.live)
            .field("allow_publish", &self.allow_publish)
            .field("publish_gate", &self.publish_gate.is_some())
            .field("max_message_size", &self.max_message_size)
            .field("message_timeout", &self.message_timeout)
            .field(
                "buffered_bytes",
                &self.buffered_bytes.as_ref().map(|(_, limit)| limit),
            )
            .finish()
    }
}

/// Takes one publish from a client's budget: `Err(why)` when it is spent.
pub type PublishGate = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The protocol settings of a server-side WebSocket: `max_message_size` bounds a message (the sum
/// of its fragments) and each frame, checked from the frame header before its payload is read;
/// unmasked client frames fail the connection with 1002 (RFC 6455 5.1).
fn protocol_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
        .accept_unmasked_frames(false)
        // Clients send little: a small read buffer (the default is 128 KiB, zeroed on every read).
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
}

/// A frame as a WebSocket message: text when it is UTF-8 (always, for text published over HTTP),
/// binary otherwise.
fn frame_message(frame: Bytes) -> WsMessage {
    match Utf8Bytes::try_from(frame.clone()) {
        Ok(text) => WsMessage::Text(text),
        Err(_) => WsMessage::Binary(frame),
    }
}

fn close(code: CloseCode, reason: &str) -> WsMessage {
    // A close reason is at most 123 bytes; cut on a character boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }))
}

/// The server side of the WebSocket on the upgraded connection `io`, with Herald's protocol
/// settings; the client's frames are followed for the unfinished-message timeout.
async fn accept<S>(
    io: S,
    options: &WebSocketOptions,
) -> (
    WebSocketStream<FrameBoundaries<S>>,
    unfinished::UnfinishedMessage,
)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let budget = options
        .buffered_bytes
        .as_ref()
        .map(|(budget, limit)| (budget.share(), *limit));
    let (io, unfinished) = FrameBoundaries::new(io, budget);
    let config = protocol_config(options.max_message_size);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    (ws, unfinished)
}

/// Sends the module's error close frame (`{"http_status": N, "explain": "…"}`, code 1008) for a
/// subscription refused after the handshake on the upgraded connection `io`, then closes.
pub async fn refuse<S>(io: S, options: &WebSocketOptions, http_status: u16, explain: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, _) = accept(io, options).await;
    let payload = serde_json::json!({ "http_status": http_status, "explain": explain }).to_string();
    let _ = ws.send(close(CloseCode::Policy, &payload)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
}

/// Runs one WebSocket subscriber on the upgraded connection `io` until the client leaves or the
/// server ends the connection.
pub async fn run<S>(
    io: S,
    mut subscription: Subscription,
    options: WebSocketOptions,
    engine: Engine,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ws, mut unfinished) = accept(io, &options).await;
    let framer = options.live.framer.clone();
    let format = options.live.format;
    let mut metrics = ConnectionMetrics::open(options.live.transport);
    let mut first_frames = Vec::new();
    let header = framer.header();
    if !header.is_empty() {
        first_frames.push(header);
    }
    for message in subscription.take_backlog() {
        let frame = message.frame(format, |m| framer.message(m));
        metrics.delivered(frame.len(), message.published_at);
        first_frames.push(frame);
    }
    for frame in first_frames {
        if ws.feed(frame_message(frame)).await.is_err() {
            return;
        }
    }
    if ws.flush().await.is_err() {
        return;
    }
    let (ttl, mut ping) = connection_timers(&options.live);
    tokio::pin!(ttl);
    let message_timeout = options.message_timeout;
    let unfinished_too_long = unfinished.stalls(message_timeout);
    tokio::pin!(unfinished_too_long);
    let mut events = Vec::new();
    let mut wait_for_close_reply = true;
    let end: Option<WsMessage> = loop {
        if subscription.is_empty() {
            break Some(close(CloseCode::Normal, ""));
        }
        events.clear();
        tokio::select! {
            _ = subscription.next_events(&mut events) => {}
            _ = ping.tick() => {
                if ws.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
                metrics.pinged(2);
                continue;
            }
            incoming = ws.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    if options.allow_publish && !text.is_empty() {
                        if let Some(Err(refused)) = options.publish_gate.as_ref().map(|gate| gate()) {
                            break Some(close(CloseCode::Policy, &refused));
                        }
                        let channels: Vec<_> = subscription.channels().cloned().collect();
                        let publish = Publish {
                            text: Bytes::from(text),
                            event_id: None,
                            event_type: None,
                            store: true,
                            idempotency_key: None,
                        };
                        if let Err(err) = engine.publish(&channels, publish).await {
                            tracing::debug!(error = %err, "websocket publish refused");
                        }
                    }
                    continue;
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    break Some(close(CloseCode::Unsupported, "Binary frames are not accepted."));
                }
                // The protocol layer queued a pong: write it out before reading on. A client that
                // sends pings but never reads the pongs is then not read any further (TCP
                // back-pressure) until `send_timeout` ends the connection.
                Some(Ok(WsMessage::Ping(_))) => {
                    if ws.flush().await.is_err() {
                        break None;
                    }
                    continue;
                }
                Some(Ok(WsMessage::Pong(_) | WsMessage::Frame(_))) => continue,
                Some(Ok(WsMessage::Close(_))) => {
                    // The protocol layer queued the close reply: send it before leaving.
                    let _ = ws.flush().await;
                    break None;
                }
                None => break None,
                Some(Err(err)) => break error_close(&err),
            },
            _ = &mut ttl => break Some(close(CloseCode::Normal, "")),
            stalled = &mut unfinished_too_long => match stalled {
                unfinished::Stalled::TooLong => {
                    crate::metrics::count_limit_refusal("websocket_message_timeout");
                    break Some(close(
                        CloseCode::Policy,
                        &format!("Message not finished within {message_timeout:?} (websocket_message_timeout)."),
                    ));
                }
                unfinished::Stalled::OverBudget => {
                    crate::metrics::count_limit_refusal("max_buffered_body_size");
                    // Nothing more is read from this client: do not wait for its close reply.
                    wait_for_close_reply = false;
                    break Some(close(
                        CloseCode::Again,
                        "Too many unfinished messages and request bodies at once; retry later (max_buffered_body_size).",
                    ));
                }
            },
            _ = shutdown.recv() => break Some(close(CloseCode::Away, "Server shutting down.")),
        }
        let mut lagged = false;
        let mut failed = false;
        for event in events.drain(..) {
            match event {
                Event::Message(message) | Event::ChannelDeleted(message) => {
                    let frame = message.frame(format, |m| framer.message(m));
                    metrics.delivered(frame.len(), message.published_at);
                    if ws.feed(frame_message(frame)).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                Event::Lagged { channel, missed } => {
                    tracing::info!(%channel, missed, "slow websocket subscriber cut off");
                    lagged = true;
                }
                // A text frame would read as a message: the new history simply follows.
                Event::HistoryLost { .. } => {}
            }
        }
        if failed || ws.flush().await.is_err() {
            break None;
        }
        if lagged {
            break Some(close(CloseCode::Again, "Slow consumer: too far behind."));
        }
    };
    drop(subscription);
    if let Some(close_frame) = end {
        let footer = framer.footer();
        if !footer.is_empty() {
            let _ = ws.feed(frame_message(footer)).await;
        }
        let _ = ws.send(close_frame).await;
        // Wait briefly for the client's close reply so the close handshake completes.
        if wait_for_close_reply {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = ws.next().await {}
            })
            .await;
        }
    }
}

/// The close frame for a read error, when one can still be sent.
fn error_close(err: &WsError) -> Option<WsMessage> {
    if matches!(err, WsError::Capacity(_)) {
        crate::metrics::count_limit_refusal("max_body_size");
    }
    match err {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => Some(close(
            CloseCode::Size,
            &format!("Message of {size} bytes is over the limit of {max_size} bytes."),
        )),
        WsError::Capacity(_) => Some(close(CloseCode::Size, "Frame too large.")),
        WsError::Utf8(_) => Some(close(CloseCode::Invalid, "Text frame is not valid UTF-8.")),
        WsError::Protocol(problem) => Some(close(CloseCode::Protocol, &problem.to_string())),
        _ => None,
    }
}
