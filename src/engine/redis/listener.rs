//! The pub/sub listeners: per standalone shard a pub/sub connection that is made again after a loss
//! (resubscribing every followed channel and catching them up from history), or on a Redis Cluster
//! the cluster connection whose sharded pub/sub pushes arrive through a bounded queue. Both hand
//! announcements to the follows.

use super::conn::{check_server_version, sleep_unless_stopped, Backoff, RedisConn, Shard};
use super::scripts::bytes;
use super::RedisEngine;
use crate::broker::ChannelId;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::PushKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Redis Cluster pushes (announcements) waiting for the listener; beyond, they are dropped and the
/// followed channels caught up from history.
const MAX_QUEUED_PUSHES: usize = 65_536;

impl RedisEngine {
    /// Standalone shard: keeps a pub/sub connection, resubscribes after a loss and catches every
    /// followed channel up from history.
    pub(super) async fn run_listener(self: Arc<Self>, shard: Arc<Shard>, mut shutdown: Shutdown) {
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
            if shutdown.is_shutdown() {
                return;
            }
            let connect =
                tokio::time::timeout(self.config.command_timeout.0, client.get_async_pubsub());
            let pubsub = tokio::select! {
                result = connect => result,
                _ = shutdown.recv() => return,
            };
            match pubsub {
                Ok(Ok(pubsub)) => {
                    let (mut sink, mut stream) = pubsub.split();
                    let names: Vec<String> = self
                        .follows
                        .on_shard(shard.index)
                        .iter()
                        .map(|id| self.keys(id.as_str()).pubsub)
                        .collect();
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
                                _ = shutdown.recv() => return,
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
            if !sleep_unless_stopped(backoff.next(), &mut shutdown).await {
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
    pub(super) async fn run_cluster_listener(
        self: Arc<Self>,
        shard: Arc<Shard>,
        mut shutdown: Shutdown,
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
                _ = shutdown.recv() => return,
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
            if !sleep_unless_stopped(backoff.next(), &mut shutdown).await {
                return;
            }
        }
        loop {
            let push = tokio::select! {
                push = push_rx.recv() => match push {
                    Some(push) => push,
                    None => return,
                },
                _ = shutdown.recv() => return,
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
                    let followed = match self.follows.of(id.as_str()).get_mut(&id) {
                        Some(f) => {
                            f.stale();
                            true
                        }
                        None => false,
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
        let mut stale = Vec::new();
        for mut follows in self.follows.each_shard() {
            for (id, f) in follows.iter_mut().filter(|(_, f)| f.shard == shard) {
                f.stale();
                f.flushed = None;
                stale.push(id.clone());
            }
        }
        stale
    }
}
