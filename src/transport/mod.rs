//! Transports: how a subscription's events become bytes on the wire. `template` renders messages and
//! holds the plain framing (`TemplateFramer`); `eventsource` frames SSE; `padding` pads frames for
//! matching user agents; `live` is the loop of long-lived HTTP connections (streaming, EventSource);
//! `longpoll` answers long-polling and polling; `websocket` runs WebSocket subscribers. Transports
//! depend on `broker` and `template` only, never on each other or on HTTP routing.

pub mod eventsource;
pub mod live;
pub mod longpoll;
pub mod padding;
pub mod template;
pub mod websocket;

use crate::broker::{ChannelId, Message};
use bytes::Bytes;

/// Turns messages into the bytes one subscriber location writes.
pub trait Framer: Send + Sync + std::fmt::Debug {
    /// Sent once when the subscriber connects.
    fn header(&self) -> Bytes;
    /// One message (published or channel-deleted), fully framed.
    fn message(&self, message: &Message) -> Bytes;
    /// Tells a live subscriber that `channel`'s history was lost (its engine restarted without its
    /// data) and what follows is its new history; empty where the framing has no way to say it
    /// apart from a message (the default).
    fn history_lost(&self, _channel: &ChannelId) -> Bytes {
        Bytes::new()
    }
    /// One keepalive ping.
    fn ping(&self) -> Bytes;
    /// Sent just before the server ends the connection.
    fn footer(&self) -> Bytes;
    /// `Content-Type` of the response.
    fn content_type(&self) -> &str;
}
