//! The in-memory engine: the registry of channels (sharded by hash), publishing, deleting,
//! subscribing, limits, totals for statistics, the events channel, and the sweeper that expires
//! messages and removes inactive channels. It knows nothing of HTTP: transports read `Subscription`s,
//! the HTTP layer calls `Broker` methods and maps `BrokerError` to status codes.
//!
//! Contract every engine keeps: a publish is appended to the channel's log and its subscribers are
//! woken in one step per channel; message ids are consecutive per channel and `(time, tag)` increases
//! with them across the whole process; a subscriber reads each message at most once, in order, or
//! learns that it lagged.

mod channel;
mod channel_id;
pub mod message;
mod subscription;
mod sweeper;
mod trash;

pub use channel::{Channel, ChannelInfo};
pub use channel_id::{ChannelId, ChannelIdRules};
pub use message::{FormatId, Message};
pub use subscription::{Event, Recovery, StartAt, SubscribePolicy, SubscribeTo, Subscription};
pub use trash::TRASH_HOLD;

use bytes::Bytes;
use channel::{Append, Appended, AttachError, ChannelGone, ChannelLimits, StoredDelta};
use message::{Clock, MessageParts};
use parking_lot::Mutex;
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use trash::Trash;

const SHARDS: usize = 64;

/// One shard of the channel registry, with the queues the sweeper works from.
#[derive(Debug, Default)]
struct ShardState {
    channels: HashMap<ChannelId, Arc<Channel>>,
    /// Channels holding stored messages, by the expiry of their oldest one (one entry per channel,
    /// `Channel::expiry_queued`).
    expiry: std::collections::BinaryHeap<std::cmp::Reverse<ExpiryEntry>>,
    /// (deadline in broker ms, channel) for channels that may have become inactive; one entry per
    /// channel at most (`Channel::idle_queued`).
    idle: VecDeque<(u64, Weak<Channel>)>,
}

type Shard = Mutex<ShardState>;

/// A channel in the expiry queue, ordered by `at`.
#[derive(Debug)]
struct ExpiryEntry {
    at: Instant,
    channel: Weak<Channel>,
}

impl PartialEq for ExpiryEntry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for ExpiryEntry {}

impl PartialOrd for ExpiryEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ExpiryEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

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
    /// A subscriber would create a channel in the part of the table kept for publishers.
    #[error("Number of channels were exceeded. Limit: max_number_of_channels = {max}, of which {reserved} only publishers may create (channels_reserved_for_publishers).")]
    TooManySubscriberChannels {
        /// The configured limit.
        max: u64,
        /// Channels only publishers may create.
        reserved: u64,
    },
    /// Creating one more wildcard channel would exceed the limit.
    #[error("Number of channels were exceeded. Limit: max_number_of_wildcard_channels = {max}.")]
    TooManyWildcardChannels {
        /// The configured limit.
        max: u64,
    },
    /// A subscribe request names more wildcard channels than allowed, or only wildcard channels.
    #[error("Subscribed too much wildcard channels. Limit: wildcard_channel_max_qtd = {max}, with at least one normal channel.")]
    TooManyWildcardInRequest {
        /// The configured limit.
        max: u64,
    },
    /// Authorized-channels-only: a channel does not exist or holds no stored message.
    #[error("Subscriber could not create channels. Only channels with stored messages can be joined here (authorized_channels_only).")]
    NotAuthorizedToCreate,
    /// The events channel is written by Herald only.
    #[error("Only internal routines can change events channel.")]
    EventsChannelReadOnly,
    /// Subscribing to the events channel is not allowed on this location.
    #[error("Subscription to events channel is not allowed.")]
    EventsChannelSubscription,
    /// Storing the message would exceed the memory budget.
    #[error("Message storage is full. Limit: shared_memory_size = {max} bytes.")]
    MemoryExhausted {
        /// The configured budget.
        max: u64,
    },
    /// An `Idempotency-Key` came while `idempotency_keys_per_channel = 0`.
    #[error("Idempotency-Key is turned off here (idempotency_keys_per_channel = 0); publish without it.")]
    IdempotencyKeysOff,
    /// The shared engine (Redis) could not be reached; the text names the shard and the reason.
    #[error("{0}")]
    Unavailable(String),
    /// A mirror channel was deleted while a subscriber was being attached to it.
    #[error("The channel changed while subscribing; try again.")]
    ChannelChanged,
    /// One more subscriber would exceed the per-channel limit.
    #[error("Subscribers limit per channel has been exceeded. Limit: max_subscribers_per_channel = {max}.")]
    TooManySubscribers {
        /// The configured limit.
        max: u64,
    },
}

