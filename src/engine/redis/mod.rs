//! The Redis engine: several Herald nodes share channels, history and counters through Redis —
//! standalone servers used as shards, or one Redis Cluster. This file is the engine's public face:
//! `RedisEngine`, started by `Engine::new` and run by `Engine::run`, with publish, delete, subscribe
//! and statistics as `Engine` calls them, and the channel limits it applies. The work is split by
//! concept: connections (`conn`), key layout (`keys`), the Lua scripts (`scripts`), publish and
//! delete (`publish`), the per-channel follow state that turns Redis announcements into messages of
//! the local mirroring `Broker`, so transports read them through the same cursors as with the memory
//! engine (`follow`), the pub/sub listeners (`listener`), the node heartbeat that makes subscriber
//! counts and limits cluster-wide (`heartbeat`), the sweeper (`sweeper`), lifecycle events
//! (`events`) and statistics (`stats`). `record` is the wire form of a message in Redis.

mod conn;
mod error;
mod events;
mod follow;
mod follow_state;
mod heartbeat;
mod keys;
mod listener;
mod publish;
mod record;
mod scripts;
mod stats;
mod sweeper;

pub use conn::{check_server_version, probe};
pub use heartbeat::NodeReport;
pub use keys::{fnv1a64, shard_of};

use crate::broker::{Broker, BrokerError, BrokerSettings, ChannelId};
use crate::config::EngineConfig;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use arc_swap::ArcSwap;
use conn::{RedisConn, Shard};
use events::MAX_QUEUED_EVENTS;
use follow_state::Follows;
use heartbeat::ClusterView;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use scripts::Scripts;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::task::TaskTracker;

/// How long shutdown waits for the engine's tasks to end (each Redis call inside them is bounded
/// by `command_timeout`; loops stop at the signal).
const TASKS_WAIT: Duration = Duration::from_secs(5);

