//! One channel: its bounded log of stored messages, the window of recent messages that live
//! subscribers read through their cursors, its counters, and the notifier that wakes subscribers.
//! The lock (a read-write lock: subscribers reading after their cursors share it) guards a few lines
//! of bookkeeping at a time and is never held across an await; subscribers are woken after it is
//! released.

use super::message::{Message, MessageParts};
use super::subscription::{Recovery, StartAt};
use super::ChannelId;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Bytes of bookkeeping counted for each stored message on top of its text and headers (the figure
/// the module documents for its shared memory).
pub(crate) const MESSAGE_OVERHEAD: u64 = 200;

/// What a channel appends for one publish.
pub(crate) struct Append {
    pub text: Bytes,
    pub event_id: Option<Box<str>>,
    pub event_type: Option<Box<str>>,
    pub store: bool,
    /// Digest of the publish's `Idempotency-Key`: a channel that remembers it takes nothing.
    pub key: Option<u128>,
}

/// What `Channel::append` did.
#[derive(Debug)]
pub(crate) enum Appended {
    /// The message went in.
    New(Arc<Message>, StoredDelta),
    /// The channel already took a publish with this idempotency key: nothing changed.
    Replayed,
}

/// The idempotency keys (digests) of a channel's latest keyed publishes, oldest first.
#[derive(Debug, Default)]
struct RecentKeys {
    order: VecDeque<u128>,
    known: std::collections::HashSet<u128>,
}

impl RecentKeys {
    /// Remembers `key`, forgetting the oldest beyond `keep`.
    fn remember(&mut self, key: u128, keep: usize) {
        if self.known.insert(key) {
            self.order.push_back(key);
        }
        while self.order.len() > keep {
            if let Some(old) = self.order.pop_front() {
                self.known.remove(&old);
            }
        }
    }
}

/// Bytes a stored copy of a message counts against the memory budget: its text and headers plus a
/// fixed overhead.
pub(crate) fn stored_cost(text: &[u8], event_id: Option<&str>, event_type: Option<&str>) -> u64 {
    let header = |h: Option<&str>| h.map_or(0, |v| v.len() as u64);
    text.len() as u64 + header(event_id) + header(event_type) + MESSAGE_OVERHEAD
}

fn message_cost(message: &Message) -> u64 {
    stored_cost(
        &message.text,
        message.event_id.as_deref(),
        message.event_type.as_deref(),
    )
}

/// Limits a channel applies on append, from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelLimits {
    pub max_stored: Option<u64>,
    pub message_ttl: std::time::Duration,
    pub lag_limit: usize,
    /// Idempotency keys remembered per channel.
    pub idempotency_keys: usize,
}

/// Why an operation on a channel could not be done.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChannelGone {
    /// The channel was deleted or swept after the caller found it; look it up again.
    Removed,
}

/// The result of reading a channel after a cursor.
#[derive(Debug)]
pub(crate) enum ReadStatus {
    /// Messages (possibly none) were appended to the output.
    Ok,
    /// The cursor fell behind the recent window: `missed` messages are gone.
    Lagged { missed: u64 },
    /// The channel was deleted; this is the message announcing it.
    Deleted(Arc<Message>),
    /// Messages were appended to the output, and the channel's history restarted (its engine lost
    /// it) after the first `before` of them.
    Restarted { before: usize },
}

/// How stored messages changed: counts and bytes added and dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoredDelta {
    pub added: u64,
    pub added_bytes: u64,
    pub removed: u64,
    pub removed_bytes: u64,
}

impl StoredDelta {
    fn drop_message(&mut self, message: &Message) {
        self.removed += 1;
        self.removed_bytes += message_cost(message);
    }
}

