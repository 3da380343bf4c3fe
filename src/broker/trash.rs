//! The trash of the module's statistics: channels removed (deleted or inactive) and messages dropped
//! (expired, evicted, deleted) stay counted for `TRASH_HOLD` after they go, as `channels_in_trash` and
//! `messages_in_trash`. Herald frees them at once; only the counts linger. Entries are grouped per
//! second, so the queue holds at most a dozen entries whatever the rate.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long removed things are counted in the trash (the module frees its trash after 10 s).
pub const TRASH_HOLD: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct Trash {
    entries: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Trash {
    /// Counts `channels` and `messages` as trashed now.
    pub fn add(&self, channels: u64, messages: u64) {
        if channels == 0 && messages == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock();
        match entries.back_mut() {
            Some(last) if now.duration_since(last.0) < Duration::from_secs(1) => {
                last.1 += channels;
                last.2 += messages;
            }
            _ => entries.push_back((now, channels, messages)),
        }
    }

    /// Forgets entries older than `TRASH_HOLD`.
    pub fn purge(&self) {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        while entries
            .front()
            .is_some_and(|e| now.duration_since(e.0) >= TRASH_HOLD)
        {
            entries.pop_front();
        }
    }

    /// (channels, messages) in the trash now.
    pub fn counts(&self) -> (u64, u64) {
        self.purge();
        let entries = self.entries.lock();
        entries.iter().fold((0, 0), |(c, m), e| (c + e.1, m + e.2))
    }
}
