//! Transports: how a subscription's events become bytes on the wire. `template` renders messages;
//! each mode has one module (`stream`, `eventsource`) implementing `Framer`; `live` is the loop shared
//! by long-lived connections (backlog, messages, pings, TTL, deletion, shutdown, footer). Transports
//! depend on `broker` and `template` only, never on each other or on HTTP routing.

pub mod eventsource;
pub mod live;
pub mod stream;
pub mod template;

use crate::broker::Message;
use bytes::Bytes;

/// Turns messages into the bytes one subscriber location writes.
pub trait Framer: Send + Sync + std::fmt::Debug {
    /// Sent once when the subscriber connects.
    fn header(&self) -> Bytes;
    /// One message (published or channel-deleted), fully framed.
    fn message(&self, message: &Message) -> Bytes;
    /// One keepalive ping.
    fn ping(&self) -> Bytes;
    /// Sent just before the server ends the connection.
    fn footer(&self) -> Bytes;
    /// `Content-Type` of the response.
    fn content_type(&self) -> &str;
}
