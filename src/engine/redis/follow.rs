//! Following channels: a node follows a channel in Redis while it has (or recently had) local
//! subscribers. It subscribes to the channel's pub/sub name first, then reads its history into the
//! mirror (`sync`), then takes announcements as they come (`on_announcement`); a gap or a lost
//! connection sends it back to a history read (`spawn_resync`). The follow ends when the channel is
//! deleted, collected or gone from Redis.

use super::conn::{Backoff, RedisConn, Shard};
use super::error::Failure;
use super::record;
use super::record::{Announcement, Record};
use super::scripts::{SyncCall, SyncFound, SyncReply};
use super::{now_ms, RedisEngine};
use crate::broker::{BrokerError, ChannelId, Mirrored, SubscribePolicy, SubscribeTo};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most announcements kept for a channel while it is being (re)synchronised; beyond this the oldest
/// go, and the history read fills them in.
const MAX_PENDING: usize = 10_000;

/// A channel this node follows in Redis (it has, or recently had, local subscribers).
pub(super) struct Follow {
    pub(super) shard: usize,
    pub(super) wildcard: bool,
    /// (incarnation of the channel in Redis — its creation time in ms, 0 before the first sync —,
    /// last Redis message id taken in): read with `epoch()` / `last_id()`, and watched by
    /// publishes waiting until the mirror holds their message.
    pub(super) taken: tokio::sync::watch::Sender<(u64, u64)>,
    /// Announcements go straight to the mirror; otherwise they wait in `pending` for a sync.
    pub(super) live: bool,
    pub(super) pending: std::collections::VecDeque<(u64, Record)>,
    pub(super) sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// A catch-up task is running for it.
    pub(super) resyncing: bool,
    /// When the last local subscriber left (unfollowed `unsubscribe_after` later).
    pub(super) idle_since: Option<Instant>,
    pub(super) touched: Instant,
    /// Subscribers on other live nodes, as last read.
    pub(super) remote_subscribers: u64,
    /// Local subscriber count last written to Redis.
    pub(super) flushed: Option<u64>,
    /// Redis was seen ahead of this follow at the last audit (Redis Cluster).
    pub(super) behind: bool,
}

impl Follow {
    pub(super) fn epoch(&self) -> u64 {
        self.taken.borrow().0
    }

    pub(super) fn last_id(&self) -> u64 {
        self.taken.borrow().1
    }
}

/// Why a sync runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SyncPurpose {
    /// A subscriber arrives: create the channel if `create`; with `need_stored`, only a channel
    /// holding stored messages counts as existing (authorized_channels_only).
    Subscribe { create: bool, need_stored: bool },
    /// After a lost connection or a gap: read what was missed.
    CatchUp,
}

/// What a sync found.
pub(super) enum SyncOutcome {
    /// Followed and live; subscribers on other nodes.
    Followed(u64),
    /// The channel does not exist (or holds no stored message when that was needed).
    Missing,
    /// The channel this node followed is gone (deleted, collected, or lost by Redis): its local
    /// subscribers got the channel-deleted message and the follow ended.
    Ended,
}

/// Forgets an unused follow when a subscribe request is dropped mid-way (`RedisEngine::follow`).
struct ForgetOnDrop {
    pub(super) engine: Arc<RedisEngine>,
    pub(super) id: ChannelId,
    pub(super) armed: bool,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.forget_unused(&self.id);
        }
    }
}

