//! `Digest128`: a per-process keyed 128-bit digest (two differently keyed SipHash-1-3 halves),
//! for bounded-size map keys made from client-chosen text (authorization cache entries, idempotency
//! keys). Keyed at random per process, so clients cannot craft collisions.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Two differently keyed hashers; `of` combines them into 128 bits.
#[derive(Debug, Default)]
pub struct Digest128 {
    high: RandomState,
    low: RandomState,
}

impl Digest128 {
    /// The digest of `value`.
    pub fn of<T: std::hash::Hash + ?Sized>(&self, value: &T) -> u128 {
        (u128::from(self.high.hash_one(value)) << 64) | u128::from(self.low.hash_one(value))
    }
}

#[cfg(test)]
mod tests {
    use super::Digest128;

    #[test]
    fn same_text_same_digest_other_text_other_digest() {
        let digest = Digest128::default();
        assert_eq!(digest.of("key-1"), digest.of("key-1"));
        assert_ne!(digest.of("key-1"), digest.of("key-2"));
        // Another process (another pair of keys) digests differently.
        assert_ne!(Digest128::default().of("key-1"), digest.of("key-1"));
    }
}
