//! Message templates: `~text~ ~id~ ~channel~ ~tag~ ~time~ ~event-id~ ~event-type~ ~size~` (the
//! module's tokens) and Herald's JSON-escaped forms `~text-json~ ~channel-json~ ~event-id-json~
//! ~event-type-json~`, compiled once per location and rendered once per message per location.
//! Token-like text inside a message is never expanded: rendering walks the compiled parts once.
//! `TemplateFramer` is the plain framing every template-based mode shares.

use super::Framer;
use crate::broker::message::PING_MESSAGE_ID;
use crate::broker::{ChannelId, Message};
use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Text,
    Id,
    Channel,
    Tag,
    Time,
    EventId,
    EventType,
    Size,
    TextJson,
    ChannelJson,
    EventIdJson,
    EventTypeJson,
}

const FIELDS: [(&str, Field); 12] = [
    ("text", Field::Text),
    ("id", Field::Id),
    ("channel", Field::Channel),
    ("tag", Field::Tag),
    ("time", Field::Time),
    ("event-id", Field::EventId),
    ("event-type", Field::EventType),
    ("size", Field::Size),
    ("text-json", Field::TextJson),
    ("channel-json", Field::ChannelJson),
    ("event-id-json", Field::EventIdJson),
    ("event-type-json", Field::EventTypeJson),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Field),
}

/// A compiled message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    literal_len: usize,
}

impl Template {
    /// Compiles a template. Text between `~` that is not a known token stays literal.
    pub fn compile(source: &str) -> Template {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(start) = rest.find('~') {
            let after = &rest[start + 1..];
            let token = after.find('~').and_then(|end| {
                FIELDS
                    .iter()
                    .find(|(name, _)| *name == &after[..end])
                    .map(|(_, field)| (end, *field))
            });
            match token {
                Some((end, field)) => {
                    literal.push_str(&rest[..start]);
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                    rest = &after[end + 1..];
                }
                None => {
                    literal.push_str(&rest[..=start]);
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let literal_len = parts
            .iter()
            .map(|p| match p {
                Part::Literal(s) => s.len(),
                Part::Field(_) => 0,
            })
            .sum();
        Template { parts, literal_len }
    }

    /// True when the template is exactly `~text~` (the message text is sent as it is).
    pub fn is_plain_text(&self) -> bool {
        self.parts == [Part::Field(Field::Text)]
    }

    /// Renders `message` into `out`.
    pub fn render(&self, message: &Message, out: &mut BytesMut) {
        out.reserve(self.literal_len + message.text.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.put_slice(text.as_bytes()),
                Part::Field(field) => render_field(*field, message, out),
            }
        }
    }
}

fn render_field(field: Field, message: &Message, out: &mut BytesMut) {
    use std::fmt::Write;
    fn opt(value: &Option<Box<str>>) -> &str {
        value.as_deref().unwrap_or("")
    }
    match field {
        Field::Text => out.put_slice(&message.text),
        Field::Id => {
            let _ = write!(out, "{}", message.id);
        }
        Field::Channel => out.put_slice(message.channel.as_str().as_bytes()),
        Field::Tag => {
            let _ = write!(out, "{}", message.tag);
        }
        Field::Time => out.put_slice(httpdate::fmt_http_date(message.system_time()).as_bytes()),
        Field::EventId => out.put_slice(opt(&message.event_id).as_bytes()),
        Field::EventType => out.put_slice(opt(&message.event_type).as_bytes()),
        Field::Size => {
            let _ = write!(out, "{}", message.text.len());
        }
        Field::TextJson => json_escape(&String::from_utf8_lossy(&message.text), out),
        Field::ChannelJson => json_escape(message.channel.as_str(), out),
        Field::EventIdJson => json_escape(opt(&message.event_id), out),
        Field::EventTypeJson => json_escape(opt(&message.event_type), out),
    }
}

/// Writes `text` as the inside of a JSON string (no quotes), straight into `out`: quotes,
/// backslashes and control characters escaped, everything else as it is.
fn json_escape(text: &str, out: &mut BytesMut) {
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.put_slice(&bytes[plain_from..at]);
        if escape.is_empty() {
            use std::fmt::Write;
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.put_slice(escape);
        }
        plain_from = at + 1;
    }
    out.put_slice(&bytes[plain_from..]);
}

/// The module's plain framing, used by streaming, long-polling, polling and WebSocket: the header
/// template, each message through the message template, the ping message through the same template,
/// and the footer template.
#[derive(Debug)]
pub struct TemplateFramer {
    header: Bytes,
    template: Template,
    ping: Bytes,
    footer: Bytes,
    content_type: String,
}

impl TemplateFramer {
    /// Compiles the location's templates; the ping frame is rendered once here.
    pub fn new(
        header: &str,
        message_template: &str,
        footer: &str,
        ping_text: &str,
        content_type: &str,
    ) -> TemplateFramer {
        let template = Template::compile(message_template);
        let ping_message = Message::synthetic(
            ChannelId::new_unchecked(""),
            PING_MESSAGE_ID,
            crate::broker::message::unix_now(),
            0,
            Bytes::from(ping_text.to_string()),
        );
        let mut ping = BytesMut::new();
        template.render(&ping_message, &mut ping);
        TemplateFramer {
            header: Bytes::from(header.to_string()),
            template,
            ping: ping.freeze(),
            footer: Bytes::from(footer.to_string()),
            content_type: content_type.to_string(),
        }
    }
}

impl Framer for TemplateFramer {
    fn header(&self) -> Bytes {
        self.header.clone()
    }