impl RedisEngine {
    /// Makes sure this node follows every requested channel in Redis and that its mirror holds the
    /// channel's history, then checks the cluster-wide subscriber limit; after this the mirror
    /// broker's `subscribe` serves the request.
    pub async fn prepare_subscribe(
        self: &Arc<Self>,
        requests: &[SubscribeTo],
        policy: &SubscribePolicy,
    ) -> Result<(), BrokerError> {
        let settings = self.settings();
        for request in requests {
            let id = &request.channel;
            let wildcard = self.is_wildcard(id.as_str());
            let create = !policy.authorized_channels_only || wildcard;
            let need_stored = policy.authorized_channels_only && !wildcard;
            let remote = match self.follow(id, create, need_stored).await? {
                Some(remote) => remote,
                None => return Err(BrokerError::NotAuthorizedToCreate),
            };
            if let Some(max) = settings.max_subscribers_per_channel {
                if remote.saturating_add(self.broker.local_subscribers(id.as_str())) >= max {
                    return Err(BrokerError::TooManySubscribers { max });
                }
            }
        }
        Ok(())
    }

    /// Follows one channel: subscribes to its pub/sub name, reads its history into the mirror and
    /// switches its announcements to live. Returns the subscribers of other nodes, or `None` when the
    /// channel does not exist (or has no stored message and `need_stored`) and `create` is off.
    pub(super) async fn follow(
        self: &Arc<Self>,
        id: &ChannelId,
        create: bool,
        need_stored: bool,
    ) -> Result<Option<u64>, BrokerError> {
        for _ in 0..3 {
            let lock = {
                let mut follows = self.follows.lock();
                let follow = follows
                    .entry(id.clone())
                    .or_insert_with(|| self.new_follow(id));
                follow.touched = Instant::now();
                follow.idle_since = None;
                if follow.live && (!need_stored || self.broker.has_stored(id.as_str())) {
                    return Ok(Some(follow.remote_subscribers));
                }
                follow.sync_lock.clone()
            };
            // If the request goes away while this waits (its future is dropped), an entry that never
            // went live must not stay behind.
            let cancel = ForgetOnDrop {
                engine: self.clone(),
                id: id.clone(),
                armed: true,
            };
            let guard = lock.lock().await;
            // Ended or forgotten while we waited: start over with the current entry.
            let same = self
                .follows
                .lock()
                .get(id)
                .is_some_and(|f| Arc::ptr_eq(&f.sync_lock, &lock));
            if !same {
                let mut cancel = cancel;
                cancel.armed = false;
                continue;
            }
            let purpose = SyncPurpose::Subscribe {
                create,
                need_stored,
            };
            let result = self.sync(id, purpose, &lock).await;
            drop(guard);
            let mut cancel = cancel;
            cancel.armed = false;
            match result {
                Ok(SyncOutcome::Followed(remote)) => return Ok(Some(remote)),
                // The old incarnation ended for its subscribers; follow the channel afresh.
                Ok(SyncOutcome::Ended) => continue,
                Ok(SyncOutcome::Missing) => {
                    self.forget_unused(id);
                    return Ok(None);
                }
                Err(err) => {
                    self.forget_unused(id);
                    return Err(err.into());
                }
            }
        }
        Err(BrokerError::ChannelChanged)
    }

    fn new_follow(&self, id: &ChannelId) -> Follow {
        Follow {
            shard: self.shard_index(id.as_str()),
            wildcard: self.is_wildcard(id.as_str()),
            taken: tokio::sync::watch::Sender::new((0, 0)),
            live: false,
            pending: std::collections::VecDeque::new(),
            sync_lock: Arc::new(tokio::sync::Mutex::new(())),
            resyncing: false,
            idle_since: None,
            touched: Instant::now(),
            remote_subscribers: 0,
            flushed: None,
            behind: false,
        }
    }