/// The engine. Shared as `Arc<RedisEngine>`.
pub struct RedisEngine {
    broker: Broker,
    /// The full settings (the mirror broker runs with its limits off).
    settings: ArcSwap<BrokerSettings>,
    config: EngineConfig,
    node_key: String,
    node_name: String,
    shards: Vec<Arc<Shard>>,
    scripts: Scripts,
    follows: Follows,
    cluster: Mutex<ClusterView>,
    started: Instant,
    events: tokio::sync::mpsc::Sender<(&'static str, ChannelId)>,
    events_rx: Mutex<Option<tokio::sync::mpsc::Receiver<(&'static str, ChannelId)>>>,
    /// Every task the engine spawns; `run` waits for them when shutting down.
    tasks: TaskTracker,
    /// Fired (by `run`) when the server shuts down: every engine task stops on `stop`.
    stop_trigger: ShutdownTrigger,
    stop: Shutdown,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RedisEngine {
    /// Prepares the connections (made lazily: Redis being down at start is not an error, the node
    /// starts not ready). `run` starts the work.
    pub fn start(
        broker: Broker,
        settings: BrokerSettings,
        config: &EngineConfig,
        hostname: &str,
    ) -> Result<Arc<RedisEngine>, String> {
        let timeout = config.command_timeout.0;
        let mut shards = Vec::new();
        if config.cluster {
            for url in &config.redis_urls {
                redis::Client::open(url.as_str()).map_err(|e| format!("redis URL {url:?}: {e}"))?;
            }
            shards.push(Self::new_shard(0, config.redis_urls.join(","), None));
        } else {
            for (index, url) in config.redis_urls.iter().enumerate() {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| format!("redis URL {url:?}: {e}"))?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_lazy_with_config(client, manager_config)
                    .map_err(|e| format!("redis URL {url:?}: {e}"))?;
                shards.push(Self::new_shard(
                    index,
                    url.clone(),
                    Some(RedisConn::Single(conn)),
                ));
            }
        }
        let started_ms = now_ms();
        let node_name = config
            .node_name
            .clone()
            .unwrap_or_else(|| format!("{hostname}:{}", std::process::id()));
        let (events, events_rx) = tokio::sync::mpsc::channel(MAX_QUEUED_EVENTS);
        let (stop_trigger, stop) = crate::shutdown::channel();
        let engine = Arc::new(RedisEngine {
            broker,
            settings: ArcSwap::from_pointee(settings),
            config: config.clone(),
            node_key: format!("{node_name}#{}#{started_ms}", std::process::id()),
            node_name,
            shards,
            scripts: Scripts::new(),
            follows: Follows::new(),
            cluster: Mutex::new(ClusterView::default()),
            started: Instant::now(),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            tasks: TaskTracker::new(),
            stop_trigger,
            stop,
        });
        let sink_engine = Arc::downgrade(&engine);
        engine.broker.set_event_sink(Box::new(move |name, channel| {
            if let Some(engine) = sink_engine.upgrade() {
                engine.emit(name, channel);
            }
        }));
        Ok(engine)
    }

    /// Runs the engine's background work until `shutdown` fires: a pub/sub listener per shard, the
    /// node reports, the heartbeat, the sweeper and the events publisher. Then every task the engine
    /// started (these, catch-ups, unsubscribes, count removals) ends, waited for at most
    /// `TASKS_WAIT`, and this node leaves the cluster view.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        for shard in &self.shards {
            if self.config.cluster {
                self.tasks.spawn(
                    self.clone()
                        .run_cluster_listener(shard.clone(), self.shutdown()),
                );
            } else {
                self.tasks
                    .spawn(self.clone().run_listener(shard.clone(), self.shutdown()));
            }
        }
        self.tasks
            .spawn(self.clone().run_node_reports(self.shutdown()));
        self.tasks
            .spawn(self.clone().run_heartbeat(self.shutdown()));
        self.tasks.spawn(self.clone().run_sweeper(self.shutdown()));
        if let Some(rx) = self.events_rx.lock().take() {
            self.tasks
                .spawn(self.clone().run_events(rx, self.shutdown()));
        }
        shutdown.recv().await;
        // Listeners stop, so publishes no longer wait for announcements.
        self.stop_trigger.trigger();
        self.tasks.close();
        if tokio::time::timeout(TASKS_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "Redis engine tasks still running {TASKS_WAIT:?} after shutdown; leaving them"
            );
        }
        // Leave the cluster view at once rather than after node_timeout.
        let _ = self.report_node(true).await;
        self.forget_own_counts().await;
    }

    /// The signal the engine's tasks stop on (fired when `run`'s shutdown fires).
    pub(super) fn shutdown(&self) -> Shutdown {
        self.stop.clone()
    }

    /// The settings now (with limits).
    pub fn settings(&self) -> Arc<BrokerSettings> {
        self.settings.load_full()
    }

    /// Applies reloaded settings (the mirror broker gets them without its limits).
    pub fn reconfigure(&self, settings: BrokerSettings) {
        self.broker.reconfigure(settings.clone().mirroring());
        self.settings.store(Arc::new(settings));
    }

    fn is_wildcard(&self, id: &str) -> bool {
        self.settings().is_wildcard(id)
    }

    fn is_events_channel(&self, id: &str) -> bool {
        self.settings().is_events_channel(id)
    }

    /// How many more channels of this kind the location may create: the limit minus what the other
    /// locations hold (as of the last heartbeat); -1 for no limit.
    fn allowance(&self, location: &str, wildcard: bool) -> i64 {
        let settings = self.settings();
        let max = if wildcard {
            settings.max_number_of_wildcard_channels
        } else {
            settings.max_number_of_channels
        };
        let Some(max) = max else {
            return -1;
        };
        let cluster = self.cluster.lock();
        let elsewhere: u64 = cluster
            .channel_counts
            .iter()
            .filter(|(other, _)| other.as_str() != location)
            .map(|(_, (normal, wild))| if wildcard { *wild } else { *normal })
            .fold(0, u64::saturating_add);
        max.saturating_sub(elsewhere) as i64
    }

    /// `allowance` for a channel a subscriber creates: the channels kept for publishers
    /// (`channels_reserved_for_publishers`) are not the subscriber's to take.
    fn subscriber_allowance(&self, location: &str, wildcard: bool) -> i64 {
        let allowance = self.allowance(location, wildcard);
        let reserved = self.settings().channels_reserved_for_publishers;
        if wildcard || allowance < 0 || reserved == 0 {
            return allowance;
        }
        allowance
            .saturating_sub(i64::try_from(reserved).unwrap_or(i64::MAX))
            .max(0)
    }

    /// The refusal of a channel a subscriber could not create.
    fn too_many_subscriber_channels(&self, wildcard: bool) -> BrokerError {
        let settings = self.settings();
        match (wildcard, settings.channels_reserved_for_publishers) {
            (false, reserved) if reserved > 0 => BrokerError::TooManySubscriberChannels {
                max: settings.max_number_of_channels.unwrap_or(0),
                reserved,
            },
            _ => self.too_many_channels(wildcard),
        }
    }

    fn too_many_channels(&self, wildcard: bool) -> BrokerError {
        let settings = self.settings();
        if wildcard {
            BrokerError::TooManyWildcardChannels {
                max: settings.max_number_of_wildcard_channels.unwrap_or(0),
            }
        } else {
            BrokerError::TooManyChannels {
                max: settings.max_number_of_channels.unwrap_or(0),
            }
        }
    }
}
