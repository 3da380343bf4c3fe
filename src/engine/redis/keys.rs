//! Where things live in Redis: which shard holds a channel, the names of its keys and pub/sub name,
//! the locations (per-shard or per-bucket registries) the sweeper and statistics read.
//!
//! Key layout (`P` = `key_prefix`). Standalone shards: a channel lives on shard `fnv1a64(id) % shards`;
//! its keys `P:{id}:m` (hash: epoch, last_id, time, tag, dropped_time, dropped_tag), `P:{id}:l` (list
//! of stored records, oldest first), `P:{id}:s` (hash: node → local subscribers), `P:{id}:k` (zset:
//! idempotency key → message id, the latest `idempotency_keys_per_channel`), `P:{id}:d` (the removal
//! mark a delete leaves for `REMOVAL_KEPT`: "{epoch} d{text}"), pub/sub name `P:{id}:p`; per shard ("location" `P`): `P:channels` / `P:wchannels` (zsets: channel → deadline
//! ms), `P:expiry` (zset: channel → expiry of its oldest stored message), `P:published`, `P:stored`.
//! Redis Cluster: a channel belongs to bucket `fnv1a64(id) % 128`; every key of the channel and of its
//! bucket carries the hash tag `{b}` so each script touches one slot: `P:{b}:id:m`, …, pub/sub name
//! `P:{b}:id:p` (sharded pub/sub), location `P:{b}`. Node reports live in `P:{nodes}:reports` and
//! `P:{nodes}:seen` (shard 0, or the cluster).

use super::conn::Shard;
use super::RedisEngine;
use std::sync::Arc;

/// Buckets of channels on a Redis Cluster (each bucket is one hash slot).
const CLUSTER_BUCKETS: u64 = 128;

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

/// Redis keys of one channel and of its location.
pub(super) struct Keys {
    pub(super) meta: String,
    pub(super) log: String,
    pub(super) subs: String,
    /// Idempotency keys of recent publishes (zset: key → message id).
    pub(super) idempotency: String,
    /// The mark a delete leaves ("{epoch} d{text}"), so that a catch-up tells a deleted
    /// incarnation from one Redis lost.
    pub(super) removed: String,
    pub(super) pubsub: String,
    /// Prefix of the location's keys (`P` on a standalone shard, `P:{b}` on a cluster).
    pub(super) location: String,
}

impl Keys {
    pub(super) fn channels(&self, wildcard: bool) -> String {
        location_key(
            &self.location,
            if wildcard { "wchannels" } else { "channels" },
        )
    }
    pub(super) fn expiry(&self) -> String {
        location_key(&self.location, "expiry")
    }
    pub(super) fn published(&self) -> String {
        location_key(&self.location, "published")
    }
    pub(super) fn stored(&self) -> String {
        location_key(&self.location, "stored")
    }
}

pub(super) fn location_key(location: &str, name: &str) -> String {
    format!("{location}:{name}")
}

impl RedisEngine {
    pub(super) fn prefix(&self) -> &str {
        &self.config.key_prefix
    }

    pub(super) fn keys(&self, id: &str) -> Keys {
        let p = self.prefix();
        if self.config.cluster {
            let bucket = fnv1a64(id) % CLUSTER_BUCKETS;
            let channel = format!("{p}:{{{bucket}}}:{id}");
            Keys {
                meta: format!("{channel}:m"),
                log: format!("{channel}:l"),
                subs: format!("{channel}:s"),
                idempotency: format!("{channel}:k"),
                removed: format!("{channel}:d"),
                pubsub: format!("{channel}:p"),
                location: format!("{p}:{{{bucket}}}"),
            }
        } else {
            Keys {
                meta: format!("{p}:{{{id}}}:m"),
                log: format!("{p}:{{{id}}}:l"),
                subs: format!("{p}:{{{id}}}:s"),
                idempotency: format!("{p}:{{{id}}}:k"),
                removed: format!("{p}:{{{id}}}:d"),
                pubsub: format!("{p}:{{{id}}}:p"),
                location: p.to_string(),
            }
        }
    }

    /// Every location (shard, key prefix) whose channel registries this engine sweeps and counts.
    pub(super) fn locations(&self) -> Vec<(usize, String)> {
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
    pub(super) fn channel_of_pubsub_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        let rest = name.strip_prefix(self.prefix())?.strip_prefix(":{")?;
        if self.config.cluster {
            let (bucket, rest) = rest.split_once("}:")?;
            bucket.parse::<u64>().ok()?;
            rest.strip_suffix(":p")
        } else {
            rest.strip_suffix("}:p")
        }
    }

    pub(super) fn node_keys(&self) -> (String, String) {
        let p = self.prefix();
        (
            format!("{p}:{{nodes}}:reports"),
            format!("{p}:{{nodes}}:seen"),
        )
    }

    pub(super) fn announce_command(&self) -> &'static str {
        if self.config.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    pub(super) fn shard_index(&self, id: &str) -> usize {
        if self.config.cluster {
            0
        } else {
            shard_of(id, self.shards.len())
        }
    }

    pub(super) fn shard(&self, id: &str) -> &Arc<Shard> {
        &self.shards[self.shard_index(id)]
    }
}

#[cfg(test)]
mod tests {
    use super::{fnv1a64, shard_of};

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
