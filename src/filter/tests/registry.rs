//! The registry: identical texts share one compiled filter and id, per dialect; entries live as long
//! as their holders; ids are never reused.

use std::sync::{Arc, Barrier};

use super::super::{Dialect, FilterRegistry};

const TEXT: &str = "SELECT * FROM c WHERE a = 1";

#[test]
fn filter_registry_shares_identical_texts_per_dialect() {
    let registry = FilterRegistry::new();
    let one = registry
        .intern(Dialect::Sql, TEXT)
        .expect("valid native filter");
    let two = registry
        .intern(Dialect::Sql, TEXT)
        .expect("valid native filter");
    assert!(Arc::ptr_eq(&one, &two));
    assert_eq!(one.id(), two.id());
    assert_eq!(one.text(), TEXT);
    // The same text in the other dialect is another filter.
    let cobra = registry
        .intern(Dialect::Cobra, TEXT)
        .expect("valid Cobra filter");
    assert_ne!(cobra.id(), one.id());
    assert_eq!(cobra.dialect(), Dialect::Cobra);
    // Another text, another filter.
    let other = registry
        .intern(Dialect::Sql, "SELECT * FROM c WHERE a = 2")
        .expect("valid");
    assert_ne!(other.id(), one.id());
    assert_eq!(registry.len(), 3);
}

#[test]
fn filter_registry_forgets_a_filter_with_its_last_holder() {
    let registry = FilterRegistry::new();
    let first = registry.intern(Dialect::Sql, TEXT).expect("valid");
    let second = Arc::clone(&first);
    let id = first.id();
    drop(first);
    assert_eq!(registry.len(), 1, "one holder is left");
    assert_eq!(registry.intern(Dialect::Sql, TEXT).expect("valid").id(), id);
    drop(second);
    assert!(registry.is_empty());
    // Interned anew: a new id, never the old one.
    let again = registry.intern(Dialect::Sql, TEXT).expect("valid");
    assert_ne!(again.id(), id);
    assert_eq!(registry.len(), 1);
}

#[test]
fn filter_registry_does_not_keep_refused_texts() {
    let registry = FilterRegistry::new();
    let error = registry
        .intern(Dialect::Sql, "SELECT a FROM c WHERE")
        .expect_err("incomplete");
    assert!(
        error.to_string().contains("at line 1, column 22"),
        "{error}"
    );
    let error = registry
        .intern(Dialect::Cobra, "SELECT a")
        .expect_err("no FROM");
    assert_eq!(error.to_string(), "Invalid SQL expression SELECT a");
    assert!(registry.is_empty());
}

#[test]
fn filter_registry_concurrent_interning_yields_one_filter() {
    let registry = FilterRegistry::new();
    let threads = 8;
    let start = Barrier::new(threads);
    let held: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    let mut held = None;
                    for _ in 0..200 {
                        // The new holder is taken before the previous one is let go.
                        held = Some(registry.intern(Dialect::Sql, TEXT).expect("valid"));
                    }
                    held
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    assert_eq!(held.len(), threads);
    assert!(
        held.iter().all(|f| f.id() == held[0].id()),
        "one id for all holders"
    );
    assert_eq!(registry.len(), 1);
    drop(held);
    assert!(registry.is_empty());
}

#[test]
fn filter_registry_filters_outlive_their_registry() {
    let registry = FilterRegistry::new();
    let filter = registry.intern(Dialect::Cobra, TEXT).expect("valid");
    drop(registry);
    assert_eq!(filter.channel(), Some("c"));
    drop(filter);
}
