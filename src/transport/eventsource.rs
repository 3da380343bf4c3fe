//! EventSource (server-sent events) mode: `text/event-stream`. The header and footer templates become
//! comment lines; a message is an optional `id:` line (its Event-Id), an optional `event:` line (its
//! Event-Type), each line of the formatted message as its own `data:` line, and a blank line. Pings
//! are the comment `: -1`; a channel whose history was lost is the comment `: history-lost <id>`.

use super::template::Template;
use super::Framer;
use crate::broker::{ChannelId, Message};
use bytes::{BufMut, Bytes, BytesMut};

/// Templates of one EventSource location.
#[derive(Debug)]
pub struct EventSourceFramer {
    header: Bytes,
    template: Template,
    footer: Bytes,
}

const PING: &[u8] = b": -1\n\n";

impl EventSourceFramer {
    /// Compiles the location's templates.
    pub fn new(header: &str, message_template: &str, footer: &str) -> EventSourceFramer {
        EventSourceFramer {
            header: comment_lines(header, true),
            template: Template::compile(message_template),
            footer: comment_lines(footer, false),
        }
    }
}

/// Each line of `text` as an SSE comment. An empty header still sends one `:` comment so that the
/// client sees the stream open at once.
fn comment_lines(text: &str, always: bool) -> Bytes {
    let mut out = BytesMut::new();
    if text.is_empty() {
        if always {
            out.put_slice(b": \n\n");
        }
        return out.freeze();
    }
    for line in split_lines(text) {
        out.put_slice(b": ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Splits on `\r\n`, `\r` and `\n`, as the SSE format does.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split("\r\n").flat_map(|part| part.split(['\r', '\n']))
}

/// Strips line breaks from a value that must stay on one SSE field line.
fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

impl Framer for EventSourceFramer {
    fn header(&self) -> Bytes {
        self.header.clone()
    }

    fn message(&self, message: &Message) -> Bytes {
        let mut formatted = BytesMut::new();
        self.template.render(message, &mut formatted);
        let formatted = String::from_utf8_lossy(&formatted);
        let mut out = BytesMut::with_capacity(formatted.len() + 32);
        if let Some(id) = message.event_id.as_deref() {
            out.put_slice(b"id: ");
            out.put_slice(one_line(id).as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(kind) = message.event_type.as_deref() {
            out.put_slice(b"event: ");
            out.put_slice(one_line(kind).as_bytes());
            out.put_u8(b'\n');
        }
        for line in split_lines(&formatted) {
            out.put_slice(b"data: ");
            out.put_slice(line.as_bytes());
            out.put_u8(b'\n');
        }
        out.put_u8(b'\n');
        out.freeze()
    }

    fn ping(&self) -> Bytes {
        Bytes::from_static(PING)
    }

    fn history_lost(&self, channel: &ChannelId) -> Bytes {
        Bytes::from(format!(": history-lost {}\n\n", one_line(channel.as_str())))
    }

    fn footer(&self) -> Bytes {
        self.footer.clone()
    }

    fn content_type(&self) -> &str {
        "text/event-stream; charset=utf-8"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ChannelId;

    #[test]
    fn multi_line_message_becomes_data_lines() {
        let framer = EventSourceFramer::new("", "~text~", "");
        let msg = Message::synthetic(
            ChannelId::new_unchecked("c"),
            1,
            0,
            1,
            Bytes::from_static(b"a\nb\r\nc"),
        );
        assert_eq!(&framer.message(&msg)[..], b"data: a\ndata: b\ndata: c\n\n");
    }

    #[test]
    fn header_lines_become_comments() {
        let framer = EventSourceFramer::new("x\ny", "~text~", "");
        assert_eq!(&framer.header()[..], b": x\n: y\n\n");
        assert_eq!(
            &EventSourceFramer::new("", "~text~", "").header()[..],
            b": \n\n"
        );
    }
}