    /// Drops a follow that never went live and serves no local subscriber.
    fn forget_unused(self: &Arc<Self>, id: &ChannelId) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut follows = self.follows.lock();
        // Not while another request syncs it.
        let unused = follows
            .get(id)
            .is_some_and(|f| !f.live && f.epoch() == 0 && f.sync_lock.try_lock().is_ok())
            && self.broker.local_subscribers(id.as_str()) == 0;
        if unused {
            follows.remove(id);
            drop(follows);
            self.broker.drop_mirror(id.as_str());
            self.spawn_unsubscribe(id.clone());
        }
    }

    /// Subscribes to the channel's pub/sub name on its shard (confirmed before this returns).
    async fn subscribe_announcements(&self, shard: &Shard, name: &str) -> Result<(), Failure> {
        if self.config.cluster {
            let RedisConn::Cluster(mut conn) = self.conn(shard).await? else {
                return Err(self.unavailable(shard, "not a cluster connection"));
            };
            return self.call(shard, conn.ssubscribe(name)).await;
        }
        let sink = shard.sink.lock().clone();
        let mut sink = match sink {
            Some(sink) => sink,
            None => {
                self.wait_up(shard).await;
                let sink = shard.sink.lock().clone();
                sink.ok_or_else(|| self.unavailable(shard, shard.problem.lock().clone()))?
            }
        };
        self.call(shard, sink.subscribe(name)).await
    }

    /// One synchronisation of a followed channel (the caller holds its sync lock).
    pub(super) async fn sync(
        self: &Arc<Self>,
        id: &ChannelId,
        purpose: SyncPurpose,
        owner: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<SyncOutcome, Failure> {
        let (known_epoch, known_last, wildcard) = {
            let follows = self.follows.lock();
            match follows.get(id) {
                // Another follow of the same id replaced this one: not ours to sync.
                Some(f) if !Arc::ptr_eq(&f.sync_lock, owner) => return Ok(SyncOutcome::Ended),
                Some(f) if f.live => {
                    let enough = match purpose {
                        SyncPurpose::CatchUp => true,
                        SyncPurpose::Subscribe { need_stored, .. } => {
                            !need_stored || self.broker.has_stored(id.as_str())
                        }
                    };
                    if enough {
                        return Ok(SyncOutcome::Followed(f.remote_subscribers));
                    }
                    (f.epoch(), f.last_id(), f.wildcard)
                }
                Some(f) => (f.epoch(), f.last_id(), f.wildcard),
                None => return Ok(SyncOutcome::Ended),
            }
        };
        let shard = self.shard(id.as_str()).clone();
        let keys = self.keys(id.as_str());
        // Subscribe first: everything published from now on is announced to us (and kept in
        // `pending` until the history read below is in).
        self.subscribe_announcements(&shard, &keys.pubsub).await?;
        // A channel this node already followed is never re-created here: if it is gone, it ended.
        let known = known_epoch != 0;
        let (create, need_stored) = match purpose {
            SyncPurpose::Subscribe {
                create,
                need_stored,
            } => (create && !known, need_stored),
            SyncPurpose::CatchUp => (false, false),
        };
        let settings = self.settings();
        let mut conn = self.conn(&shard).await?;
        let call = SyncCall {
            id: id.as_str(),
            create,
            allowance: if create {
                self.allowance(&keys.location, wildcard)
            } else {
                -1
            },
            inactivity_ms: settings.channel_inactivity_time.as_millis() as u64,
            known: known.then_some((known_epoch, known_last)),
        };
        let reply = self
            .run_script(&shard, self.scripts.sync(&mut conn, &keys, wildcard, &call))
            .await?;
        let found = match reply {
            SyncReply::Missing if known => {
                self.end_channel(id, owner);
                return Ok(SyncOutcome::Ended);
            }
            SyncReply::Missing => return Ok(SyncOutcome::Missing),
            SyncReply::Refused => return Err(Failure::refused(self.too_many_channels(wildcard))),
            SyncReply::Found(found) => found,
        };
        let SyncFound {
            created,
            epoch,
            last_id: redis_last_id,
            dropped,
            stored: stored_count,
            records,
            subscribers,
        } = found;
        if known && epoch != known_epoch {
            // Deleted (or lost by Redis) and created again meanwhile.
            self.end_channel(id, owner);
            return Ok(SyncOutcome::Ended);
        }
        let remote = self.remote_subscribers(id.as_str(), &subscribers);
        if need_stored && stored_count == 0 && !known {
            return Ok(SyncOutcome::Missing);
        }
        let mut gap = false;
        {
            let mut follows = self.follows.lock();
            let Some(follow) = follows
                .get_mut(id)
                .filter(|f| Arc::ptr_eq(&f.sync_lock, owner))
            else {
                return Ok(SyncOutcome::Ended);
            };
            // The incarnation changes only from 0 (a known one that changed has ended above):
            // nobody waits on it yet.
            follow.taken.send_if_modified(|(followed, _)| {
                *followed = epoch;
                false
            });
            self.broker.mirror_channel(id);
            if let Some(point) = dropped {
                self.broker.mirror_dropped(id.as_str(), point);
            }
            let catch_up = known;
            for record in records {
                self.take_in(id, follow, record, catch_up);
            }
            // Messages not stored and published before we subscribed are not ours to deliver.
            follow
                .taken
                .send_modify(|(_, last)| *last = (*last).max(redis_last_id));
            let mut pending = std::mem::take(&mut follow.pending);
            while let Some((pending_epoch, record)) = pending.pop_front() {
                if pending_epoch != epoch {
                    continue;
                }
                if record.id > follow.last_id().saturating_add(1) {
                    // Announcements were dropped (the pending list overflowed): read again.
                    pending.push_front((pending_epoch, record));
                    gap = true;
                    break;
                }
                self.take_in(id, follow, record, catch_up);
            }
            follow.pending = pending;
            follow.live = !gap;
            follow.behind = false;
            follow.remote_subscribers = remote;
            // Redis may have lost this node's count (a restart without data): write it again.
            follow.flushed = None;
        }
        if created {
            self.emit("channel_created", id);
        }
        if gap {
            self.spawn_resync(id.clone());
        }
        Ok(SyncOutcome::Followed(remote))
    }

    /// Ends a followed channel that is gone from Redis: local subscribers get the channel-deleted
    /// message, and the node stops following it.
    fn end_channel(self: &Arc<Self>, id: &ChannelId, owner: &Arc<tokio::sync::Mutex<()>>) {
        {
            let mut follows = self.follows.lock();
            // A newer follow of the same id owns the mirror now.
            if !follows
                .get(id)
                .is_some_and(|f| Arc::ptr_eq(&f.sync_lock, owner))
            {
                return;
            }
            follows.remove(id);
        }
        self.broker
            .mirror_deleted(id, self.settings().channel_deleted_message_text.clone());
        self.forget_count(id.clone());
        self.spawn_unsubscribe(id.clone());
    }

    /// Removes this node's subscriber count of a channel it no longer follows.
    pub(super) fn forget_count(self: &Arc<Self>, id: ChannelId) {
        let engine = self.clone();
        tokio::spawn(async move {
            let shard = engine.shard(id.as_str()).clone();
            let subs = engine.keys(id.as_str()).subs;
            let _: Result<i64, _> = engine
                .query(&shard, redis::cmd("HDEL").arg(&subs).arg(&engine.node_key))
                .await;
        });
    }

    /// Hands one Redis message to the mirror (skipping ids it has).
    fn take_in(&self, id: &ChannelId, follow: &mut Follow, record: Record, catch_up: bool) {
        if record.id <= follow.last_id() {
            return;
        }
        follow.taken.send_modify(|(_, last)| *last = record.id);
        let left = Duration::from_millis(record.expires_ms.saturating_sub(now_ms()))
            .min(Duration::from_secs(10 * 365 * 24 * 3600));
        let now = Instant::now();
        self.broker.mirror_message(
            id,
            Mirrored {
                id: record.id,
                time: record.time,
                tag: record.tag,
                event_id: record.event_id,
                event_type: record.event_type,
                text: record.text,
                store: record.store,
                expires_at: now.checked_add(left).unwrap_or(now),
                catch_up,
            },
        );
    }

    /// Handles one announcement from a shard's pub/sub connection.
    pub(super) fn on_announcement(self: &Arc<Self>, channel_name: &str, payload: Bytes) {
        let Some(id) = self.channel_of_pubsub_name(channel_name) else {
            return;
        };
        let announcement = match record::parse_announcement(payload) {
            Ok(a) => a,
            Err(err) => {
                tracing::warn!(channel = id, error = %err, "ignoring an announcement");
                return;
            }
        };
        let channel = ChannelId::new_unchecked(id);
        let mut follows = self.follows.lock();
        let Some(follow) = follows.get_mut(id) else {
            return;
        };
        match announcement {
            Announcement::Message { epoch, record } => {
                if !follow.live {
                    if follow.pending.len() >= MAX_PENDING {
                        follow.pending.pop_front();
                    }
                    follow.pending.push_back((epoch, record));
                    return;
                }
                if epoch != follow.epoch() {
                    // The channel was deleted or collected and created again.
                    let owner = follow.sync_lock.clone();
                    drop(follows);
                    self.end_channel(&channel, &owner);
                    return;
                }
                if record.id > follow.last_id().saturating_add(1) {
                    // Missed something (a lost connection): read the history, then go on.
                    follow.live = false;
                    follow.pending.push_back((epoch, record));
                    drop(follows);
                    self.spawn_resync(channel);
                    return;
                }
                self.take_in(&channel, follow, record, false);
            }
            Announcement::Deleted(text) => {
                // Dropped after the mirror ended, so a waiting delete (`await_unfollowed`) answers
                // only then.
                let ended = follows.remove(id);
                drop(follows);
                self.broker.mirror_deleted(&channel, text);
                drop(ended);
                self.spawn_unsubscribe(channel);
            }
            Announcement::Collected => {
                let owner = follow.sync_lock.clone();
                drop(follows);
                if self.broker.drop_mirror(id) {
                    self.follows.lock().remove(id);
                    self.forget_count(channel.clone());
                    self.spawn_unsubscribe(channel);
                } else {
                    self.end_channel(&channel, &owner);
                }
            }
        }
    }

    /// Catches a channel up from history, retrying (backoff up to 1 s) until it is live again or
    /// no longer followed. At most one such task per channel.
    pub(super) fn spawn_resync(self: &Arc<Self>, id: ChannelId) {
        {
            let mut follows = self.follows.lock();
            match follows.get_mut(&id) {
                Some(f) if !f.resyncing => f.resyncing = true,
                _ => return,
            }
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let mut delay = Backoff::from(Duration::from_millis(50));
            loop {
                let lock = match engine.follows.lock().get(&id) {
                    Some(f) if !f.live => f.sync_lock.clone(),
                    _ => break,
                };
                let guard = lock.lock().await;
                match engine.sync(&id, SyncPurpose::CatchUp, &lock).await {
                    Ok(_) => break,
                    Err(err) => {
                        tracing::debug!(channel = %id.as_str(), error = %err, "catch-up failed; retrying")
                    }
                }
                drop(guard);
                tokio::time::sleep(delay.next()).await;
            }
            if let Some(f) = engine.follows.lock().get_mut(&id) {
                f.resyncing = false;
            }
        });
    }

    pub(super) fn spawn_unsubscribe(self: &Arc<Self>, id: ChannelId) {
        let shard = self.shard(id.as_str()).clone();
        let name = self.keys(id.as_str()).pubsub;
        let engine = self.clone();
        tokio::spawn(async move {
            // Followed again meanwhile: keep the subscription.
            if engine.follows.lock().contains_key(&id) {
                return;
            }
            if engine.config.cluster {
                let conn = shard.conn.lock().clone();
                if let Some(RedisConn::Cluster(mut conn)) = conn {
                    let _ = engine.call(&shard, conn.sunsubscribe(&name)).await;
                }
                return;
            }
            let sink = shard.sink.lock().clone();
            if let Some(mut sink) = sink {
                let _ = engine.call(&shard, sink.unsubscribe(&name)).await;
            }
        });
    }
}
