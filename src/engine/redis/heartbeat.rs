//! The heartbeat: this node's report (live nodes, forgotten ones), its local subscriber counts
//! written per channel, the deadlines of channels it has subscribers for renewed, the other nodes'
//! counts read (for `max_subscribers_per_channel`), channel counts per location (for the channel
//! limits and statistics), and on a Redis Cluster the audit that catches follows that fell behind.

use super::conn::{RedisConn, Shard};
use super::error::Failure;
use super::keys::location_key;
use super::scripts::{NodeCall, SubscriberCounts};
use super::RedisEngine;
use crate::broker::ChannelId;
use crate::shutdown::Shutdown;
use redis::{RedisResult, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A node's report, as statistics list it in `by_worker`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    /// The node's name.
    pub node: String,
    /// Its process id.
    pub pid: String,
    /// Its subscriber connections now.
    pub subscribers: u64,
    /// Seconds since it started.
    pub uptime: u64,
}

/// What this node knows of the others, refreshed every heartbeat.
#[derive(Default)]
pub(super) struct ClusterView {
    /// Keys of live nodes.
    pub(super) live: HashSet<String>,
    /// Keys of nodes Redis forgot (silent for ten node timeouts): their subscriber counts are removed
    /// where this node meets them.
    pub(super) dead: HashSet<String>,
    /// Reports of live nodes.
    pub(super) nodes: Vec<NodeReport>,
    /// Per location: (normal, wildcard) channels.
    pub(super) channel_counts: HashMap<String, (u64, u64)>,
}

/// One shard's share of a heartbeat.
#[derive(Default, Clone)]
struct ShardUpdates {
    /// Local subscriber counts to write.
    pub(super) counts: Vec<(ChannelId, u64)>,
    /// Channels with local subscribers (wildcard?, id): their deadlines are renewed.
    pub(super) touch: Vec<(bool, ChannelId)>,
    /// Live follows and their last id (Redis Cluster audit).
    pub(super) audit: Vec<(ChannelId, u64)>,
}

impl RedisEngine {
    /// Subscribers of other live nodes in a subscriber-count hash (this node's own entry is skipped:
    /// its exact count is local). Fields of nodes Redis forgot are removed on the way.
    pub(super) fn remote_subscribers(&self, id: &str, counts: &SubscriberCounts) -> u64 {
        let mut forgotten = Vec::new();
        let total = {
            let cluster = self.cluster.lock();
            counts
                .0
                .iter()
                .filter_map(|(node, count)| {
                    if cluster.dead.contains(node) {
                        forgotten.push(node.clone());
                        return None;
                    }
                    if *node == self.node_key || !cluster.live.contains(node) {
                        return None;
                    }
                    Some(*count)
                })
                .fold(0, u64::saturating_add)
        };
        if !forgotten.is_empty() {
            let shard = self.shard(id).clone();
            let subs = self.keys(id).subs;
            let conn = shard.conn.lock().clone();
            if let Some(mut conn) = conn {
                self.tasks.spawn(async move {
                    let _: RedisResult<i64> = redis::cmd("HDEL")
                        .arg(&subs)
                        .arg(&forgotten)
                        .query_async(&mut conn)
                        .await;
                });
            }
        }
        total
    }