/// Who creates a channel: the channel limits differ (subscribers may not take the publishers'
/// reserve; a mirror follows the engine that owns the channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creator {
    Publisher,
    Subscriber,
    Engine,
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
    /// Channels of `max_number_of_channels` only publishers may create.
    pub channels_reserved_for_publishers: u64,
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
    /// Channel receiving lifecycle events.
    pub events_channel_id: Option<ChannelId>,
    /// Most wildcard channels at once.
    pub max_number_of_wildcard_channels: Option<u64>,
    /// Budget in bytes for stored messages (text, headers and a fixed overhead each).
    pub shared_memory_size: Option<u64>,
    /// Idempotency keys remembered per channel (0: keys are refused).
    pub idempotency_keys_per_channel: usize,
    /// Number of output formats (one per subscriber location); see `FormatId`.
    pub format_count: usize,
    /// The broker mirrors channels another engine owns (Redis): it creates and drops channels when
    /// that engine says so, does not collect inactive channels itself, and hands subscribe/unsubscribe
    /// events to the event sink instead of its own events channel.
    pub mirror: bool,
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
            channels_reserved_for_publishers: config.max_number_of_channels.map_or(0, |max| {
                config
                    .channels_reserved_for_publishers
                    .unwrap_or(max.div_ceil(10))
                    .min(max.saturating_sub(1))
            }),
            max_subscribers_per_channel: config.max_subscribers_per_channel,
            wildcard_channel_prefix: config
                .wildcard_channel_prefix
                .clone()
                .filter(|p| !p.is_empty()),
            channel_inactivity_time: config.channel_inactivity_time.0,
            channel_deleted_message_text: Bytes::from(config.channel_deleted_message_text.clone()),
            subscriber_lag_limit: usize::try_from(config.subscriber_lag_limit)
                .unwrap_or(usize::MAX),
            events_channel_id: config
                .events_channel_id
                .as_deref()
                .filter(|id| !id.is_empty())
                .map(ChannelId::new_unchecked),
            max_number_of_wildcard_channels: config.max_number_of_wildcard_channels,
            shared_memory_size: config.shared_memory_size.map(|s| s.0),
            idempotency_keys_per_channel: usize::try_from(config.idempotency_keys_per_channel)
                .unwrap_or(usize::MAX),
            format_count,
            mirror: false,
        }
    }

    /// True for ids starting with the wildcard prefix.
    pub fn is_wildcard(&self, id: &str) -> bool {
        self.wildcard_channel_prefix
            .as_deref()
            .is_some_and(|prefix| id.starts_with(prefix))
    }

    /// True for the events channel's id.
    pub fn is_events_channel(&self, id: &str) -> bool {
        self.events_channel_id
            .as_ref()
            .is_some_and(|events| events.as_str() == id)
    }

    /// What refuses a client's publish before any engine looks at the channels: the events
    /// channel (written by Herald only), then an idempotency key while keys are turned off.
    pub fn check_publish(
        &self,
        channels: &[ChannelId],
        publish: &Publish,
    ) -> Result<(), BrokerError> {
        self.check_delete(channels)?;
        if publish.idempotency_key.is_some() && self.idempotency_keys_per_channel == 0 {
            return Err(BrokerError::IdempotencyKeysOff);
        }
        Ok(())
    }

    /// What refuses a client's delete: the events channel.
    pub fn check_delete(&self, channels: &[ChannelId]) -> Result<(), BrokerError> {
        if channels
            .iter()
            .any(|id| self.is_events_channel(id.as_str()))
        {
            return Err(BrokerError::EventsChannelReadOnly);
        }
        Ok(())
    }

    /// The settings of a broker that mirrors channels owned by a shared engine: limits that count
    /// channels, subscribers or bytes are the shared engine's job, so they are off here.
    pub fn mirroring(mut self) -> BrokerSettings {
        self.mirror = true;
        self.max_number_of_channels = None;
        self.max_number_of_wildcard_channels = None;
        self.max_subscribers_per_channel = None;
        self.shared_memory_size = None;
        self
    }
}

