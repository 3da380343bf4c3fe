//! The engine a server runs: the in-memory broker alone, or the Redis engine with the broker as its
//! local mirror. HTTP handlers and transports publish, delete, subscribe and read statistics through
//! `Engine`; subscriptions are always the broker's, so transports read messages the same way
//! whichever engine holds the channels.

pub mod redis;

use crate::broker::{
    Broker, BrokerError, BrokerSettings, ChannelId, ChannelInfo, Publish, Published,
    SubscribePolicy, SubscribeTo, Subscription, Summary,
};
use crate::config::{EngineConfig, EngineKind};
use bytes::Bytes;
use std::sync::Arc;

pub use self::redis::{probe as probe_redis, shard_of, NodeReport};

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    broker: Broker,
    redis: Option<Arc<redis::RedisEngine>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "kind",
                &if self.redis.is_some() {
                    "redis"
                } else {
                    "memory"
                },
            )
            .finish()
    }
}

/// One entry of `by_worker` in statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// Node name (Redis engine only).
    pub node: Option<String>,
    /// Process id.
    pub pid: String,
    /// Subscriber connections.
    pub subscribers: u64,
    /// Seconds since start.
    pub uptime: u64,
}

impl Engine {
    /// Builds the engine `config` names. The Redis engine connects lazily: a Redis that is down at
    /// start makes the node not ready, not fail.
    pub fn new(
        config: &EngineConfig,
        settings: BrokerSettings,
        hostname: &str,
    ) -> Result<Engine, String> {
        match config.kind {
            EngineKind::Memory => Ok(Engine {
                broker: Broker::new(settings),
                redis: None,
            }),
            EngineKind::Redis => {
                let broker = Broker::new(settings.clone().mirroring());
                let redis = redis::RedisEngine::start(broker.clone(), settings, config, hostname)?;
                Ok(Engine {
                    broker,
                    redis: Some(redis),
                })
            }
        }
    }

    /// The local broker (the whole engine in memory mode, the mirror in Redis mode).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Runs the engine's background work (the broker's sweeper; Redis listeners, heartbeat and
    /// sweeper) until `shutdown` resolves.
    pub async fn run(&self, shutdown: crate::shutdown::Shutdown) {
        let sweeper = tokio::spawn(self.broker.clone().run_sweeper({
            let mut shutdown = shutdown.clone();
            async move { shutdown.recv().await }
        }));
        if let Some(redis) = &self.redis {
            redis.clone().run(shutdown).await;
        }
        let _ = sweeper.await;
    }

    /// Applies reloaded settings.
    pub fn reconfigure(&self, settings: BrokerSettings) {
        match &self.redis {
            Some(redis) => redis.reconfigure(settings),
            None => self.broker.reconfigure(settings),
        }
    }

    /// Publishes one message to each channel; returns what it did on each (its info after it).
    pub async fn publish(
        &self,
        channels: &[ChannelId],
        publish: Publish,
    ) -> Result<Vec<Published>, BrokerError> {
        match &self.redis {
            Some(redis) => redis.publish(channels, publish).await,
            None => self.broker.publish(channels, publish),
        }
    }

    /// Deletes channels; returns the ids that existed.
    pub async fn delete(
        &self,
        channels: &[ChannelId],
        text: Option<Bytes>,
    ) -> Result<Vec<ChannelId>, BrokerError> {
        match &self.redis {
            Some(redis) => redis.delete(channels, text).await,
            None => self.broker.delete(channels, text),
        }
    }

    /// Subscribes to channels (see `Broker::subscribe`); with Redis, first makes sure this node
    /// follows them and holds their history.
    pub async fn subscribe(
        &self,
        requests: &[SubscribeTo],
        policy: &SubscribePolicy,
    ) -> Result<Subscription, BrokerError> {
        self.subscribe_with_watermark(requests, policy)
            .await
            .map(|(_, subscription)| subscription)
    }

    /// Subscribes, and reads the watermark the long-poll rule needs (`Broker::watermark`): before
    /// attaching, and with Redis once the channels' history is in the mirror.
    pub async fn subscribe_with_watermark(
        &self,
        requests: &[SubscribeTo],
        policy: &SubscribePolicy,
    ) -> Result<((u64, u64), Subscription), BrokerError> {
        let Some(redis) = &self.redis else {
            let watermark = self.broker.watermark();
            return Ok((watermark, self.broker.subscribe(requests, policy)?));
        };
        // Refuse what needs no channel before anything is created in Redis.
        self.broker.check_request(requests, policy)?;
        for _ in 0..3 {
            redis.prepare_subscribe(requests, policy).await?;
            let watermark = self.broker.watermark();
            match self.broker.subscribe(requests, policy) {
                // Deleted between the preparation and the attach: prepare again.
                Err(BrokerError::ChannelChanged) => continue,
                other => return other.map(|subscription| (watermark, subscription)),
            }
        }
        Err(BrokerError::ChannelChanged)
    }

    /// (channels, wildcard channels, uptime) for documents that show them beside channel infos:
    /// with Redis, channel counts as of the last heartbeat (no round trip).
    pub fn group_totals(&self) -> (u64, u64, u64) {
        let summary = self.broker.summary();
        match &self.redis {
            Some(redis) => {
                let (channels, wildcard) = redis.cached_channel_counts();
                (channels, wildcard, summary.uptime)
            }
            None => (summary.channels, summary.wildcard_channels, summary.uptime),
        }
    }

    /// One channel's info, `None` if it does not exist.
    pub async fn channel_info(&self, id: &str) -> Result<Option<ChannelInfo>, BrokerError> {
        match &self.redis {
            Some(redis) => redis.channel_info(id).await,
            None => Ok(self.broker.channel_info(id)),
        }
    }

    /// Every channel whose id starts with `prefix`, sorted by id.
    pub async fn channels_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<ChannelInfo>, BrokerError> {
        match &self.redis {
            Some(redis) => redis.channels_with_prefix(prefix).await,
            None => Ok(self.broker.channels_with_prefix(prefix)),
        }
    }

    /// Totals (cluster-wide with Redis) and the workers (live nodes with Redis, this process in
    /// memory mode).
    pub async fn summary(&self) -> Result<(Summary, Vec<Worker>), BrokerError> {
        match &self.redis {
            Some(redis) => {
                let (summary, nodes) = redis.summary().await?;
                let workers = nodes
                    .into_iter()
                    .map(|n| Worker {
                        node: Some(n.node),
                        pid: n.pid,
                        subscribers: n.subscribers,
                        uptime: n.uptime,
                    })
                    .collect();
                Ok((summary, workers))
            }
            None => {
                let summary = self.broker.summary();
                let worker = Worker {
                    node: None,
                    pid: std::process::id().to_string(),
                    subscribers: summary.subscribers,
                    uptime: summary.uptime,
                };
                Ok((summary, vec![worker]))
            }
        }
    }

    /// `Ok` when the engine can serve (always in memory mode), else what is wrong.
    pub fn readiness(&self) -> Result<(), String> {
        match &self.redis {
            Some(redis) => redis.readiness(),
            None => Ok(()),
        }
    }
}
