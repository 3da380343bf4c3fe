//! The state of one channel this node follows in Redis, and its transitions as pure functions (no
//! Redis, no broker, no locks; unit-tested below): an announced message is taken in, kept for the
//! history read in progress, skipped as a duplicate, or reveals a gap (back to a history read) or a
//! new incarnation the publisher did not delete (Redis lost the channel: the mirror starts the channel
//! over and its subscribers stay). Also `Follows`, the table of followed channels in 64 shards by
//! hash, so deliveries on different channels never wait on one lock.
//!
//! Callers decide under the table's shard lock and hand records to the mirror after releasing it,
//! holding the follow's `feed` lock (per channel) so that two feeders of one channel (the listener
//! while live, a sync while syncing) never interleave.

use super::keys::fnv1a64;
use super::record::Record;
use crate::broker::ChannelId;
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// Most announcements kept for a channel while it is being (re)synchronised; beyond this the oldest
/// go, and the history read fills them in.
pub(super) const MAX_PENDING: usize = 10_000;

/// Shards of the follow table.
const SHARDS: usize = 64;

/// Where a follow stands.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FollowState {
    /// Subscribed to the channel's announcements while its history is read (the first sync, or a
    /// catch-up after a gap, a lost connection or an overflow): announcements wait here, (epoch,
    /// record), at most `MAX_PENDING` (the oldest go).
    Syncing { pending: VecDeque<(u64, Record)> },
    /// Announcements go to the mirror as they come.
    Live,
}

/// A channel this node follows in Redis (it has, or recently had, local subscribers).
pub(super) struct Follow {
    pub(super) shard: usize,
    pub(super) wildcard: bool,
    /// The incarnation followed (the channel's creation time in Redis, ms; 0 before the first sync).
    pub(super) epoch: u64,
    /// The last Redis id handed (or being handed) to the mirror.
    pub(super) last_id: u64,
    pub(super) state: FollowState,
    /// (epoch, last id) the mirror holds, updated once a message is in: publishes and deletes wait on
    /// it (read-your-writes). The sender goes with the follow, so a waiter sees the follow end.
    pub(super) taken: Arc<watch::Sender<(u64, u64)>>,
    /// Held by the one sync of the channel at a time; its identity stands for this follow (a newer
    /// follow of the same id has another).
    pub(super) sync_lock: Arc<tokio::sync::Mutex<()>>,
    /// Held while handing messages of this channel to the mirror.
    pub(super) feed: Arc<Mutex<()>>,
    /// A catch-up is queued or running.
    pub(super) catching_up: bool,
    /// When the last local subscriber left (unfollowed `unsubscribe_after` later).
    pub(super) idle_since: Option<Instant>,
    pub(super) touched: Instant,
    /// Subscribers on other live nodes, as last read.
    pub(super) remote_subscribers: u64,
    /// Local subscriber count last written to Redis.
    pub(super) flushed: Option<u64>,
    /// Redis was seen ahead of this follow at the last audit (Redis Cluster).
    pub(super) behind: bool,
}

/// What to do with one announced message (decided under the lock, done after it).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Hand it to the mirror: it is the next message of the incarnation followed.
    TakeIn(Record),
    /// Kept for the history read in progress.
    Buffered,
    /// The mirror has it already.
    Duplicate,
    /// Ids were skipped (an announcement was lost): the follow reads the history again; the record
    /// waits for it.
    Gap,
    /// A message of a new incarnation although no deletion was announced: Redis lost the channel
    /// (restarted without its data, evicted it, flushed) and a publish created it again. The mirror
    /// starts the channel over (its subscribers stay), then `then` applies to the message.
    Restart { then: Box<Step> },
}

/// What a history read hands to the mirror.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Synced {
    /// The incarnation changed without a deletion (see `Step::Restart`): start the mirror over first.
    pub(super) restart: bool,
    /// Stored messages the mirror does not have yet, oldest first.
    pub(super) records: Vec<Record>,
}