/// A message another engine published, as a mirroring broker takes it in.
#[derive(Debug, Clone)]
pub struct Mirrored {
    /// Its id in the channel (above every id the mirror has).
    pub id: u64,
    /// Publish time, seconds since the Unix epoch.
    pub time: u64,
    /// Order within the second.
    pub tag: u64,
    /// `Event-Id` header.
    pub event_id: Option<Box<str>>,
    /// `Event-Type` header.
    pub event_type: Option<Box<str>>,
    /// Message text.
    pub text: Bytes,
    /// Whether the channel stores it.
    pub store: bool,
    /// When the stored copy expires.
    pub expires_at: Instant,
    /// Taken in late, while catching up after a lost connection.
    pub catch_up: bool,
}

/// The text of a lifecycle event on the events channel.
pub fn lifecycle_event_text(name: &str, channel: &ChannelId) -> Bytes {
    let channel_json = serde_json::Value::String(channel.as_str().to_string());
    Bytes::from(format!(
        "{{\"type\": \"{name}\", \"channel\": {channel_json}}}"
    ))
}

/// Receives subscribe/unsubscribe events of a mirroring broker: (event name, channel).
pub type EventSink = Box<dyn Fn(&'static str, &ChannelId) + Send + Sync>;

struct SinkSlot(std::sync::OnceLock<EventSink>);

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "EventSink(set)"
        } else {
            "EventSink(unset)"
        })
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
    /// `Idempotency-Key` header: a channel that already took a publish with this key (among its
    /// last `idempotency_keys_per_channel` keyed publishes) takes nothing.
    pub idempotency_key: Option<Box<str>>,
}

/// What a publish did on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The channel's counters after the publish.
    pub info: ChannelInfo,
    /// The channel had already taken a publish with the same idempotency key: nothing changed.
    pub replayed: bool,
}

/// Process-wide totals for the statistics summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Normal channels now (the events channel included).
    pub channels: u64,
    /// Wildcard channels now.
    pub wildcard_channels: u64,
    /// Messages published since start (events-channel messages excluded).
    pub published_messages: u64,
    /// Messages stored now.
    pub stored_messages: u64,
    /// Bytes counted against `shared_memory_size` now.
    pub stored_bytes: u64,
    /// Messages dropped within the last `TRASH_HOLD`.
    pub messages_in_trash: u64,
    /// Channels removed within the last `TRASH_HOLD`.
    pub channels_in_trash: u64,
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
    stored_bytes: AtomicU64,
    connections: AtomicU64,
    subscriptions: AtomicU64,
    lagged: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    settings: arc_swap::ArcSwap<BrokerSettings>,
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Digests idempotency keys (a channel remembers 16 bytes per key, whatever its length).
    key_digest: crate::digest::Digest128,
    clock: Clock,
    started: Instant,
    totals: Totals,
    trash: Trash,
    event_sink: SinkSlot,
}

/// Handle to the engine; cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// Lifecycle events published to the events channel.
#[derive(Debug, Clone, Copy)]
enum LifecycleEvent {
    ChannelCreated,
    ChannelDestroyed,
    ClientSubscribed,
    ClientUnsubscribed,
}

impl LifecycleEvent {
    fn name(self) -> &'static str {
        match self {
            LifecycleEvent::ChannelCreated => "channel_created",
            LifecycleEvent::ChannelDestroyed => "channel_destroyed",
            LifecycleEvent::ClientSubscribed => "client_subscribed",
            LifecycleEvent::ClientUnsubscribed => "client_unsubscribed",
        }
    }
}

