//! Interning of compiled filters: every subscriber that sends the same text in the same dialect holds
//! the same [`SharedFilter`], with one stable [`FilterId`], so that a message is evaluated and rendered
//! once per distinct filter rather than once per subscriber. An entry lives as long as some subscriber
//! holds it: dropping the last `Arc<SharedFilter>` removes it from the registry.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{Dialect, Filter, FilterError};

/// Identifies one interned filter for the life of its registry (ids are never reused), e.g. as the
/// key of a per-message cache of outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterId(u64);

impl FilterId {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A compiled filter shared by every subscriber that sent its text.
#[derive(Debug)]
pub struct SharedFilter {
    id: FilterId,
    filter: Filter,
    registry: Weak<Inner>,
}

/// The interning table: a cheap `Clone` handle.
#[derive(Debug, Clone, Default)]
pub struct FilterRegistry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    /// Live filters by text, one map per dialect. The lock covers map operations only; compiling
    /// happens outside it.
    cobra: Mutex<HashMap<Box<str>, Weak<SharedFilter>>>,
    sql: Mutex<HashMap<Box<str>, Weak<SharedFilter>>>,
}

impl Inner {
    fn table(&self, dialect: Dialect) -> &Mutex<HashMap<Box<str>, Weak<SharedFilter>>> {
        match dialect {
            Dialect::Cobra => &self.cobra,
            Dialect::Sql => &self.sql,
        }
    }
}

impl FilterRegistry {
    pub fn new() -> FilterRegistry {
        FilterRegistry::default()
    }

    /// The shared filter for `text`, compiled the first time it is seen (or again after every holder
    /// of the previous one has dropped it).
    pub fn intern(&self, dialect: Dialect, text: &str) -> Result<Arc<SharedFilter>, FilterError> {
        let table = self.inner.table(dialect);
        if let Some(live) = table.lock().get(text).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let filter = Filter::parse(dialect, text)?;
        let mut map = table.lock();
        // Another subscriber may have compiled the same text meanwhile: share theirs.
        if let Some(live) = map.get(text).and_then(Weak::upgrade) {
            return Ok(live);
        }
        let shared = Arc::new(SharedFilter {
            id: FilterId(self.inner.next_id.fetch_add(1, Ordering::Relaxed)),
            filter,
            registry: Arc::downgrade(&self.inner),
        });
        map.insert(text.into(), Arc::downgrade(&shared));
        Ok(shared)
    }

    /// How many distinct filters are live.
    pub fn len(&self) -> usize {
        self.inner.cobra.lock().len() + self.inner.sql.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedFilter {
    pub fn id(&self) -> FilterId {
        self.id
    }
}

impl Deref for SharedFilter {
    type Target = Filter;

    fn deref(&self) -> &Filter {
        &self.filter
    }
}

impl Drop for SharedFilter {
    /// The last holder is gone: forget the entry, unless the text has been interned anew meanwhile
    /// (then the entry points at the new filter and stays).
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut map = registry.table(self.filter.dialect()).lock();
        let this: *const SharedFilter = self;
        if map
            .get(self.filter.text())
            .is_some_and(|entry| std::ptr::eq(entry.as_ptr(), this))
        {
            map.remove(self.filter.text());
        }
    }
}
