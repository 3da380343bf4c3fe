//! The Redis sweeper: once a second every node drops expired stored messages and removes channels
//! whose inactivity deadline passed, location by location, in batches.

use super::conn::Shard;
use super::error::Failure;
use super::keys::location_key;
use super::{now_ms, RedisEngine};
use crate::broker::ChannelId;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;

/// Channels handled per sweep step and location.
const SWEEP_BATCH: isize = 500;

impl RedisEngine {
    pub(super) async fn run_sweeper(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => return,
            }
            let sweeps = self
                .locations()
                .into_iter()
                .map(|(shard, location)| self.sweep_location(&self.shards[shard], location));
            for result in futures_util::future::join_all(sweeps).await {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "sweep failed");
                }
            }
        }
    }

    async fn sweep_location(&self, shard: &Shard, location: String) -> Result<(), Failure> {
        if !shard.is_up() {
            return Ok(());
        }
        let now = now_ms();
        let due = self
            .due(shard, &location_key(&location, "expiry"), now)
            .await?;
        let mut conn = self.conn(shard).await?;
        for id in due {
            let keys = self.keys(&id);
            let removed = self
                .run_script(shard, self.scripts.expire(&mut conn, &keys, &id))
                .await?;
            self.broker.add_to_trash(0, removed);
        }
        for wildcard in [false, true] {
            let zset = location_key(&location, if wildcard { "wchannels" } else { "channels" });
            let due = self.due(shard, &zset, now).await?;
            for id in due {
                if self.is_events_channel(&id) {
                    continue;
                }
                let keys = self.keys(&id);
                let collect =
                    self.scripts
                        .collect(&mut conn, &keys, (&id, &zset), self.announce_command());
                if self.run_script(shard, collect).await? {
                    self.broker.add_to_trash(1, 0);
                    self.emit("channel_destroyed", &ChannelId::new_unchecked(&id));
                }
            }
        }
        Ok(())
    }

    /// The first `SWEEP_BATCH` members of the zset `key` whose score (a deadline in ms) is at or
    /// before `now`.
    async fn due(&self, shard: &Shard, key: &str, now: u64) -> Result<Vec<String>, Failure> {
        self.query(
            shard,
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(now)
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH),
        )
        .await
    }
}