    /// Reports this node every heartbeat, on its own timer (slow shards do not delay it).
    pub(super) async fn run_node_reports(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let reported = self.report_node(false).await;
            if self.config.cluster {
                // The cluster connection has no pub/sub connection of its own to watch: its health
                // is whether the heartbeat gets through.
                if let Some(shard) = self.shards.first() {
                    if shard.conn.lock().is_some() {
                        match &reported {
                            Ok(()) => shard.set_up(true, ""),
                            Err(err) => shard.set_up(false, &err.to_string()),
                        }
                    }
                }
            }
            if let Err(err) = reported {
                tracing::debug!(error = %err, "heartbeat: node report failed");
            }
        }
    }

    pub(super) async fn run_heartbeat(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let (updates, unfollow) = self.collect_follow_updates();
            for id in unfollow {
                self.spawn_unsubscribe(id);
            }
            // Each shard's work runs on its own, so a slow shard only delays its own channels.
            futures_util::future::join_all(self.shards.iter().map(|shard| {
                let updates = updates.get(&shard.index).cloned().unwrap_or_default();
                self.shard_heartbeat(shard, updates)
            }))
            .await;
            self.count_channels().await;
        }
    }

    /// Shard by shard of the follow table: changed local subscriber counts, channels to renew, idle channels
    /// to stop following, follows that need a catch-up.
    fn collect_follow_updates(self: &Arc<Self>) -> (HashMap<usize, ShardUpdates>, Vec<ChannelId>) {
        let linger = self.config.unsubscribe_after.0;
        let mut updates: HashMap<usize, ShardUpdates> = HashMap::new();
        let mut unfollow = Vec::new();
        let mut resync = Vec::new();
        let mut abandoned = Vec::new();
        for mut follows in self.follows.each_shard() {
            let mut leaving = Vec::new();
            for (id, follow) in follows.iter_mut() {
                let entry = updates.entry(follow.shard).or_default();
                let local = self.broker.local_subscribers(id.as_str());
                let live = follow.is_live();
                if live && follow.flushed != Some(local) {
                    entry.counts.push((id.clone(), local));
                    follow.flushed = Some(local);
                }
                if !live && !follow.catching_up && follow.epoch != 0 {
                    resync.push(id.clone());
                }
                // Never went live and nobody is syncing it (its request went away).
                if !live
                    && follow.epoch == 0
                    && local == 0
                    && follow.touched.elapsed() >= linger
                    && follow.sync_lock.try_lock().is_ok()
                {
                    abandoned.push(id.clone());
                }
                if live {
                    entry.audit.push((id.clone(), follow.last_id));
                }
                if local > 0 {
                    follow.idle_since = None;
                    entry.touch.push((follow.wildcard, id.clone()));
                } else {
                    let since = *follow.idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= linger
                        && follow.touched.elapsed() >= linger.max(Duration::from_secs(1))
                    {
                        leaving.push(id.clone());
                    }
                }
            }
            for id in leaving {
                // Not while a sync feeds the mirror (its messages would make the mirror again).
                let Some(feed) = follows.get(&id).map(|f| f.feed.clone()) else {
                    continue;
                };
                let Some(_feeding) = feed.try_lock() else {
                    continue;
                };
                if self.broker.drop_mirror(id.as_str()) {
                    follows.remove(&id);
                    unfollow.push(id);
                }
            }
            for id in &abandoned {
                if follows.remove(id).is_some() {
                    self.broker.drop_mirror(id.as_str());
                }
            }
        }
        unfollow.extend(abandoned);
        for id in &unfollow {
            // Its count may still be in Redis (written before, or left from an outage).
            self.forget_count(id.clone());
        }
        for id in resync {
            self.spawn_resync(id);
        }
        (updates, unfollow)
    }

    /// One shard's heartbeat: a ping through its pub/sub connection (a dead one is replaced),
    /// subscriber counts, deadlines of channels with local subscribers, the audit (cluster) and the
    /// other nodes' counts (when a per-channel subscriber limit is set).
    async fn shard_heartbeat(self: &Arc<Self>, shard: &Arc<Shard>, updates: ShardUpdates) {
        if !shard.is_up() {
            return;
        }
        if !self.config.cluster {
            let sink = shard.sink.lock().clone();
            if let Some(mut sink) = sink {
                let pong: Result<Value, _> = self.call(shard, sink.ping()).await;
                if pong.is_err() {
                    tracing::warn!(
                        shard = shard.index,
                        "Redis pub/sub connection did not answer a ping; reconnecting"
                    );
                    shard.reconnect.notify_waiters();
                    return;
                }
            }
        }
        let Ok(conn) = self.conn(shard).await else {
            return;
        };
        let ShardUpdates {
            counts,
            touch,
            audit,
        } = updates;
        let writes = counts.iter().map(|(id, count)| {
            let mut conn = conn.clone();
            let subs = self.keys(id.as_str()).subs;
            let cmd = if *count == 0 {
                redis::cmd("HDEL").arg(&subs).arg(&self.node_key).to_owned()
            } else {
                redis::cmd("HSET")
                    .arg(&subs)
                    .arg(&self.node_key)
                    .arg(*count)
                    .to_owned()
            };
            async move { self.call(shard, cmd.query_async::<i64>(&mut conn)).await }
        });
        let written = futures_util::future::join_all(writes).await;
        let failed: Vec<&ChannelId> = counts
            .iter()
            .zip(&written)
            .filter(|(_, r)| r.is_err())
            .map(|((id, _), _)| id)
            .collect();
        if !failed.is_empty() {
            for id in failed {
                if let Some(follow) = self.follows.of(id.as_str()).get_mut(id) {
                    follow.flushed = None;
                }
            }
        }
        // Renew deadlines, grouped by location (one script call each).
        let keep_alive = self
            .settings()
            .channel_inactivity_time
            .max(self.config.node_timeout.0)
            .as_millis() as u64;
        let mut by_location: HashMap<String, Vec<(bool, ChannelId)>> = HashMap::new();
        for (wildcard, id) in touch {
            by_location
                .entry(self.keys(id.as_str()).location)
                .or_default()
                .push((wildcard, id));
        }
        for (location, channels) in by_location {
            let mut conn = conn.clone();
            let touch = self
                .scripts
                .touch(&mut conn, &location, keep_alive, &channels);
            let _ = self.run_script(shard, touch).await;
        }
        if self.config.cluster {
            self.audit(shard, &conn, audit).await;
        }
        if self.settings().max_subscribers_per_channel.is_some() {
            self.refresh_remote_counts(shard, &conn).await;
        }
    }

    /// Redis Cluster: compares each live follow's last id with Redis; a follow behind at two audits
    /// in a row missed announcements (a connection that dropped and came back) and catches up.
    pub(super) async fn audit(
        self: &Arc<Self>,
        shard: &Shard,
        conn: &RedisConn,
        audit: Vec<(ChannelId, u64)>,
    ) {
        let reads = audit.iter().map(|(id, _)| {
            let mut conn = conn.clone();
            let meta = self.keys(id.as_str()).meta;
            async move {
                self.call(
                    shard,
                    redis::cmd("HGET")
                        .arg(&meta)
                        .arg("last_id")
                        .query_async::<Option<u64>>(&mut conn),
                )
                .await
            }
        });
        let answers = futures_util::future::join_all(reads).await;
        let mut resync = Vec::new();
        {
            for ((id, seen), answer) in audit.iter().zip(answers) {
                let Ok(Some(in_redis)) = answer else {
                    continue;
                };
                let mut follows = self.follows.of(id.as_str());
                let Some(follow) = follows.get_mut(id) else {
                    continue;
                };
                let behind = in_redis > *seen && follow.last_id < in_redis;
                if behind && follow.behind && follow.stale() {
                    resync.push(id.clone());
                }
                follow.behind = behind;
            }
        }
        for id in resync {
            self.spawn_resync(id);
        }
    }

    /// Writes this node's report and reads the live nodes.
    pub(super) async fn report_node(&self, leaving: bool) -> Result<(), Failure> {
        let Some(shard) = self.shards.first() else {
            return Ok(());
        };
        let report = NodeReport {
            node: self.node_name.clone(),
            pid: std::process::id().to_string(),
            subscribers: self.broker.summary().subscribers,
            uptime: self.started.elapsed().as_secs(),
        };
        let json = serde_json::to_string(&report).unwrap_or_default();
        let (reports, seen) = self.node_keys();
        let mut conn = self.conn(shard).await?;
        let call = NodeCall {
            node_key: &self.node_key,
            report: &json,
            node_timeout_ms: self.config.node_timeout.0.as_millis() as u64,
            leaving,
        };
        let reply = self
            .run_script(
                shard,
                self.scripts.node(&mut conn, (&reports, &seen), &call),
            )
            .await?;
        let mut live = HashSet::new();
        let mut nodes = Vec::new();
        for (key, report) in reply.live {
            live.insert(key);
            if let Ok(report) = serde_json::from_slice::<NodeReport>(&report) {
                nodes.push(report);
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node).then(a.pid.cmp(&b.pid)));
        let mut cluster = self.cluster.lock();
        for key in reply.forgotten {
            if cluster.dead.len() >= 10_000 {
                cluster.dead.clear();
            }
            cluster.dead.insert(key);
        }
        // A node back from a pause is live again, not dead.
        cluster.dead.retain(|key| !live.contains(key));
        cluster.live = live;
        cluster.nodes = nodes;
        drop(cluster);
        if reply.unknown && !leaving {
            // Redis did not know this node (forgotten after a long pause, or Redis lost its data):
            // other nodes may have removed its counts, so write them all again.
            for mut follows in self.follows.each_shard() {
                for follow in follows.values_mut() {
                    follow.flushed = None;
                }
            }
        }
        Ok(())
    }

    /// On a clean shutdown: removes this node's subscriber counts from the channels it followed.
    pub(super) async fn forget_own_counts(&self) {
        let ids: Vec<(usize, ChannelId)> = self
            .follows
            .each_shard()
            .flat_map(|follows| {
                follows
                    .iter()
                    .filter(|(_, f)| f.flushed.is_some_and(|n| n > 0))
                    .map(|(id, f)| (f.shard, id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let removals = ids.iter().map(|(shard, id)| {
            let shard = &self.shards[*shard];
            let subs = self.keys(id.as_str()).subs;
            async move {
                let _: Result<i64, _> = self
                    .query(shard, redis::cmd("HDEL").arg(&subs).arg(&self.node_key))
                    .await;
            }
        });
        futures_util::future::join_all(removals).await;
    }

    /// Reads every location's channel counts (for the channel limits and statistics).
    async fn count_channels(&self) {
        let reads = self.locations().into_iter().map(|(shard, location)| {
            let shard = &self.shards[shard];
            async move {
                if !shard.is_up() {
                    return None;
                }
                let normal: u64 = self
                    .query(
                        shard,
                        redis::cmd("ZCARD").arg(location_key(&location, "channels")),
                    )
                    .await
                    .ok()?;
                let wild: u64 = self
                    .query(
                        shard,
                        redis::cmd("ZCARD").arg(location_key(&location, "wchannels")),
                    )
                    .await
                    .ok()?;
                Some((location, (normal, wild)))
            }
        });
        let counts = futures_util::future::join_all(reads).await;
        let mut cluster = self.cluster.lock();
        // A location we could not read keeps its last figure.
        for (location, count) in counts.into_iter().flatten() {
            cluster.channel_counts.insert(location, count);
        }
    }

    async fn refresh_remote_counts(&self, shard: &Shard, conn: &RedisConn) {
        let ids = self.follows.on_shard(shard.index);
        let reads = ids.iter().map(|id| {
            let mut conn = conn.clone();
            let subs = self.keys(id.as_str()).subs;
            async move {
                self.call(
                    shard,
                    redis::cmd("HGETALL")
                        .arg(&subs)
                        .query_async::<Value>(&mut conn),
                )
                .await
                .ok()
                .map(|reply| {
                    self.remote_subscribers(id.as_str(), &SubscriberCounts::read(Some(&reply)))
                })
            }
        });
        let counts = futures_util::future::join_all(reads).await;
        for (id, count) in ids.iter().zip(counts) {
            if let (Some(follow), Some(count)) = (self.follows.of(id.as_str()).get_mut(id), count) {
                follow.remote_subscribers = count;
            }
        }
    }
}
