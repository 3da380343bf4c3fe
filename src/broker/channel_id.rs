//! `ChannelId`, the validated name of a channel, and the rules that validate it at the edge
//! (length, allowed characters, reserved names). Inner code only ever sees a `ChannelId`.

use super::BrokerError;
use regex::Regex;
use std::fmt;
use std::sync::Arc;

/// A channel name that passed the configured rules. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(Arc<str>);

impl ChannelId {
    /// Wraps a name without validation: for synthetic messages and tests only.
    pub fn new_unchecked(name: &str) -> ChannelId {
        ChannelId(Arc::from(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ChannelId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The configured rules for channel names.
#[derive(Debug, Clone)]
pub struct ChannelIdRules {
    max_length: Option<u64>,
    pattern: Regex,
    pattern_text: String,
}

impl ChannelIdRules {
    /// Builds the rules; `pattern` must match the whole id.
    pub fn new(max_length: Option<u64>, pattern: &str) -> Result<ChannelIdRules, regex::Error> {
        Ok(ChannelIdRules {
            max_length,
            pattern: Regex::new(&format!("^(?:{pattern})$"))?,
            pattern_text: pattern.to_string(),
        })
    }

    /// Validates a channel name for publishing or subscribing: reserved names (`ALL`, anything
    /// with `*`) are refused, as are names that are too long or contain characters not allowed.
    pub fn parse(&self, name: &str) -> Result<ChannelId, BrokerError> {
        self.check_shape(name)?;
        if name == "ALL" || name.contains('*') {
            return Err(BrokerError::ReservedChannelId);
        }
        Ok(ChannelId(Arc::from(name)))
    }

    /// Validates a name used only to look channels up (statistics, channel info), where the
    /// reserved forms are queries rather than errors.
    pub fn check_shape(&self, name: &str) -> Result<(), BrokerError> {
        if name.is_empty() {
            return Err(BrokerError::NoChannelId);
        }
        if let Some(max) = self.max_length {
            if name.len() as u64 > max {
                return Err(BrokerError::ChannelIdTooLong { max });
            }
        }
        if !self.pattern.is_match(name) {
            return Err(BrokerError::ChannelIdNotAllowed {
                pattern: self.pattern_text.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_reserved_long_and_odd_names() {
        let rules =
            ChannelIdRules::new(Some(5), crate::config::DEFAULT_CHANNEL_ID_PATTERN).unwrap();
        assert!(rules.parse("news").is_ok());
        assert!(matches!(rules.parse(""), Err(BrokerError::NoChannelId)));
        assert!(matches!(
            rules.parse("toolong"),
            Err(BrokerError::ChannelIdTooLong { max: 5 })
        ));
        assert!(matches!(
            rules.parse("ALL"),
            Err(BrokerError::ReservedChannelId)
        ));
        assert!(matches!(
            rules.parse("a*"),
            Err(BrokerError::ReservedChannelId)
        ));
        assert!(matches!(
            rules.parse("a b"),
            Err(BrokerError::ChannelIdNotAllowed { .. })
        ));
    }
}