#[derive(Debug)]
struct ChannelState {
    /// Messages published so far (the last message id).
    last_id: u64,
    /// Stored messages, oldest first, for backtrack and recovery.
    stored: VecDeque<Arc<Message>>,
    /// (time, tag) of the newest message that left `stored` (evicted or expired): a client whose
    /// recovery point is older missed something.
    dropped_up_to: Option<(u64, u64)>,
    /// Messages taken in so far (publishes and mirrored messages): the positions cursors count in.
    /// Equal to `last_id` on the memory engine; a mirror's ids may skip numbers, and start again
    /// when its history restarts, positions never do.
    pushed: u64,
    /// Messages published while subscribers were attached, in order, for their cursors.
    recent: VecDeque<Arc<Message>>,
    /// `recent` holds every message at a position above this one; a cursor below it has lagged.
    recent_floor: u64,
    /// Times the channel's history restarted (`restart_history`), and the position it last did at.
    restarts: u64,
    restarted_at: u64,
    /// The engine lost history of this channel before its current one: a `Last-Event-ID` not found
    /// gets every stored message (`Recovery::Truncated`) rather than none.
    history_lost: bool,
    /// (time, tag) of the newest message, so mirrored messages keep the log in (time, tag) order.
    last_stamp: (u64, u64),
    /// Subscribers attached now.
    subscribers: u64,
    /// Set when the channel is deleted: the message its subscribers receive.
    deleted: Option<Arc<Message>>,
    /// Set when the channel left the broker's registry (deleted or swept).
    removed: bool,
    /// Keys of the latest keyed publishes (allocated at the first one).
    keys: Option<Box<RecentKeys>>,
}

/// A channel. Shared as `Arc<Channel>` by the registry and every subscription to it.
#[derive(Debug)]
pub struct Channel {
    pub(crate) id: ChannelId,
    pub(crate) wildcard: bool,
    state: RwLock<ChannelState>,
    head: watch::Sender<()>,
    /// Milliseconds since the broker started, at the last publish or subscriber arrival/departure.
    last_activity_ms: AtomicU64,
    /// Set while the channel sits in its shard's idle queue (at most one entry per channel).
    pub(crate) idle_queued: AtomicBool,
    /// Set while the channel sits in its shard's expiry queue (at most one entry per channel).
    pub(crate) expiry_queued: AtomicBool,
}

/// A channel's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel's id.
    pub channel: ChannelId,
    /// Messages published to it (its last message id).
    pub published_messages: u64,
    /// Messages it stores now.
    pub stored_messages: u64,
    /// Subscribers attached now.
    pub subscribers: u64,
}

