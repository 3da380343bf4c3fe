//! The Redis engine: several Herald nodes share channels, history and counters through Redis —
//! standalone servers used as shards, or one Redis Cluster. It owns the Lua scripts that publish,
//! delete, expire and collect channels atomically in Redis, the pub/sub listener of each shard (with
//! reconnection, resubscription and catch-up from history), the per-channel follow state that turns
//! Redis announcements into messages of the local mirroring `Broker` (so transports read them through
//! the same cursors as with the memory engine), the node heartbeat that makes subscriber counts and
//! limits cluster-wide, and the sweeper that expires messages and removes inactive channels in Redis.
//!
//! Key layout (`P` = `key_prefix`). Standalone shards: a channel lives on shard `fnv1a64(id) % shards`;
//! its keys `P:{id}:m` (hash: epoch, last_id, time, tag, dropped_time, dropped_tag), `P:{id}:l` (list
//! of stored records, oldest first), `P:{id}:s` (hash: node → local subscribers), `P:{id}:k` (zset:
//! idempotency key → message id, the latest `idempotency_keys_per_channel`), pub/sub name
//! `P:{id}:p`; per shard ("location" `P`): `P:channels` / `P:wchannels` (zsets: channel → deadline
//! ms), `P:expiry` (zset: channel → expiry of its oldest stored message), `P:published`, `P:stored`.
//! Redis Cluster: a channel belongs to bucket `fnv1a64(id) % 128`; every key of the channel and of its
//! bucket carries the hash tag `{b}` so each script touches one slot: `P:{b}:id:m`, …, pub/sub name
//! `P:{b}:id:p` (sharded pub/sub), location `P:{b}`. Node reports live in `P:{nodes}:reports` and
//! `P:{nodes}:seen` (shard 0, or the cluster).

mod record;

use crate::broker::{
    lifecycle_event_text, Broker, BrokerError, BrokerSettings, ChannelId, ChannelInfo, Mirrored,
    Publish, Published, SubscribePolicy, SubscribeTo, Summary,
};
use crate::config::EngineConfig;
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use record::{Announcement, Record};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, PushKind, RedisFuture, RedisResult, Script, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most announcements kept for a channel while it is being (re)synchronised; beyond this the oldest
/// go, and the history read fills them in.
const MAX_PENDING: usize = 10_000;
/// Redis Cluster pushes (announcements) waiting for the listener; beyond, they are dropped and the
/// followed channels caught up from history.
const MAX_QUEUED_PUSHES: usize = 65_536;
/// How long a publish waits for this node's mirror to take its message in (read-your-writes on
/// the publishing node; see `await_mirror`). The announcement normally arrives with the reply.
const MIRROR_WAIT: Duration = Duration::from_millis(500);

/// Channels handled per sweep step and location.
const SWEEP_BATCH: isize = 500;

/// Buckets of channels on a Redis Cluster (each bucket is one hash slot).
const CLUSTER_BUCKETS: u64 = 128;

/// Lifecycle events waiting to be published to the events channel; beyond this they are dropped
/// (and logged) rather than piling up while Redis is slow.
const MAX_QUEUED_EVENTS: usize = 10_000;

