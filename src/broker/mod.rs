//! The in-memory engine: the registry of channels (sharded by hash), publishing, deleting,
//! subscribing, limits, totals for statistics and the sweeper that expires messages and removes
//! inactive channels. It knows nothing of HTTP: transports read `Subscription`s, the HTTP layer calls
//! `Broker` methods and maps `BrokerError` to status codes.
//!
//! Contract every engine keeps: a publish is appended to the channel's log and its subscribers are
//! woken in one step per channel; message ids are consecutive per channel and `(time, tag)` increases
//! with them; a subscriber reads each message at most once, in order, or learns that it lagged.

mod channel;
mod channel_id;
pub mod message;
mod subscription;

pub use channel::{Channel, ChannelInfo};
pub use channel_id::{ChannelId, ChannelIdRules};
pub use message::{FormatId, Message};
pub use subscription::{Event, StartAt, SubscribeTo, Subscription};

use bytes::Bytes;
use channel::{Append, AttachError, ChannelGone, ChannelLimits};
use message::{Clock, MessageParts};
use parking_lot::Mutex;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

/// One shard of the channel registry.
type Shard = Mutex<HashMap<ChannelId, Arc<Channel>>>;

/// Errors the broker reports; each names the rule or limit involved (and its configured value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The channel path was empty.
    #[error("No channel id provided.")]
    NoChannelId,
    /// A channel id is longer than allowed.
    #[error("Channel id is too large. Limit: max_channel_id_length = {max}.")]
    ChannelIdTooLong {
        /// The configured limit.
        max: u64,
    },
    /// A channel id has characters outside the allowed pattern.
    #[error(
        "Channel id has characters that are not allowed. Allowed: channel_id_pattern = {pattern}."
    )]
    ChannelIdNotAllowed {
        /// The configured pattern.
        pattern: String,
    },
    /// `ALL` or an id with `*`: reserved for statistics queries.
    #[error("Channel id not authorized for this method.")]
    ReservedChannelId,
    /// Creating one more channel would exceed the limit.
    #[error("Number of channels were exceeded. Limit: max_number_of_channels = {max}.")]
    TooManyChannels {
        /// The configured limit.
        max: u64,
    },
    /// One more subscriber would exceed the per-channel limit.
    #[error("Subscribers limit per channel has been exceeded. Limit: max_subscribers_per_channel = {max}.")]
    TooManySubscribers {
        /// The configured limit.
        max: u64,
    },
}

/// Broker settings, from `[channels]` of the config.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Keep at most this many stored messages per channel.
    pub max_messages_stored_per_channel: Option<u64>,
    /// Stored messages expire after this long.
    pub message_ttl: Duration,
    /// Most channels at once.
    pub max_number_of_channels: Option<u64>,
    /// Most subscribers per channel.
    pub max_subscribers_per_channel: Option<u64>,
    /// Prefix of wildcard channel ids.
    pub wildcard_channel_prefix: Option<String>,
    /// Idle time after which an empty channel is removed.
    pub channel_inactivity_time: Duration,
    /// Text of the channel-deleted message.
    pub channel_deleted_message_text: Bytes,
    /// Messages a subscriber may fall behind before it is cut off.
    pub subscriber_lag_limit: usize,
    /// Number of output formats (one per subscriber location); see `FormatId`.
    pub format_count: usize,
}

impl BrokerSettings {
    /// Takes the broker's settings from the `[channels]` config.
    pub fn from_config(
        config: &crate::config::ChannelsConfig,
        format_count: usize,
    ) -> BrokerSettings {
        BrokerSettings {
            max_messages_stored_per_channel: config.max_messages_stored_per_channel,
            message_ttl: config.message_ttl.0,
            max_number_of_channels: config.max_number_of_channels,
            max_subscribers_per_channel: config.max_subscribers_per_channel,
            wildcard_channel_prefix: config
                .wildcard_channel_prefix
                .clone()
                .filter(|p| !p.is_empty()),
            channel_inactivity_time: config.channel_inactivity_time.0,
            channel_deleted_message_text: Bytes::from(config.channel_deleted_message_text.clone()),
            subscriber_lag_limit: usize::try_from(config.subscriber_lag_limit)
                .unwrap_or(usize::MAX),
            format_count,
        }
    }
}

/// One publish: the body and headers kept with the message, and whether channels store it.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Message text.
    pub text: Bytes,
    /// `Event-Id` header.
    pub event_id: Option<String>,
    /// `Event-Type` header.
    pub event_type: Option<String>,
    /// Keep the message in the channel's buffer.
    pub store: bool,
}

/// Process-wide totals for the statistics summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Normal channels now.
    pub channels: u64,
    /// Wildcard channels now.
    pub wildcard_channels: u64,
    /// Messages published since start.
    pub published_messages: u64,
    /// Messages stored now.
    pub stored_messages: u64,
    /// Subscriber connections now (a connection following several channels counts once).
    pub subscribers: u64,
    /// Seconds since the broker started.
    pub uptime: u64,
}