/// The next announcements kept during a sync.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Drained {
    /// Hand these to the mirror, then drain again.
    Records(Vec<Record>),
    /// None left: the follow is live.
    Live,
    /// Ids were skipped (the pending list overflowed, or a newer incarnation was announced): read the
    /// history again.
    Gap,
}

impl Follow {
    pub(super) fn new(shard: usize, wildcard: bool) -> Follow {
        Follow {
            shard,
            wildcard,
            epoch: 0,
            last_id: 0,
            state: FollowState::Syncing {
                pending: VecDeque::new(),
            },
            taken: Arc::new(watch::Sender::new((0, 0))),
            sync_lock: Arc::new(tokio::sync::Mutex::new(())),
            feed: Arc::new(Mutex::new(())),
            catching_up: false,
            idle_since: None,
            touched: Instant::now(),
            remote_subscribers: 0,
            flushed: None,
            behind: false,
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.state == FollowState::Live
    }

    /// One announced message of incarnation `epoch`.
    pub(super) fn on_message(&mut self, epoch: u64, record: Record) -> Step {
        let FollowState::Syncing { pending } = &mut self.state else {
            if epoch != self.epoch {
                self.epoch = epoch;
                self.last_id = 0;
                let then = Box::new(self.on_message(epoch, record));
                return Step::Restart { then };
            }
            if record.id <= self.last_id {
                return Step::Duplicate;
            }
            if record.id > self.last_id.saturating_add(1) {
                self.state = FollowState::Syncing {
                    pending: VecDeque::from([(epoch, record)]),
                };
                return Step::Gap;
            }
            self.last_id = record.id;
            return Step::TakeIn(record);
        };
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
        }
        pending.push_back((epoch, record));
        Step::Buffered
    }

    /// Announcements may have been missed (a lost connection, an audit that found the follow behind,
    /// a publish whose announcement did not come): back to a history read. True if it was live.
    pub(super) fn stale(&mut self) -> bool {
        let was_live = self.is_live();
        if was_live {
            self.state = FollowState::Syncing {
                pending: VecDeque::new(),
            };
        }
        was_live
    }

    /// A history read found incarnation `epoch` with last id `redis_last_id` and these stored
    /// messages (oldest first). The follow stays syncing until its pending announcements are drained.
    pub(super) fn synced(
        &mut self,
        epoch: u64,
        redis_last_id: u64,
        history: Vec<Record>,
    ) -> Synced {
        let restart = self.epoch != 0 && epoch != self.epoch;
        if self.epoch != epoch {
            self.epoch = epoch;
            self.last_id = 0;
        }
        let mut records = Vec::new();
        for record in history {
            if record.id > self.last_id {
                self.last_id = record.id;
                records.push(record);
            }
        }
        // Messages not stored and published before we subscribed are not ours to deliver.
        self.last_id = self.last_id.max(redis_last_id);
        Synced { restart, records }
    }

    /// Takes the announcements kept during the sync that follow the last id, in order.
    pub(super) fn drain(&mut self) -> Drained {
        let FollowState::Syncing { pending } = &mut self.state else {
            return Drained::Live;
        };
        let mut records = Vec::new();
        while let Some((epoch, record)) = pending.pop_front() {
            if epoch < self.epoch || (epoch == self.epoch && record.id <= self.last_id) {
                // An older incarnation's, or one the history read brought.
                continue;
            }
            if epoch > self.epoch || record.id > self.last_id.saturating_add(1) {
                pending.push_front((epoch, record));
                return if records.is_empty() {
                    Drained::Gap
                } else {
                    Drained::Records(records)
                };
            }
            self.last_id = record.id;
            records.push(record);
        }
        if records.is_empty() {
            self.state = FollowState::Live;
            self.behind = false;
            Drained::Live
        } else {
            Drained::Records(records)
        }
    }
}

/// The followed channels, in `SHARDS` maps by hash of the id.
pub(super) struct Follows {
    shards: Box<[Mutex<HashMap<ChannelId, Follow>>]>,
}

