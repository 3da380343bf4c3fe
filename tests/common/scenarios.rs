//! Behaviours that more than one suite checks the same way (the in-process suites and the
//! two-engine suite of `engines.rs`), written once against any `Http` server.

#![allow(dead_code)]

use super::http::Http;
use super::messages::{event, next_event};
use super::WAIT;
use reqwest::StatusCode;
use std::time::Duration;

/// The events channel `events` (with `channel_inactivity_time = "1s"`), read at
/// `{events_at}events` (a location allowing it): a subscriber of `{subscriber_at}ch1` creates, joins and
/// leaves ch1; a publish creates ch2 and DELETE destroys it; ch1 goes after the inactivity time;
/// nothing else is reported; the events are stored, so a late subscriber can backtrack them.
pub async fn events_channel_lifecycle(server: &Http, events_at: &str, subscriber_at: &str) {
    let mut events = server.subscribe_ok(&format!("{events_at}events")).await;
    server.wait_for_subscribers("events", 1).await;

    // A subscriber creates ch1 and joins it.
    let ch1 = server.subscribe_ok(&format!("{subscriber_at}ch1")).await;
    assert_eq!(
        next_event(&mut events, WAIT).await,
        event("channel_created", "ch1")
    );
    assert_eq!(
        next_event(&mut events, WAIT).await,
        event("client_subscribed", "ch1")
    );
    // It leaves.
    drop(ch1);
    assert_eq!(
        next_event(&mut events, WAIT).await,
        event("client_unsubscribed", "ch1")
    );
    // A publish creates ch2; DELETE destroys it.
    server.publish_ok("ch2", "hello").await;
    let (status, _, body) = server.delete("ch2", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ch1, empty and left, is removed after channel_inactivity_time (1 s): channel_destroyed too.
    // Its removal may come before or after ch2's events; each channel's events are in order.
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(next_event(&mut events, Duration::from_secs(8)).await);
    }
    let position = |e: &str| {
        rest.iter()
            .position(|r| r == e)
            .unwrap_or_else(|| panic!("missing {e}; got {rest:#?}"))
    };
    assert!(
        position(&event("channel_created", "ch2")) < position(&event("channel_destroyed", "ch2")),
        "{rest:#?}"
    );
    position(&event("channel_destroyed", "ch1"));
    assert!(server.channel_info("ch1").await.is_none());
    assert!(server.channel_info("ch2").await.is_none());
    // Nothing else (in particular no event about the events channel itself).
    events.expect_quiet(Duration::from_millis(300)).await;

    // The events are stored like other messages: a late subscriber can backtrack them.
    let mut late = server.subscribe_ok(&format!("{events_at}events.b10")).await;
    let mut stored = Vec::new();
    for _ in 0..6 {
        stored.push(next_event(&mut late, WAIT).await);
    }
    assert_eq!(
        &stored[..3],
        &[
            event("channel_created", "ch1"),
            event("client_subscribed", "ch1"),
            event("client_unsubscribed", "ch1"),
        ],
        "{stored:#?}"
    );
    late.expect_quiet(Duration::from_millis(300)).await;
}