#[derive(Debug, Default)]
struct Totals {
    channels: AtomicU64,
    wildcard_channels: AtomicU64,
    published: AtomicU64,
    stored: AtomicU64,
    connections: AtomicU64,
    lagged: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    settings: BrokerSettings,
    limits: ChannelLimits,
    shards: Box<[Shard]>,
    hasher: RandomState,
    clock: Clock,
    started: Instant,
    totals: Totals,
}

/// Handle to the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl Broker {
    /// An empty broker.
    pub fn new(settings: BrokerSettings) -> Broker {
        let limits = ChannelLimits {
            max_stored: settings.max_messages_stored_per_channel,
            message_ttl: settings.message_ttl,
            lag_limit: settings.subscriber_lag_limit.max(1),
        };
        Broker {
            inner: Arc::new(Inner {
                settings,
                limits,
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                hasher: RandomState::new(),
                clock: Clock::default(),
                started: Instant::now(),
                totals: Totals::default(),
            }),
        }
    }

    /// The broker's settings.
    pub fn settings(&self) -> &BrokerSettings {
        &self.inner.settings
    }

    fn shard(&self, id: &str) -> &Shard {
        let index = self.inner.hasher.hash_one(id) as usize % SHARDS;
        &self.inner.shards[index]
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    fn is_wildcard(&self, id: &ChannelId) -> bool {
        self.inner
            .settings
            .wildcard_channel_prefix
            .as_deref()
            .is_some_and(|prefix| id.as_str().starts_with(prefix))
    }

    /// Finds a channel.
    fn find(&self, id: &str) -> Option<Arc<Channel>> {
        self.shard(id).lock().get(id).cloned()
    }

    /// Finds or creates a channel, counting it against the channel limit; marks it active.
    fn get_or_create(&self, id: &ChannelId) -> Result<Arc<Channel>, BrokerError> {
        let now_ms = self.now_ms();
        let mut shard = self.shard(id.as_str()).lock();
        match shard.entry(id.clone()) {
            Entry::Occupied(entry) => {
                entry.get().touch(now_ms);
                Ok(entry.get().clone())
            }
            Entry::Vacant(entry) => {
                let wildcard = self.is_wildcard(id);
                let totals = &self.inner.totals;
                let counter = if wildcard {
                    &totals.wildcard_channels
                } else {
                    &totals.channels
                };
                if let Some(max) = self
                    .inner
                    .settings
                    .max_number_of_channels
                    .filter(|_| !wildcard)
                {
                    counter
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n < max).then_some(n + 1)
                        })
                        .map_err(|_| BrokerError::TooManyChannels { max })?;
                } else {
                    counter.fetch_add(1, Ordering::AcqRel);
                }
                let channel = Arc::new(Channel::new(id.clone(), wildcard, now_ms));
                entry.insert(channel.clone());
                Ok(channel)
            }
        }
    }

    /// Takes a removed channel out of the totals (the registry entry is already gone).
    fn forget(&self, channel: &Channel) {
        let totals = &self.inner.totals;
        let counter = if channel.wildcard {
            &totals.wildcard_channels
        } else {
            &totals.channels
        };
        counter.fetch_sub(1, Ordering::AcqRel);
    }

    /// Current info of one channel, `None` if it does not exist.
    pub fn channel_info(&self, id: &str) -> Option<ChannelInfo> {
        self.find(id).map(|c| c.info())
    }

    /// Info of every channel whose id starts with `prefix` (all channels for ""), sorted by id.
    pub fn channels_with_prefix(&self, prefix: &str) -> Vec<ChannelInfo> {
        let mut found: Vec<Arc<Channel>> = Vec::new();
        for shard in self.inner.shards.iter() {
            found.extend(
                shard
                    .lock()
                    .values()
                    .filter(|c| c.id.as_str().starts_with(prefix))
                    .cloned(),
            );
        }
        let mut infos: Vec<ChannelInfo> = found.iter().map(|c| c.info()).collect();
        infos.sort_by(|a, b| a.channel.cmp(&b.channel));
        infos
    }

    /// Process-wide totals.
    pub fn summary(&self) -> Summary {
        let t = &self.inner.totals;
        Summary {
            channels: t.channels.load(Ordering::Relaxed),
            wildcard_channels: t.wildcard_channels.load(Ordering::Relaxed),
            published_messages: t.published.load(Ordering::Relaxed),
            stored_messages: t.stored.load(Ordering::Relaxed),
            subscribers: t.connections.load(Ordering::Relaxed),
            uptime: self.inner.started.elapsed().as_secs(),
        }
    }

    /// The newest (time, tag) assigned so far. Every message with a key up to it is already readable in
    /// its channel, so a reader that takes this before reading channels can tell which of the messages
    /// it read may have older siblings it has not seen yet (those above the watermark).
    pub fn watermark(&self) -> (u64, u64) {
        self.inner.clock.watermark()
    }

    /// Subscribers cut off because they fell behind the recent window, since start.
    pub fn lagged_subscribers(&self) -> u64 {
        self.inner.totals.lagged.load(Ordering::Relaxed)
    }

    /// Publishes one message to each channel (created as needed), storing it if asked, and wakes their
    /// subscribers. Every channel is created (or the limit error returned) before anything is appended,
    /// so a refused publish changes no stored message. Returns each channel's info after the publish.
    pub fn publish(
        &self,
        channels: &[ChannelId],
        publish: Publish,
    ) -> Result<Vec<ChannelInfo>, BrokerError> {
        let mut targets = Vec::with_capacity(channels.len());
        for id in channels {
            targets.push(self.get_or_create(id)?);
        }
        let event_id: Option<Box<str>> = publish.event_id.map(Into::into);
        let event_type: Option<Box<str>> = publish.event_type.map(Into::into);
        let mut infos = Vec::with_capacity(targets.len());
        for (id, mut channel) in channels.iter().zip(targets) {
            let (_, delta) = loop {
                let append = Append {
                    text: publish.text.clone(),
                    event_id: event_id.clone(),
                    event_type: event_type.clone(),
                    store: publish.store,
                };
                match channel.append(
                    append,
                    &self.inner.limits,
                    &self.inner.clock,
                    self.inner.settings.format_count,
                ) {
                    Ok(done) => break done,
                    // Deleted or swept since we found it: publish to the channel that replaces it.
                    Err(ChannelGone::Removed) => channel = self.get_or_create(id)?,
                }
            };
            let totals = &self.inner.totals;
            totals.published.fetch_add(1, Ordering::Relaxed);
            totals.stored.fetch_add(delta.added, Ordering::Relaxed);
            totals.stored.fetch_sub(delta.removed, Ordering::Relaxed);
            infos.push(channel.info());
        }
        Ok(infos)
    }

    /// Deletes channels: their stored messages go, their subscribers receive the channel-deleted message
    /// (`text`, or the configured text) and are detached. Returns the ids that existed.
    pub fn delete(&self, channels: &[ChannelId], text: Option<Bytes>) -> Vec<ChannelId> {
        let text = text.unwrap_or_else(|| self.inner.settings.channel_deleted_message_text.clone());
        let mut deleted = Vec::new();
        for id in channels {
            let Some(channel) = self.shard(id.as_str()).lock().remove(id.as_str()) else {
                continue;
            };
            let (time, tag) = self.inner.clock.next();
            let message = Arc::new(Message::new(
                MessageParts {
                    channel: id.clone(),
                    id: message::CHANNEL_DELETED_MESSAGE_ID,
                    time,
                    tag,
                    event_id: None,
                    event_type: None,
                    text: text.clone(),
                    expires_at: Instant::now(),
                },
                self.inner.settings.format_count,
            ));
            let dropped = channel.delete(message);
            self.inner
                .totals
                .stored
                .fetch_sub(dropped, Ordering::Relaxed);
            self.forget(&channel);
            deleted.push(id.clone());
        }
        deleted
    }

    /// Attaches a subscriber to each channel (created as needed) in order. Backtracked messages come
    /// channel by channel in request order. On a limit error nothing stays attached.
    pub fn subscribe(&self, requests: &[SubscribeTo]) -> Result<Subscription, BrokerError> {
        let mut subscription = Subscription::new(self.clone());
        for request in requests {
            let max = self.inner.settings.max_subscribers_per_channel;
            let attached = loop {
                let channel = self.get_or_create(&request.channel)?;
                match channel.attach(max, &request.start) {
                    Ok(attached) => break (channel, attached),
                    Err(AttachError::Gone) => continue,
                    Err(AttachError::Full { max }) => {
                        return Err(BrokerError::TooManySubscribers { max })
                    }
                }
            };
            subscription.push(attached.0, attached.1);
        }
        Ok(subscription)
    }

    pub(crate) fn detached(&self, channel: &Channel) {
        channel.detach(self.now_ms());
    }

    pub(crate) fn connection_opened(&self) {
        self.inner
            .totals
            .connections
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.inner
            .totals
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn count_lagged(&self) {
        self.inner.totals.lagged.fetch_add(1, Ordering::Relaxed);
    }

    /// One sweep: expire stored messages, remove channels idle for `channel_inactivity_time`.
    pub fn sweep(&self) {
        let now = Instant::now();
        let idle_before_ms = self
            .now_ms()
            .checked_sub(self.inner.settings.channel_inactivity_time.as_millis() as u64);
        for shard in self.inner.shards.iter() {
            let channels: Vec<Arc<Channel>> = shard.lock().values().cloned().collect();
            for channel in channels {
                let expired = channel.expire(now);
                self.inner
                    .totals
                    .stored
                    .fetch_sub(expired, Ordering::Relaxed);
                if let Some(idle_before_ms) = idle_before_ms {
                    let mut shard = shard.lock();
                    if channel.remove_if_inactive(idle_before_ms) {
                        shard.remove(channel.id.as_str());
                        drop(shard);
                        self.forget(&channel);
                    }
                }
            }
        }
    }

    /// Runs `sweep` every second until `shutdown` resolves.
    pub async fn run_sweeper(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => self.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests;
