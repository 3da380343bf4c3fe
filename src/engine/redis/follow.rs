//! Following channels: a node follows a channel in Redis while it has (or recently had) local
//! subscribers. It subscribes to the channel's pub/sub name first, then reads its history into the
//! mirror (`sync`), then takes announcements as they come (`on_announcement`); a gap or a lost
//! connection sends it back to a history read (`spawn_resync`, at most `MAX_CATCH_UPS` at once per
//! shard). The follow ends when the channel is deleted or collected; a channel Redis lost (restarted
//! without its data) goes on from its new history, its subscribers staying. The decisions are
//! `follow_state`'s pure transitions, taken under the follow table's shard lock; messages go into
//! the mirror after that lock is released, under the channel's own feed lock.

use super::conn::{sleep_unless_stopped, Backoff, RedisConn, Shard};
use super::error::Failure;
use super::follow_state::{Drained, Follow, Step};
use super::record;
use super::record::{Announcement, Record};
use super::scripts::{SyncCall, SyncFound, SyncReply};
use super::{now_ms, RedisEngine};
use crate::broker::{BrokerError, ChannelId, Mirrored, SubscribePolicy, SubscribeTo};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The channel this node followed is gone (deleted, or collected): its local subscribers got
    /// the channel-deleted message and the follow ended.
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

/// The (time, tag) at which incarnation `epoch` (its creation time in ms) began, in the terms of
/// message stamps (seconds, microseconds): a recovery point before it may have missed messages of
/// a history Redis lost.
fn incarnation_start(epoch: u64) -> (u64, u64) {
    (epoch / 1000, (epoch % 1000) * 1000)
}

