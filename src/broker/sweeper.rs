//! The sweeper: one task per broker that, every second, drops expired stored messages and removes
//! channels that stayed inactive for `channel_inactivity_time`. It works from per-shard queues filled
//! when messages are stored and when channels may have become idle, so its cost grows with what
//! expires, not with the number of channels.

use super::{Broker, ShardState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Broker {
    /// One sweep over every shard's queues.
    pub fn sweep(&self) {
        let now = Instant::now();
        let now_ms = self.now_ms();
        let inactivity_ms = self.cfg().channel_inactivity_time.as_millis() as u64;
        for shard in self.inner.shards.iter() {
            self.expire_messages(shard, now);
            // Take the due idle checks out under the lock, then look at each channel.
            let due: Vec<_> = {
                let mut state = shard.lock();
                let count = state
                    .idle
                    .iter()
                    .take_while(|(deadline, _)| *deadline <= now_ms)
                    .count();
                state.idle.drain(..count).collect()
            };
            for (_, weak) in due {
                let Some(channel) = weak.upgrade() else {
                    continue;
                };
                channel.idle_queued.store(false, Ordering::Release);
                let idle_before_ms = now_ms.saturating_sub(inactivity_ms);
                let removed = {
                    let mut state = shard.lock();
                    let removed = channel.remove_if_inactive(idle_before_ms);
                    if removed {
                        state.channels.remove(channel.id.as_str());
                    }
                    removed
                };
                if removed {
                    self.forget(&channel, Default::default());
                } else if channel.is_idle() {
                    // Active since it was queued: check again a full inactivity time after that.
                    self.schedule_idle_check(&channel, channel.last_activity_ms());
                }
            }
        }
        self.inner.trash.purge();
    }

    /// Drops the expired messages of every channel whose oldest message is due, and queues each
    /// again at its next oldest message's expiry.
    fn expire_messages(&self, shard: &parking_lot::Mutex<ShardState>, now: Instant) {
        let due: Vec<_> = {
            let mut state = shard.lock();
            let mut due = Vec::new();
            while state.expiry.peek().is_some_and(|entry| entry.0.at <= now) {
                if let Some(entry) = state.expiry.pop() {
                    due.push(entry.0.channel);
                }
            }
            due
        };
        for weak in due {
            let Some(channel) = weak.upgrade() else {
                continue;
            };
            channel.expiry_queued.store(false, Ordering::Release);
            let dropped = channel.expire(now);
            self.apply(dropped);
            if let Some(next) = channel.oldest_expiry() {
                self.schedule_expiry(&channel, next);
            } else if dropped.removed > 0 && channel.is_idle() {
                self.schedule_idle_check(&channel, self.now_ms());
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
