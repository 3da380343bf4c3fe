//! Publishing and deleting through Redis: one publish script per channel (concurrently, never resent
//! once Redis may have run it), the explanation of a partial failure, and read-your-writes: the
//! answer waits (bounded) until this node's mirror holds the message, or its follow of a deleted
//! channel has ended.

use super::conn::refused_while_slots_move;
use super::error::{Failure, FailureKind, PartialPublish};
use super::record;
use super::scripts::{CreateReply, PublishCall, PublishReply, ScriptError};
use super::RedisEngine;
use crate::broker::{BrokerError, ChannelId, ChannelInfo, Publish, Published};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a publish waits for this node's mirror to take its message in (read-your-writes on
/// the publishing node; see `await_mirror`). The announcement normally arrives with the reply.
const MIRROR_WAIT: Duration = Duration::from_millis(500);

/// How long Redis keeps the mark a delete leaves: a node cut off from its shard for less learns on
/// its catch-up that the channel it followed was deleted (its subscribers get the channel-deleted
/// message); after longer it takes the channel for one Redis lost (its subscribers stay, on the
/// channel's new history).
pub(super) const REMOVAL_KEPT: Duration = Duration::from_secs(3600);

impl RedisEngine {
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
            if let Err(failure) = self.create_all(channels).await {
                if let FailureKind::Refused(error) = failure.kind {
                    return Err(error);
                }
                // Only channel creation ran: no channel got the message.
                crate::metrics::count_redis_publish_failure(false);
                return Err(BrokerError::Unavailable(format!(
                    "{failure} Nothing was published. Try again."
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
        let Some(first) = results.iter().find_map(|r| r.as_ref().err()) else {
            return Ok(results.into_iter().filter_map(Result::ok).collect());
        };
        let mut partial = PartialPublish {
            first: first.clone(),
            channels,
            published: Vec::new(),
            not_published: Vec::new(),
            unsure: Vec::new(),
            keyed: !key.is_empty(),
        };
        for (id, result) in channels.iter().zip(&results) {
            match result {
                Ok(_) => partial.published.push(id.as_str()),
                Err(failure) if failure.maybe_applied() => partial.unsure.push(id.as_str()),
                Err(_) => partial.not_published.push(id.as_str()),
            }
        }
        if let Some(error) = partial.refused_whole() {
            // Refused as a whole (a limit): nothing went out.
            return Err(error.clone());
        }
        crate::metrics::count_redis_publish_failure(!partial.unsure.is_empty());
        Err(BrokerError::Unavailable(partial.to_string()))
    }

    /// Publishes to one channel. `client_publish`: a client's message (counted in the published
    /// totals, answered once this node's mirror has it); false for Herald's own events-channel
    /// messages, which neither count nor wait.
    pub(super) async fn publish_one(
        self: &Arc<Self>,
        id: &ChannelId,
        tail: Bytes,
        store: bool,
        client_publish: bool,
        idempotency_key: &str,
    ) -> Result<Published, Failure> {
        let settings = self.settings();
        let shard = self.shard(id.as_str());
        let wildcard = self.is_wildcard(id.as_str());
        let keys = self.keys(id.as_str());
        // Not sent yet: a failure here surely published nothing.
        let mut conn = self.conn_once(shard).await?;
        let call = PublishCall {
            id: id.as_str(),
            tail: &tail,
            store,
            max_stored: settings.max_messages_stored_per_channel.unwrap_or(0),
            message_ttl_ms: settings.message_ttl.as_millis() as u64,
            inactivity_ms: settings.channel_inactivity_time.as_millis() as u64,
            allowance: self.allowance(&keys.location, wildcard),
            counted: client_publish,
            announce_command: self.announce_command(),
            idempotency_key,
            keys_remembered: settings.idempotency_keys_per_channel,
        };
        // Sent again only when Redis refused it before running it (a Redis Cluster moving slots).
        let deadline = Instant::now() + self.config.command_timeout.0;
        let mut pause = Duration::from_millis(10);
        let reply = loop {
            let answer = self
                .within_timeout(self.scripts.publish(&mut conn, &keys, wildcard, &call))
                .await;
            let err = match answer {
                Ok(reply) => break reply,
                Err(err) => err,
            };
            let redis_err = match &err {
                Some(ScriptError::Redis(err)) => Some(err),
                _ => None,
            };
            if redis_err.is_some_and(refused_while_slots_move) && Instant::now() + pause < deadline
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
                continue;
            }
            return Err(self.script_error(shard, err));
        };
        let done = match reply {
            PublishReply::Refused => {
                return Err(Failure::refused(self.too_many_channels(wildcard)))
            }
            PublishReply::Done(done) => done,
        };
        if done.created {
            self.emit("channel_created", id);
        }
        if client_publish {
            self.await_mirror(id, done.epoch, done.id).await;
        }
        let remote = self.remote_subscribers(id.as_str(), &done.subscribers);
        Ok(Published {
            info: ChannelInfo {
                channel: id.clone(),
                published_messages: done.id,
                stored_messages: done.stored,
                subscribers: remote.saturating_add(self.broker.local_subscribers(id.as_str())),
            },
            replayed: done.replayed,
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
        if self.stop.is_shutdown() {
            return;
        }
        let has =
            move |(e, last): (u64, u64)| epoch.is_none_or(|want| want == e) && last >= message_id;
        let mut taken = {
            let follows = self.follows.of(id.as_str());
            match follows.get(id) {
                Some(f) if f.is_live() && !has(*f.taken.borrow()) => f.taken.subscribe(),
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
    pub(super) async fn await_unfollowed(
        self: &Arc<Self>,
        id: &ChannelId,
        mut followed: tokio::sync::watch::Receiver<(u64, u64)>,
    ) {
        if self.stop.is_shutdown() {
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
            let mut follows = self.follows.of(id.as_str());
            match follows.get_mut(id) {
                Some(f) if f.is_live() && feed.same_channel(&f.taken.subscribe()) => {
                    f.stale();
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
    async fn create_all(&self, channels: &[ChannelId]) -> Result<(), Failure> {
        let inactivity = self.settings().channel_inactivity_time.as_millis() as u64;
        for id in channels {
            let shard = self.shard(id.as_str());
            let wildcard = self.is_wildcard(id.as_str());
            let keys = self.keys(id.as_str());
            let mut conn = self.conn(shard).await?;
            let allowance = self.allowance(&keys.location, wildcard);
            let created = self
                .run_script(
                    shard,
                    self.scripts.create(
                        &mut conn,
                        &keys,
                        (id.as_str(), wildcard),
                        allowance,
                        inactivity,
                    ),
                )
                .await?;
            match created {
                CreateReply::Refused => {
                    return Err(Failure::refused(self.too_many_channels(wildcard)))
                }
                CreateReply::Created => self.emit("channel_created", id),
                CreateReply::Existed => {}
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
            let wildcard = self.is_wildcard(id.as_str());
            // Only a live follow hears the deletion (one still subscribing ends by its sync).
            let followed = self
                .follows
                .of(id.as_str())
                .get(id)
                .filter(|f| f.is_live())
                .map(|f| f.taken.subscribe());
            let delete = self.scripts.delete(
                &mut conn,
                &keys,
                (id.as_str(), wildcard),
                (&text, REMOVAL_KEPT.as_millis() as u64),
                self.announce_command(),
            );
            if self.run_script(shard, delete).await? {
                ending.extend(followed.map(|f| self.await_unfollowed(id, f)));
                self.emit("channel_destroyed", id);
                deleted.push(id.clone());
            }
        }
        futures_util::future::join_all(ending).await;
        Ok(deleted)
    }
}