/// Catch-ups (history reads after a gap or a lost connection) running at once per shard; the
/// others wait, so a reconnect with many followed channels does not send Redis one read per channel
/// at the same moment.
pub(super) const MAX_CATCH_UPS: usize = 64;

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
                let mut follows = self.follows.of(id.as_str());
                let follow = follows.entry(id.clone()).or_insert_with(|| {
                    Follow::new(self.shard_index(id.as_str()), self.is_wildcard(id.as_str()))
                });
                follow.touched = Instant::now();
                follow.idle_since = None;
                if follow.is_live() && (!need_stored || self.broker.has_stored(id.as_str())) {
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
                .of(id.as_str())
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

    /// Drops a follow that never went live and serves no local subscriber.
    fn forget_unused(self: &Arc<Self>, id: &ChannelId) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut follows = self.follows.of(id.as_str());
        // Not while another request syncs it.
        let unused = follows
            .get(id)
            .is_some_and(|f| !f.is_live() && f.epoch == 0 && f.sync_lock.try_lock().is_ok())
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
            let mut follows = self.follows.of(id.as_str());
            match follows.get_mut(id) {
                // Another follow of the same id replaced this one: not ours to sync.
                Some(f) if !Arc::ptr_eq(&f.sync_lock, owner) => return Ok(SyncOutcome::Ended),
                Some(f) if f.is_live() => {
                    let enough = match purpose {
                        SyncPurpose::CatchUp => true,
                        SyncPurpose::Subscribe { need_stored, .. } => {
                            !need_stored || self.broker.has_stored(id.as_str())
                        }
                    };
                    if enough {
                        return Ok(SyncOutcome::Followed(f.remote_subscribers));
                    }
                    // Read the history again; announcements wait meanwhile.
                    f.stale();
                    (f.epoch, f.last_id, f.wildcard)
                }
                Some(f) => (f.epoch, f.last_id, f.wildcard),
                None => return Ok(SyncOutcome::Ended),
            }
        };
        let shard = self.shard(id.as_str()).clone();
        let keys = self.keys(id.as_str());
        // Subscribe first: everything published from now on is announced to us (and kept in
        // `pending` until the history read below is in).
        self.subscribe_announcements(&shard, &keys.pubsub).await?;
        // A channel this node already followed is created again only when Redis lost it (sync.lua
        // tells a deleted incarnation from a lost one).
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
            allowance: if create || known {
                self.subscriber_allowance(&keys.location, wildcard)
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
                self.end_channel(id, owner, None);
                return Ok(SyncOutcome::Ended);
            }
            SyncReply::Deleted(text) => {
                self.end_channel(id, owner, Some(text));
                return Ok(SyncOutcome::Ended);
            }
            SyncReply::Missing => return Ok(SyncOutcome::Missing),
            SyncReply::Refused => {
                return Err(Failure::refused(
                    self.too_many_subscriber_channels(wildcard),
                ))
            }
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
            lost,
        } = found;
        let remote = self.remote_subscribers(id.as_str(), &subscribers);
        if need_stored && stored_count == 0 && !known {
            return Ok(SyncOutcome::Missing);
        }
        let (synced, feed, taken) = {
            let mut follows = self.follows.of(id.as_str());
            let Some(follow) = follows
                .get_mut(id)
                .filter(|f| Arc::ptr_eq(&f.sync_lock, owner))
            else {
                return Ok(SyncOutcome::Ended);
            };
            follow.remote_subscribers = remote;
            // Redis may have lost this node's count (a restart without data): write it again.
            follow.flushed = None;
            let synced = follow.synced(epoch, redis_last_id, records);
            (synced, follow.feed.clone(), follow.taken.clone())
        };
        let catch_up = known;
        {
            // While the follow syncs, only this sync (holding the sync lock) feeds the mirror.
            let _feeding = feed.lock();
            if synced.restart || (lost && !known) {
                // Redis lost the incarnation this node followed (or, for a node that starts
                // following, an earlier one): the mirror goes on with the new history.
                if synced.restart {
                    tracing::warn!(channel = %id, "Redis lost the channel (restarted without its data?); its subscribers stay, on its new history");
                }
                self.broker
                    .mirror_history_lost(id, incarnation_start(epoch));
            }
            if synced.restart {
                taken.send_replace((epoch, 0));
            } else {
                // The incarnation changes only from 0 here: nobody waits on it yet.
                taken.send_if_modified(|(followed, _)| {
                    *followed = epoch;
                    false
                });
            }
            self.broker.mirror_channel(id);
            if let Some(point) = dropped {
                self.broker.mirror_dropped(id.as_str(), point);
            }
            for record in synced.records {
                self.take_in(id, record, catch_up, &taken);
            }
            // Messages not stored and published before we subscribed are not ours to deliver.
            taken.send_modify(|(_, last)| *last = (*last).max(redis_last_id));
        }
        // Then what was announced meanwhile, batch by batch, until none is left: live.
        let gap = loop {
            let drained = match self
                .follows
                .of(id.as_str())
                .get_mut(id)
                .filter(|f| Arc::ptr_eq(&f.sync_lock, owner))
            {
                Some(follow) => follow.drain(),
                None => return Ok(SyncOutcome::Ended),
            };
            match drained {
                Drained::Records(records) => {
                    let _feeding = feed.lock();
                    for record in records {
                        self.take_in(id, record, catch_up, &taken);
                    }
                }
                Drained::Live => break false,
                Drained::Gap => break true,
            }
        };
        if created {
            self.emit("channel_created", id);
        }
        if gap {
            self.spawn_resync(id.clone());
        }
        Ok(SyncOutcome::Followed(remote))
    }

    /// Ends a followed channel that is gone from Redis: local subscribers get the channel-deleted
    /// message (`text`, or the configured one), and the node stops following it.
    fn end_channel(
        self: &Arc<Self>,
        id: &ChannelId,
        owner: &Arc<tokio::sync::Mutex<()>>,
        text: Option<Bytes>,
    ) {
        let ended = {
            let mut follows = self.follows.of(id.as_str());
            // A newer follow of the same id owns the mirror now.
            if !follows
                .get(id)
                .is_some_and(|f| Arc::ptr_eq(&f.sync_lock, owner))
            {
                return;
            }
            follows.remove(id)
        };
        if let Some(ended) = ended {
            let _feeding = ended.feed.lock();
            let text = text.unwrap_or_else(|| self.settings().channel_deleted_message_text.clone());
            self.broker.mirror_deleted(id, text);
        }
        self.forget_count(id.clone());
        self.spawn_unsubscribe(id.clone());
    }

    /// Removes this node's subscriber count of a channel it no longer follows.
    pub(super) fn forget_count(self: &Arc<Self>, id: ChannelId) {
        let engine = self.clone();
        self.tasks.spawn(async move {
            let shard = engine.shard(id.as_str()).clone();
            let subs = engine.keys(id.as_str()).subs;
            let _: Result<i64, _> = engine
                .query(&shard, redis::cmd("HDEL").arg(&subs).arg(&engine.node_key))
                .await;
        });
    }

    /// Hands one Redis message to the mirror (the caller holds the follow's feed lock), then records
    /// that the mirror holds it (`taken`, which publishes wait on).
    fn take_in(
        &self,
        id: &ChannelId,
        record: Record,
        catch_up: bool,
        taken: &tokio::sync::watch::Sender<(u64, u64)>,
    ) {
        let message_id = record.id;
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
        taken.send_modify(|(_, last)| *last = (*last).max(message_id));
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
        match announcement {
            Announcement::Message { epoch, record } => {
                let (step, feed, taken) = {
                    let mut follows = self.follows.of(id);
                    let Some(follow) = follows.get_mut(id) else {
                        return;
                    };
                    let step = follow.on_message(epoch, record);
                    (step, follow.feed.clone(), follow.taken.clone())
                };
                let step = match step {
                    // A new incarnation, and no deletion was heard before it: Redis lost the
                    // channel (a delete is announced before anything of the next incarnation).
                    Step::Restart { then } => {
                        tracing::warn!(channel = %channel, "Redis lost the channel (flushed or evicted?); its subscribers stay, on its new history");
                        let _feeding = feed.lock();
                        self.broker
                            .mirror_history_lost(&channel, incarnation_start(epoch));
                        taken.send_replace((epoch, 0));
                        *then
                    }
                    step => step,
                };
                match step {
                    Step::TakeIn(record) => {
                        let _feeding = feed.lock();
                        self.take_in(&channel, record, false, &taken);
                    }
                    Step::Buffered | Step::Duplicate | Step::Restart { .. } => {}
                    // Missed something (a lost connection): read the history, then go on.
                    Step::Gap => self.spawn_resync(channel),
                }
            }
            Announcement::Deleted(text) => {
                // Dropped after the mirror ended, so a waiting delete (`await_unfollowed`) answers
                // only then.
                let Some(ended) = self.follows.of(id).remove(id) else {
                    return;
                };
                {
                    let _feeding = ended.feed.lock();
                    self.broker.mirror_deleted(&channel, text);
                }
                drop(ended);
                self.spawn_unsubscribe(channel);
            }
            Announcement::Collected => {
                let Some(owner) = self.follows.of(id).get(id).map(|f| f.sync_lock.clone()) else {
                    return;
                };
                if self.broker.drop_mirror(id) {
                    self.follows.of(id).remove(id);
                    self.forget_count(channel.clone());
                    self.spawn_unsubscribe(channel);
                } else {
                    self.end_channel(&channel, &owner, None);
                }
            }
        }
    }

    /// Catches a channel up from history, retrying (backoff up to 1 s) until it is live again, no
    /// longer followed, or the engine stops. At most one such task per channel, and at most
    /// `MAX_CATCH_UPS` reading at once per shard.
    pub(super) fn spawn_resync(self: &Arc<Self>, id: ChannelId) {
        let shard = {
            let mut follows = self.follows.of(id.as_str());
            match follows.get_mut(&id) {
                Some(f) if !f.catching_up => {
                    f.catching_up = true;
                    f.shard
                }
                _ => return,
            }
        };
        let engine = self.clone();
        self.tasks.spawn(async move {
            let permits = engine.shards[shard].catch_ups.clone();
            let mut shutdown = engine.shutdown();
            let mut delay = Backoff::from(Duration::from_millis(50));
            loop {
                let permit = tokio::select! {
                    permit = permits.acquire() => permit,
                    _ = shutdown.recv() => break,
                };
                let lock = match engine.follows.of(id.as_str()).get(&id) {
                    Some(f) if !f.is_live() => f.sync_lock.clone(),
                    _ => break,
                };
                let guard = lock.lock().await;
                match engine.sync(&id, SyncPurpose::CatchUp, &lock).await {
                    Ok(_) => break,
                    Err(err) => {
                        tracing::debug!(channel = %id.as_str(), error = %err, "catch-up failed; retrying")
                    }
                }
                drop((guard, permit));
                if !sleep_unless_stopped(delay.next(), &mut shutdown).await {
                    break;
                }
            }
            if let Some(f) = engine.follows.of(id.as_str()).get_mut(&id) {
                f.catching_up = false;
            }
        });
    }

    pub(super) fn spawn_unsubscribe(self: &Arc<Self>, id: ChannelId) {
        let shard = self.shard(id.as_str()).clone();
        let name = self.keys(id.as_str()).pubsub;
        let engine = self.clone();
        self.tasks.spawn(async move {
            // Followed again meanwhile: keep the subscription.
            if engine.follows.of(id.as_str()).contains_key(&id) {
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