impl Broker {
    /// An empty broker.
    pub fn new(settings: BrokerSettings) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                settings: arc_swap::ArcSwap::from_pointee(settings),
                shards: (0..SHARDS)
                    .map(|_| Mutex::new(ShardState::default()))
                    .collect(),
                hasher: RandomState::new(),
                key_digest: Default::default(),
                clock: Clock::default(),
                started: Instant::now(),
                totals: Totals::default(),
                trash: Trash::default(),
                event_sink: SinkSlot(std::sync::OnceLock::new()),
            }),
        }
    }

    /// The broker's settings now.
    pub fn settings(&self) -> Arc<BrokerSettings> {
        self.inner.settings.load_full()
    }

    /// Replaces the settings (config reload). Limits apply to what happens from now on: channels and
    /// stored messages over a lowered limit stay until they go on their own.
    pub fn reconfigure(&self, settings: BrokerSettings) {
        self.inner.settings.store(Arc::new(settings));
    }

    fn cfg(&self) -> arc_swap::Guard<Arc<BrokerSettings>> {
        self.inner.settings.load()
    }

    fn limits(settings: &BrokerSettings) -> ChannelLimits {
        ChannelLimits {
            max_stored: settings.max_messages_stored_per_channel,
            message_ttl: settings.message_ttl,
            lag_limit: settings.subscriber_lag_limit.max(1),
            idempotency_keys: settings.idempotency_keys_per_channel,
        }
    }

    fn shard(&self, id: &str) -> &Shard {
        let index = self.inner.hasher.hash_one(id) as usize % SHARDS;
        &self.inner.shards[index]
    }

    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    fn is_wildcard(&self, id: &str) -> bool {
        self.cfg().is_wildcard(id)
    }

    fn is_events_channel(&self, id: &str) -> bool {
        self.cfg().is_events_channel(id)
    }

    /// Finds a channel.
    fn find(&self, id: &str) -> Option<Arc<Channel>> {
        self.shard(id).lock().channels.get(id).cloned()
    }

    /// Finds or creates a channel, counting it against the channel limits (a subscriber may not
    /// create one in the part of the table kept for publishers); marks it active.
    fn get_or_create(&self, id: &ChannelId, creator: Creator) -> Result<Arc<Channel>, BrokerError> {
        let now_ms = self.now_ms();
        let created = {
            let mut shard = self.shard(id.as_str()).lock();
            match shard.channels.entry(id.clone()) {
                Entry::Occupied(entry) => {
                    entry.get().touch(now_ms);
                    return Ok(entry.get().clone());
                }
                Entry::Vacant(entry) => {
                    let wildcard = self.is_wildcard(id.as_str());
                    self.count_new_channel(wildcard, creator)?;
                    let channel = Arc::new(Channel::new(id.clone(), wildcard, now_ms));
                    entry.insert(channel.clone());
                    channel
                }
            }
        };
        self.schedule_idle_check(&created, now_ms);
        self.emit(LifecycleEvent::ChannelCreated, id);
        Ok(created)
    }

    /// Counts one more channel, or refuses it when its limit is reached.
    fn count_new_channel(&self, wildcard: bool, creator: Creator) -> Result<(), BrokerError> {
        let totals = &self.inner.totals;
        let settings = self.cfg();
        let (counter, limit) = if wildcard {
            let max = settings.max_number_of_wildcard_channels;
            (
                &totals.wildcard_channels,
                max.map(|max| (max, BrokerError::TooManyWildcardChannels { max })),
            )
        } else {
            let max = settings.max_number_of_channels;
            let reserved = settings.channels_reserved_for_publishers;
            (
                &totals.channels,
                max.map(|max| match creator {
                    Creator::Subscriber if reserved > 0 => (
                        max.saturating_sub(reserved),
                        BrokerError::TooManySubscriberChannels { max, reserved },
                    ),
                    _ => (max, BrokerError::TooManyChannels { max }),
                }),
            )
        };
        match limit {
            Some((max, error)) => counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .map(|_| ())
                .map_err(|_| error),
            None => {
                counter.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Takes a removed channel out of the totals (the registry entry is already gone), counts it in
    /// the trash and tells the events channel.
    /// (A mirror's copies come and go with the shared engine, which counts its own trash.)
    fn forget(&self, channel: &Channel, dropped: StoredDelta) {
        let totals = &self.inner.totals;
        let counter = if channel.wildcard {
            &totals.wildcard_channels
        } else {
            &totals.channels
        };
        counter.fetch_sub(1, Ordering::AcqRel);
        self.apply(dropped);
        if !self.cfg().mirror {
            self.inner.trash.add(1, 0);
        }
        self.emit(LifecycleEvent::ChannelDestroyed, &channel.id);
    }

    /// Applies a change of stored messages to the totals; dropped messages go to the trash (not a
    /// mirror's: the shared engine counts those).
    fn apply(&self, delta: StoredDelta) {
        let totals = &self.inner.totals;
        totals.stored.fetch_add(delta.added, Ordering::Relaxed);
        totals.stored.fetch_sub(delta.removed, Ordering::Relaxed);
        // The publish path reserved `added_bytes` already.
        totals
            .stored_bytes
            .fetch_sub(delta.removed_bytes, Ordering::Relaxed);
        if !self.cfg().mirror {
            self.inner.trash.add(0, delta.removed);
        }
    }

    /// Deletes one channel (already out of the registry): its subscribers receive `text` as the
    /// channel-deleted message, its stored messages go, and the totals forget it.
    fn delete_channel(&self, channel: &Channel, text: Bytes) {
        let (time, tag) = self.inner.clock.next();
        let message = Arc::new(Message::new(
            MessageParts {
                channel: channel.id.clone(),
                id: message::CHANNEL_DELETED_MESSAGE_ID,
                time,
                tag,
                event_id: None,
                event_type: None,
                text,
                expires_at: Instant::now(),
            },
            self.cfg().format_count,
        ));
        let dropped = channel.delete(message);
        self.forget(channel, dropped);
    }

    /// Puts `channel` in its shard's expiry queue at `at` (the expiry of its oldest stored message)
    /// unless it is there already: one entry per channel, however many messages it stores.
    fn schedule_expiry(&self, channel: &Arc<Channel>, at: Instant) {
        if channel.expiry_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut shard = self.shard(channel.id.as_str()).lock();
        shard.expiry.push(std::cmp::Reverse(ExpiryEntry {
            at,
            channel: Arc::downgrade(channel),
        }));
        // Entries of channels that went (deleted, collected, mirrors dropped) would otherwise wait
        // for their message TTL: drop them once they outnumber the live channels.
        if shard.expiry.len() > 2 * shard.channels.len() + 64 {
            shard
                .expiry
                .retain(|entry| entry.0.channel.strong_count() > 0);
        }
    }

    /// Publishes a lifecycle event to the events channel, when one is configured (never about the
    /// events channel itself).
    fn emit(&self, event: LifecycleEvent, channel: &ChannelId) {
        let settings = self.cfg();
        let Some(events) = &settings.events_channel_id else {
            return;
        };
        if events == channel {
            return;
        }
        if settings.mirror {
            // Channels come and go in the shared engine, which announces that itself.
            if let (
                LifecycleEvent::ClientSubscribed | LifecycleEvent::ClientUnsubscribed,
                Some(sink),
            ) = (event, self.inner.event_sink.0.get())
            {
                sink(event.name(), channel);
            }
            return;
        }
        let publish = Publish {
            text: lifecycle_event_text(event.name(), channel),
            event_id: None,
            event_type: None,
            store: true,
            idempotency_key: None,
        };
        if let Err(err) = self.publish_unchecked(std::slice::from_ref(events), publish) {
            tracing::debug!(error = %err, "could not publish to the events channel");
        }
    }

    /// Puts `channel` in its shard's idle queue (once) to be checked for inactivity at `since_ms` +
    /// `channel_inactivity_time`. The events channel is never collected.
    fn schedule_idle_check(&self, channel: &Arc<Channel>, since_ms: u64) {
        if self.cfg().mirror
            || self.is_events_channel(channel.id.as_str())
            || channel.idle_queued.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let deadline = since_ms + self.cfg().channel_inactivity_time.as_millis() as u64;
        self.shard(channel.id.as_str())
            .lock()
            .idle
            .push_back((deadline, Arc::downgrade(channel)));
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
                    .channels
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
        let (channels_in_trash, messages_in_trash) = self.inner.trash.counts();
        Summary {
            channels: t.channels.load(Ordering::Relaxed),
            wildcard_channels: t.wildcard_channels.load(Ordering::Relaxed),
            published_messages: t.published.load(Ordering::Relaxed),
            stored_messages: t.stored.load(Ordering::Relaxed),
            stored_bytes: t.stored_bytes.load(Ordering::Relaxed),
            messages_in_trash,
            channels_in_trash,
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

    /// Channel subscriptions now (a connection on three channels counts three).
    pub fn subscriptions(&self) -> u64 {
        self.inner.totals.subscriptions.load(Ordering::Relaxed)
    }

    /// Subscribers cut off because they fell behind the recent window, since start.
    pub fn lagged_subscribers(&self) -> u64 {
        self.inner.totals.lagged.load(Ordering::Relaxed)
    }

    /// Publishes one message to each channel (created as needed), storing it if asked, and wakes their
    /// subscribers. Every channel is created (or the limit error returned) and the memory for every
    /// stored copy reserved before anything is appended, so a refused publish changes no stored
    /// message. Returns each channel's info after the publish.
    pub fn publish(
        &self,
        channels: &[ChannelId],
        publish: Publish,
    ) -> Result<Vec<Published>, BrokerError> {
        self.cfg().check_publish(channels, &publish)?;
        self.publish_unchecked(channels, publish)
    }

    fn publish_unchecked(
        &self,
        channels: &[ChannelId],
        publish: Publish,
    ) -> Result<Vec<Published>, BrokerError> {
        let mut targets = Vec::with_capacity(channels.len());
        for id in channels {
            targets.push(self.get_or_create(id, Creator::Publisher)?);
        }
        let event_id: Option<Box<str>> = publish.event_id.map(Into::into);
        let event_type: Option<Box<str>> = publish.event_type.map(Into::into);
        let key = publish
            .idempotency_key
            .as_deref()
            .map(|k| self.inner.key_digest.of(k));
        let append = || Append {
            text: publish.text.clone(),
            event_id: event_id.clone(),
            event_type: event_type.clone(),
            store: publish.store,
            key,
        };
        let cost = if publish.store {
            channel::stored_cost(&publish.text, event_id.as_deref(), event_type.as_deref())
        } else {
            0
        };
        if let Err(full) = self.reserve_memory(cost * channels.len() as u64) {
            // A retry of a publish every channel took needs no room: answer it as a replay.
            return match key {
                Some(key) if targets.iter().all(|c| c.remembers(key)) => Ok(targets
                    .iter()
                    .map(|c| Published {
                        info: c.info(),
                        replayed: true,
                    })
                    .collect()),
                _ => Err(full),
            };
        }
        let events = channels
            .iter()
            .any(|id| self.is_events_channel(id.as_str()));
        let settings = self.settings();
        let limits = Self::limits(&settings);
        let mut infos = Vec::with_capacity(targets.len());
        for (done, (id, mut channel)) in channels.iter().zip(targets).enumerate() {
            let appended = loop {
                match channel.append(append(), &limits, &self.inner.clock, settings.format_count) {
                    Ok(appended) => break appended,
                    // Deleted or swept since we found it: publish to the channel that replaces it.
                    Err(ChannelGone::Removed) => match self.get_or_create(id, Creator::Publisher) {
                        Ok(replacement) => channel = replacement,
                        Err(err) => {
                            // Give back what was reserved for the channels not written.
                            let unused = cost * (channels.len() - done) as u64;
                            self.inner
                                .totals
                                .stored_bytes
                                .fetch_sub(unused, Ordering::AcqRel);
                            return Err(err);
                        }
                    },
                }
            };
            let (message, delta) = match appended {
                Appended::New(message, delta) => (message, delta),
                Appended::Replayed => {
                    // Nothing stored: give back this channel's reservation.
                    self.inner
                        .totals
                        .stored_bytes
                        .fetch_sub(cost, Ordering::AcqRel);
                    infos.push(Published {
                        info: channel.info(),
                        replayed: true,
                    });
                    continue;
                }
            };
            if !events {
                self.inner.totals.published.fetch_add(1, Ordering::Relaxed);
            }
            self.apply(delta);
            if publish.store {
                self.schedule_expiry(&channel, message.expires_at);
            } else if channel.is_idle() {
                self.schedule_idle_check(&channel, self.now_ms());
            }
            infos.push(Published {
                info: channel.info(),
                replayed: false,
            });
        }
        Ok(infos)
    }

    /// Reserves `bytes` of the memory budget, or refuses.
    fn reserve_memory(&self, bytes: u64) -> Result<(), BrokerError> {
        let used = &self.inner.totals.stored_bytes;
        match self.cfg().shared_memory_size {
            Some(max) => used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    n.checked_add(bytes).filter(|total| *total <= max)
                })
                .map(|_| ())
                .map_err(|_| BrokerError::MemoryExhausted { max }),
            None => {
                used.fetch_add(bytes, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Deletes channels: their stored messages go, their subscribers receive the channel-deleted message
    /// (`text`, or the configured text) and are detached. Returns the ids that existed.
    pub fn delete(
        &self,
        channels: &[ChannelId],
        text: Option<Bytes>,
    ) -> Result<Vec<ChannelId>, BrokerError> {
        self.cfg().check_delete(channels)?;
        let text = text.unwrap_or_else(|| self.cfg().channel_deleted_message_text.clone());
        let mut deleted = Vec::new();
        for id in channels {
            let Some(channel) = self.shard(id.as_str()).lock().channels.remove(id.as_str()) else {
                continue;
            };
            self.delete_channel(&channel, text.clone());
            deleted.push(id.clone());
        }
        Ok(deleted)
    }

    /// Attaches a subscriber to each channel (created as needed, unless `policy` forbids it) in
    /// order. Backtracked messages come channel by channel in request order. On an error nothing
    /// stays attached.
    pub fn subscribe(
        &self,
        requests: &[SubscribeTo],
        policy: &SubscribePolicy,
    ) -> Result<Subscription, BrokerError> {
        self.check_request(requests, policy)?;
        for request in requests {
            let id = request.channel.as_str();
            if policy.authorized_channels_only
                && !self.is_wildcard(id)
                && !self.find(id).is_some_and(|c| c.has_stored())
            {
                return Err(BrokerError::NotAuthorizedToCreate);
            }
        }
        let mirror = self.cfg().mirror;
        let mut subscription = Subscription::new(self.clone());
        for request in requests {
            let max = self.cfg().max_subscribers_per_channel;
            let (channel, attached) = loop {
                let channel = if mirror {
                    // The engine prepared the mirror channel; gone means deleted meanwhile.
                    self.find(request.channel.as_str())
                        .ok_or(BrokerError::ChannelChanged)?
                } else {
                    self.get_or_create(&request.channel, Creator::Subscriber)?
                };
                match channel.attach(max, &request.start) {
                    Ok(attached) => break (channel, attached),
                    Err(AttachError::Gone) if mirror => return Err(BrokerError::ChannelChanged),
                    Err(AttachError::Gone) => continue,
                    Err(AttachError::Full { max }) => {
                        return Err(BrokerError::TooManySubscribers { max })
                    }
                }
            };
            self.inner
                .totals
                .subscriptions
                .fetch_add(1, Ordering::Relaxed);
            subscription.push(channel, attached);
            self.emit(LifecycleEvent::ClientSubscribed, &request.channel);
        }
        Ok(subscription)
    }

    pub(crate) fn detached(&self, channel: &Arc<Channel>) {
        self.inner
            .totals
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
        let now_ms = self.now_ms();
        if channel.detach(now_ms) {
            self.schedule_idle_check(channel, now_ms);
        }
        self.emit(LifecycleEvent::ClientUnsubscribed, &channel.id);
    }

    /// The checks of a subscribe request that need no channel: wildcard counts and the events
    /// channel.
    pub fn check_request(
        &self,
        requests: &[SubscribeTo],
        policy: &SubscribePolicy,
    ) -> Result<(), BrokerError> {
        let wildcards = requests
            .iter()
            .filter(|r| self.is_wildcard(r.channel.as_str()))
            .count() as u64;
        if let Some(max) = policy.wildcard_channel_max_qtd {
            if wildcards > max || (wildcards > 0 && wildcards == requests.len() as u64) {
                return Err(BrokerError::TooManyWildcardInRequest { max });
            }
        }
        if policy.authorized_channels_only && wildcards == requests.len() as u64 && wildcards > 0 {
            return Err(BrokerError::NotAuthorizedToCreate);
        }
        for request in requests {
            if self.is_events_channel(request.channel.as_str()) && !policy.allow_events_channel {
                return Err(BrokerError::EventsChannelSubscription);
            }
        }
        Ok(())
    }

    /// Counts channels and messages another engine removed in the trash figures of statistics.
    pub fn add_to_trash(&self, channels: u64, messages: u64) {
        self.inner.trash.add(channels, messages);
    }

    /// Sets where a mirroring broker sends subscribe/unsubscribe events (once).
    pub fn set_event_sink(&self, sink: EventSink) {
        let _ = self.inner.event_sink.0.set(sink);
    }

    /// Takes in a message another engine published on `id` (creating the mirror channel if needed)
    /// and wakes its subscribers. Returns false when the mirror already had that id.
    pub fn mirror_message(&self, id: &ChannelId, mirrored: Mirrored) -> bool {
        let settings = self.settings();
        let limits = Self::limits(&settings);
        let store = mirrored.store;
        loop {
            let Ok(channel) = self.get_or_create(id, Creator::Engine) else {
                return false;
            };
            // Caught up after a lost connection, below the watermark: newer messages of other
            // channels went out first, and a long-poll over several channels may have answered
            // past this key, so it gets a fresh one here.
            let (time, tag) = if mirrored.catch_up
                && (mirrored.time, mirrored.tag) <= self.inner.clock.watermark()
            {
                self.inner.clock.next()
            } else {
                (mirrored.time, mirrored.tag)
            };
            let parts = MessageParts {
                channel: id.clone(),
                id: mirrored.id as i64,
                time,
                tag,
                event_id: mirrored.event_id.clone(),
                event_type: mirrored.event_type.clone(),
                text: mirrored.text.clone(),
                expires_at: mirrored.expires_at,
            };
            match channel.ingest(parts, store, &limits, settings.format_count) {
                Ok((message, delta)) => {
                    self.inner.clock.observe(message.time, message.tag);
                    self.inner.totals.published.fetch_add(1, Ordering::Relaxed);
                    if store {
                        self.inner
                            .totals
                            .stored_bytes
                            .fetch_add(delta.added_bytes, Ordering::Relaxed);
                        if let Some(oldest) = channel.oldest_expiry() {
                            self.schedule_expiry(&channel, oldest);
                        }
                    }
                    self.apply(delta);
                    return true;
                }
                Err(None) => return false,
                Err(Some(ChannelGone::Removed)) => continue,
            }
        }
    }

    /// Records that the shared engine dropped stored messages up to `point` (time, tag), so recovery
    /// from an older point reports itself truncated.
    pub fn mirror_dropped(&self, id: &str, point: (u64, u64)) {
        if let Some(channel) = self.find(id) {
            channel.set_dropped_up_to(point);
        }
    }

    /// True when the channel is here and holds a stored message.
    pub fn has_stored(&self, id: &str) -> bool {
        self.find(id).is_some_and(|c| c.has_stored())
    }

    /// Local subscribers of a channel now (0 if the channel is not here).
    pub fn local_subscribers(&self, id: &str) -> u64 {
        self.find(id).map_or(0, |c| c.subscriber_count())
    }

    /// Creates the mirror of a channel if it is not here yet.
    pub fn mirror_channel(&self, id: &ChannelId) {
        let _ = self.get_or_create(id, Creator::Engine);
    }

    /// Drops the mirror of a channel when no local subscriber is attached (its engine stops
    /// following it). Returns whether it was dropped.
    pub fn drop_mirror(&self, id: &str) -> bool {
        let mut shard = self.shard(id).lock();
        let Some(channel) = shard.channels.get(id).cloned() else {
            return false;
        };
        if !channel.remove_if_unsubscribed() {
            return false;
        }
        shard.channels.remove(id);
        drop(shard);
        let dropped = channel.clear_stored();
        self.forget(&channel, dropped);
        true
    }

    /// The shared engine lost the channel's history (Redis restarted without its data) and the
    /// channel goes on from a new history whose ids start again at 1: the mirror (made if needed)
    /// drops its stored messages, a recovery point before `lost_up_to` reports `Truncated`, and its
    /// subscribers stay, told by `Event::HistoryLost`.
    pub fn mirror_history_lost(&self, id: &ChannelId, lost_up_to: (u64, u64)) {
        let Ok(channel) = self.get_or_create(id, Creator::Engine) else {
            return;
        };
        let dropped = channel.restart_history(lost_up_to);
        self.apply(dropped);
    }

    /// Deletes the mirror of a channel the shared engine deleted: local subscribers receive `text`
    /// as the channel-deleted message and are detached.
    pub fn mirror_deleted(&self, id: &ChannelId, text: Bytes) {
        let Some(channel) = self.shard(id.as_str()).lock().channels.remove(id.as_str()) else {
            return;
        };
        self.delete_channel(&channel, text);
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
}

#[cfg(test)]
mod tests;