    fn message(&self, message: &Message) -> Bytes {
        if self.template.is_plain_text() {
            return message.text.clone();
        }
        let mut out = BytesMut::new();
        self.template.render(message, &mut out);
        out.freeze()
    }

    fn ping(&self) -> Bytes {
        self.ping.clone()
    }

    fn footer(&self) -> Bytes {
        self.footer.clone()
    }

    fn content_type(&self) -> &str {
        &self.content_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::ChannelId;
    use bytes::Bytes;

    fn message(text: &'static str) -> Message {
        Message::synthetic(
            ChannelId::new_unchecked("news"),
            7,
            0,
            3,
            Bytes::from_static(text.as_bytes()),
        )
    }

    fn render(template: &str, msg: &Message) -> String {
        let mut out = BytesMut::new();
        Template::compile(template).render(msg, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn tokens_are_replaced() {
        let msg = message("hi");
        assert_eq!(
            render("~id~:~channel~:~text~:~size~:~tag~", &msg),
            "7:news:hi:2:3"
        );
        assert_eq!(render("~time~", &msg), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(render("[~event-id~|~event-type~]", &msg), "[|]");
    }

    #[test]
    fn unknown_tokens_and_lone_tildes_stay_literal() {
        let msg = message("x");
        assert_eq!(render("~nope~ ~ ~text~~", &msg), "~nope~ ~ x~");
    }

    #[test]
    fn tokens_inside_text_are_not_expanded() {
        let msg = message("~id~ ~text~");
        assert_eq!(render("<~text~>", &msg), "<~id~ ~text~>");
    }

    #[test]
    fn json_escape_matches_serde_json() {
        for text in [
            "plain",
            "say \"hi\"\n",
            "back\\slash\t\r",
            "ctl\u{1}\u{8}\u{c}\u{1f}",
            "ünï😀",
        ] {
            let mut out = BytesMut::new();
            json_escape(text, &mut out);
            let quoted = format!("\"{}\"", String::from_utf8(out.to_vec()).unwrap());
            let back: String = serde_json::from_str(&quoted).unwrap();
            assert_eq!(back, text);
        }
    }

    #[test]
    fn json_forms_escape() {
        let msg = message("say \"hi\"\n");
        assert_eq!(
            render("{\"t\":\"~text-json~\"}", &msg),
            "{\"t\":\"say \\\"hi\\\"\\n\"}"
        );
    }
}
