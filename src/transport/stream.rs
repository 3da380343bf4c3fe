//! Streaming mode: a chunked response carrying the header template, each message formatted with the
//! location's message template, pings (the ping message through the same template) and the footer.

use super::template::Template;
use super::Framer;
use crate::broker::message::PING_MESSAGE_ID;
use crate::broker::{ChannelId, Message};
use bytes::{Bytes, BytesMut};

/// Templates of one streaming location.
#[derive(Debug)]
pub struct StreamFramer {
    header: Bytes,
    template: Template,
    ping: Bytes,
    footer: Bytes,
    content_type: String,
}

impl StreamFramer {
    /// Compiles the location's templates; the ping frame is rendered once here.
    pub fn new(
        header: &str,
        message_template: &str,
        footer: &str,
        ping_text: &str,
        content_type: &str,
    ) -> StreamFramer {
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
        StreamFramer {
            header: Bytes::from(header.to_string()),
            template,
            ping: ping.freeze(),
            footer: Bytes::from(footer.to_string()),
            content_type: content_type.to_string(),
        }
    }
}

impl Framer for StreamFramer {
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
