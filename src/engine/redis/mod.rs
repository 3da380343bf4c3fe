//! The Redis engine: several Herald nodes share channels, history and counters through one or more
//! standalone Redis servers (shards). It owns the Lua scripts that publish, delete, expire and
//! collect channels atomically in Redis, the pub/sub listener of each shard (with reconnection and
//! resubscription), the per-channel follow state that turns Redis announcements into messages of the
//! local mirroring `Broker` (so transports read them through the same cursors as with the memory
//! engine), the node heartbeat that makes subscriber counts and limits cluster-wide, and the sweeper
//! that expires messages and removes inactive channels in Redis.
//!
//! A channel lives on shard `fnv1a64(id) % shards`. Its keys share the hash tag `{id}`:
//! `P:{id}:m` (hash: epoch, last_id, time, tag, dropped_time, dropped_tag), `P:{id}:l` (list of
//! stored records, oldest first), `P:{id}:s` (hash: node → local subscribers), and its pub/sub name
//! is `P:{id}:p`. Per shard: `P:channels` / `P:wchannels` (zsets: channel → deadline ms),
//! `P:expiry` (zset: channel → expiry of its oldest stored message), `P:published`, `P:stored`.
//! Shard 0 also holds the node reports `P:nodes` and `P:nodes:seen`.

mod record;

