//! Failures inside the Redis engine, typed: what went wrong (`FailureKind`) and whether what was
//! asked may have taken effect in Redis (`Applied`). They become sentences only at the engine's
//! boundary (`From<Failure> for BrokerError`, and `PartialPublish` for a publish to several
//! channels), so the code in between decides on kinds, not on text.

use crate::broker::{BrokerError, ChannelId};
use std::fmt;
use std::time::Duration;

/// Whether a failed operation took effect in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Surely not: nothing was sent, or Redis refused before running anything.
    No,
    /// Unknown: the failure came while it was under way (lost connection, no answer in time).
    Maybe,
    /// It ran; only its answer is missing or unreadable.
    Yes,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The shard (`Redis shard 0 (url)`, `Redis Cluster (seeds)`) could not serve: no connection,
    /// or the command failed (`reason`).
    Unavailable { shard: String, reason: String },
    /// No answer within `command_timeout`.
    Timeout { shard: String, limit: Duration },
    /// A script ran and answered something Herald cannot read (what).
    Malformed(&'static str),
    /// A limit refused it; nothing changed.
    Refused(BrokerError),
}

/// A failed Redis operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) applied: Applied,
}

impl Failure {
    /// A limit's refusal (nothing changed).
    pub(super) fn refused(error: BrokerError) -> Failure {
        Failure {
            kind: FailureKind::Refused(error),
            applied: Applied::No,
        }
    }

    /// True when Redis may have taken (or did take) what was asked.
    pub(super) fn maybe_applied(&self) -> bool {
        self.applied != Applied::No
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Unavailable { shard, reason } => {
                write!(f, "{shard} is unavailable: {reason}.")
            }
            FailureKind::Timeout { shard, limit } => write!(
                f,
                "{shard} is unavailable: no answer within command_timeout = {limit:?}."
            ),
            FailureKind::Malformed(what) => write!(
                f,
                "Redis answered something Herald cannot read ({what}); are two Herald versions sharing one key_prefix?"
            ),
            FailureKind::Refused(error) => error.fmt(f),
        }
    }
}

impl From<Failure> for BrokerError {
    fn from(failure: Failure) -> BrokerError {
        match failure.kind {
            FailureKind::Refused(error) => error,
            _ => BrokerError::Unavailable(failure.to_string()),
        }
    }
}

/// A publish that failed on some of its channels: the first failure, and per channel whether it
/// took the message, surely did not, or may have.
#[derive(Debug)]
pub(super) struct PartialPublish<'a> {
    pub(super) first: Failure,
    /// Every channel of the publish, in order.
    pub(super) channels: &'a [ChannelId],
    pub(super) published: Vec<&'a str>,
    pub(super) not_published: Vec<&'a str>,
    pub(super) unsure: Vec<&'a str>,
    /// The publish carried an `Idempotency-Key`.
    pub(super) keyed: bool,
}

impl PartialPublish<'_> {
    /// Refused as a whole by a limit: nothing went out, and the limit's own error says why.
    pub(super) fn refused_whole(&self) -> Option<&BrokerError> {
        match &self.first.kind {
            FailureKind::Refused(error) if self.published.is_empty() && self.unsure.is_empty() => {
                Some(error)
            }
            _ => None,
        }
    }
}

impl fmt::Display for PartialPublish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut explanation = vec![self.first.to_string()];
        if self.channels.len() == 1 {
            explanation.push(if self.unsure.is_empty() {
                "Nothing was published.".to_string()
            } else {
                "Unknown whether Redis took the publish (the failure came while it was under way)."
                    .to_string()
            });
        } else {
            if !self.published.is_empty() {
                explanation.push(format!("Published to {}.", self.published.join(", ")));
            }
            if !self.not_published.is_empty() {
                explanation.push(format!(
                    "Not published to {}.",
                    self.not_published.join(", ")
                ));
            }
            if !self.unsure.is_empty() {
                explanation.push(format!(
                    "Unknown whether Redis took the publish to {} (the failure came while it was under way).",
                    self.unsure.join(", ")
                ));
            }
        }
        explanation.push(
            match (self.keyed, self.unsure.is_empty()) {
                (true, _) => {
                    "Retry with the same Idempotency-Key: channels that took it are not published to again."
                }
                (false, true) if self.published.is_empty() => "Try again.",
                (false, true) => "Retry only the channels not published to.",
                (false, false) => {
                    "A retry may publish it twice; an Idempotency-Key header makes retries safe."
                }
            }
            .to_string(),
        );
        f.write_str(&explanation.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Failure {
        Failure {
            kind: FailureKind::Unavailable {
                shard: "Redis shard 1 (redis://x)".into(),
                reason: "connection refused".into(),
            },
            applied: Applied::No,
        }
    }

    #[test]
    fn failures_read_as_today() {
        assert_eq!(
            down().to_string(),
            "Redis shard 1 (redis://x) is unavailable: connection refused."
        );
        let timeout = Failure {
            kind: FailureKind::Timeout {
                shard: "Redis Cluster (redis://a,redis://b)".into(),
                limit: Duration::from_secs(1),
            },
            applied: Applied::Maybe,
        };
        assert_eq!(
            BrokerError::from(timeout),
            BrokerError::Unavailable(
                "Redis Cluster (redis://a,redis://b) is unavailable: no answer within command_timeout = 1s."
                    .into()
            )
        );
        let refused = Failure::refused(BrokerError::TooManyChannels { max: 3 });
        assert!(!refused.maybe_applied());
        assert_eq!(
            BrokerError::from(refused),
            BrokerError::TooManyChannels { max: 3 }
        );
    }

    #[test]
    fn partial_publish_says_what_happened_per_channel() {
        let channels: Vec<ChannelId> = ["a", "b", "c"]
            .into_iter()
            .map(ChannelId::new_unchecked)
            .collect();
        let partial = PartialPublish {
            first: down(),
            channels: &channels,
            published: vec!["a"],
            not_published: vec!["b"],
            unsure: vec!["c"],
            keyed: false,
        };
        assert_eq!(
            partial.to_string(),
            "Redis shard 1 (redis://x) is unavailable: connection refused. Published to a. Not published to b. \
             Unknown whether Redis took the publish to c (the failure came while it was under way). \
             A retry may publish it twice; an Idempotency-Key header makes retries safe."
        );
        let one = PartialPublish {
            first: down(),
            channels: &channels[..1],
            published: vec![],
            not_published: vec!["a"],
            unsure: vec![],
            keyed: true,
        };
        assert_eq!(
            one.to_string(),
            "Redis shard 1 (redis://x) is unavailable: connection refused. Nothing was published. \
             Retry with the same Idempotency-Key: channels that took it are not published to again."
        );
        assert!(one.refused_whole().is_none());
        let refused = PartialPublish {
            first: Failure::refused(BrokerError::TooManyChannels { max: 1 }),
            channels: &channels[..1],
            published: vec![],
            not_published: vec!["a"],
            unsure: vec![],
            keyed: false,
        };
        assert_eq!(
            refused.refused_whole(),
            Some(&BrokerError::TooManyChannels { max: 1 })
        );
    }
}
