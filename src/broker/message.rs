//! Messages: what a publish stores and delivers (id, time, tag, event id/type, text), the frames rendered
//! from it once per output format, and the clock that hands out (time, tag) pairs.

use super::ChannelId;
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Id of the ping message the module sends to streaming subscribers.
pub const PING_MESSAGE_ID: i64 = -1;
/// Id of the message sent to subscribers of a deleted channel.
pub const CHANNEL_DELETED_MESSAGE_ID: i64 = -2;

/// Index of one output format (one per subscriber location). A message's frame for a format is
/// rendered by the first subscriber that needs it and shared by all others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatId(pub usize);

/// One published (or synthetic) message. Immutable once built, shared as `Arc<Message>`.
#[derive(Debug)]
pub struct Message {
    /// The channel it was published on (empty for pings).
    pub channel: ChannelId,
    /// Per-channel sequence number from 1; negative for synthetic messages (ping -1, deleted -2).
    pub id: i64,
    /// Publish time, seconds since the Unix epoch.
    pub time: u64,
    /// Orders messages published in the same second (across all channels), from 1.
    pub tag: u64,
    /// `Event-Id` header of the publish request.
    pub event_id: Option<Box<str>>,
    /// `Event-Type` header of the publish request.
    pub event_type: Option<Box<str>>,
    /// The message body as published.
    pub text: Bytes,
    /// When it was published (for publish-to-write latency).
    pub published_at: Instant,
    /// When a stored copy of this message expires.
    pub(crate) expires_at: Instant,
    frames: Box<[OnceLock<Bytes>]>,
}

/// The fields of a new message, as the broker assigns them.
pub(crate) struct MessageParts {
    pub channel: ChannelId,
    pub id: i64,
    pub time: u64,
    pub tag: u64,
    pub event_id: Option<Box<str>>,
    pub event_type: Option<Box<str>>,
    pub text: Bytes,
    pub expires_at: Instant,
}

impl Message {
    pub(crate) fn new(parts: MessageParts, format_count: usize) -> Message {
        Message {
            channel: parts.channel,
            id: parts.id,
            time: parts.time,
            tag: parts.tag,
            event_id: parts.event_id,
            event_type: parts.event_type,
            text: parts.text,
            published_at: Instant::now(),
            expires_at: parts.expires_at,
            frames: (0..format_count).map(|_| OnceLock::new()).collect(),
        }
    }

    /// A message that is never stored (pings and other synthetic messages built by transports).
    pub fn synthetic(channel: ChannelId, id: i64, time: u64, tag: u64, text: Bytes) -> Message {
        Message::new(
            MessageParts {
                channel,
                id,
                time,
                tag,
                event_id: None,
                event_type: None,
                text,
                expires_at: Instant::now(),
            },
            0,
        )
    }

    /// The frame of this message in `format`: rendered by `render` the first time, then shared.
    /// Formats outside the registered range (synthetic messages) are rendered on every call.
    pub fn frame(&self, format: FormatId, render: impl FnOnce(&Message) -> Bytes) -> Bytes {
        match self.frames.get(format.0) {
            Some(slot) => slot.get_or_init(|| render(self)).clone(),
            None => render(self),
        }
    }

    /// Publish time as `SystemTime`.
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(self.time)
    }
}

/// Hands out (time, tag): the tag counts messages within one second across all channels, so that
/// `(time, tag)` orders every message the process publishes.
#[derive(Debug)]
pub(crate) struct Clock {
    last: Mutex<(u64, u64)>,
}

/// Tags of the second the process starts in begin here, so that no message of this process
/// compares at or before a point a client kept from a previous process that stopped within that
/// same second (a restart cannot have handed out this many tags in one second).
const START_SECOND_TAG: u64 = 1 << 32;

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            last: Mutex::new((unix_now(), START_SECOND_TAG)),
        }
    }
}

impl Clock {
    pub fn next(&self) -> (u64, u64) {
        let now = unix_now();
        let mut last = self.last.lock();
        // Never go back in time, even if the wall clock does.
        if now > last.0 {
            *last = (now, 1);
        } else {
            last.1 += 1;
        }
        *last
    }

    /// Raises the clock to a (time, tag) another engine assigned, so the watermark covers it.
    pub fn observe(&self, time: u64, tag: u64) {
        let mut last = self.last.lock();
        if (time, tag) > *last {
            *last = (time, tag);
        }
    }

    /// The last (time, tag) handed out: every message with a key up to it is visible in its channel
    /// to anyone who takes the channel's lock after reading this.
    pub fn watermark(&self) -> (u64, u64) {
        *self.last.lock()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_orders_messages_within_a_second() {
        let clock = Clock::default();
        let (t1, g1) = clock.next();
        let (t2, g2) = clock.next();
        assert!((t2, g2) > (t1, g1));
    }

    #[test]
    fn frame_is_rendered_once_per_format() {
        let parts = MessageParts {
            channel: ChannelId::new_unchecked("c"),
            id: 1,
            time: 0,
            tag: 1,
            event_id: None,
            event_type: None,
            text: Bytes::from_static(b"x"),
            expires_at: Instant::now(),
        };
        let msg = Message::new(parts, 2);
        let mut renders = 0;
        for _ in 0..3 {
            msg.frame(FormatId(1), |m| {
                renders += 1;
                m.text.clone()
            });
        }
        assert_eq!(renders, 1);
    }
}