/// FNV-1a (64 bit) of a channel id's bytes. Stable across nodes, versions and restarts.
pub fn fnv1a64(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The standalone shard of a channel: `fnv1a64(id) % shards`.
pub fn shard_of(id: &str, shards: usize) -> usize {
    (fnv1a64(id) % shards.max(1) as u64) as usize
}

/// A connection to one standalone Redis or to a Redis Cluster (which routes each command by its keys).
#[derive(Clone)]
enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// One standalone Redis server, or the whole Redis Cluster.
struct Shard {
    index: usize,
    url: String,
    /// The command connection (`None` until a cluster connection is made).
    conn: Mutex<Option<RedisConn>>,
    /// Redis Cluster: a second connection that never resends a command, for the scripts whose
    /// repetition would show (publish, delete). Standalone connections never resend: `None`.
    once_conn: Mutex<Option<RedisConn>>,
    /// Standalone: subscribes and unsubscribes on the current pub/sub connection; `None` while
    /// disconnected.
    sink: Mutex<Option<PubSubSink>>,
    up: AtomicBool,
    /// Follows `up`, for requests that wait (bounded) for a connection being made.
    up_watch: tokio::sync::watch::Sender<bool>,
    /// Why the shard is down (for `/readyz` and 503 answers).
    problem: Mutex<String>,
    /// Asks the listener to drop its pub/sub connection and make a new one (a ping went unanswered).
    reconnect: tokio::sync::Notify,
}

impl Shard {
    fn set_up(&self, up: bool, problem: &str) {
        self.up.store(up, Ordering::Release);
        self.up_watch.send_replace(up);
        *self.problem.lock() = problem.to_string();
        crate::metrics::redis_shard_up(self.index, up);
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
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
    /// Keys of live nodes.
    live: HashSet<String>,
    /// Keys of nodes Redis forgot (silent for ten node timeouts): their subscriber counts are removed
    /// where this node meets them.
    dead: HashSet<String>,
    /// Reports of live nodes.
    nodes: Vec<NodeReport>,
    /// Per location: (normal, wildcard) channels.
    channel_counts: HashMap<String, (u64, u64)>,
}

/// A channel this node follows in Redis (it has, or recently had, local subscribers).
struct Follow {
    shard: usize,
    wildcard: bool,
    /// (incarnation of the channel in Redis — its creation time in ms, 0 before the first sync —,
    /// last Redis message id taken in): read with `epoch()` / `last_id()`, and watched by
    /// publishes waiting until the mirror holds their message.
    taken: tokio::sync::watch::Sender<(u64, u64)>,
    /// Announcements go straight to the mirror; otherwise they wait in `pending` for a sync.
    live: bool,
    pending: std::collections::VecDeque<(u64, Record)>,
    sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// A catch-up task is running for it.
    resyncing: bool,
    /// When the last local subscriber left (unfollowed `unsubscribe_after` later).
    idle_since: Option<Instant>,
    touched: Instant,
    /// Subscribers on other live nodes, as last read.
    remote_subscribers: u64,
    /// Local subscriber count last written to Redis.
    flushed: Option<u64>,
    /// Redis was seen ahead of this follow at the last audit (Redis Cluster).
    behind: bool,
}

impl Follow {
    fn epoch(&self) -> u64 {
        self.taken.borrow().0
    }

    fn last_id(&self) -> u64 {
        self.taken.borrow().1
    }
}

/// Why a sync runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncPurpose {
    /// A subscriber arrives: create the channel if `create`; with `need_stored`, only a channel
    /// holding stored messages counts as existing (authorized_channels_only).
    Subscribe { create: bool, need_stored: bool },
    /// After a lost connection or a gap: read what was missed.
    CatchUp,
}

/// What a sync found.
enum SyncOutcome {
    /// Followed and live; subscribers on other nodes.
    Followed(u64),
    /// The channel does not exist (or holds no stored message when that was needed).
    Missing,
    /// The channel this node followed is gone (deleted, collected, or lost by Redis): its local
    /// subscribers got the channel-deleted message and the follow ended.
    Ended,
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
    events: tokio::sync::mpsc::Sender<(&'static str, ChannelId)>,
    events_rx: Mutex<Option<tokio::sync::mpsc::Receiver<(&'static str, ChannelId)>>>,
    /// Set when shutdown begins: listeners stop, so publishes no longer wait for announcements.
    stopping: AtomicBool,
}

struct Scripts {
    publish: Script,
    sync: Script,
    create: Script,
    delete: Script,
    expire: Script,
    collect: Script,
    touch: Script,
    info: Script,
    node: Script,
}

/// Redis keys of one channel and of its location.
struct Keys {
    meta: String,
    log: String,
    subs: String,
    /// Idempotency keys of recent publishes (zset: key → message id).
    idempotency: String,
    pubsub: String,
    /// Prefix of the location's keys (`P` on a standalone shard, `P:{b}` on a cluster).
    location: String,
}

impl Keys {
    fn channels(&self, wildcard: bool) -> String {
        location_key(
            &self.location,
            if wildcard { "wchannels" } else { "channels" },
        )
    }
    fn expiry(&self) -> String {
        location_key(&self.location, "expiry")
    }
    fn published(&self) -> String {
        location_key(&self.location, "published")
    }
    fn stored(&self) -> String {
        location_key(&self.location, "stored")
    }
}

fn location_key(location: &str, name: &str) -> String {
    format!("{location}:{name}")
}

/// A script with the shared Lua functions (`prelude.lua`) before it.
fn script(body: &str) -> Script {
    Script::new(&format!("{}{body}", include_str!("prelude.lua")))
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

/// The flat [field, value, field, value, …] form of a hash reply, whether it came as a RESP2 array
/// or a RESP3 map (cluster connections speak RESP3).
fn hash_pairs(value: &Value) -> Vec<Value> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        other => array(other).to_vec(),
    }
}

fn malformed(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "Redis answered something Herald cannot read ({what}); are two Herald versions sharing one key_prefix?"
    ))
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
        let engine = Arc::new(RedisEngine {
            broker,
            settings: ArcSwap::from_pointee(settings),
            config: config.clone(),
            node_key: format!("{node_name}#{}#{started_ms}", std::process::id()),
            node_name,
            shards,
            scripts: Scripts {
                publish: script(include_str!("publish.lua")),
                sync: script(include_str!("sync.lua")),
                create: script(include_str!("create.lua")),
                delete: script(include_str!("delete.lua")),
                expire: script(include_str!("expire.lua")),
                collect: script(include_str!("collect.lua")),
                touch: script(include_str!("touch.lua")),
                info: script(include_str!("info.lua")),
                node: script(include_str!("node.lua")),
            },
            follows: Mutex::new(HashMap::new()),
            cluster: Mutex::new(ClusterView::default()),
            started: Instant::now(),
            events,
            events_rx: Mutex::new(Some(events_rx)),
            stopping: AtomicBool::new(false),
        });
        let sink_engine = Arc::downgrade(&engine);
        engine.broker.set_event_sink(Box::new(move |name, channel| {
            if let Some(engine) = sink_engine.upgrade() {
                engine.emit(name, channel);
            }
        }));
        Ok(engine)
    }

    fn new_shard(index: usize, url: String, conn: Option<RedisConn>) -> Arc<Shard> {
        crate::metrics::redis_shard_up(index, false);
        Arc::new(Shard {
            index,
            url,
            conn: Mutex::new(conn),
            once_conn: Mutex::new(None),
            sink: Mutex::new(None),
            up: AtomicBool::new(false),
            up_watch: tokio::sync::watch::channel(false).0,
            problem: Mutex::new("not connected yet".into()),
            reconnect: tokio::sync::Notify::new(),
        })
    }

    /// Runs the engine's background work until `shutdown` resolves: a pub/sub listener per shard,
    /// the heartbeat, the sweeper and the events publisher. Then this node leaves the cluster view.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for shard in &self.shards {
            let listener = if self.config.cluster {
                tokio::spawn(
                    self.clone()
                        .run_cluster_listener(shard.clone(), stop_rx.clone()),
                )
            } else {
                tokio::spawn(self.clone().run_listener(shard.clone(), stop_rx.clone()))
            };
            tasks.push(listener);
        }
        tasks.push(tokio::spawn(self.clone().run_node_reports(stop_rx.clone())));
        tasks.push(tokio::spawn(self.clone().run_heartbeat(stop_rx.clone())));
        tasks.push(tokio::spawn(self.clone().run_sweeper(stop_rx.clone())));
        if let Some(rx) = self.events_rx.lock().take() {
            tasks.push(tokio::spawn(self.clone().run_events(rx, stop_rx.clone())));
        }
        shutdown.await;
        self.stopping.store(true, Ordering::Release);
        let _ = stop_tx.send(true);
        for task in tasks {
            let _ = task.await;
        }
        // Leave the cluster view at once rather than after node_timeout.
        let _ = self.report_node(true).await;
        self.forget_own_counts().await;
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
        if self.config.cluster {
            let bucket = fnv1a64(id) % CLUSTER_BUCKETS;
            let channel = format!("{p}:{{{bucket}}}:{id}");
            Keys {
                meta: format!("{channel}:m"),
                log: format!("{channel}:l"),
                subs: format!("{channel}:s"),
                idempotency: format!("{channel}:k"),
                pubsub: format!("{channel}:p"),
                location: format!("{p}:{{{bucket}}}"),
            }
        } else {
            Keys {
                meta: format!("{p}:{{{id}}}:m"),
                log: format!("{p}:{{{id}}}:l"),
                subs: format!("{p}:{{{id}}}:s"),
                idempotency: format!("{p}:{{{id}}}:k"),
                pubsub: format!("{p}:{{{id}}}:p"),
                location: p.to_string(),
            }
        }
    }

    /// Every location (shard, key prefix) whose channel registries this engine sweeps and counts.
    fn locations(&self) -> Vec<(usize, String)> {
        let p = self.prefix();
        if self.config.cluster {
            (0..CLUSTER_BUCKETS)
                .map(|bucket| (0, format!("{p}:{{{bucket}}}")))
                .collect()
        } else {
            (0..self.shards.len()).map(|s| (s, p.to_string())).collect()
        }
    }

    /// The channel id in a pub/sub name.
    fn channel_of_pubsub_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(self.prefix())?.strip_prefix(":{")?;
        if self.config.cluster {
            let (bucket, rest) = rest.split_once("}:")?;
            bucket.parse::<u64>().ok()?;
            rest.strip_suffix(":p")
        } else {
            rest.strip_suffix("}:p")
        }
    }

    fn node_keys(&self) -> (String, String) {
        let p = self.prefix();
        (
            format!("{p}:{{nodes}}:reports"),
            format!("{p}:{{nodes}}:seen"),
        )
    }

    fn announce_command(&self) -> &'static str {
        if self.config.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    fn shard_index(&self, id: &str) -> usize {
        if self.config.cluster {
            0
        } else {
            shard_of(id, self.shards.len())
        }
    }

    fn shard(&self, id: &str) -> &Arc<Shard> {
        &self.shards[self.shard_index(id)]
    }

    fn is_wildcard(&self, id: &str) -> bool {
        self.settings().is_wildcard(id)
    }

    fn is_events_channel(&self, id: &str) -> bool {
        self.settings().is_events_channel(id)
    }

    fn unavailable(&self, shard: &Shard, reason: impl std::fmt::Display) -> BrokerError {
        let what = if self.config.cluster {
            format!("Redis Cluster ({})", shard.url)
        } else {
            format!("Redis shard {} ({})", shard.index, shard.url)
        };
        BrokerError::Unavailable(format!("{what} is unavailable: {reason}."))
    }

    /// The shard's command connection; on a cluster, waits (bounded) for the first connection.
    async fn conn(&self, shard: &Shard) -> Result<RedisConn, BrokerError> {
        if let Some(conn) = shard.conn.lock().clone() {
            return Ok(conn);
        }
        self.wait_up(shard).await;
        let conn = shard.conn.lock().clone();
        conn.ok_or_else(|| self.unavailable(shard, shard.problem.lock().clone()))
    }

    /// The connection for scripts that must not run twice (publish, delete): on a Redis Cluster the
    /// one that never resends; standalone connections never resend anyway.
    async fn conn_once(&self, shard: &Shard) -> Result<RedisConn, BrokerError> {
        if !self.config.cluster {
            return self.conn(shard).await;
        }
        if let Some(conn) = shard.once_conn.lock().clone() {
            return Ok(conn);
        }
        self.wait_up(shard).await;
        let conn = shard.once_conn.lock().clone();
        conn.ok_or_else(|| self.unavailable(shard, shard.problem.lock().clone()))
    }

    /// Waits up to the command timeout for the shard to be up; true if it is.
    async fn wait_up(&self, shard: &Shard) -> bool {
        if shard.is_up() {
            return true;
        }
        let mut up = shard.up_watch.subscribe();
        tokio::time::timeout(self.config.command_timeout.0, up.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs one Redis operation on `shard` within the command timeout.
    async fn call<T>(
        &self,
        shard: &Shard,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, BrokerError> {
        self.within_timeout(operation)
            .await
            .map_err(|err| self.call_error(shard, err.as_ref()))
    }

    /// Runs one Redis operation within the command timeout; `Err(None)` when it timed out.
    async fn within_timeout<T>(
        &self,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Option<redis::RedisError>> {
        match tokio::time::timeout(self.config.command_timeout.0, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Some(err)),
            Err(_) => Err(None),
        }
    }

    /// The 503 for a failed (`Some`) or timed-out (`None`) operation on `shard`.
    fn call_error(&self, shard: &Shard, err: Option<&redis::RedisError>) -> BrokerError {
        match err {
            Some(err) => self.unavailable(shard, err),
            None => self.unavailable(
                shard,
                format!(
                    "no answer within command_timeout = {:?}",
                    self.config.command_timeout.0
                ),
            ),
        }
    }

    /// Runs one command on `shard`.
    async fn query<T: redis::FromRedisValue>(
        &self,
        shard: &Shard,
        cmd: &Cmd,
    ) -> Result<T, BrokerError> {
        let mut conn = self.conn(shard).await?;
        self.call(shard, cmd.query_async(&mut conn)).await
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

    /// Subscribers of other live nodes in a subscriber-count hash (this node's own entry is skipped:
    /// its exact count is local). Fields of nodes Redis forgot are removed on the way.
    fn remote_subscribers(&self, id: &str, pairs: &[Value]) -> u64 {
        let mut forgotten = Vec::new();
        let total = {
            let cluster = self.cluster.lock();
            pairs
                .chunks(2)
                .filter_map(|pair| {
                    let node = bytes(pair.first()?)?;
                    let node = std::str::from_utf8(&node).ok()?.to_string();
                    if cluster.dead.contains(&node) {
                        forgotten.push(node);
                        return None;
                    }
                    if node == self.node_key || !cluster.live.contains(&node) {
                        return None;
                    }
                    int(pair.get(1)?).map(|n| n.max(0) as u64)
                })
                .fold(0, u64::saturating_add)
        };
        if !forgotten.is_empty() {
            let shard = self.shard(id).clone();
            let subs = self.keys(id).subs;
            let conn = shard.conn.lock().clone();
            if let Some(mut conn) = conn {
                tokio::spawn(async move {
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

    /// Queues a lifecycle event for the events channel (published through Redis), if one is
    /// configured.
    fn emit(&self, name: &'static str, channel: &ChannelId) {
        if self.settings().events_channel_id.is_some() && !self.is_events_channel(channel.as_str())
        {
            if let Err(err) = self.events.try_send((name, channel.clone())) {
                tracing::warn!(event = name, channel = channel.as_str(), error = %err, "events channel queue full; event dropped");
            }
        }
    }

    // ---- publish and delete ----

    /// Publishes to each channel (concurrently; each channel's publish is atomic in Redis, the set
    /// of channels is not: a failure names the channels that did get the message). Returns what the
    /// publish did on each channel.
    pub async fn publish(
        self: &Arc<Self>,
        channels: &[ChannelId],
        publish: Publish,
    ) -> Result<Vec<Published>, BrokerError> {
        let settings = self.settings();
        settings.check_publish(channels, &publish)?;
        if channels.len() > 1
            && (settings.max_number_of_channels.is_some()
                || settings.max_number_of_wildcard_channels.is_some())
        {
            if let Err(err) = self.create_all(channels).await {
                if !matches!(err, BrokerError::Unavailable(_)) {
                    return Err(err);
                }
                // Only channel creation ran: no channel got the message.
                crate::metrics::count_redis_publish_failure(false);
                return Err(BrokerError::Unavailable(format!(
                    "{err} Nothing was published. Try again."
                )));
            }
        }
        let tail = Bytes::from(record::tail(
            publish.store,
            publish.event_id.as_deref(),
            publish.event_type.as_deref(),
            &publish.text,
        ));
        let key = publish.idempotency_key.as_deref().unwrap_or("");
        let results = futures_util::future::join_all(
            channels
                .iter()
                .map(|id| self.publish_one(id, tail.clone(), publish.store, true, key)),
        )
        .await;
        let failed: Vec<(&str, &PublishFailure)> = channels
            .iter()
            .zip(&results)
            .filter_map(|(id, r)| r.as_ref().err().map(|f| (id.as_str(), f)))
            .collect();
        let Some((_, first)) = failed.first() else {
            return Ok(results.into_iter().filter_map(Result::ok).collect());
        };
        let first_error = first.error.clone();
        let published: Vec<&str> = channels
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(id, _)| id.as_str())
            .collect();
        let any_unsure = failed.iter().any(|(_, f)| f.maybe_applied);
        if !matches!(first_error, BrokerError::Unavailable(_))
            && published.is_empty()
            && !any_unsure
        {
            // Refused as a whole (a limit): nothing went out.
            return Err(first_error);
        }
        crate::metrics::count_redis_publish_failure(any_unsure);
        let unsure: Vec<&str> = failed
            .iter()
            .filter(|(_, f)| f.maybe_applied)
            .map(|(id, _)| *id)
            .collect();
        let not: Vec<&str> = failed
            .iter()
            .filter(|(_, f)| !f.maybe_applied)
            .map(|(id, _)| *id)
            .collect();
        let mut explanation = vec![first_error.to_string()];
        if channels.len() == 1 {
            explanation.push(if unsure.is_empty() {
                "Nothing was published.".to_string()
            } else {
                "Unknown whether Redis took the publish (the failure came while it was under way)."
                    .to_string()
            });
        } else {
            if !published.is_empty() {
                explanation.push(format!("Published to {}.", published.join(", ")));
            }
            if !not.is_empty() {
                explanation.push(format!("Not published to {}.", not.join(", ")));
            }
            if !unsure.is_empty() {
                explanation.push(format!(
                    "Unknown whether Redis took the publish to {} (the failure came while it was under way).",
                    unsure.join(", ")
                ));
            }
        }
        explanation.push(match (key.is_empty(), unsure.is_empty()) {
            (false, _) => {
                "Retry with the same Idempotency-Key: channels that took it are not published to again."
            }
            (true, true) if published.is_empty() => "Try again.",
            (true, true) => "Retry only the channels not published to.",
            (true, false) => {
                "A retry may publish it twice; an Idempotency-Key header makes retries safe."
            }
        }
        .to_string());
        Err(BrokerError::Unavailable(explanation.join(" ")))
    }

    /// Publishes to one channel. `client_publish`: a client's message (counted in the published
    /// totals, answered once this node's mirror has it); false for Herald's own events-channel
    /// messages, which neither count nor wait.
    async fn publish_one(
        self: &Arc<Self>,
        id: &ChannelId,
        tail: Bytes,
        store: bool,
        client_publish: bool,
        idempotency_key: &str,
    ) -> Result<Published, PublishFailure> {
        let settings = self.settings();
        let shard = self.shard(id.as_str());
        let wildcard = self.is_wildcard(id.as_str());
        let keys = self.keys(id.as_str());
        // Not sent yet: a failure here surely published nothing.
        let mut conn = self
            .conn_once(shard)
            .await
            .map_err(PublishFailure::not_sent)?;
        let mut invocation = self.scripts.publish.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(keys.channels(wildcard))
            .key(keys.expiry())
            .key(keys.published())
            .key(keys.stored())
            .key(&keys.subs)
            .key(&keys.idempotency)
            .arg(id.as_str())
            .arg(&tail[..])
            .arg(u8::from(store))
            .arg(settings.max_messages_stored_per_channel.unwrap_or(0))
            .arg(settings.message_ttl.as_millis() as u64)
            .arg(settings.channel_inactivity_time.as_millis() as u64)
            .arg(self.allowance(&keys.location, wildcard))
            .arg(&keys.pubsub)
            .arg(u8::from(client_publish))
            .arg(self.announce_command())
            .arg(idempotency_key)
            .arg(settings.idempotency_keys_per_channel);
        // Sent again only when Redis refused it before running it (a Redis Cluster moving slots).
        let deadline = Instant::now() + self.config.command_timeout.0;
        let mut pause = Duration::from_millis(10);
        let reply: Value = loop {
            let err = match self
                .within_timeout(invocation.invoke_async(&mut conn))
                .await
            {
                Ok(reply) => break reply,
                Err(err) => err,
            };
            if err.as_ref().is_some_and(refused_while_slots_move)
                && Instant::now() + pause < deadline
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
                continue;
            }
            return Err(PublishFailure {
                error: self.call_error(shard, err.as_ref()),
                maybe_applied: err.as_ref().is_none_or(script_may_have_run),
            });
        };
        let items = array(&reply);
        // The script ran; its answer is unreadable.
        let status = items.first().and_then(int).ok_or_else(|| PublishFailure {
            error: malformed("publish"),
            maybe_applied: true,
        })?;
        if status < 0 {
            return Err(PublishFailure::not_sent(self.too_many_channels(wildcard)));
        }
        if items.get(3).and_then(int) == Some(1) {
            self.emit("channel_created", id);
        }
        let epoch = items.get(7).and_then(int).map(|e| e.max(0) as u64);
        if client_publish {
            self.await_mirror(id, epoch, status as u64).await;
        }
        let stored = items.get(4).and_then(int).unwrap_or(0).max(0) as u64;
        let remote = self.remote_subscribers(id.as_str(), items.get(5).map(array).unwrap_or(&[]));
        Ok(Published {
            info: ChannelInfo {
                channel: id.clone(),
                published_messages: status as u64,
                stored_messages: stored,
                subscribers: remote.saturating_add(self.broker.local_subscribers(id.as_str())),
            },
            replayed: items.get(6).and_then(int) == Some(1),
        })
    }

    /// Read-your-writes on the publishing node: when this node follows the channel, the publish
    /// answers once the mirror holds message `message_id` of incarnation `epoch` (its announcement
    /// normally arrives with the script's reply), so a poll or recovery here right after the answer
    /// sees it, as on the memory engine; a follow of an older incarnation ends when the announcement
    /// arrives. Bounded by `MIRROR_WAIT` (and the command timeout); no wait when the follow is not
    /// live (a sync in progress delivers it). A live follow that did not get the announcement in time
    /// has lost its feed: it is read again from Redis (so later publishes do not wait as well).
    async fn await_mirror(self: &Arc<Self>, id: &ChannelId, epoch: Option<u64>, message_id: u64) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let has =
            move |(e, last): (u64, u64)| epoch.is_none_or(|want| want == e) && last >= message_id;
        let mut taken = {
            let follows = self.follows.lock();
            match follows.get(id) {
                Some(f) if f.live && !has(*f.taken.borrow()) => f.taken.subscribe(),
                _ => return,
            }
        };
        let wait = MIRROR_WAIT.min(self.config.command_timeout.0);
        let arrived = tokio::time::timeout(wait, taken.wait_for(|seen| has(*seen)))
            .await
            .is_ok_and(|r| r.is_ok());
        if !arrived {
            self.read_again(id, &taken, "a publish's announcement");
        }
    }

    /// Read-your-writes for a delete: waits (bounded like `await_mirror`) until this node's follow
    /// of the deleted channel has ended, so its local subscribers got the channel-deleted message
    /// and a subscribe here after the answer meets the channel afresh; if the announcement does not
    /// come in time, the follow is read again from Redis (which ends it).
    async fn await_unfollowed(
        self: &Arc<Self>,
        id: &ChannelId,
        mut followed: tokio::sync::watch::Receiver<(u64, u64)>,
    ) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let wait = MIRROR_WAIT.min(self.config.command_timeout.0);
        // The sender goes with the follow: `changed` fails once the follow is gone.
        let ended = tokio::time::timeout(wait, async { while followed.changed().await.is_ok() {} })
            .await
            .is_ok();
        if !ended {
            self.read_again(id, &followed, "a delete's announcement");
        }
    }

    /// The follow `feed` belongs to missed `what`: unless it changed meanwhile, it stops taking
    /// announcements and is caught up from Redis (`spawn_resync`).
    fn read_again(
        self: &Arc<Self>,
        id: &ChannelId,
        feed: &tokio::sync::watch::Receiver<(u64, u64)>,
        what: &str,
    ) {
        let stale = {
            let mut follows = self.follows.lock();
            match follows.get_mut(id) {
                Some(f) if f.live && feed.same_channel(&f.taken.subscribe()) => {
                    f.live = false;
                    true
                }
                _ => false,
            }
        };
        if stale {
            tracing::warn!(channel = %id, "{what} did not arrive within {:?}; reading the channel again from Redis", MIRROR_WAIT.min(self.config.command_timeout.0));
            self.spawn_resync(id.clone());
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
            let mut conn = self.conn(shard).await?;
            let mut invocation = self.scripts.create.key(&keys.meta);
            invocation
                .key(keys.channels(wildcard))
                .key(&keys.idempotency)
                .arg(id.as_str())
                .arg(self.allowance(&keys.location, wildcard))
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

    /// Deletes channels in Redis; every node's subscribers of them get `text` (or the configured
    /// text) as the channel-deleted message. Returns the ids that existed.
    pub async fn delete(
        self: &Arc<Self>,
        channels: &[ChannelId],
        text: Option<Bytes>,
    ) -> Result<Vec<ChannelId>, BrokerError> {
        let settings = self.settings();
        settings.check_delete(channels)?;
        let text = text.unwrap_or_else(|| settings.channel_deleted_message_text.clone());
        let mut deleted = Vec::new();
        let mut ending = Vec::new();
        for id in channels {
            let shard = self.shard(id.as_str());
            let keys = self.keys(id.as_str());
            let mut conn = self.conn_once(shard).await?;
            let mut invocation = self.scripts.delete.key(&keys.meta);
            invocation
                .key(&keys.log)
                .key(keys.channels(self.is_wildcard(id.as_str())))
                .key(keys.expiry())
                .key(keys.stored())
                .key(&keys.subs)
                .key(&keys.idempotency)
                .arg(id.as_str())
                .arg(&keys.pubsub)
                .arg(&text[..])
                .arg(self.announce_command());
            // Only a live follow hears the deletion (one still subscribing ends by its sync).
            let followed = self
                .follows
                .lock()
                .get(id)
                .filter(|f| f.live)
                .map(|f| f.taken.subscribe());
            let existed: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
            if existed == 1 {
                ending.extend(followed.map(|f| self.await_unfollowed(id, f)));
                self.emit("channel_destroyed", id);
                deleted.push(id.clone());
            }
        }
        futures_util::future::join_all(ending).await;
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
    async fn follow(
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
                    return Err(err);
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
    async fn subscribe_announcements(&self, shard: &Shard, name: &str) -> Result<(), BrokerError> {
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
    async fn sync(
        self: &Arc<Self>,
        id: &ChannelId,
        purpose: SyncPurpose,
        owner: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<SyncOutcome, BrokerError> {
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
        let mut invocation = self.scripts.sync.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(keys.channels(wildcard))
            .key(keys.expiry())
            .key(keys.stored())
            .key(&keys.subs)
            .key(&keys.idempotency)
            .arg(id.as_str())
            .arg(u8::from(create))
            .arg(if create {
                self.allowance(&keys.location, wildcard)
            } else {
                -1
            })
            .arg(settings.channel_inactivity_time.as_millis() as u64)
            .arg(if known {
                known_epoch.to_string()
            } else {
                String::new()
            })
            .arg(known_last);
        let reply: Value = self
            .call(&shard, invocation.invoke_async(&mut conn))
            .await?;
        let items = array(&reply);
        match items.first().and_then(int) {
            Some(0) if known => {
                self.end_channel(id, owner);
                return Ok(SyncOutcome::Ended);
            }
            Some(0) => return Ok(SyncOutcome::Missing),
            Some(-1) => return Err(self.too_many_channels(wildcard)),
            Some(1) => {}
            _ => return Err(malformed("sync")),
        }
        let field = |i: usize| items.get(i).and_then(int);
        let created = field(1) == Some(1);
        let epoch = field(2).ok_or_else(|| malformed("sync epoch"))? as u64;
        if known && epoch != known_epoch {
            // Deleted (or lost by Redis) and created again meanwhile.
            self.end_channel(id, owner);
            return Ok(SyncOutcome::Ended);
        }
        let redis_last_id = field(3).unwrap_or(0).max(0) as u64;
        let dropped = field(4).zip(field(5)).map(|(t, g)| (t as u64, g as u64));
        let stored_count = field(6).unwrap_or(0);
        let mut records = Vec::new();
        for value in items.get(7).map(array).unwrap_or(&[]) {
            let raw = bytes(value).ok_or_else(|| malformed("sync record"))?;
            records.push(record::parse_record(&raw).map_err(|_| malformed("sync record"))?);
        }
        let remote = self.remote_subscribers(id.as_str(), items.get(8).map(array).unwrap_or(&[]));
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
    fn forget_count(self: &Arc<Self>, id: ChannelId) {
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
    fn spawn_resync(self: &Arc<Self>, id: ChannelId) {
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

    fn spawn_unsubscribe(self: &Arc<Self>, id: ChannelId) {
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

    // ---- background work ----

    /// Standalone shard: keeps a pub/sub connection, resubscribes after a loss and catches every
    /// followed channel up from history.
    async fn run_listener(
        self: Arc<Self>,
        shard: Arc<Shard>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let client = match redis::Client::open(shard.url.as_str()) {
            Ok(client) => client,
            Err(err) => {
                shard.set_up(false, &err.to_string());
                return;
            }
        };
        let mut connected_before = false;
        let mut backoff = Backoff::from(Duration::from_millis(100));
        loop {
            if *stop.borrow() {
                return;
            }
            let connect =
                tokio::time::timeout(self.config.command_timeout.0, client.get_async_pubsub());
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
                    // The command connection reconnects when used: make sure it has before the
                    // shard counts as up, so the first publish after an outage does not fail.
                    let mut problem = "connection lost, reconnecting".to_string();
                    if subscribed {
                        if let Err(refusal) = self.command_connection_answers(&shard).await {
                            tracing::error!(shard = shard.index, url = %shard.url, "{refusal}");
                            problem = refusal;
                            subscribed = false;
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
                        backoff = Backoff::from(Duration::from_millis(100));
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
                                _ = shard.reconnect.notified() => break,
                                _ = stop.changed() => return,
                            }
                        }
                        tracing::warn!(shard = shard.index, url = %shard.url, "lost the Redis pub/sub connection; reconnecting");
                    }
                    *shard.sink.lock() = None;
                    shard.set_up(false, &problem);
                    self.mark_stale(shard.index);
                }
                Ok(Err(err)) => shard.set_up(false, &err.to_string()),
                Err(_) => shard.set_up(false, "connecting timed out"),
            }
            if !sleep_unless_stopped(backoff.next(), &mut stop).await {
                return;
            }
        }
    }

    /// Checks the shard's command connection (a few tries: its first use after an outage may
    /// still report the old failure while it reconnects) and that the server is recent enough.
    async fn command_connection_answers(&self, shard: &Shard) -> Result<(), String> {
        let Some(mut conn) = shard.conn.lock().clone() else {
            return Err("no command connection".into());
        };
        let mut last = String::new();
        for _ in 0..10 {
            let info: Result<String, _> = self
                .call(
                    shard,
                    redis::cmd("INFO").arg("server").query_async(&mut conn),
                )
                .await;
            match info {
                Ok(info) => return check_server_version(&info, false),
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    /// Redis Cluster: makes the cluster connection (RESP3, announcements pushed to this task) and
    /// hands sharded pub/sub messages to the follows. The connection resubscribes by itself after a
    /// node's connection drops; every followed channel then catches up from history.
    async fn run_cluster_listener(
        self: Arc<Self>,
        shard: Arc<Shard>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        // A bounded queue: when this node cannot keep up, pushes are dropped and every followed
        // channel is read again from history (as after a lost connection) instead of the queue
        // growing without limit.
        let (push_tx, mut push_rx) =
            tokio::sync::mpsc::channel::<redis::PushInfo>(MAX_QUEUED_PUSHES);
        let overflowed = Arc::new(AtomicBool::new(false));
        let push_sender = {
            let overflowed = overflowed.clone();
            move |push: redis::PushInfo| {
                if push_tx.try_send(push).is_err() {
                    overflowed.store(true, Ordering::Release);
                }
                Ok::<(), ()>(())
            }
        };
        let timeout = self.config.command_timeout.0;
        let client = redis::cluster::ClusterClientBuilder::new(self.config.redis_urls.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push_sender)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .build();
        // Publish and delete go through a connection that never resends: a script whose answer was
        // lost may have run, and sending it again would publish twice. `publish_one` retries
        // itself what Redis refused before running (MOVED, ASK, TRYAGAIN, CLUSTERDOWN).
        let once_client = redis::cluster::ClusterClientBuilder::new(self.config.redis_urls.clone())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(0)
            .build();
        let (client, once_client) = match (client, once_client) {
            (Ok(client), Ok(once_client)) => (client, once_client),
            (Err(err), _) | (_, Err(err)) => {
                shard.set_up(false, &err.to_string());
                return;
            }
        };
        let mut backoff = Backoff::from(Duration::from_millis(100));
        loop {
            let connect = tokio::time::timeout(timeout, async {
                let conn = client.get_async_connection().await?;
                let once = once_client.get_async_connection().await?;
                Ok::<_, redis::RedisError>((conn, once))
            });
            let result = tokio::select! {
                result = connect => result,
                _ = stop.changed() => return,
            };
            match result {
                Ok(Ok((conn, once))) => {
                    *shard.once_conn.lock() = Some(RedisConn::Cluster(once));
                    *shard.conn.lock() = Some(RedisConn::Cluster(conn));
                    shard.set_up(true, "");
                    tracing::info!(seeds = %shard.url, "connected to the Redis Cluster");
                    break;
                }
                Ok(Err(err)) => shard.set_up(false, &err.to_string()),
                Err(_) => shard.set_up(false, "connecting timed out"),
            }
            if !sleep_unless_stopped(backoff.next(), &mut stop).await {
                return;
            }
        }
        loop {
            let push = tokio::select! {
                push = push_rx.recv() => match push {
                    Some(push) => push,
                    None => return,
                },
                _ = stop.changed() => return,
            };
            if overflowed.swap(false, Ordering::AcqRel) {
                tracing::warn!("Redis Cluster announcements came faster than this node took them in; catching up from history");
                for id in self.mark_stale(0) {
                    self.spawn_resync(id);
                }
            }
            match push.kind {
                PushKind::SMessage | PushKind::Message => {
                    let (Some(name), Some(payload)) = (
                        push.data.first().and_then(bytes),
                        push.data.get(1).and_then(bytes),
                    ) else {
                        continue;
                    };
                    if let Ok(name) = std::str::from_utf8(&name) {
                        self.on_announcement(name, payload);
                    }
                }
                PushKind::SUnsubscribe => {
                    // The slot moved to another node: subscribe again there and catch up.
                    let Some(name) = push.data.first().and_then(bytes) else {
                        continue;
                    };
                    let Some(id) = std::str::from_utf8(&name)
                        .ok()
                        .and_then(|name| self.channel_of_pubsub_name(name))
                        .map(ChannelId::new_unchecked)
                    else {
                        continue;
                    };
                    let followed = {
                        let mut follows = self.follows.lock();
                        match follows.get_mut(&id) {
                            Some(f) => {
                                f.live = false;
                                true
                            }
                            None => false,
                        }
                    };
                    if followed {
                        self.spawn_resync(id);
                    }
                }
                PushKind::Disconnection => {
                    crate::metrics::count_redis_reconnect();
                    tracing::warn!("a Redis Cluster connection dropped; catching up from history");
                    for id in self.mark_stale(0) {
                        self.spawn_resync(id);
                    }
                }
                _ => {}
            }
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
                f.flushed = None;
                id.clone()
            })
            .collect()
    }

    /// Reports this node every heartbeat, on its own timer (slow shards do not delay it).
    async fn run_node_reports(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
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

    async fn run_heartbeat(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval.0);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
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

    /// Under the follows lock: changed local subscriber counts, channels to renew, idle channels
    /// to stop following, follows that need a catch-up.
    fn collect_follow_updates(self: &Arc<Self>) -> (HashMap<usize, ShardUpdates>, Vec<ChannelId>) {
        let linger = self.config.unsubscribe_after.0;
        let mut updates: HashMap<usize, ShardUpdates> = HashMap::new();
        let mut unfollow = Vec::new();
        let mut resync = Vec::new();
        let mut abandoned = Vec::new();
        {
            let mut follows = self.follows.lock();
            for (id, follow) in follows.iter_mut() {
                let entry = updates.entry(follow.shard).or_default();
                let local = self.broker.local_subscribers(id.as_str());
                if follow.live && follow.flushed != Some(local) {
                    entry.counts.push((id.clone(), local));
                    follow.flushed = Some(local);
                }
                if !follow.live && !follow.resyncing && follow.epoch() != 0 {
                    resync.push(id.clone());
                }
                // Never went live and nobody is syncing it (its request went away).
                if !follow.live
                    && follow.epoch() == 0
                    && local == 0
                    && follow.touched.elapsed() >= linger
                    && follow.sync_lock.try_lock().is_ok()
                {
                    abandoned.push(id.clone());
                }
                if follow.live {
                    entry.audit.push((id.clone(), follow.last_id()));
                }
                if local > 0 {
                    follow.idle_since = None;
                    entry.touch.push((follow.wildcard, id.clone()));
                } else {
                    let since = *follow.idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= linger
                        && follow.touched.elapsed() >= linger.max(Duration::from_secs(1))
                    {
                        unfollow.push(id.clone());
                    }
                }
            }
            unfollow.retain(|id| {
                if self.broker.drop_mirror(id.as_str()) {
                    follows.remove(id);
                    true
                } else {
                    false
                }
            });
            for id in &abandoned {
                follows.remove(id);
                self.broker.drop_mirror(id.as_str());
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
            let mut follows = self.follows.lock();
            for id in failed {
                if let Some(follow) = follows.get_mut(id) {
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
            let mut invocation = self.scripts.touch.key(location_key(&location, "channels"));
            invocation
                .key(location_key(&location, "wchannels"))
                .arg(keep_alive);
            for (wildcard, id) in &channels {
                invocation
                    .arg(if *wildcard { "w" } else { "n" })
                    .arg(id.as_str());
            }
            let _: Result<i64, _> = self.call(shard, invocation.invoke_async(&mut conn)).await;
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
    async fn audit(
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
            let mut follows = self.follows.lock();
            for ((id, seen), answer) in audit.iter().zip(answers) {
                let Ok(Some(in_redis)) = answer else {
                    continue;
                };
                let Some(follow) = follows.get_mut(id) else {
                    continue;
                };
                let behind = in_redis > *seen && follow.last_id() < in_redis;
                if behind && follow.behind && follow.live {
                    follow.live = false;
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
        let (reports, seen) = self.node_keys();
        let mut conn = self.conn(shard).await?;
        let mut invocation = self.scripts.node.key(reports);
        invocation
            .key(seen)
            .arg(&self.node_key)
            .arg(json)
            .arg(self.config.node_timeout.0.as_millis() as u64)
            .arg(u8::from(leaving));
        let reply: Value = self.call(shard, invocation.invoke_async(&mut conn)).await?;
        let parts = array(&reply);
        let mut live = HashSet::new();
        let mut nodes = Vec::new();
        for pair in parts.first().map(array).unwrap_or(&[]).chunks(2) {
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
        for key in parts.get(1).map(array).unwrap_or(&[]) {
            if let Some(key) = bytes(key) {
                if cluster.dead.len() >= 10_000 {
                    cluster.dead.clear();
                }
                cluster
                    .dead
                    .insert(String::from_utf8_lossy(&key).into_owned());
            }
        }
        // A node back from a pause is live again, not dead.
        cluster.dead.retain(|key| !live.contains(key));
        cluster.live = live;
        cluster.nodes = nodes;
        drop(cluster);
        if parts.get(2).and_then(int) == Some(1) && !leaving {
            // Redis did not know this node (forgotten after a long pause, or Redis lost its data):
            // other nodes may have removed its counts, so write them all again.
            for follow in self.follows.lock().values_mut() {
                follow.flushed = None;
            }
        }
        Ok(())
    }

    /// On a clean shutdown: removes this node's subscriber counts from the channels it followed.
    async fn forget_own_counts(&self) {
        let ids: Vec<(usize, ChannelId)> = self
            .follows
            .lock()
            .iter()
            .filter(|(_, f)| f.flushed.is_some_and(|n| n > 0))
            .map(|(id, f)| (f.shard, id.clone()))
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
        let ids: Vec<ChannelId> = self
            .follows
            .lock()
            .iter()
            .filter(|(_, f)| f.shard == shard.index)
            .map(|(id, _)| id.clone())
            .collect();
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
                .map(|reply| self.remote_subscribers(id.as_str(), &hash_pairs(&reply)))
            }
        });
        let counts = futures_util::future::join_all(reads).await;
        let mut follows = self.follows.lock();
        for (id, count) in ids.iter().zip(counts) {
            if let (Some(follow), Some(count)) = (follows.get_mut(id), count) {
                follow.remote_subscribers = count;
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

    async fn sweep_location(&self, shard: &Shard, location: String) -> Result<(), BrokerError> {
        if !shard.is_up() {
            return Ok(());
        }
        let now = now_ms();
        let due: Vec<String> = self
            .query(
                shard,
                redis::cmd("ZRANGEBYSCORE")
                    .arg(location_key(&location, "expiry"))
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(SWEEP_BATCH),
            )
            .await?;
        let mut conn = self.conn(shard).await?;
        for id in due {
            let keys = self.keys(&id);
            let mut invocation = self.scripts.expire.key(&keys.meta);
            invocation
                .key(&keys.log)
                .key(keys.expiry())
                .key(keys.stored())
                .arg(&id);
            let removed: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
            self.broker.add_to_trash(0, removed.max(0) as u64);
        }
        for wildcard in [false, true] {
            let zset = location_key(&location, if wildcard { "wchannels" } else { "channels" });
            let due: Vec<String> = self
                .query(
                    shard,
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&zset)
                        .arg("-inf")
                        .arg(now)
                        .arg("LIMIT")
                        .arg(0)
                        .arg(SWEEP_BATCH),
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
                    .key(&zset)
                    .key(keys.expiry())
                    .key(keys.stored())
                    .key(&keys.subs)
                    .key(&keys.idempotency)
                    .arg(&id)
                    .arg(&keys.pubsub)
                    .arg(self.announce_command());
                let removed: i64 = self.call(shard, invocation.invoke_async(&mut conn)).await?;
                if removed == 1 {
                    self.broker.add_to_trash(1, 0);
                    self.emit("channel_destroyed", &ChannelId::new_unchecked(&id));
                }
            }
        }
        Ok(())
    }

    async fn run_events(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::Receiver<(&'static str, ChannelId)>,
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
            if let Err(failure) = self.publish_one(&events, tail, true, false, "").await {
                tracing::debug!(error = %failure.error, "could not publish to the events channel");
            }
        }
    }

    // ---- statistics and health ----

    /// One channel's cluster-wide counters, `None` if it does not exist.
    pub async fn channel_info(&self, id: &str) -> Result<Option<ChannelInfo>, BrokerError> {
        let shard = self.shard(id);
        let keys = self.keys(id);
        let mut conn = self.conn(shard).await?;
        let mut invocation = self.scripts.info.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(&keys.subs)
            .key(keys.expiry())
            .key(keys.stored())
            .arg(id);
        let reply: Value = self.call(shard, invocation.invoke_async(&mut conn)).await?;
        let items = array(&reply);
        let Some(last_id) = items.first().and_then(int) else {
            return Ok(None);
        };
        let stored = items.get(1).and_then(int).unwrap_or(0).max(0) as u64;
        let remote = self.remote_subscribers(id, items.get(2).map(array).unwrap_or(&[]));
        Ok(Some(ChannelInfo {
            channel: ChannelId::new_unchecked(id),
            published_messages: last_id.max(0) as u64,
            stored_messages: stored,
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
                Ok::<_, BrokerError>((
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
    fn nodes(&self, local_subscribers: u64) -> Vec<NodeReport> {
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
                let what = if self.config.cluster {
                    format!("Redis Cluster ({})", shard.url)
                } else {
                    format!("Redis shard {} ({})", shard.index, shard.url)
                };
                return Err(format!("{what} is unavailable: {}", shard.problem.lock()));
            }
        }
        Ok(())
    }
}

/// The oldest Redis Herald's scripts run on: 6.2 (`ZADD … GT`); 7.0 on a Redis Cluster (sharded
/// pub/sub).
const MIN_REDIS: (u32, u32) = (6, 2);
const MIN_REDIS_CLUSTER: (u32, u32) = (7, 0);

/// The `redis_version` of an `INFO server` answer as (major, minor).
fn server_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?
        .trim();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Ok when the server of this `INFO server` answer can run Herald's scripts; else why not.
pub fn check_server_version(info: &str, cluster: bool) -> Result<(), String> {
    let need = if cluster {
        MIN_REDIS_CLUSTER
    } else {
        MIN_REDIS
    };
    match server_version(info) {
        Some(version) if version >= need => Ok(()),
        Some((major, minor)) => Err(format!(
            "Redis {major}.{minor} is too old: Herald needs Redis {}.{} or later{}",
            need.0,
            need.1,
            if cluster { " for a Redis Cluster" } else { "" }
        )),
        None => Err("INFO server did not say redis_version".into()),
    }
}

/// `herald check-config --connect`: reaches every Redis URL of `config` (each within
/// `command_timeout`) and says, per URL, which Redis answered or why it cannot serve Herald.
pub async fn probe(config: &EngineConfig) -> Vec<(String, Result<String, String>)> {
    let limit = config.command_timeout.0;
    let mut out = Vec::new();
    for url in &config.redis_urls {
        let result = async {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut conn = tokio::time::timeout(limit, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| format!("no connection within command_timeout = {limit:?}"))?
                .map_err(|e| e.to_string())?;
            let info: String = tokio::time::timeout(
                limit,
                redis::cmd("INFO").arg("server").query_async(&mut conn),
            )
            .await
            .map_err(|_| format!("no answer within command_timeout = {limit:?}"))?
            .map_err(|e| e.to_string())?;
            check_server_version(&info, config.cluster)?;
            let cluster_node = info.lines().any(|l| l.trim() == "redis_mode:cluster");
            match (config.cluster, cluster_node) {
                (true, false) => Err("not a Redis Cluster node (cluster = true)".to_string()),
                (false, true) => Err("a Redis Cluster node: set cluster = true".to_string()),
                _ => Ok(info
                    .lines()
                    .find_map(|l| l.strip_prefix("redis_version:"))
                    .map(|v| format!("Redis {}", v.trim()))
                    .unwrap_or_default()),
            }
        }
        .await;
        out.push((url.clone(), result));
    }
    out
}

/// A Redis Cluster refusal given before running anything while slots move or fail over: the same
/// command may succeed a moment later (after a MOVED the client has refreshed its slot map).
fn refused_while_slots_move(err: &redis::RedisError) -> bool {
    matches!(
        err.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")
    )
}

/// Whether Redis may have run a script whose call failed with `err`. Only a refused connection
/// (nothing was sent) and server errors Redis gives before running anything surely mean it did
/// not; after a lost connection or a script error, part or all of it may have run.
fn script_may_have_run(err: &redis::RedisError) -> bool {
    const REFUSED_BEFORE_RUNNING: &[&str] = &[
        "OOM",
        "READONLY",
        "LOADING",
        "BUSY",
        "NOSCRIPT",
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "MASTERDOWN",
        "CROSSSLOT",
        "MISCONF",
        "NOAUTH",
        "WRONGPASS",
    ];
    if err.is_connection_refusal() {
        return false;
    }
    !err.code()
        .is_some_and(|code| REFUSED_BEFORE_RUNNING.contains(&code))
}

/// Delays between reconnection or catch-up attempts: doubling from the first, at most 1 s.
struct Backoff(Duration);

impl From<Duration> for Backoff {
    fn from(first: Duration) -> Backoff {
        Backoff(first)
    }
}

impl Backoff {
    /// The delay to wait now (the next one is twice as long).
    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (now * 2).min(Duration::from_secs(1));
        now
    }
}

/// Sleeps `delay` unless `stop` fires first; false when stopping.
async fn sleep_unless_stopped(
    delay: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = stop.changed() => false,
    }
}

/// Why a publish to one channel failed, and whether Redis may have taken it all the same.
#[derive(Debug)]
struct PublishFailure {
    error: BrokerError,
    /// The script was sent and no answer came (lost connection, timeout): it may have run.
    maybe_applied: bool,
}

impl PublishFailure {
    fn not_sent(error: BrokerError) -> PublishFailure {
        PublishFailure {
            error,
            maybe_applied: false,
        }
    }
}

/// Forgets an unused follow when a subscribe request is dropped mid-way (`RedisEngine::follow`).
struct ForgetOnDrop {
    engine: Arc<RedisEngine>,
    id: ChannelId,
    armed: bool,
}

impl Drop for ForgetOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.engine.forget_unused(&self.id);
        }
    }
}

/// One shard's share of a heartbeat.
#[derive(Default, Clone)]
struct ShardUpdates {
    /// Local subscriber counts to write.
    counts: Vec<(ChannelId, u64)>,
    /// Channels with local subscribers (wildcard?, id): their deadlines are renewed.
    touch: Vec<(bool, ChannelId)>,
    /// Live follows and their last id (Redis Cluster audit).
    audit: Vec<(ChannelId, u64)>,
}

#[cfg(test)]
mod tests {
    use super::{check_server_version, fnv1a64, server_version, shard_of};

    #[test]
    fn redis_versions_are_checked() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        assert_eq!(server_version(&info("7.0.15")), Some((7, 0)));
        assert!(check_server_version(&info("6.2.0"), false).is_ok());
        assert!(check_server_version(&info("7.2.4"), true).is_ok());
        let old = check_server_version(&info("6.0.16"), false).unwrap_err();
        assert!(
            old.contains("Redis 6.0 is too old") && old.contains("6.2"),
            "{old}"
        );
        let old = check_server_version(&info("6.2.14"), true).unwrap_err();
        assert!(old.contains("7.0 or later for a Redis Cluster"), "{old}");
        assert!(check_server_version("# Server\r\n", false).is_err());
    }

    #[test]
    fn shard_hash_is_fnv1a_64() {
        // FNV-1a 64 of "" is the offset basis; of "a" the published test vector.
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("a", 2), (0xaf63_dc4c_8601_ec8cu64 % 2) as usize);
        let spread: std::collections::HashSet<_> =
            (0..100).map(|n| shard_of(&format!("ch{n}"), 4)).collect();
        assert_eq!(spread.len(), 4);
    }
}
