//! EventSource (text/event-stream) parsing: the events of a body or of one frame, and reading the
//! next event of a subscriber.

#![allow(dead_code)]

use super::{Subscriber, WAIT};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `id:` line, if any.
    pub id: Option<String>,
    /// The `event:` line, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with "\n".
    pub data: String,
}

/// The events of SSE text, in order: a blank line dispatches the fields before it when they hold
/// data; comment lines (header, padding, pings) are skipped; a `\r\n` counts as `\n`. Any line
/// other than a comment, `id:`, `event:` or `data:` fails.
pub fn events(text: &str) -> Vec<Event> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    let (mut id, mut event, mut data): (Option<String>, Option<String>, Vec<&str>) =
        (None, None, Vec::new());
    for line in text.split('\n') {
        let field = |name: &str| {
            line.strip_prefix(name)
                .map(|v| v.strip_prefix(' ').unwrap_or(v))
        };
        if line.is_empty() {
            if !data.is_empty() {
                out.push(Event {
                    id: id.take(),
                    event: event.take(),
                    data: data.join("\n"),
                });
            }
            (id, event, data) = (None, None, Vec::new());
        } else if line.starts_with(':') {
            continue;
        } else if let Some(value) = field("id:") {
            id = Some(value.to_string());
        } else if let Some(value) = field("event:") {
            event = Some(value.to_string());
        } else if let Some(value) = field("data:") {
            data.push(value);
        } else {
            panic!("unexpected SSE line {line:?} in {text:?}");
        }
    }
    out
}

/// The one event of a frame (text up to and including its blank line).
pub fn event(frame: &str) -> Event {
    let mut all = events(frame);
    assert_eq!(all.len(), 1, "not one event: {frame:?}");
    all.remove(0)
}

/// Reads the next event frame of an EventSource subscriber, skipping comment frames (header, pings).
pub async fn next_event(sub: &mut Subscriber) -> Event {
    loop {
        let frame = sub.read_until("\n\n", WAIT).await;
        if !frame.starts_with(':') {
            return event(&frame);
        }
    }
}

/// The (id, data) of every event in `text`.
pub fn ids_and_data(text: &str) -> Vec<(Option<String>, String)> {
    events(text).into_iter().map(|e| (e.id, e.data)).collect()
}
