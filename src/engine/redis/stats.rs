//! Statistics and health read from Redis: one channel's counters, channels by prefix, cluster-wide
//! totals with the live nodes, and readiness (every shard up).

use super::error::Failure;
use super::heartbeat::NodeReport;
use super::keys::location_key;
use super::RedisEngine;
use crate::broker::{BrokerError, ChannelId, ChannelInfo, Summary};
use futures_util::StreamExt;

impl RedisEngine {
    /// One channel's cluster-wide counters, `None` if it does not exist.
    pub async fn channel_info(&self, id: &str) -> Result<Option<ChannelInfo>, BrokerError> {
        let shard = self.shard(id);
        let keys = self.keys(id);
        let mut conn = self.conn(shard).await?;
        let Some(info) = self
            .run_script(shard, self.scripts.info(&mut conn, &keys, id))
            .await?
        else {
            return Ok(None);
        };
        let remote = self.remote_subscribers(id, &info.subscribers);
        Ok(Some(ChannelInfo {
            channel: ChannelId::new_unchecked(id),
            published_messages: info.last_id,
            stored_messages: info.stored,
            subscribers: remote.saturating_add(self.broker.local_subscribers(id)),
        }))
    }

    /// Every channel whose id starts with `prefix`, sorted by id.
    pub async fn channels_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<ChannelInfo>, BrokerError> {
        let mut ids = Vec::new();
        for (shard, location) in self.locations() {
            let shard = &self.shards[shard];
            for name in ["channels", "wchannels"] {
                let names: Vec<String> = self
                    .query(
                        shard,
                        redis::cmd("ZRANGE")
                            .arg(location_key(&location, name))
                            .arg(0)
                            .arg(-1),
                    )
                    .await?;
                ids.extend(names.into_iter().filter(|n| n.starts_with(prefix)));
            }
        }
        ids.sort();
        let infos = futures_util::stream::iter(ids)
            .map(|id| async move { self.channel_info(&id).await })
            .buffered(64)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for info in infos {
            if let Some(info) = info? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Cluster-wide totals and the live nodes.
    pub async fn summary(&self) -> Result<(Summary, Vec<NodeReport>), BrokerError> {
        let mut summary = self.broker.summary();
        let reads = self.locations().into_iter().map(|(shard, location)| {
            let shard = &self.shards[shard];
            async move {
                let channels: u64 = self
                    .query(
                        shard,
                        redis::cmd("ZCARD").arg(location_key(&location, "channels")),
                    )
                    .await?;
                let wildcard: u64 = self
                    .query(
                        shard,
                        redis::cmd("ZCARD").arg(location_key(&location, "wchannels")),
                    )
                    .await?;
                let published: Option<u64> = self
                    .query(
                        shard,
                        redis::cmd("GET").arg(location_key(&location, "published")),
                    )
                    .await?;
                let stored: Option<i64> = self
                    .query(
                        shard,
                        redis::cmd("GET").arg(location_key(&location, "stored")),
                    )
                    .await?;
                Ok::<_, Failure>((
                    channels,
                    wildcard,
                    published.unwrap_or(0),
                    stored.unwrap_or(0),
                ))
            }
        });
        let (mut channels, mut wildcard, mut published, mut stored) = (0u64, 0u64, 0u64, 0i64);
        for result in futures_util::future::join_all(reads).await {
            let (c, w, p, s) = result?;
            // Redis' numbers, whatever they are, must not overflow a sum.
            channels = channels.saturating_add(c);
            wildcard = wildcard.saturating_add(w);
            published = published.saturating_add(p);
            stored = stored.saturating_add(s);
        }
        let nodes = self.nodes(summary.subscribers);
        summary.channels = channels;
        summary.wildcard_channels = wildcard;
        summary.published_messages = published;
        summary.stored_messages = stored.max(0) as u64;
        summary.subscribers = nodes
            .iter()
            .map(|n| n.subscribers)
            .fold(0, u64::saturating_add);
        Ok((summary, nodes))
    }

    /// Channel counts as of the last heartbeat (no Redis round trip), for documents that only show
    /// them beside channel infos.
    pub fn cached_channel_counts(&self) -> (u64, u64) {
        self.cluster
            .lock()
            .channel_counts
            .values()
            .fold((0, 0), |(n, w): (u64, u64), (cn, cw)| {
                (n.saturating_add(*cn), w.saturating_add(*cw))
            })
    }

    /// Live nodes as of the last heartbeat, with this node's own figures fresh.
    pub(super) fn nodes(&self, local_subscribers: u64) -> Vec<NodeReport> {
        let mut nodes = self.cluster.lock().nodes.clone();
        let own_pid = std::process::id().to_string();
        nodes.retain(|n| !(n.node == self.node_name && n.pid == own_pid));
        nodes.push(NodeReport {
            node: self.node_name.clone(),
            pid: own_pid,
            subscribers: local_subscribers,
            uptime: self.started.elapsed().as_secs(),
        });
        nodes.sort_by(|a, b| a.node.cmp(&b.node).then(a.pid.cmp(&b.pid)));
        nodes
    }

    /// `Ok` when every shard's connection is up, else which shard is not and why.
    pub fn readiness(&self) -> Result<(), String> {
        for shard in &self.shards {
            if !shard.is_up() {
                let what = self.shard_name(shard);
                return Err(format!("{what} is unavailable: {}", shard.problem.lock()));
            }
        }
        Ok(())
    }
}
