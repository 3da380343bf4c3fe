//! Connections to Redis: a `Shard` is one standalone Redis server or the whole Redis Cluster, with
//! its command connection (and, on a cluster, a second one that never resends), its pub/sub sink and
//! whether it is up. Every command runs through `call` within `command_timeout`, and its failure
//! becomes a 503 naming the shard. Also the checks of a server's version (`probe` for
//! `herald check-config --connect`), which failures mean a script may have run, and the backoff
//! between reconnection attempts. Knows nothing of channels.

use super::error::{Applied, Failure, FailureKind};
use super::follow::MAX_CATCH_UPS;
use super::scripts::ScriptError;
use super::RedisEngine;
use crate::config::EngineConfig;
use crate::shutdown::Shutdown;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, RedisResult, Value};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A connection to one standalone Redis or to a Redis Cluster (which routes each command by its keys).
#[derive(Clone)]
pub(super) enum RedisConn {
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
pub(super) struct Shard {
    pub(super) index: usize,
    pub(super) url: String,
    /// The command connection (`None` until a cluster connection is made).
    pub(super) conn: Mutex<Option<RedisConn>>,
    /// Redis Cluster: a second connection that never resends a command, for the scripts whose
    /// repetition would show (publish, delete). Standalone connections never resend: `None`.
    pub(super) once_conn: Mutex<Option<RedisConn>>,
    /// Standalone: subscribes and unsubscribes on the current pub/sub connection; `None` while
    /// disconnected.
    pub(super) sink: Mutex<Option<PubSubSink>>,
    pub(super) up: AtomicBool,
    /// Follows `up`, for requests that wait (bounded) for a connection being made.
    pub(super) up_watch: tokio::sync::watch::Sender<bool>,
    /// Why the shard is down (for `/readyz` and 503 answers).
    pub(super) problem: Mutex<String>,
    /// Bounds the catch-ups (history reads) running at once on this shard (`MAX_CATCH_UPS`).
    pub(super) catch_ups: Arc<tokio::sync::Semaphore>,
    /// Asks the listener to drop its pub/sub connection and make a new one (a ping went unanswered).
    pub(super) reconnect: tokio::sync::Notify,
}

impl Shard {
    pub(super) fn set_up(&self, up: bool, problem: &str) {
        self.up.store(up, Ordering::Release);
        self.up_watch.send_replace(up);
        *self.problem.lock() = problem.to_string();
        crate::metrics::redis_shard_up(self.index, up);
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
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
pub(super) fn refused_while_slots_move(err: &redis::RedisError) -> bool {
    matches!(
        err.code(),
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")
    )
}

/// Whether Redis may have run a script whose call failed with `err`. Only a refused connection
/// (nothing was sent) and server errors Redis gives before running anything surely mean it did
/// not; after a lost connection or a script error, part or all of it may have run.
pub(super) fn script_may_have_run(err: &redis::RedisError) -> bool {
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
pub(super) struct Backoff(Duration);

impl From<Duration> for Backoff {
    fn from(first: Duration) -> Backoff {
        Backoff(first)
    }
}

impl Backoff {
    /// The delay to wait now (the next one is twice as long).
    pub(super) fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (now * 2).min(Duration::from_secs(1));
        now
    }
}

/// Sleeps `delay` unless `shutdown` fires first; false when shutting down.
pub(super) async fn sleep_unless_stopped(delay: Duration, shutdown: &mut Shutdown) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.recv() => false,
    }
}

impl RedisEngine {
    pub(super) fn new_shard(index: usize, url: String, conn: Option<RedisConn>) -> Arc<Shard> {
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
            catch_ups: Arc::new(tokio::sync::Semaphore::new(MAX_CATCH_UPS)),
        })
    }

    /// How failures name `shard`: `Redis shard 0 (url)`, or `Redis Cluster (seeds)`.
    pub(super) fn shard_name(&self, shard: &Shard) -> String {
        if self.config.cluster {
            format!("Redis Cluster ({})", shard.url)
        } else {
            format!("Redis shard {} ({})", shard.index, shard.url)
        }
    }

    /// `shard` cannot serve (nothing was sent).
    pub(super) fn unavailable(&self, shard: &Shard, reason: impl std::fmt::Display) -> Failure {
        Failure {
            kind: FailureKind::Unavailable {
                shard: self.shard_name(shard),
                reason: reason.to_string(),
            },
            applied: Applied::No,
        }
    }

    /// The shard's command connection; on a cluster, waits (bounded) for the first connection.
    pub(super) async fn conn(&self, shard: &Shard) -> Result<RedisConn, Failure> {
        if let Some(conn) = shard.conn.lock().clone() {
            return Ok(conn);
        }
        self.wait_up(shard).await;
        let conn = shard.conn.lock().clone();
        conn.ok_or_else(|| self.unavailable(shard, shard.problem.lock().clone()))
    }

    /// The connection for scripts that must not run twice (publish, delete): on a Redis Cluster the
    /// one that never resends; standalone connections never resend anyway.
    pub(super) async fn conn_once(&self, shard: &Shard) -> Result<RedisConn, Failure> {
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
    pub(super) async fn wait_up(&self, shard: &Shard) -> bool {
        if shard.is_up() {
            return true;
        }
        let mut up = shard.up_watch.subscribe();
        tokio::time::timeout(self.config.command_timeout.0, up.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs one Redis operation on `shard` within the command timeout.
    pub(super) async fn call<T>(
        &self,
        shard: &Shard,
        operation: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Failure> {
        self.within_timeout(operation)
            .await
            .map_err(|err| self.call_error(shard, err.as_ref()))
    }

    /// Runs one Redis operation within the command timeout; `Err(None)` when it timed out.
    pub(super) async fn within_timeout<T, E>(
        &self,
        operation: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Option<E>> {
        match tokio::time::timeout(self.config.command_timeout.0, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Some(err)),
            Err(_) => Err(None),
        }
    }

    /// Runs one script call on `shard` within the command timeout.
    pub(super) async fn run_script<T>(
        &self,
        shard: &Shard,
        call: impl Future<Output = Result<T, ScriptError>>,
    ) -> Result<T, Failure> {
        self.within_timeout(call)
            .await
            .map_err(|err| self.script_error(shard, err))
    }

    /// The failure of a failed (`Some`) or timed-out (`None`) script call on `shard`.
    pub(super) fn script_error(&self, shard: &Shard, err: Option<ScriptError>) -> Failure {
        match err {
            Some(ScriptError::Malformed(what)) => Failure {
                kind: FailureKind::Malformed(what),
                applied: Applied::Yes,
            },
            Some(ScriptError::Redis(err)) => self.call_error(shard, Some(&err)),
            None => self.call_error(shard, None),
        }
    }

    /// The failure of a failed (`Some`) or timed-out (`None`) operation on `shard`.
    pub(super) fn call_error(&self, shard: &Shard, err: Option<&redis::RedisError>) -> Failure {
        match err {
            Some(err) => Failure {
                applied: if script_may_have_run(err) {
                    Applied::Maybe
                } else {
                    Applied::No
                },
                ..self.unavailable(shard, err)
            },
            None => Failure {
                kind: FailureKind::Timeout {
                    shard: self.shard_name(shard),
                    limit: self.config.command_timeout.0,
                },
                applied: Applied::Maybe,
            },
        }
    }

    /// Runs one command on `shard`.
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        shard: &Shard,
        cmd: &Cmd,
    ) -> Result<T, Failure> {
        let mut conn = self.conn(shard).await?;
        self.call(shard, cmd.query_async(&mut conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::{check_server_version, server_version};

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
}
