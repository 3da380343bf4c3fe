//! Long-polling and polling: one response per batch. The answer holds every message newer than the
//! client's point (stored messages found by the subscription's start, or new ones it waited for), and
//! the (time, tag) of the newest one so the client can chain requests (`Last-Modified`/`Etag`).
//!
//! Several channels: a message is only sent once every older message of every subscribed channel is
//! visible (the broker's watermark), so a chained client never skips a message published concurrently
//! on another channel with a smaller (time, tag); younger ones are left for the next request.

use super::Framer;
use crate::broker::{Broker, ChannelId, Event, FormatId, Message, Subscription};
use crate::shutdown::Shutdown;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;

/// Id of the message a timed-out long-poll answers with when `timeout_with_body` is on.
pub const TIMED_OUT_MESSAGE_ID: i64 = -3;

/// What a poll found.
#[derive(Debug)]
pub enum PollAnswer {
    /// Messages to send, oldest first, and the (time, tag) of the newest.
    Messages {
        /// The messages.
        messages: Vec<Arc<Message>>,
        /// Key of the newest message.
        newest: (u64, u64),
    },
    /// Polling with nothing newer than the client's point.
    NothingNew,
    /// The long-polling wait ended without a message (TTL or shutdown); `point` is where the client
    /// stands (the watermark when it subscribed).
    TimedOut {
        /// Resume point for the client.
        point: (u64, u64),
    },
}

/// Runs one poll. `watermark` is `broker.watermark()` read *before* subscribing. With `wait` off
/// (polling), answers at once.
pub async fn poll(
    broker: &Broker,
    subscription: &mut Subscription,
    watermark: (u64, u64),
    wait: bool,
    ttl: Option<Duration>,
    mut shutdown: Shutdown,
) -> PollAnswer {
    let single_channel = subscription.channels().count() <= 1;
    let mut pending: Vec<Arc<Message>> = subscription.take_backlog();
    let mut limit = watermark;
    let mut events = Vec::new();
    let deadline = ttl.map(|ttl| tokio::time::Instant::now() + ttl);
    loop {
        subscription.poll_events(&mut events);
        for event in events.drain(..) {
            match event {
                Event::Message(message) | Event::ChannelDeleted(message) => pending.push(message),
                // A long-poll lives for one batch; a lag only means some messages went by unseen.
                Event::Lagged { .. } => {}
                // One batch per request: the next request's recovery point tells what was lost.
                Event::HistoryLost { .. } => {}
            }
        }
        let (ready, later): (Vec<_>, Vec<_>) = if single_channel {
            (std::mem::take(&mut pending), Vec::new())
        } else {
            pending.drain(..).partition(|m| (m.time, m.tag) <= limit)
        };
        if !ready.is_empty() {
            let newest = ready
                .iter()
                .map(|m| (m.time, m.tag))
                .max()
                .unwrap_or(watermark);
            return PollAnswer::Messages {
                messages: ready,
                newest,
            };
        }
        if !later.is_empty() {
            // Everything read is above the watermark: read it again and retry at once.
            pending = later;
            limit = broker.watermark();
            continue;
        }
        if !wait {
            return PollAnswer::NothingNew;
        }
        if subscription.is_empty() {
            return PollAnswer::TimedOut { point: watermark };
        }
        let sleep = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = subscription.changed() => limit = broker.watermark(),
            _ = sleep => return PollAnswer::TimedOut { point: watermark },
            _ = shutdown.recv() => return PollAnswer::TimedOut { point: watermark },
        }
    }
}

/// The body of a long-poll/poll answer: header, messages, footer; or with a JSONP `callback`,
/// `callback([m1,m2]);`.
pub fn render_body(
    framer: &dyn Framer,
    format: FormatId,
    messages: &[Arc<Message>],
    callback: Option<&str>,
) -> Bytes {
    let frames: Vec<Bytes> = messages
        .iter()
        .map(|m| m.frame(format, |m| framer.message(m)))
        .collect();
    let (header, footer) = (framer.header(), framer.footer());
    if let ([frame], None, true, true) = (
        frames.as_slice(),
        callback,
        header.is_empty(),
        footer.is_empty(),
    ) {
        // The usual long-poll answer: the shared frame itself, no copy.
        return frame.clone();
    }
    let mut out = BytesMut::new();
    match callback {
        Some(callback) => {
            out.put_slice(callback.as_bytes());
            out.put_slice(b"([");
            for (i, frame) in frames.iter().enumerate() {
                if i > 0 {
                    out.put_u8(b',');
                }
                out.put_slice(frame);
            }
            out.put_slice(b"]);\r\n");
        }
        None => {
            out.put_slice(&header);
            for frame in &frames {
                out.put_slice(frame);
            }
            out.put_slice(&footer);
        }
    }
    out.freeze()
}

/// The message a timed-out long-poll sends when `timeout_with_body` is on.
pub fn timed_out_message() -> Arc<Message> {
    Arc::new(Message::synthetic(
        ChannelId::new_unchecked(""),
        TIMED_OUT_MESSAGE_ID,
        0,
        0,
        Bytes::from_static(b"Timed out"),
    ))
}

/// Is `name` safe to echo as a JSONP callback (a JavaScript identifier path such as `cb` or `a.b[0]`)?
pub fn valid_callback(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.' | b'[' | b']'))
}