impl Follows {
    pub(super) fn new() -> Follows {
        Follows {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The shard holding `id` (locked).
    pub(super) fn of(&self, id: &str) -> MutexGuard<'_, HashMap<ChannelId, Follow>> {
        self.shards[(fnv1a64(id) % SHARDS as u64) as usize].lock()
    }

    /// The ids of the follows of `shard` (standalone shard index; 0 on a Redis Cluster).
    pub(super) fn on_shard(&self, shard: usize) -> Vec<ChannelId> {
        self.each_shard()
            .flat_map(|follows| {
                follows
                    .iter()
                    .filter(|(_, f)| f.shard == shard)
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every shard in turn (each locked while it is visited).
    pub(super) fn each_shard(
        &self,
    ) -> impl Iterator<Item = MutexGuard<'_, HashMap<ChannelId, Follow>>> {
        self.shards.iter().map(|shard| shard.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const EPOCH: u64 = 1_700_000_000_000;

    fn record(id: u64) -> Record {
        Record {
            id,
            time: 1_700_000_000,
            tag: id,
            expires_ms: u64::MAX,
            store: true,
            event_id: None,
            event_type: None,
            text: Bytes::from(format!("m{id}")),
        }
    }

    fn live(last_id: u64) -> Follow {
        let mut follow = Follow::new(0, false);
        follow.synced(EPOCH, last_id, Vec::new());
        assert_eq!(follow.drain(), Drained::Live);
        follow
    }

    fn ids(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.id).collect()
    }

    #[test]
    fn live_follow_takes_the_next_id_and_skips_duplicates() {
        let mut follow = live(5);
        assert_eq!(follow.on_message(EPOCH, record(6)), Step::TakeIn(record(6)));
        assert_eq!(follow.on_message(EPOCH, record(6)), Step::Duplicate);
        assert_eq!(follow.on_message(EPOCH, record(3)), Step::Duplicate);
        assert_eq!(follow.last_id, 6);
        assert!(follow.is_live());
    }

    #[test]
    fn a_gap_goes_back_to_a_history_read_keeping_the_record() {
        let mut follow = live(5);
        assert_eq!(follow.on_message(EPOCH, record(8)), Step::Gap);
        assert!(!follow.is_live());
        // While the history is read, announcements wait.
        assert_eq!(follow.on_message(EPOCH, record(9)), Step::Buffered);
        let synced = follow.synced(EPOCH, 8, vec![record(6), record(7), record(8)]);
        assert!(!synced.restart);
        assert_eq!(ids(&synced.records), [6, 7, 8]);
        // 8 came with the history; 9 follows it.
        assert_eq!(follow.drain(), Drained::Records(vec![record(9)]));
        assert_eq!(follow.drain(), Drained::Live);
        assert_eq!(follow.last_id, 9);
    }

    #[test]
    fn first_sync_takes_history_then_pending_then_goes_live() {
        let mut follow = Follow::new(0, false);
        assert_eq!(follow.on_message(EPOCH, record(3)), Step::Buffered);
        assert_eq!(follow.on_message(EPOCH, record(4)), Step::Buffered);
        let synced = follow.synced(EPOCH, 3, vec![record(1), record(2), record(3)]);
        assert!(!synced.restart, "a first sync is no restart");
        assert_eq!(ids(&synced.records), [1, 2, 3]);
        assert_eq!(follow.drain(), Drained::Records(vec![record(4)]));
        assert_eq!(follow.on_message(EPOCH, record(5)), Step::Buffered);
        assert_eq!(follow.drain(), Drained::Records(vec![record(5)]));
        assert_eq!(follow.drain(), Drained::Live);
        assert_eq!(follow.on_message(EPOCH, record(6)), Step::TakeIn(record(6)));
    }

    #[test]
    fn unstored_messages_before_the_subscription_are_not_waited_for() {
        let mut follow = Follow::new(0, false);
        // Redis is at 10; only 7 is stored; 11 was announced after we subscribed.
        follow.on_message(EPOCH, record(11));
        let synced = follow.synced(EPOCH, 10, vec![record(7)]);
        assert_eq!(ids(&synced.records), [7]);
        assert_eq!(follow.drain(), Drained::Records(vec![record(11)]));
        assert_eq!(follow.drain(), Drained::Live);
    }

    #[test]
    fn pending_overflow_drops_the_oldest_and_reads_again() {
        let mut follow = live(0);
        follow.stale();
        for id in 1..=(MAX_PENDING as u64 + 5) {
            assert_eq!(follow.on_message(EPOCH, record(id)), Step::Buffered);
        }
        // The history read lost the race with Redis (last id 0 when it read): 1..5 are gone.
        let synced = follow.synced(EPOCH, 0, Vec::new());
        assert!(synced.records.is_empty());
        assert_eq!(follow.drain(), Drained::Gap);
        assert!(!follow.is_live());
        // The next read brings 1..5 and the rest follows from pending.
        let synced = follow.synced(EPOCH, 5, (1..=5).map(record).collect());
        assert_eq!(ids(&synced.records), [1, 2, 3, 4, 5]);
        let Drained::Records(rest) = follow.drain() else {
            panic!("pending drains after the read");
        };
        assert_eq!(rest.len(), MAX_PENDING);
        assert_eq!(follow.drain(), Drained::Live);
    }

    #[test]
    fn a_new_incarnation_without_deletion_restarts_from_its_first_message() {
        let mut follow = live(40);
        let next = EPOCH + 5_000;
        assert_eq!(
            follow.on_message(next, record(1)),
            Step::Restart {
                then: Box::new(Step::TakeIn(record(1)))
            }
        );
        assert_eq!((follow.epoch, follow.last_id), (next, 1));
        assert_eq!(follow.on_message(next, record(2)), Step::TakeIn(record(2)));
        // Its first announcements were missed: restart, then read the new history from its start.
        let mut follow = live(40);
        assert_eq!(
            follow.on_message(next, record(3)),
            Step::Restart {
                then: Box::new(Step::Gap)
            }
        );
        let synced = follow.synced(next, 3, (1..=3).map(record).collect());
        assert!(
            !synced.restart,
            "the follow already moved to the new incarnation"
        );
        assert_eq!(ids(&synced.records), [1, 2, 3]);
        assert_eq!(follow.drain(), Drained::Live);
    }

    #[test]
    fn a_catch_up_that_finds_another_incarnation_restarts() {
        let mut follow = live(40);
        follow.stale();
        let next = EPOCH + 9_000;
        // Announced during the read: one of the old incarnation, two of the new one.
        follow.on_message(EPOCH, record(41));
        follow.on_message(next, record(3));
        follow.on_message(next, record(4));
        let synced = follow.synced(next, 3, (1..=3).map(record).collect());
        assert!(synced.restart);
        assert_eq!(ids(&synced.records), [1, 2, 3]);
        assert_eq!(follow.drain(), Drained::Records(vec![record(4)]));
        assert_eq!(follow.drain(), Drained::Live);
        assert_eq!((follow.epoch, follow.last_id), (next, 4));
    }

    #[test]
    fn a_newer_incarnation_announced_during_a_sync_reads_again() {
        let mut follow = Follow::new(0, false);
        follow.on_message(EPOCH + 1, record(1));
        follow.synced(EPOCH, 7, Vec::new());
        assert_eq!(follow.drain(), Drained::Gap);
    }

    #[test]
    fn the_table_finds_what_it_holds() {
        let follows = Follows::new();
        let id = ChannelId::new_unchecked("news");
        follows.of("news").insert(id.clone(), Follow::new(0, false));
        assert!(follows.of("news").contains_key(&id));
        let total: usize = follows.each_shard().map(|shard| shard.len()).sum();
        assert_eq!(total, 1);
    }
}
