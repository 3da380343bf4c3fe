//! The loop shared by long-lived HTTP subscriber connections (streaming, EventSource), and the
//! connection timers WebSocket shares with it: header, backtracked
//! messages, then new messages as they arrive, pings at the interval, and the footer when the
//! connection ends (TTL, every channel deleted, slow consumer, shutdown). Frames come from the
//! message's shared per-format cache, so fan-out renders each message once per location.

use super::Framer;
use crate::broker::{Event, FormatId, Subscription};
use crate::metrics::ConnectionMetrics;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// How one location runs its long-lived subscribers.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The location's output format (the message frame cache slot).
    pub format: FormatId,
    /// The location's framer.
    pub framer: Arc<dyn Framer>,
    /// Ping interval, if pings are on.
    pub ping_interval: Option<Duration>,
    /// Maximum connection lifetime.
    pub connection_ttl: Option<Duration>,
    /// Transport name for metrics (`streaming`, `eventsource`, `websocket`).
    pub transport: &'static str,
}

/// Why a live connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `subscriber_connection_ttl` elapsed.
    Ttl,
    /// Every channel of the subscription was deleted.
    ChannelsDeleted,
    /// The subscriber fell behind the recent window.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
}

/// The end-of-life timer (`connection_ttl`) and the ping interval of one connection; either never
/// fires when not configured.
pub fn connection_timers(options: &LiveOptions) -> (tokio::time::Sleep, tokio::time::Interval) {
    let far_future = crate::config::units::MAX_DURATION;
    let ttl = tokio::time::sleep(options.connection_ttl.unwrap_or(far_future));
    let ping_period = options.ping_interval.unwrap_or(far_future);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_period, ping_period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    (ttl, ping)
}

/// The response body of a long-lived subscriber: a stream of frames that ends with the footer.
pub fn live_body(
    mut subscription: Subscription,
    options: LiveOptions,
    mut shutdown: Shutdown,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        let framer = options.framer.clone();
        let format = options.format;
        let mut metrics = ConnectionMetrics::open(options.transport);
        let header = framer.header();
        if !header.is_empty() {
            yield Ok(header);
        }
        for message in subscription.take_backlog() {
            let frame = message.frame(format, |m| framer.message(m));
            metrics.delivered(frame.len(), message.published_at);
            yield Ok(frame);
        }
        let (ttl, mut ping) = connection_timers(&options);
        tokio::pin!(ttl);
        let mut events = Vec::new();
        let reason = loop {
            if subscription.is_empty() {
                break EndReason::ChannelsDeleted;
            }
            events.clear();
            tokio::select! {
                _ = subscription.next_events(&mut events) => {}
                _ = ping.tick() => {
                    let ping = framer.ping();
                    metrics.pinged(ping.len());
                    yield Ok(ping);
                    continue;
                }
                _ = &mut ttl => break EndReason::Ttl,
                _ = shutdown.recv() => break EndReason::Shutdown,
            }
            let mut lagged = false;
            for event in events.drain(..) {
                match event {
                    Event::Message(message) | Event::ChannelDeleted(message) => {
                        let frame = message.frame(format, |m| framer.message(m));
                        metrics.delivered(frame.len(), message.published_at);
                        yield Ok(frame);
                    }
                    Event::Lagged { channel, missed } => {
                        tracing::info!(%channel, missed, "slow subscriber cut off: it fell behind the recent-message window");
                        lagged = true;
                    }
                    Event::HistoryLost { channel } => {
                        let notice = framer.history_lost(&channel);
                        if !notice.is_empty() {
                            yield Ok(notice);
                        }
                    }
                }
            }
            if lagged {
                break EndReason::SlowConsumer;
            }
        };
        tracing::debug!(?reason, "subscriber connection ends");
        drop(subscription);
        let footer = framer.footer();
        if !footer.is_empty() {
            yield Ok(footer);
        }
    }
}
