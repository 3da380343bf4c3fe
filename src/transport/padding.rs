//! Padding by user agent (the module's `padding_by_user_agent`): old browsers and some proxies buffer
//! small chunks, so matching clients get the header and each message padded to a minimum size. Each
//! rule is its own output format, so padded frames are still rendered once and shared.

use super::Framer;
use crate::broker::Message;
use bytes::{BufMut, Bytes, BytesMut};
use regex::Regex;

/// One rule: user agents matching `pattern` get header and messages padded to these sizes.
#[derive(Debug, Clone)]
pub struct PaddingRule {
    /// The user-agent pattern.
    pub pattern: Regex,
    /// Minimum size of the header chunk.
    pub header_min: usize,
    /// Minimum size of each message chunk.
    pub message_min: usize,
}

/// The rules of one location, in order (the first match wins).
#[derive(Debug, Clone, Default)]
pub struct PaddingRules(pub Vec<PaddingRule>);

impl PaddingRules {
    /// Parses `regex,header_min,message_min[:regex,header_min,message_min…]`.
    pub fn parse(text: &str) -> Result<PaddingRules, String> {
        let mut rules = Vec::new();
        for rule in text.split(':').filter(|r| !r.trim().is_empty()) {
            let mut parts = rule.rsplitn(3, ',');
            let (Some(message), Some(header), Some(pattern)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "rule {rule:?} must be regex,header_min_size,message_min_size"
                ));
            };
            let size = |value: &str, what: &str| {
                value.trim().parse::<usize>().map_err(|_| {
                    format!("rule {rule:?}: {what} {value:?} is not a number of bytes")
                })
            };
            rules.push(PaddingRule {
                pattern: Regex::new(pattern)
                    .map_err(|e| format!("rule {rule:?}: invalid regex: {e}"))?,
                header_min: size(header, "header_min_size")?,
                message_min: size(message, "message_min_size")?,
            });
        }
        Ok(PaddingRules(rules))
    }

    /// Index of the first rule matching `user_agent`.
    pub fn find(&self, user_agent: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|rule| rule.pattern.is_match(user_agent))
    }
}

/// How padding bytes look in a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingStyle {
    /// Line breaks (streaming): clients ignore whitespace between messages.
    LineBreaks,
    /// An SSE comment line (EventSource): ignored by EventSource clients.
    SseComment,
}

/// A framer whose header and messages are padded to minimum sizes.
#[derive(Debug)]
pub struct PaddedFramer {
    inner: std::sync::Arc<dyn Framer>,
    header_min: usize,
    message_min: usize,
    style: PaddingStyle,
}

impl PaddedFramer {
    /// Wraps `inner` with `rule`'s sizes.
    pub fn new(
        inner: std::sync::Arc<dyn Framer>,
        rule: &PaddingRule,
        style: PaddingStyle,
    ) -> PaddedFramer {
        PaddedFramer {
            inner,
            header_min: rule.header_min,
            message_min: rule.message_min,
            style,
        }
    }

    fn pad(&self, frame: Bytes, min: usize) -> Bytes {
        if frame.len() >= min {
            return frame;
        }
        let missing = min - frame.len();
        let mut out = BytesMut::with_capacity(min + 2);
        out.put_slice(&frame);
        match self.style {
            PaddingStyle::LineBreaks => {
                for _ in 0..missing / 2 {
                    out.put_slice(b"\r\n");
                }
                if missing % 2 == 1 {
                    out.put_u8(b'\n');
                }
            }
            PaddingStyle::SseComment => {
                out.put_u8(b':');
                out.put_bytes(b' ', missing.saturating_sub(2));
                out.put_u8(b'\n');
            }
        }
        out.freeze()
    }
}

impl Framer for PaddedFramer {
    fn header(&self) -> Bytes {
        self.pad(self.inner.header(), self.header_min)
    }

    fn message(&self, message: &Message) -> Bytes {
        self.pad(self.inner.message(message), self.message_min)
    }

    fn ping(&self) -> Bytes {
        self.inner.ping()
    }

    fn history_lost(&self, channel: &crate::broker::ChannelId) -> Bytes {
        self.inner.history_lost(channel)
    }

    fn footer(&self) -> Bytes {
        self.inner.footer()
    }

    fn content_type(&self) -> &str {
        self.inner.content_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match_in_order() {
        let rules = PaddingRules::parse("MSIE [6-8],1024,256:Android,512,0").unwrap();
        assert_eq!(rules.find("Mozilla/4.0 (compatible; MSIE 7.0)"), Some(0));
        assert_eq!(rules.find("Linux; Android 4"), Some(1));
        assert_eq!(rules.find("curl/8"), None);
        assert!(PaddingRules::parse("MSIE,abc,1").is_err());
        assert!(PaddingRules::parse("(,1,1").is_err());
        assert!(PaddingRules::parse("nocommas").is_err());
    }
}
