//! Lifecycle events (`channel_created`, `client_subscribed`, …) published to the events channel
//! through Redis, so a subscriber on any node sees what happened on every node. They wait in a
//! bounded queue and are dropped (and logged) when Redis is too slow.

use super::record;
use super::RedisEngine;
use crate::broker::{lifecycle_event_text, ChannelId};
use crate::shutdown::Shutdown;
use bytes::Bytes;
use std::sync::Arc;

/// Lifecycle events waiting to be published to the events channel; beyond this they are dropped
/// (and logged) rather than piling up while Redis is slow.
pub(super) const MAX_QUEUED_EVENTS: usize = 10_000;

impl RedisEngine {
    /// Queues a lifecycle event for the events channel (published through Redis), if one is
    /// configured.
    pub(super) fn emit(&self, name: &'static str, channel: &ChannelId) {
        if self.settings().events_channel_id.is_some() && !self.is_events_channel(channel.as_str())
        {
            if let Err(err) = self.events.try_send((name, channel.clone())) {
                tracing::warn!(event = name, channel = channel.as_str(), error = %err, "events channel queue full; event dropped");
            }
        }
    }

    pub(super) async fn run_events(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::Receiver<(&'static str, ChannelId)>,
        mut shutdown: Shutdown,
    ) {
        loop {
            let (name, channel) = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = shutdown.recv() => return,
            };
            let Some(events) = self.settings().events_channel_id.clone() else {
                continue;
            };
            let text = lifecycle_event_text(name, &channel);
            let tail = Bytes::from(record::tail(true, None, None, &text));
            if let Err(failure) = self.publish_one(&events, tail, true, false, "").await {
                tracing::debug!(error = %failure, "could not publish to the events channel");
            }
        }
    }
}