use crate::broker::{
    lifecycle_event_text, Broker, BrokerError, BrokerSettings, ChannelId, ChannelInfo, Mirrored,
    Publish, SubscribePolicy, SubscribeTo, Summary,
};
use crate::config::EngineConfig;
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use record::{Announcement, Record};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{RedisResult, Script, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most announcements kept for a channel while it is being (re)synchronised; beyond this the oldest
/// go, and the history read fills them in.
const MAX_PENDING: usize = 10_000;

/// Channels handled per sweep step and shard.
const SWEEP_BATCH: isize = 500;

/// The shard of a channel: FNV-1a (64 bit) of the id's bytes, modulo the number of shards. Stable
/// across nodes, versions and restarts.
pub fn shard_of(id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// One Redis server.
struct Shard {
    index: usize,
    url: String,
    client: redis::Client,
    conn: ConnectionManager,
    /// Subscribes and unsubscribes on the current pub/sub connection; `None` while disconnected.
    sink: Mutex<Option<PubSubSink>>,
    up: AtomicBool,
    /// Follows `up`, for requests that wait (bounded) for a connection being made.
    up_watch: tokio::sync::watch::Sender<bool>,
    /// Why the shard is down (for `/readyz` and 503 answers).
    problem: Mutex<String>,
}

impl Shard {
    fn set_up(&self, up: bool, problem: &str) {
        self.up.store(up, Ordering::Release);
        self.up_watch.send_replace(up);
        *self.problem.lock() = problem.to_string();
        crate::metrics::redis_shard_up(self.index, up);
    }
}

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
struct ClusterView {
    /// Keys of live nodes (this one included once its first heartbeat went through).
    live: HashSet<String>,
    /// Reports of live nodes.
    nodes: Vec<NodeReport>,
    /// Per shard: (normal, wildcard) channels.
    channel_counts: Vec<(u64, u64)>,
}

/// A channel this node follows in Redis (it has, or recently had, local subscribers).
struct Follow {
    shard: usize,
    wildcard: bool,
    /// Incarnation of the channel in Redis (creation time in ms); 0 before the first sync.
    epoch: u64,
    /// Last Redis message id taken in.
    last_id: u64,
    /// Added to Redis ids when the channel was re-created in Redis while local subscribers held
    /// higher ids (Redis lost its data), so local ids keep increasing.
    offset: u64,
    /// Announcements go straight to the mirror; otherwise they wait in `pending` for a sync.
    live: bool,
    pending: Vec<(u64, Record)>,
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the last local subscriber left (unfollowed `unsubscribe_after` later).
    idle_since: Option<Instant>,
    touched: Instant,
    /// Subscribers on other live nodes, as last read.
    remote_subscribers: u64,
    /// Local subscriber count last written to Redis.
    flushed: Option<u64>,
}

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
    follows: Mutex<HashMap<ChannelId, Follow>>,
    cluster: Mutex<ClusterView>,
    started: Instant,
    events: tokio::sync::mpsc::UnboundedSender<(&'static str, ChannelId)>,
    events_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(&'static str, ChannelId)>>>,
    channels_in_trash: AtomicU64,
}

struct Scripts {
    publish: Script,
    sync: Script,
    delete: Script,
    expire: Script,
    collect: Script,
    touch: Script,
    info: Script,
    node: Script,
    create: Script,
}

/// Redis keys of one channel.
struct Keys {
    meta: String,
    log: String,
    subs: String,
    pubsub: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "Redis answered something Herald cannot read ({what}); are two Herald versions sharing one key_prefix?"
    ))
}

impl RedisEngine {
    /// Connects lazily to every shard and starts the listeners, heartbeat and sweeper tasks (they end
    /// when `shutdown` resolves). Redis being down at start is not an error: the node starts not ready.
    pub fn start(
        broker: Broker,
        settings: BrokerSettings,
        config: &EngineConfig,
        hostname: &str,
    ) -> Result<Arc<RedisEngine>, String> {
        let timeout = config.command_timeout.0;
        let mut shards = Vec::new();
        for (index, url) in config.redis_urls.iter().enumerate() {
            let client =
                redis::Client::open(url.as_str()).map_err(|e| format!("redis URL {url:?}: {e}"))?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
                .map_err(|e| format!("redis URL {url:?}: {e}"))?;
            crate::metrics::redis_shard_up(index, false);
            shards.push(Arc::new(Shard {
                index,
                url: url.clone(),
                client,
                conn,
                sink: Mutex::new(None),
                up: AtomicBool::new(false),
                up_watch: tokio::sync::watch::channel(false).0,
                problem: Mutex::new("not connected yet".into()),
            }));
        }
        let started_ms = now_ms();
        let node_name = config
            .node_name
            .clone()
            .unwrap_or_else(|| format!("{hostname}:{}", std::process::id()));
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let engine = Arc::new(RedisEngine {
            broker,
            settings: ArcSwap::from_pointee(settings),
            config: config.clone(),
            node_key: format!("{node_name}#{}#{started_ms}", std::process::id()),
            node_name,
            shards,
            scripts: Scripts {
                publish: Script::new(include_str!("publish.lua")),
                sync: Script::new(include_str!("sync.lua")),
                delete: Script::new(include_str!("delete.lua")),
                expire: Script::new(include_str!("expire.lua")),
                collect: Script::new(include_str!("collect.lua")),
                touch: Script::new(include_str!("touch.lua")),
                info: Script::new(include_str!("info.lua")),
                node: Script::new(include_str!("node.lua")),
                create: Script::new(include_str!("create.lua")),
            },
            follows: Mutex::new(HashMap::new()),
            cluster: Mutex::new(ClusterView::default()),
            started: Instant::now(),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            channels_in_trash: AtomicU64::new(0),
        });
        let sink_engine = Arc::downgrade(&engine);
        engine.broker.set_event_sink(Box::new(move |name, channel| {
            if let Some(engine) = sink_engine.upgrade() {
                engine.emit(name, channel);
            }
        }));
        Ok(engine)
    }

    /// Runs the engine's background work until `shutdown` resolves: a pub/sub listener per shard,
    /// the heartbeat, the sweeper and the events publisher. Then removes this node's report.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for shard in &self.shards {
            tasks.push(tokio::spawn(
                self.clone().run_listener(shard.clone(), stop_rx.clone()),
            ));
        }
        tasks.push(tokio::spawn(self.clone().run_heartbeat(stop_rx.clone())));
        tasks.push(tokio::spawn(self.clone().run_sweeper(stop_rx.clone())));
        if let Some(rx) = self.events_rx.lock().take() {
            tasks.push(tokio::spawn(self.clone().run_events(rx, stop_rx.clone())));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        // Leave the cluster view at once rather than after node_timeout.
        let _ = self.report_node(true).await;
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

    fn prefix(&self) -> &str {
        &self.config.key_prefix
    }

    fn keys(&self, id: &str) -> Keys {
        let p = self.prefix();
        Keys {
            meta: format!("{p}:{{{id}}}:m"),
            log: format!("{p}:{{{id}}}:l"),
            subs: format!("{p}:{{{id}}}:s"),
            pubsub: format!("{p}:{{{id}}}:p"),
        }
    }

    fn channel_of_pubsub_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        name.strip_prefix(self.prefix())?
            .strip_prefix(":{")?
            .strip_suffix("}:p")
    }

    fn shard(&self, id: &str) -> &Arc<Shard> {
        &self.shards[shard_of(id, self.shards.len())]
    }

    fn zset(&self, wildcard: bool) -> String {
        if wildcard {
            format!("{}:wchannels", self.prefix())
        } else {
            format!("{}:channels", self.prefix())
        }
    }

    fn shard_key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix())
    }

    fn is_wildcard(&self, id: &str) -> bool {
        self.settings()
            .wildcard_channel_prefix
            .as_deref()
            .is_some_and(|prefix| id.starts_with(prefix))
    }

    fn is_events_channel(&self, id: &str) -> bool {
        self.settings()
            .events_channel_id
            .as_ref()
            .is_some_and(|events| events.as_str() == id)
    }

    fn unavailable(&self, shard: &Shard, reason: impl std::fmt::Display) -> BrokerError {
        BrokerError::Unavailable(format!(
            "Redis shard {} ({}) is unavailable: {reason}. Nothing was changed; try again.",
            shard.index, shard.url
        ))
    }

    /// Runs one Redis operation on `shard` within the command timeout.
    async fn call<T>(
        &self,
        shard: &Shard,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(self.config.command_timeout.0, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.unavailable(shard, err)),
            Err(_) => Err(self.unavailable(
                shard,
                format!(
                    "no answer within command_timeout = {:?}",
                    self.config.command_timeout.0
                ),
            )),
        }
    }

    /// How many more channels of this kind the shard may create: the limit minus what the other
    /// shards hold (as of the last heartbeat); -1 for no limit.
    fn allowance(&self, shard: usize, wildcard: bool) -> i64 {
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
            .enumerate()
            .filter(|(index, _)| *index != shard)
            .map(|(_, (normal, wild))| if wildcard { *wild } else { *normal })
            .sum();
        max.saturating_sub(elsewhere) as i64
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

    /// Subscribers of other live nodes in a `P:{id}:s` hash (this node's own entry is skipped: its
    /// exact count is local).
    fn remote_subscribers(&self, pairs: &[Value]) -> u64 {
        let cluster = self.cluster.lock();
        pairs
            .chunks(2)
            .filter_map(|pair| {
                let node = bytes(pair.first()?)?;
                let node = std::str::from_utf8(&node).ok()?.to_string();
                if node == self.node_key || !cluster.live.contains(&node) {
                    return None;
                }
                int(pair.get(1)?).map(|n| n.max(0) as u64)
            })
            .sum()
    }

    /// Sends a lifecycle event to the events channel (through Redis), if one is configured.
    fn emit(&self, name: &'static str, channel: &ChannelId) {
        if self.settings().events_channel_id.is_some() && !self.is_events_channel(channel.as_str())
        {
            let _ = self.events.send((name, channel.clone()));
        }
    }

    // ---- publish and delete ----

    /// Publishes to each channel (concurrently; each channel's publish is atomic in Redis, the set
    /// of channels is not). Returns each channel's info after the publish.
    pub async fn publish(
        &self,
        channels: &[ChannelId],
        publish: Publish,
    ) -> Result<Vec<ChannelInfo>, BrokerError> {
        if channels
            .iter()
            .any(|id| self.is_events_channel(id.as_str()))
        {
            return Err(BrokerError::EventsChannelReadOnly);
        }
        let settings = self.settings();
        if channels.len() > 1
            && (settings.max_number_of_channels.is_some()
                || settings.max_number_of_wildcard_channels.is_some())
        {
            if let Err(err) = self.create_all(channels).await {
                if matches!(err, BrokerError::Unavailable(_)) {
                    crate::metrics::count_redis_publish_failure();
                }
                return Err(err);
            }
        }
        let tail = Bytes::from(record::tail(
            publish.store,
            publish.event_id.as_deref(),
            publish.event_type.as_deref(),
            &publish.text,
        ));
        let results = futures_util::future::join_all(
            channels
                .iter()
                .map(|id| self.publish_one(id, tail.clone(), publish.store, true)),
        )
        .await;
        let infos = results.into_iter().collect::<Result<Vec<_>, _>>();
        if matches!(infos, Err(BrokerError::Unavailable(_))) {
            crate::metrics::count_redis_publish_failure();
        }
        infos
    }

    async fn publish_one(
        &self,
        id: &ChannelId,
        tail: Bytes,
        store: bool,
        count: bool,
    ) -> Result<ChannelInfo, BrokerError> {
        let settings = self.settings();
        let shard = self.shard(id.as_str());
        let wildcard = self.is_wildcard(id.as_str());
        let keys = self.keys(id.as_str());
        let mut conn = shard.conn.clone();
        let mut invocation = self.scripts.publish.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(self.zset(wildcard))
            .key(self.shard_key("expiry"))
            .key(self.shard_key("published"))
            .key(self.shard_key("stored"))
            .key(&keys.subs)
            .arg(id.as_str())
            .arg(&tail[..])
            .arg(u8::from(store))
            .arg(settings.max_messages_stored_per_channel.unwrap_or(0))
            .arg(settings.message_ttl.as_millis() as u64)
            .arg(settings.channel_inactivity_time.as_millis() as u64)
            .arg(self.allowance(shard.index, wildcard))
            .arg(&keys.pubsub)
            .arg(u8::from(count));
        let reply: Value = self.call(shard, invocation.invoke_async(&mut conn)).await?;
        let items = array(&reply);
        let status = items
            .first()
            .and_then(int)
            .ok_or_else(|| malformed("publish"))?;
        if status < 0 {
            return Err(self.too_many_channels(wildcard));
        }
        let created = items.get(3).and_then(int) == Some(1);
        if created {
            self.emit("channel_created", id);
        }
        let stored = items.get(4).and_then(int).unwrap_or(0).max(0) as u64;
        let remote = self.remote_subscribers(items.get(5).map(array).unwrap_or(&[]));
        Ok(ChannelInfo {
            channel: id.clone(),
            published_messages: status as u64,
            stored_messages: stored,
            subscribers: remote + self.broker.local_subscribers(id.as_str()),
        })
    }

    /// Deletes channels in Redis; every node's subscribers of them get `text` (or the configured
    /// text) as the channel-deleted message. Returns the ids that existed.
    pub async fn delete(
        &self,
        channels: &[ChannelId],
        text: Option<Bytes>,
    ) -> Result<Vec<ChannelId>, BrokerError> {
        if channels
            .iter()
            .any(|id| self.is_events_channel(id.as_str()))
        {
            return Err(BrokerError::EventsChannelReadOnly);
        }
        let text = text.unwrap_or_else(|| self.settings().channel_deleted_message_text.clone());
        let mut deleted = Vec::new();
        for id in channels {
            let shard = self.shard(id.as_str());
            let keys = self.keys(id.as_str());
            let mut conn = shard.conn.clone();
            let mut invocation = self.scripts.delete.key(&keys.meta);
            invocation
                .key(&keys.log)
                .key(self.zset(self.is_wildcard(id.as_str())))
                .key(self.shard_key("expiry"))
                .key(self.shard_key("stored"))
                .key(&keys.subs)
                .arg(id.as_str())
                .arg(&keys.pubsub)
                .arg(&text[..]);
            let existed: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
            if existed == 1 {
                self.emit("channel_destroyed", id);
                deleted.push(id.clone());
            }
        }
        Ok(deleted)
    }

    // ---- following channels ----

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
            if self.is_events_channel(id.as_str()) && !policy.allow_events_channel {
                return Err(BrokerError::EventsChannelSubscription);
            }
            let create = !policy.authorized_channels_only || self.is_wildcard(id.as_str());
            let remote = match self.follow(id, create).await? {
                Some(remote) => remote,
                None => return Err(BrokerError::NotAuthorizedToCreate),
            };
            if let Some(max) = settings.max_subscribers_per_channel {
                if remote + self.broker.local_subscribers(id.as_str()) >= max {
                    return Err(BrokerError::TooManySubscribers { max });
                }
            }
        }
        Ok(())
    }

    /// Follows one channel: subscribes to its pub/sub name, reads its history into the mirror and
    /// switches its announcements to live. Returns the subscribers of other nodes, or `None` when the
    /// channel does not exist (or has no stored message) and `create` is off.
    async fn follow(
        self: &Arc<Self>,
        id: &ChannelId,
        create: bool,
    ) -> Result<Option<u64>, BrokerError> {
        let shard_index = shard_of(id.as_str(), self.shards.len());
        let wildcard = self.is_wildcard(id.as_str());
        let lock = {
            let mut follows = self.follows.lock();
            let follow = follows.entry(id.clone()).or_insert_with(|| Follow {
                shard: shard_index,
                wildcard,
                epoch: 0,
                last_id: 0,
                offset: 0,
                live: false,
                pending: Vec::new(),
                sync_lock: Arc::new(tokio::sync::Mutex::new(())),
                idle_since: None,
                touched: Instant::now(),
                remote_subscribers: 0,
                flushed: None,
            });
            follow.touched = Instant::now();
            follow.idle_since = None;
            if follow.live && (create || self.broker.has_stored(id.as_str())) {
                return Ok(Some(follow.remote_subscribers));
            }
            follow.sync_lock.clone()
        };
        let _guard = lock.lock().await;
        let result = self.sync(id, create).await;
        if !matches!(result, Ok(Some(_))) {
            // Not followed after all: forget it unless local subscribers still read it.
            let mut follows = self.follows.lock();
            let forget = follows.get(id).is_some_and(|f| !f.live)
                && self.broker.local_subscribers(id.as_str()) == 0;
            if forget {
                follows.remove(id);
                drop(follows);
                self.broker.drop_mirror(id.as_str());
                self.spawn_unsubscribe(id.clone());
            }
        }
        result
    }

    /// The shard's pub/sub sink; while it is (re)connecting, waits for it up to the command timeout.
    async fn pubsub_sink(&self, shard: &Shard) -> Result<PubSubSink, BrokerError> {
        if let Some(sink) = shard.sink.lock().clone() {
            return Ok(sink);
        }
        let mut up = shard.up_watch.subscribe();
        let waited = tokio::time::timeout(self.config.command_timeout.0, up.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok());
        let sink = shard.sink.lock().clone();
        match sink {
            Some(sink) if waited => Ok(sink),
            _ => Err(self.unavailable(shard, shard.problem.lock().clone())),
        }
    }

    /// Creates every channel of a multi-channel publish first, so one refused by the channel limit
    /// leaves the others unchanged.
    async fn create_all(&self, channels: &[ChannelId]) -> Result<(), BrokerError> {
        let inactivity = self.settings().channel_inactivity_time.as_millis() as u64;
        for id in channels {
            let shard = self.shard(id.as_str());
            let wildcard = self.is_wildcard(id.as_str());
            let keys = self.keys(id.as_str());
            let mut conn = shard.conn.clone();
            let mut invocation = self.scripts.create.key(&keys.meta);
            invocation
                .key(self.zset(wildcard))
                .arg(id.as_str())
                .arg(self.allowance(shard.index, wildcard))
                .arg(inactivity);
            let created: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
            match created {
                -1 => return Err(self.too_many_channels(wildcard)),
                1 => self.emit("channel_created", id),
                _ => {}
            }
        }
        Ok(())
    }

    /// One synchronisation of a followed channel (the caller holds its sync lock).
    async fn sync(
        self: &Arc<Self>,
        id: &ChannelId,
        create: bool,
    ) -> Result<Option<u64>, BrokerError> {
        let (known_epoch, known_last, wildcard) = {
            let follows = self.follows.lock();
            match follows.get(id) {
                Some(f) if f.live && (create || self.broker.has_stored(id.as_str())) => {
                    return Ok(Some(f.remote_subscribers))
                }
                Some(f) => (f.epoch, f.last_id, f.wildcard),
                None => (0, 0, self.is_wildcard(id.as_str())),
            }
        };
        let shard = self.shard(id.as_str()).clone();
        let keys = self.keys(id.as_str());
        // Subscribe first: everything published from now on is announced to us (and kept in
        // `pending` until the history read below is in).
        let mut sink = self.pubsub_sink(&shard).await?;
        self.call(&shard, sink.subscribe(&keys.pubsub)).await?;
        let settings = self.settings();
        let mut conn = shard.conn.clone();
        let mut invocation = self.scripts.sync.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(self.zset(wildcard))
            .key(self.shard_key("expiry"))
            .key(self.shard_key("stored"))
            .key(&keys.subs)
            .arg(id.as_str())
            .arg(u8::from(create))
            .arg(if create {
                self.allowance(shard.index, wildcard)
            } else {
                -1
            })
            .arg(settings.channel_inactivity_time.as_millis() as u64)
            .arg(if known_epoch == 0 {
                String::new()
            } else {
                known_epoch.to_string()
            })
            .arg(known_last);
        let reply: Value = self
            .call(&shard, invocation.invoke_async(&mut conn))
            .await?;
        let items = array(&reply);
        match items.first().and_then(int) {
            Some(0) => return Ok(None),
            Some(-1) => return Err(self.too_many_channels(wildcard)),
            Some(1) => {}
            _ => return Err(malformed("sync")),
        }
        let field = |i: usize| items.get(i).and_then(int);
        let created = field(1) == Some(1);
        let epoch = field(2).ok_or_else(|| malformed("sync epoch"))? as u64;
        let redis_last_id = field(3).unwrap_or(0).max(0) as u64;
        let dropped = field(4).zip(field(5)).map(|(t, g)| (t as u64, g as u64));
        let stored_count = field(6).unwrap_or(0);
        let mut records = Vec::new();
        for value in items.get(7).map(array).unwrap_or(&[]) {
            let raw = bytes(value).ok_or_else(|| malformed("sync record"))?;
            records.push(record::parse_record(&raw).map_err(|_| malformed("sync record"))?);
        }
        let remote = self.remote_subscribers(items.get(8).map(array).unwrap_or(&[]));
        if !create && stored_count == 0 && !wildcard {
            // authorized_channels_only: the channel must hold stored messages.
            return Ok(None);
        }
        {
            let mut follows = self.follows.lock();
            let Some(follow) = follows.get_mut(id) else {
                // Deleted while we read; the caller sees it as missing.
                return Ok(None);
            };
            if follow.epoch != epoch {
                if follow.epoch != 0 {
                    // Re-created in Redis: keep local ids increasing.
                    follow.offset = self.broker.mirror_last_id(id.as_str()).unwrap_or(0);
                }
                follow.epoch = epoch;
                follow.last_id = 0;
            }
            self.broker.mirror_channel(id);
            if let Some(point) = dropped {
                self.broker.mirror_dropped(id.as_str(), point);
            }
            for record in records {
                self.take_in(id, follow, record);
            }
            let pending = std::mem::take(&mut follow.pending);
            for (pending_epoch, record) in pending {
                if pending_epoch == epoch {
                    self.take_in(id, follow, record);
                }
            }
            // Messages not stored and published before we subscribed are not ours to deliver.
            follow.last_id = follow.last_id.max(redis_last_id);
            follow.live = true;
            follow.remote_subscribers = remote;
        }
        if created {
            self.emit("channel_created", id);
        }
        Ok(Some(remote))
    }

    /// Hands one Redis message to the mirror (skipping ids it has).
    fn take_in(&self, id: &ChannelId, follow: &mut Follow, record: Record) {
        if record.id <= follow.last_id {
            return;
        }
        follow.last_id = record.id;
        let now = now_ms();
        let expires_at =
            Instant::now() + Duration::from_millis(record.expires_ms.saturating_sub(now));
        self.broker.mirror_message(
            id,
            Mirrored {
                id: follow.offset + record.id,
                time: record.time,
                tag: record.tag,
                event_id: record.event_id,
                event_type: record.event_type,
                text: record.text,
                store: record.store,
                expires_at,
            },
        );
    }

    /// Handles one announcement from a shard's pub/sub connection.
    fn on_announcement(self: &Arc<Self>, channel_name: &str, payload: Bytes) {
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
        let mut follows = self.follows.lock();
        let Some(follow) = follows.get_mut(id) else {
            return;
        };
        let channel = ChannelId::new_unchecked(id);
        match announcement {
            Announcement::Message { epoch, record } => {
                if !follow.live {
                    if follow.pending.len() >= MAX_PENDING {
                        follow.pending.remove(0);
                    }
                    follow.pending.push((epoch, record));
                    return;
                }
                if epoch != follow.epoch {
                    follow.offset = self.broker.mirror_last_id(id).unwrap_or(0);
                    follow.epoch = epoch;
                    follow.last_id = 0;
                }
                if record.id > follow.last_id + 1 {
                    // Missed something (a reconnect): read the history, then go on.
                    follow.live = false;
                    follow.pending.push((epoch, record));
                    drop(follows);
                    self.spawn_resync(channel);
                    return;
                }
                self.take_in(&channel, follow, record);
            }
            Announcement::Deleted(text) => {
                follows.remove(id);
                drop(follows);
                self.broker.mirror_deleted(&channel, text);
                self.spawn_unsubscribe(channel);
            }
            Announcement::Collected => {
                if self.broker.drop_mirror(id) {
                    follows.remove(id);
                    drop(follows);
                    self.spawn_unsubscribe(channel);
                }
            }
        }
    }

    fn spawn_resync(self: &Arc<Self>, id: ChannelId) {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            for _ in 0..20 {
                let lock = match engine.follows.lock().get(&id) {
                    Some(f) if !f.live => f.sync_lock.clone(),
                    _ => return,
                };
                let _guard = lock.lock().await;
                match engine.sync(&id, true).await {
                    Ok(_) => return,
                    Err(err) => {
                        tracing::debug!(channel = %id.as_str(), error = %err, "resync failed; retrying")
                    }
                }
                drop(_guard);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        });
    }

    fn spawn_unsubscribe(self: &Arc<Self>, id: ChannelId) {
        let shard = self.shard(id.as_str()).clone();
        let name = self.keys(id.as_str()).pubsub;
        let engine = self.clone();
        tokio::spawn(async move {
            // Followed again meanwhile: keep the subscription.
            if engine.follows.lock().contains_key(&id) {
                return;
            }
            let sink = shard.sink.lock().clone();
            if let Some(mut sink) = sink {
                let _ = engine.call(&shard, sink.unsubscribe(&name)).await;
            }
        });
    }

    // ---- background work ----

    async fn run_listener(
        self: Arc<Self>,
        shard: Arc<Shard>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut connected_before = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            let connect = tokio::time::timeout(
                self.config.command_timeout.0,
                shard.client.get_async_pubsub(),
            );
            let pubsub = tokio::select! {
                result = connect => result,
                _ = stop.changed() => return,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    let (mut sink, mut stream) = pubsub.split();
                    let names: Vec<String> = {
                        let follows = self.follows.lock();
                        follows
                            .iter()
                            .filter(|(_, f)| f.shard == shard.index)
                            .map(|(id, _)| self.keys(id.as_str()).pubsub)
                            .collect()
                    };
                    let mut subscribed = true;
                    for chunk in names.chunks(512) {
                        if self.call(&shard, sink.subscribe(chunk)).await.is_err() {
                            subscribed = false;
                            break;
                        }
                    }
                    if subscribed {
                        *shard.sink.lock() = Some(sink);
                        shard.set_up(true, "");
                        if connected_before {
                            crate::metrics::count_redis_reconnect();
                            tracing::info!(shard = shard.index, url = %shard.url, "reconnected to Redis; catching up from history");
                        } else {
                            tracing::info!(shard = shard.index, url = %shard.url, "connected to Redis");
                        }
                        connected_before = true;
                        backoff = Duration::from_millis(100);
                        for id in self.mark_stale(shard.index) {
                            self.spawn_resync(id);
                        }
                        loop {
                            tokio::select! {
                                message = stream.next() => match message {
                                    Some(message) => {
                                        let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                                        self.on_announcement(message.get_channel_name(), payload);
                                    }
                                    None => break,
                                },
                                _ = stop.changed() => return,
                            }
                        }
                        tracing::warn!(shard = shard.index, url = %shard.url, "lost the Redis pub/sub connection; reconnecting");
                    }
                    *shard.sink.lock() = None;
                    shard.set_up(false, "connection lost, reconnecting");
                    self.mark_stale(shard.index);
                }
                Ok(Err(err)) => {
                    shard.set_up(false, &err.to_string());
                }
                Err(_) => {
                    shard.set_up(false, "connecting timed out");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Marks every followed channel of a shard as needing a history read (announcements may have
    /// been missed); returns their ids.
    fn mark_stale(&self, shard: usize) -> Vec<ChannelId> {
        let mut follows = self.follows.lock();
        follows
            .iter_mut()
            .filter(|(_, f)| f.shard == shard)
            .map(|(id, f)| {
                f.live = false;
                id.clone()
            })
            .collect()
    }

    async fn run_heartbeat(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(err) = self.report_node(false).await {
                tracing::debug!(error = %err, "heartbeat: node report failed");
            }
            self.count_channels().await;
            self.flush_follows().await;
        }
    }

    /// Writes this node's report to shard 0 and reads the live nodes.
    async fn report_node(&self, leaving: bool) -> Result<(), BrokerError> {
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
        let mut conn = shard.conn.clone();
        let mut invocation = self.scripts.node.key(self.shard_key("nodes"));
        invocation
            .key(self.shard_key("nodes:seen"))
            .arg(&self.node_key)
            .arg(json)
            .arg(self.config.node_timeout.0.as_millis() as u64)
            .arg(u8::from(leaving));
        let reply: Value = self.call(shard, invocation.invoke_async(&mut conn)).await?;
        let mut live = HashSet::new();
        let mut nodes = Vec::new();
        for pair in array(&reply).chunks(2) {
            let (Some(key), Some(report)) =
                (pair.first().and_then(bytes), pair.get(1).and_then(bytes))
            else {
                continue;
            };
            live.insert(String::from_utf8_lossy(&key).into_owned());
            if let Ok(report) = serde_json::from_slice::<NodeReport>(&report) {
                nodes.push(report);
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node).then(a.pid.cmp(&b.pid)));
        let mut cluster = self.cluster.lock();
        cluster.live = live;
        cluster.nodes = nodes;
        Ok(())
    }

    /// Reads every shard's channel counts (for the channel limits).
    async fn count_channels(&self) {
        let mut counts = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            let mut conn = shard.conn.clone();
            let mut pipe = redis::pipe();
            pipe.zcard(self.zset(false)).zcard(self.zset(true));
            let result: Result<(u64, u64), _> = self.call(shard, pipe.query_async(&mut conn)).await;
            counts.push(result.unwrap_or_else(|_| {
                // Keep the last figure for a shard we cannot read.
                self.cluster
                    .lock()
                    .channel_counts
                    .get(shard.index)
                    .copied()
                    .unwrap_or((0, 0))
            }));
        }
        self.cluster.lock().channel_counts = counts;
    }

    /// Writes changed local subscriber counts, renews the deadline of channels with local
    /// subscribers, stops following channels idle for `unsubscribe_after`, and (when a
    /// per-channel subscriber limit is set) refreshes the other nodes' counts.
    async fn flush_follows(self: &Arc<Self>) {
        let linger = self.config.unsubscribe_after.0;
        let keep_alive = self
            .settings()
            .channel_inactivity_time
            .max(self.config.node_timeout.0)
            .as_millis() as u64;
        let mut writes: Vec<Vec<(ChannelId, u64)>> = vec![Vec::new(); self.shards.len()];
        let mut touches: Vec<Vec<(bool, ChannelId)>> = vec![Vec::new(); self.shards.len()];
        let mut unfollow = Vec::new();
        {
            let mut follows = self.follows.lock();
            for (id, follow) in follows.iter_mut() {
                let local = self.broker.local_subscribers(id.as_str());
                if follow.flushed != Some(local) && follow.live {
                    writes[follow.shard].push((id.clone(), local));
                    follow.flushed = Some(local);
                }
                if local > 0 {
                    follow.idle_since = None;
                    touches[follow.shard].push((follow.wildcard, id.clone()));
                } else {
                    let since = *follow.idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= linger
                        && follow.touched.elapsed() >= linger.max(Duration::from_secs(1))
                    {
                        unfollow.push(id.clone());
                    }
                }
            }
            for id in &unfollow {
                if self.broker.drop_mirror(id.as_str()) {
                    follows.remove(id);
                }
            }
        }
        for id in unfollow {
            self.spawn_unsubscribe(id);
        }
        for shard in &self.shards {
            let writes = std::mem::take(&mut writes[shard.index]);
            let touches = std::mem::take(&mut touches[shard.index]);
            let mut conn = shard.conn.clone();
            if !writes.is_empty() {
                let mut pipe = redis::pipe();
                for (id, count) in &writes {
                    let subs = self.keys(id.as_str()).subs;
                    if *count == 0 {
                        pipe.hdel(&subs, &self.node_key).ignore();
                    } else {
                        pipe.hset(&subs, &self.node_key, *count).ignore();
                    }
                }
                let written: Result<(), _> = self.call(shard, pipe.query_async(&mut conn)).await;
                if written.is_err() {
                    let mut follows = self.follows.lock();
                    for (id, _) in &writes {
                        if let Some(follow) = follows.get_mut(id) {
                            follow.flushed = None;
                        }
                    }
                }
            }
            if !touches.is_empty() {
                let mut invocation = self.scripts.touch.key(self.zset(false));
                invocation.key(self.zset(true)).arg(keep_alive);
                for (wildcard, id) in &touches {
                    invocation
                        .arg(if *wildcard { "w" } else { "n" })
                        .arg(id.as_str());
                }
                let _: Result<i64, _> = self.call(shard, invocation.invoke_async(&mut conn)).await;
            }
        }
        if self.settings().max_subscribers_per_channel.is_some() {
            self.refresh_remote_counts().await;
        }
    }

    async fn refresh_remote_counts(&self) {
        let ids: Vec<(usize, ChannelId)> = self
            .follows
            .lock()
            .iter()
            .map(|(id, f)| (f.shard, id.clone()))
            .collect();
        for shard in &self.shards {
            let mine: Vec<&ChannelId> = ids
                .iter()
                .filter(|(s, _)| *s == shard.index)
                .map(|(_, id)| id)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for id in &mine {
                pipe.hgetall(self.keys(id.as_str()).subs);
            }
            let mut conn = shard.conn.clone();
            let Ok(replies): Result<Vec<Value>, _> =
                self.call(shard, pipe.query_async(&mut conn)).await
            else {
                continue;
            };
            let counts: Vec<u64> = replies
                .iter()
                .map(|r| self.remote_subscribers(array(r)))
                .collect();
            let mut follows = self.follows.lock();
            for (id, count) in mine.into_iter().zip(counts) {
                if let Some(follow) = follows.get_mut(id) {
                    follow.remote_subscribers = count;
                }
            }
        }
    }

    async fn run_sweeper(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            for shard in &self.shards {
                if shard.up.load(Ordering::Acquire) {
                    if let Err(err) = self.sweep_shard(shard).await {
                        tracing::debug!(shard = shard.index, error = %err, "sweep failed");
                    }
                }
            }
        }
    }

    async fn sweep_shard(&self, shard: &Shard) -> Result<(), BrokerError> {
        let now = now_ms();
        let mut conn = shard.conn.clone();
        let due: Vec<String> = self
            .call(
                shard,
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.shard_key("expiry"))
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SWEEP_BATCH)
                    .query_async(&mut conn),
            )
            .await?;
        for id in due {
            let keys = self.keys(&id);
            let mut invocation = self.scripts.expire.key(&keys.meta);
            invocation
                .key(&keys.log)
                .key(self.shard_key("expiry"))
                .key(self.shard_key("stored"))
                .arg(&id);
            let _: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
        }
        for wildcard in [false, true] {
            let due: Vec<String> = self
                .call(
                    shard,
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(self.zset(wildcard))
                        .arg("-inf")
                        .arg(now)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(SWEEP_BATCH)
                        .query_async(&mut conn),
                )
                .await?;
            for id in due {
                if self.is_events_channel(&id) {
                    continue;
                }
                let keys = self.keys(&id);
                let mut invocation = self.scripts.collect.key(&keys.meta);
                invocation
                    .key(&keys.log)
                    .key(self.zset(wildcard))
                    .key(self.shard_key("expiry"))
                    .key(self.shard_key("stored"))
                    .key(&keys.subs)
                    .arg(&id)
                    .arg(&keys.pubsub);
                let removed: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
                if removed == 1 {
                    self.channels_in_trash.fetch_add(1, Ordering::Relaxed);
                    self.emit("channel_destroyed", &ChannelId::new_unchecked(&id));
                }
            }
        }
        Ok(())
    }

    async fn run_events(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<(&'static str, ChannelId)>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let (name, channel) = tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            let Some(events) = self.settings().events_channel_id.clone() else {
                continue;
            };
            let text = lifecycle_event_text(name, &channel);
            let tail = Bytes::from(record::tail(true, None, None, &text));
            if let Err(err) = self.publish_one(&events, tail, true, false).await {
                tracing::debug!(error = %err, "could not publish to the events channel");
            }
        }
    }

    // ---- statistics and health ----

    /// One channel's cluster-wide counters, `None` if it does not exist.
    pub async fn channel_info(&self, id: &str) -> Result<Option<ChannelInfo>, BrokerError> {
        let shard = self.shard(id);
        let keys = self.keys(id);
        let mut conn = shard.conn.clone();
        let mut invocation = self.scripts.info.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(&keys.subs)
            .key(self.shard_key("expiry"))
            .key(self.shard_key("stored"))
            .arg(id);
        let reply: Value = self.call(shard, invocation.invoke_async(&mut conn)).await?;
        let items = array(&reply);
        let Some(last_id) = items.first().and_then(int) else {
            return Ok(None);
        };
        let stored = items.get(1).and_then(int).unwrap_or(0).max(0) as u64;
        let remote = self.remote_subscribers(items.get(2).map(array).unwrap_or(&[]));
        Ok(Some(ChannelInfo {
            channel: ChannelId::new_unchecked(id),
            published_messages: last_id.max(0) as u64,
            stored_messages: stored,
            subscribers: remote + self.broker.local_subscribers(id),
        }))
    }

    /// Every channel whose id starts with `prefix`, sorted by id.
    pub async fn channels_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<ChannelInfo>, BrokerError> {
        let mut ids = Vec::new();
        for shard in &self.shards {
            let mut conn = shard.conn.clone();
            for wildcard in [false, true] {
                let names: Vec<String> = self
                    .call(
                        shard,
                        redis::cmd("ZRANGE")
                            .arg(self.zset(wildcard))
                            .arg(0)
                            .arg(-1)
                            .query_async(&mut conn),
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
        let (mut channels, mut wildcard, mut published, mut stored) = (0u64, 0u64, 0u64, 0i64);
        for shard in &self.shards {
            let mut conn = shard.conn.clone();
            let mut pipe = redis::pipe();
            pipe.zcard(self.zset(false))
                .zcard(self.zset(true))
                .get(self.shard_key("published"))
                .get(self.shard_key("stored"));
            let (c, w, p, s): (u64, u64, Option<u64>, Option<i64>) =
                self.call(shard, pipe.query_async(&mut conn)).await?;
            channels += c;
            wildcard += w;
            published += p.unwrap_or(0);
            stored += s.unwrap_or(0);
        }
        let local_subscribers = summary.subscribers;
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
        summary.channels = channels;
        summary.wildcard_channels = wildcard;
        summary.published_messages = published;
        summary.stored_messages = stored.max(0) as u64;
        summary.subscribers = nodes.iter().map(|n| n.subscribers).sum();
        summary.channels_in_trash = self.channels_in_trash.load(Ordering::Relaxed);
        Ok((summary, nodes))
    }

    /// `Ok` when every shard's pub/sub connection is up, else which shard is not and why.
    pub fn readiness(&self) -> Result<(), String> {
        for shard in &self.shards {
            if !shard.up.load(Ordering::Acquire) {
                return Err(format!(
                    "Redis shard {} ({}) is unavailable: {}",
                    shard.index,
                    shard.url,
                    shard.problem.lock()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn shard_hash_is_fnv1a_64() {
        // FNV-1a 64 of "" is the offset basis; of "a" the published test vector.
        assert_eq!(
            shard_of("", usize::MAX),
            (0xcbf2_9ce4_8422_2325u64 % usize::MAX as u64) as usize
        );
        assert_eq!(
            shard_of("a", usize::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % usize::MAX as u64) as usize
        );
        let spread: std::collections::HashSet<_> =
            (0..100).map(|n| shard_of(&format!("ch{n}"), 4)).collect();
        assert_eq!(spread.len(), 4);
    }
}