impl Channel {
    pub(crate) fn new(id: ChannelId, wildcard: bool, now_ms: u64) -> Channel {
        Channel {
            id,
            wildcard,
            state: RwLock::new(ChannelState {
                last_id: 0,
                pushed: 0,
                recent_floor: 0,
                restarts: 0,
                restarted_at: 0,
                history_lost: false,
                last_stamp: (0, 0),
                stored: VecDeque::new(),
                dropped_up_to: None,
                recent: VecDeque::new(),
                subscribers: 0,
                deleted: None,
                removed: false,
                keys: None,
            }),
            head: watch::Sender::new(()),
            last_activity_ms: AtomicU64::new(now_ms),
            idle_queued: AtomicBool::new(false),
            expiry_queued: AtomicBool::new(false),
        }
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_activity_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    pub(crate) fn last_activity_ms(&self) -> u64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn info(&self) -> ChannelInfo {
        let state = self.state.read();
        ChannelInfo {
            channel: self.id.clone(),
            published_messages: state.last_id,
            stored_messages: state.stored.len() as u64,
            subscribers: state.subscribers,
        }
    }

    /// True when nothing keeps the channel alive: no subscribers and no stored messages.
    pub(crate) fn is_idle(&self) -> bool {
        let state = self.state.read();
        state.subscribers == 0 && state.stored.is_empty() && !state.removed
    }

    /// True when it remembers a publish with idempotency key `key`.
    pub(crate) fn remembers(&self, key: u128) -> bool {
        self.state
            .read()
            .keys
            .as_ref()
            .is_some_and(|keys| keys.known.contains(&key))
    }

    /// True when it holds at least one stored message (the module's "exists" for authorized-only).
    pub(crate) fn has_stored(&self) -> bool {
        !self.state.read().stored.is_empty()
    }

    /// Appends one message, stores it if asked (dropping the oldest beyond the limit), keeps it in the
    /// recent window while subscribers are attached, then wakes them. A publish whose idempotency
    /// key the channel remembers changes nothing (`Appended::Replayed`).
    pub(crate) fn append(
        &self,
        append: Append,
        limits: &ChannelLimits,
        clock: &super::message::Clock,
        format_count: usize,
    ) -> Result<Appended, ChannelGone> {
        let cost = stored_cost(
            &append.text,
            append.event_id.as_deref(),
            append.event_type.as_deref(),
        );
        let mut state = self.state.write();
        if state.removed {
            return Err(ChannelGone::Removed);
        }
        if let Some(key) = append.key {
            let keys = state.keys.get_or_insert_with(Default::default);
            if keys.known.contains(&key) {
                return Ok(Appended::Replayed);
            }
            keys.remember(key, limits.idempotency_keys);
        }
        let (time, tag) = clock.next();
        let message = Arc::new(Message::new(
            MessageParts {
                channel: self.id.clone(),
                id: state.last_id as i64 + 1,
                time,
                tag,
                event_id: append.event_id,
                event_type: append.event_type,
                text: append.text,
                expires_at: Instant::now() + limits.message_ttl,
            },
            format_count,
        ));
        let delta = Self::push(&mut state, message.clone(), append.store, cost, limits);
        drop(state);
        self.head.send_replace(());
        Ok(Appended::New(message, delta))
    }

    /// Appends a message whose id and (time, tag) another engine assigned (a mirror of a Redis
    /// channel). `parts.id` must be above the last id (`Err(None)` otherwise: already have it); a
    /// (time, tag) not above the last one is raised just above it so the log stays ordered.
    pub(crate) fn ingest(
        &self,
        mut parts: MessageParts,
        store: bool,
        limits: &ChannelLimits,
        format_count: usize,
    ) -> Result<(Arc<Message>, StoredDelta), Option<ChannelGone>> {
        let mut state = self.state.write();
        if state.removed {
            return Err(Some(ChannelGone::Removed));
        }
        if parts.id <= state.last_id as i64 {
            return Err(None);
        }
        if (parts.time, parts.tag) <= state.last_stamp {
            (parts.time, parts.tag) = (state.last_stamp.0, state.last_stamp.1.saturating_add(1));
        }
        let message = Arc::new(Message::new(parts, format_count));
        let cost = message_cost(&message);
        let delta = Self::push(&mut state, message.clone(), store, cost, limits);
        drop(state);
        self.head.send_replace(());
        Ok((message, delta))
    }

    /// Puts a new message at the head: the log if stored, the recent window if anyone reads it.
    fn push(
        state: &mut ChannelState,
        message: Arc<Message>,
        store: bool,
        cost: u64,
        limits: &ChannelLimits,
    ) -> StoredDelta {
        let mut delta = StoredDelta::default();
        state.last_id = message.id as u64;
        state.pushed += 1;
        state.last_stamp = (message.time, message.tag);
        if store {
            state.stored.push_back(message.clone());
            delta.added = 1;
            delta.added_bytes = cost;
            if let Some(max) = limits.max_stored {
                while state.stored.len() as u64 > max {
                    if let Some(old) = state.stored.pop_front() {
                        delta.drop_message(&old);
                        state.dropped_up_to = Some((old.time, old.tag));
                    }
                }
            }
        }
        if state.subscribers > 0 {
            state.recent.push_back(message);
            while state.recent.len() > limits.lag_limit {
                state.recent.pop_front();
                state.recent_floor += 1;
            }
        } else {
            state.recent_floor = state.pushed;
        }
        delta
    }

    /// Subscribers attached now.
    pub(crate) fn subscriber_count(&self) -> u64 {
        self.state.read().subscribers
    }

    /// Attaches a subscriber: checks the per-channel limit, picks the stored messages `start` asks for,
    /// and returns them with the cursor (the last id) and a receiver for wake-ups.
    pub(crate) fn attach(
        &self,
        max_subscribers: Option<u64>,
        start: &StartAt,
    ) -> Result<Attached, AttachError> {
        let mut state = self.state.write();
        if state.removed {
            return Err(AttachError::Gone);
        }
        if let Some(max) = max_subscribers {
            if state.subscribers >= max {
                return Err(AttachError::Full { max });
            }
        }
        state.subscribers += 1;
        let (backlog, recovery) = select_stored(
            &state.stored,
            state.dropped_up_to,
            state.history_lost,
            start,
        );
        let mut wake = self.head.subscribe();
        wake.mark_unchanged();
        Ok(Attached {
            cursor: state.pushed,
            restarts: state.restarts,
            backlog,
            wake,
            recovery,
        })
    }

    /// Detaches a subscriber; the recent window is dropped when the last one leaves. Returns true
    /// when that was the last subscriber.
    pub(crate) fn detach(&self, now_ms: u64) -> bool {
        let mut state = self.state.write();
        state.subscribers = state.subscribers.saturating_sub(1);
        let last = state.subscribers == 0;
        if last {
            state.recent.clear();
            state.recent_floor = state.pushed;
        }
        drop(state);
        self.touch(now_ms);
        last
    }

    /// Reads every recent message past position `cursor` into `out`, advancing the cursor; `restarts`
    /// is the history restarts the reader knows of (brought up to date).
    pub(crate) fn read_after(
        &self,
        cursor: &mut u64,
        restarts: &mut u64,
        out: &mut Vec<Arc<Message>>,
    ) -> ReadStatus {
        let state = self.state.read();
        if let Some(deleted) = &state.deleted {
            return ReadStatus::Deleted(deleted.clone());
        }
        if *cursor < state.recent_floor && *cursor < state.pushed {
            let missed = state.recent_floor - *cursor;
            return ReadStatus::Lagged { missed };
        }
        let from = *cursor;
        if from < state.pushed {
            let skip = (from - state.recent_floor) as usize;
            out.extend(state.recent.iter().skip(skip).cloned());
            *cursor = state.pushed;
        }
        if *restarts == state.restarts {
            return ReadStatus::Ok;
        }
        *restarts = state.restarts;
        let before = state.restarted_at.saturating_sub(from) as usize;
        ReadStatus::Restarted {
            before: before.min(out.len()),
        }
    }

    /// The engine this channel mirrors lost its history (Redis restarted without its data) and the
    /// channel goes on from a new one whose ids start again at 1: stored messages go, a recovery
    /// point before `lost_up_to` (and before the last message) reports `Truncated`, and subscribers
    /// attached now stay, reading `Restarted` before the new history's first message.
    pub(crate) fn restart_history(&self, lost_up_to: (u64, u64)) -> StoredDelta {
        let mut delta = StoredDelta::default();
        let restarted = {
            let mut state = self.state.write();
            state.history_lost = true;
            let point = lost_up_to.max(state.last_stamp);
            if state.dropped_up_to.is_none_or(|old| old < point) {
                state.dropped_up_to = Some(point);
            }
            let had_history = state.last_id > 0 || !state.stored.is_empty();
            if had_history {
                for old in state.stored.drain(..) {
                    delta.drop_message(&old);
                }
                state.last_id = 0;
                state.restarts += 1;
                state.restarted_at = state.pushed;
            }
            had_history
        };
        if restarted {
            self.head.send_replace(());
        }
        delta
    }

    /// Marks the channel deleted: stored messages go, subscribers receive `message` and are woken.
    pub(crate) fn delete(&self, message: Arc<Message>) -> StoredDelta {
        let mut delta = StoredDelta::default();
        {
            let mut state = self.state.write();
            state.removed = true;
            state.deleted = Some(message);
            state.recent.clear();
            for old in state.stored.drain(..) {
                delta.drop_message(&old);
            }
        }
        self.head.send_replace(());
        delta
    }

    /// Raises the point up to which stored messages were dropped.
    pub(crate) fn set_dropped_up_to(&self, point: (u64, u64)) {
        let mut state = self.state.write();
        if state.dropped_up_to.is_none_or(|old| old < point) {
            state.dropped_up_to = Some(point);
        }
    }

    /// When the oldest stored message expires (`None` when nothing is stored).
    pub(crate) fn oldest_expiry(&self) -> Option<Instant> {
        self.state.read().stored.front().map(|m| m.expires_at)
    }

    /// Drops every stored message.
    pub(crate) fn clear_stored(&self) -> StoredDelta {
        let mut delta = StoredDelta::default();
        let mut state = self.state.write();
        for old in state.stored.drain(..) {
            delta.drop_message(&old);
        }
        delta
    }

    /// Drops expired stored messages.
    pub(crate) fn expire(&self, now: Instant) -> StoredDelta {
        let mut delta = StoredDelta::default();
        let mut state = self.state.write();
        while state.stored.front().is_some_and(|m| m.expires_at <= now) {
            if let Some(old) = state.stored.pop_front() {
                delta.drop_message(&old);
                state.dropped_up_to = Some((old.time, old.tag));
            }
        }
        delta
    }

    /// Marks the channel removed if no subscriber is attached (a mirrored channel its engine stops
    /// following). Returns whether it did.
    pub(crate) fn remove_if_unsubscribed(&self) -> bool {
        let mut state = self.state.write();
        if state.subscribers == 0 && !state.removed {
            state.removed = true;
            true
        } else {
            false
        }
    }

    /// Marks the channel removed if it has had no subscribers and no stored messages since `idle_before_ms`.
    pub(crate) fn remove_if_inactive(&self, idle_before_ms: u64) -> bool {
        let mut state = self.state.write();
        let idle = self.last_activity_ms() <= idle_before_ms;
        if idle && state.subscribers == 0 && state.stored.is_empty() && !state.removed {
            state.removed = true;
            true
        } else {
            false
        }
    }
}

/// The stored messages a subscriber starting at `start` receives first, oldest first, and whether
/// the recovery point it named could be honoured in full.
fn select_stored(
    stored: &VecDeque<Arc<Message>>,
    dropped_up_to: Option<(u64, u64)>,
    history_lost: bool,
    start: &StartAt,
) -> (Vec<Arc<Message>>, Recovery) {
    match start {
        StartAt::Live => (Vec::new(), Recovery::NotAsked),
        StartAt::Backtrack(count) => {
            let keep = usize::try_from(*count).unwrap_or(usize::MAX);
            let skip = stored.len().saturating_sub(keep);
            (
                stored.iter().skip(skip).cloned().collect(),
                Recovery::NotAsked,
            )
        }
        StartAt::After { time, tag } => {
            let point = (*time, tag.unwrap_or(u64::MAX));
            // Stored messages are in (time, tag) order: find the first one past the point.
            let first = stored.partition_point(|m| (m.time, m.tag) <= point);
            let recovery = if dropped_up_to.is_some_and(|dropped| dropped > point) {
                Recovery::Truncated
            } else {
                Recovery::Complete
            };
            (stored.iter().skip(first).cloned().collect(), recovery)
        }
        StartAt::AfterEventId(event_id) => stored
            .iter()
            .position(|m| m.event_id.as_deref() == Some(event_id.as_str()))
            .map(|at| {
                (
                    stored.iter().skip(at + 1).cloned().collect(),
                    Recovery::Complete,
                )
            })
            .unwrap_or_else(|| {
                if history_lost {
                    // Most likely an id of the history the engine lost: everything there is.
                    (stored.iter().cloned().collect(), Recovery::Truncated)
                } else {
                    (Vec::new(), Recovery::UnknownEventId)
                }
            }),
    }
}

/// A subscriber's start in one channel.
pub(crate) struct Attached {
    pub cursor: u64,
    pub restarts: u64,
    pub backlog: Vec<Arc<Message>>,
    pub wake: watch::Receiver<()>,
    pub recovery: Recovery,
}

/// Why attaching failed.
pub(crate) enum AttachError {
    Gone,
    Full { max: u64 },
}
