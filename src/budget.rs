//! The server-wide bound on bytes that clients make Herald buffer before it can act on them:
//! request bodies being read (`http::body`) and unfinished WebSocket messages
//! (`transport::websocket`). One `ByteBudget` per server (`max_buffered_body_size`); each body or
//! message holds a `Reservation` that grows as bytes arrive and is given back when it is done,
//! refused or abandoned, so a wave of slow or never-finished uploads cannot hold more than the
//! budget whatever the number of connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes reserved now, across the server.
#[derive(Debug, Default)]
pub struct ByteBudget {
    reserved: AtomicU64,
}

impl ByteBudget {
    /// Bytes reserved now.
    pub fn reserved(&self) -> u64 {
        self.reserved.load(Ordering::Acquire)
    }

    /// Adds `bytes` to the reserved total unless that would pass `limit`.
    fn try_reserve(&self, bytes: u64, limit: u64) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |reserved| {
                reserved.checked_add(bytes).filter(|total| *total <= limit)
            })
            .is_ok()
    }

    /// An empty share of the budget.
    pub fn share(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// One body's or message's share of a `ByteBudget`, given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: u64,
}

impl Reservation {
    /// Grows the share to `bytes` in all, or returns false (and keeps the share as it was) when
    /// the server-wide `limit` refuses it.
    pub fn grow_to(&mut self, bytes: u64, limit: u64) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if !self.budget.try_reserve(more, limit) {
            return false;
        }
        self.bytes += more;
        true
    }

    /// Gives the whole share back (the body or message is done); the share can grow again.
    pub fn release(&mut self) {
        self.budget.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bytes = 0;
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_grow_within_the_limit_and_come_back() {
        let budget = Arc::new(ByteBudget::default());
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.grow_to(60, 100));
        assert!(!b.grow_to(50, 100), "60 + 50 is past 100");
        assert_eq!(b.bytes(), 0);
        assert!(b.grow_to(40, 100));
        assert_eq!(budget.reserved(), 100);
        assert!(a.grow_to(30, 100), "shrinking asks nothing");
        a.release();
        assert_eq!(budget.reserved(), 40);
        drop(b);
        assert_eq!(budget.reserved(), 0);
    }
}
