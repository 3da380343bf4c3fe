//! The broker contract, tested on the in-memory engine without HTTP.

use super::*;

fn settings() -> BrokerSettings {
    BrokerSettings {
        max_messages_stored_per_channel: Some(3),
        message_ttl: Duration::from_secs(60),
        max_number_of_channels: Some(2),
        channels_reserved_for_publishers: 0,
        max_subscribers_per_channel: Some(2),
        wildcard_channel_prefix: Some("bc_".into()),
        channel_inactivity_time: Duration::ZERO,
        channel_deleted_message_text: Bytes::from_static(b"gone"),
        subscriber_lag_limit: 4,
        events_channel_id: None,
        max_number_of_wildcard_channels: None,
        shared_memory_size: None,
        idempotency_keys_per_channel: 3,
        format_count: 1,
        mirror: false,
    }
}

fn id(name: &str) -> ChannelId {
    ChannelId::new_unchecked(name)
}

fn text(body: &'static str) -> Publish {
    Publish {
        text: Bytes::from_static(body.as_bytes()),
        event_id: None,
        event_type: None,
        store: true,
        idempotency_key: None,
    }
}

fn keyed(body: &'static str, key: &str) -> Publish {
    Publish {
        idempotency_key: Some(key.into()),
        ..text(body)
    }
}

fn to(name: &str, backtrack: u64) -> SubscribeTo {
    let start = if backtrack == 0 {
        StartAt::Live
    } else {
        StartAt::Backtrack(backtrack)
    };
    SubscribeTo {
        channel: id(name),
        start,
    }
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Message(m) => String::from_utf8_lossy(&m.text).into_owned(),
            Event::ChannelDeleted(m) => format!("deleted:{}", String::from_utf8_lossy(&m.text)),
            Event::Lagged { missed, .. } => format!("lagged:{missed}"),
            Event::HistoryLost { .. } => "history-lost".to_string(),
        })
        .collect()
}

#[tokio::test]
async fn messages_arrive_in_order_with_increasing_ids_and_tags() {
    let broker = Broker::new(settings());
    let mut sub = broker
        .subscribe(&[to("a", 0)], &SubscribePolicy::default())
        .unwrap();
    for body in ["1", "2", "3"] {
        broker.publish(&[id("a")], text(body)).unwrap();
    }
    let mut events = Vec::new();
    sub.next_events(&mut events).await;
    assert_eq!(texts(&events), ["1", "2", "3"]);
    let keys: Vec<(i64, u64, u64)> = events
        .iter()
        .map(|e| match e {
            Event::Message(m) => (m.id, m.time, m.tag),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(keys.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(keys.windows(2).all(|w| (w[0].1, w[0].2) < (w[1].1, w[1].2)));
}

#[tokio::test]
async fn backtrack_takes_the_newest_stored_and_storage_is_bounded() {
    let broker = Broker::new(settings());
    for body in ["1", "2", "3", "4", "5"] {
        broker.publish(&[id("a")], text(body)).unwrap();
    }
    let info = broker.channel_info("a").unwrap();
    assert_eq!((info.published_messages, info.stored_messages), (5, 3));
    assert_eq!(broker.summary().stored_messages, 3);
    let mut sub = broker
        .subscribe(&[to("a", 2)], &SubscribePolicy::default())
        .unwrap();
    let backlog: Vec<_> = sub.take_backlog().iter().map(|m| m.id).collect();
    assert_eq!(backlog, [4, 5]);
    let mut all = broker
        .subscribe(&[to("a", 100)], &SubscribePolicy::default())
        .unwrap();
    assert_eq!(all.take_backlog().len(), 3);
}

#[tokio::test]
async fn limits_refuse_without_side_effects() {
    let broker = Broker::new(settings());
    broker.publish(&[id("a"), id("b")], text("x")).unwrap();
    assert_eq!(
        broker.publish(&[id("a"), id("c")], text("y")).unwrap_err(),
        BrokerError::TooManyChannels { max: 2 }
    );
    // The refused publish stored nothing on "a".
    assert_eq!(broker.channel_info("a").unwrap().published_messages, 1);
    // Wildcard channels are counted apart and not limited by max_number_of_channels.
    broker.publish(&[id("bc_1")], text("z")).unwrap();
    assert_eq!(broker.summary().wildcard_channels, 1);
    assert_eq!(broker.summary().channels, 2);
    let _s1 = broker
        .subscribe(&[to("a", 0)], &SubscribePolicy::default())
        .unwrap();
    let _s2 = broker
        .subscribe(&[to("a", 0)], &SubscribePolicy::default())
        .unwrap();
    assert_eq!(
        broker
            .subscribe(&[to("a", 0)], &SubscribePolicy::default())
            .unwrap_err(),
        BrokerError::TooManySubscribers { max: 2 }
    );
    drop(_s1);
    assert!(broker
        .subscribe(&[to("a", 0)], &SubscribePolicy::default())
        .is_ok());
}

#[tokio::test]
async fn a_slow_subscriber_learns_that_it_lagged() {
    let broker = Broker::new(settings());
    let mut sub = broker
        .subscribe(&[to("a", 0)], &SubscribePolicy::default())
        .unwrap();
    for _ in 0..10 {
        broker.publish(&[id("a")], text("m")).unwrap();
    }
    let mut events = Vec::new();
    sub.next_events(&mut events).await;
    assert_eq!(texts(&events), ["lagged:6"]);
    assert_eq!(broker.lagged_subscribers(), 1);
}

#[tokio::test]
async fn delete_tells_subscribers_and_frees_the_channel() {
    let broker = Broker::new(settings());
    broker.publish(&[id("a")], text("1")).unwrap();
    let mut sub = broker
        .subscribe(&[to("a", 0), to("b", 0)], &SubscribePolicy::default())
        .unwrap();
    assert_eq!(broker.summary().subscribers, 1);
    assert_eq!(
        broker.delete(&[id("a"), id("zz")], None).unwrap(),
        vec![id("a")]
    );
    let mut events = Vec::new();
    sub.next_events(&mut events).await;
    assert_eq!(texts(&events), ["deleted:gone"]);
    assert!(!sub.is_empty(), "still follows b");
    assert!(broker.channel_info("a").is_none());
    assert_eq!(broker.summary().stored_messages, 0);
    broker
        .delete(&[id("b")], Some(Bytes::from_static(b"bye")))
        .unwrap();
    events.clear();
    sub.next_events(&mut events).await;
    assert_eq!(texts(&events), ["deleted:bye"]);
    assert!(sub.is_empty());
    drop(sub);
    assert_eq!(broker.summary().subscribers, 0);
}

#[tokio::test]
async fn sweep_removes_idle_empty_channels_only() {
    let broker = Broker::new(BrokerSettings {
        max_number_of_channels: None,
        ..settings()
    });
    broker.publish(&[id("kept")], text("1")).unwrap();
    let sub = broker
        .subscribe(&[to("watched", 0)], &SubscribePolicy::default())
        .unwrap();
    broker
        .publish(
            &[id("empty")],
            Publish {
                store: false,
                ..text("1")
            },
        )
        .unwrap();
    broker.sweep();
    assert!(broker.channel_info("kept").is_some());
    assert!(broker.channel_info("watched").is_some());
    assert!(broker.channel_info("empty").is_none());
    drop(sub);
    broker.sweep();
    assert!(broker.channel_info("watched").is_none());
    assert_eq!(broker.summary().channels, 1);
}

#[tokio::test]
async fn publishing_after_delete_recreates_the_channel() {
    let broker = Broker::new(settings());
    broker.publish(&[id("a")], text("1")).unwrap();
    broker.delete(&[id("a")], None).unwrap();
    let info = broker.publish(&[id("a")], text("2")).unwrap();
    assert_eq!(info[0].info.published_messages, 1);
    assert_eq!(broker.summary().channels, 1);
}

#[tokio::test]
async fn recovery_points_select_the_stored_messages_after_them() {
    let broker = Broker::new(BrokerSettings {
        max_messages_stored_per_channel: Some(10),
        ..settings()
    });
    for (body, event) in [("1", "e1"), ("2", "e2"), ("3", "e3")] {
        let publish = Publish {
            event_id: Some(event.into()),
            ..text(body)
        };
        broker.publish(&[id("a")], publish).unwrap();
    }
    let stored = broker
        .subscribe(&[to("a", 10)], &SubscribePolicy::default())
        .unwrap()
        .take_backlog();
    let start_at = |start: StartAt| {
        let mut sub = broker
            .subscribe(
                &[SubscribeTo {
                    channel: id("a"),
                    start,
                }],
                &SubscribePolicy::default(),
            )
            .unwrap();
        sub.take_backlog().iter().map(|m| m.id).collect::<Vec<_>>()
    };
    assert_eq!(start_at(StartAt::AfterEventId("e1".into())), [2, 3]);
    assert_eq!(
        start_at(StartAt::AfterEventId("nope".into())),
        Vec::<i64>::new()
    );
    let first = &stored[0];
    assert_eq!(
        start_at(StartAt::After {
            time: first.time,
            tag: Some(first.tag)
        }),
        [2, 3]
    );
    assert_eq!(start_at(StartAt::After { time: 0, tag: None }), [1, 2, 3]);
    assert_eq!(
        start_at(StartAt::After {
            time: stored[2].time,
            tag: None
        }),
        Vec::<i64>::new()
    );
    assert_eq!(start_at(StartAt::Live), Vec::<i64>::new());
}

fn texts_of(sub: &mut Subscription) -> Vec<String> {
    sub.take_backlog()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.text).into_owned())
        .collect()
}

#[tokio::test]
async fn the_events_channel_reports_lifecycle_and_is_read_only() {
    let broker = Broker::new(BrokerSettings {
        events_channel_id: Some(id("events")),
        max_number_of_channels: None,
        max_messages_stored_per_channel: Some(100),
        ..settings()
    });
    let sub = broker
        .subscribe(&[to("a", 0)], &SubscribePolicy::default())
        .unwrap();
    drop(sub);
    broker.delete(&[id("a")], None).unwrap();
    let allowed = SubscribePolicy {
        allow_events_channel: true,
        ..SubscribePolicy::default()
    };
    let mut events = broker.subscribe(&[to("events", 100)], &allowed).unwrap();
    assert_eq!(
        texts_of(&mut events),
        [
            r#"{"type": "channel_created", "channel": "a"}"#,
            r#"{"type": "client_subscribed", "channel": "a"}"#,
            r#"{"type": "client_unsubscribed", "channel": "a"}"#,
            r#"{"type": "channel_destroyed", "channel": "a"}"#,
        ]
    );
    assert_eq!(
        broker.publish(&[id("events")], text("x")).unwrap_err(),
        BrokerError::EventsChannelReadOnly
    );
    assert_eq!(
        broker.delete(&[id("events")], None).unwrap_err(),
        BrokerError::EventsChannelReadOnly
    );
    assert_eq!(
        broker
            .subscribe(&[to("events", 0)], &SubscribePolicy::default())
            .unwrap_err(),
        BrokerError::EventsChannelSubscription
    );
    // Events-channel messages are not counted as published.
    assert_eq!(broker.summary().published_messages, 0);
}

#[tokio::test]
async fn wildcard_and_authorized_only_policies() {
    let broker = Broker::new(BrokerSettings {
        max_number_of_wildcard_channels: Some(1),
        ..settings()
    });
    let qtd = SubscribePolicy {
        wildcard_channel_max_qtd: Some(1),
        ..SubscribePolicy::default()
    };
    assert_eq!(
        broker.subscribe(&[to("bc_1", 0)], &qtd).unwrap_err(),
        BrokerError::TooManyWildcardInRequest { max: 1 }
    );
    assert_eq!(
        broker
            .subscribe(&[to("a", 0), to("bc_1", 0), to("bc_2", 0)], &qtd)
            .unwrap_err(),
        BrokerError::TooManyWildcardInRequest { max: 1 }
    );
    let _ok = broker
        .subscribe(&[to("a", 0), to("bc_1", 0)], &qtd)
        .unwrap();
    assert_eq!(
        broker
            .subscribe(&[to("a", 0), to("bc_2", 0)], &qtd)
            .unwrap_err(),
        BrokerError::TooManyWildcardChannels { max: 1 }
    );
    let authorized = SubscribePolicy {
        authorized_channels_only: true,
        ..SubscribePolicy::default()
    };
    assert_eq!(
        broker.subscribe(&[to("b", 0)], &authorized).unwrap_err(),
        BrokerError::NotAuthorizedToCreate
    );
    assert!(
        broker.channel_info("b").is_none(),
        "a refused subscriber creates nothing"
    );
    broker.publish(&[id("b")], text("1")).unwrap();
    assert!(broker
        .subscribe(&[to("b", 0), to("bc_1", 0)], &authorized)
        .is_ok());
    assert_eq!(
        broker.subscribe(&[to("bc_1", 0)], &authorized).unwrap_err(),
        BrokerError::NotAuthorizedToCreate
    );
}

#[tokio::test]
async fn the_memory_budget_refuses_stores_and_frees_on_delete() {
    let broker = Broker::new(BrokerSettings {
        shared_memory_size: Some(1000),
        max_messages_stored_per_channel: None,
        ..settings()
    });
    // Each stored message costs its text plus 200 bytes.
    for _ in 0..4 {
        broker.publish(&[id("a")], text("0123456789")).unwrap();
    }
    assert_eq!(broker.summary().stored_bytes, 840);
    assert_eq!(
        broker.publish(&[id("a")], text("0123456789")).unwrap_err(),
        BrokerError::MemoryExhausted { max: 1000 }
    );
    // Unstored messages still go through, and nothing stored was lost.
    broker
        .publish(
            &[id("a")],
            Publish {
                store: false,
                ..text("live")
            },
        )
        .unwrap();
    assert_eq!(broker.channel_info("a").unwrap().stored_messages, 4);
    broker.delete(&[id("a")], None).unwrap();
    assert_eq!(broker.summary().stored_bytes, 0);
    assert_eq!(broker.summary().messages_in_trash, 4);
    assert_eq!(broker.summary().channels_in_trash, 1);
    broker.publish(&[id("a")], text("0123456789")).unwrap();
}

#[tokio::test]
async fn recovery_reports_truncation_and_unknown_event_ids() {
    let broker = Broker::new(settings());
    for body in ["1", "2", "3", "4", "5"] {
        broker
            .publish(
                &[id("a")],
                Publish {
                    event_id: Some(format!("e{body}")),
                    ..text("x")
                },
            )
            .unwrap();
    }
    let start = |start: StartAt| {
        let sub = broker
            .subscribe(
                &[SubscribeTo {
                    channel: id("a"),
                    start,
                }],
                &SubscribePolicy::default(),
            )
            .unwrap();
        sub.recovery()
    };
    assert_eq!(
        start(StartAt::After {
            time: 0,
            tag: Some(0)
        }),
        Recovery::Truncated
    );
    assert_eq!(
        start(StartAt::AfterEventId("e4".into())),
        Recovery::Complete
    );
    assert_eq!(
        start(StartAt::AfterEventId("e1".into())),
        Recovery::UnknownEventId
    );
    assert_eq!(start(StartAt::Live), Recovery::NotAsked);
}

fn mirrored(message_id: u64, time: u64, body: &'static str) -> Mirrored {
    Mirrored {
        id: message_id,
        time,
        tag: 0,
        event_id: None,
        event_type: None,
        text: Bytes::from_static(body.as_bytes()),
        store: true,
        expires_at: Instant::now() + Duration::from_secs(60),
        catch_up: false,
    }
}

#[test]
fn mirror_keeps_foreign_ids_and_skips_duplicates() {
    let broker = Broker::new(settings().mirroring());
    let news = id("news");
    assert!(broker.mirror_message(&news, mirrored(7, 100, "a")));
    assert!(!broker.mirror_message(&news, mirrored(7, 100, "a again")));
    assert!(!broker.mirror_message(&news, mirrored(3, 100, "older")));
    assert!(broker.mirror_message(&news, mirrored(9, 100, "b")));
    let info = broker.channel_info("news").expect("mirror channel");
    assert_eq!(info.published_messages, 9);
    assert_eq!(info.stored_messages, 2);
}

#[test]
fn mirror_takes_extreme_stamps_from_another_engine() {
    // (time, tag) come from Redis: a tag at u64::MAX followed by an older stamp must not overflow
    // (the older one is raised to just above the last, saturating).
    let broker = Broker::new(settings().mirroring());
    let news = id("news");
    assert!(broker.mirror_message(
        &news,
        Mirrored {
            tag: u64::MAX,
            ..mirrored(1, 100, "a")
        }
    ));
    assert!(broker.mirror_message(&news, mirrored(2, 100, "b")));
    assert_eq!(
        broker
            .channel_info("news")
            .expect("channel")
            .published_messages,
        2
    );
}

#[tokio::test]
async fn mirror_cursor_reads_across_id_gaps() {
    let broker = Broker::new(settings().mirroring());
    let news = id("news");
    broker.mirror_channel(&news);
    let mut sub = broker
        .subscribe(
            &[SubscribeTo {
                channel: news.clone(),
                start: StartAt::Live,
            }],
            &SubscribePolicy::default(),
        )
        .expect("subscribe");
    broker.mirror_message(&news, mirrored(2, 100, "a"));
    broker.mirror_message(&news, mirrored(5, 100, "b"));
    let mut events = Vec::new();
    sub.poll_events(&mut events);
    let texts: Vec<_> = events
        .drain(..)
        .filter_map(|e| match e {
            Event::Message(m) => Some((m.id, m.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts,
        [(2, Bytes::from_static(b"a")), (5, Bytes::from_static(b"b"))]
    );
    // A stamp not above the last one is raised so the log stays in (time, tag) order.
    broker.mirror_message(&news, mirrored(6, 50, "c"));
    sub.poll_events(&mut events);
    let stamps: Vec<_> = events
        .drain(..)
        .filter_map(|e| match e {
            Event::Message(m) => Some((m.time, m.tag)),
            _ => None,
        })
        .collect();
    assert_eq!(stamps, [(100, 2)]);
}

#[test]
fn dropping_a_mirror_waits_for_its_last_subscriber() {
    let broker = Broker::new(settings().mirroring());
    let news = id("news");
    broker.mirror_channel(&news);
    let sub = broker
        .subscribe(
            &[SubscribeTo {
                channel: news.clone(),
                start: StartAt::Live,
            }],
            &SubscribePolicy::default(),
        )
        .expect("subscribe");
    assert!(!broker.drop_mirror("news"));
    drop(sub);
    assert!(broker.drop_mirror("news"));
    assert!(broker.channel_info("news").is_none());
}

#[test]
fn expiry_queue_holds_one_entry_per_channel() {
    let broker = Broker::new(settings());
    for n in 0..1000 {
        let text = if n % 2 == 0 { "a" } else { "b" };
        broker
            .publish(
                &[id(if n % 2 == 0 { "x" } else { "y" })],
                super::Publish {
                    text: Bytes::from_static(text.as_bytes()),
                    event_id: None,
                    event_type: None,
                    store: true,
                    idempotency_key: None,
                },
            )
            .expect("publish");
    }
    let queued: usize = broker
        .inner
        .shards
        .iter()
        .map(|shard| shard.lock().expiry.len())
        .sum();
    assert_eq!(queued, 2, "one expiry entry per channel, not per publish");
    assert_eq!(broker.summary().stored_messages, 6);
}

#[test]
fn expiry_queue_does_not_keep_entries_of_channels_that_went() {
    // A channel deleted (or a mirror dropped) and created again, over and over, within the TTL.
    let broker = Broker::new(settings());
    let mirror = Broker::new(settings().mirroring());
    for n in 0..1000 {
        broker.publish(&[id("x")], text("m")).expect("publish");
        broker.delete(&[id("x")], None).expect("delete");
        assert!(mirror.mirror_message(&id("y"), mirrored(1, 100 + n, "m")));
        assert!(mirror.drop_mirror("y"));
    }
    for broker in [&broker, &mirror] {
        let queued: usize = broker
            .inner
            .shards
            .iter()
            .map(|shard| shard.lock().expiry.len())
            .sum();
        assert!(
            queued <= 2 * 64 + 2,
            "{queued} expiry entries for channels that are gone"
        );
    }
}

#[test]
fn a_repeated_idempotency_key_publishes_once_per_channel() {
    let broker = Broker::new(BrokerSettings {
        shared_memory_size: Some(1 << 20),
        ..settings()
    });
    let first = broker.publish(&[id("a")], keyed("m1", "k1")).unwrap();
    assert!(!first[0].replayed);
    let used = broker.summary().stored_bytes;
    let again = broker.publish(&[id("a")], keyed("m1", "k1")).unwrap();
    assert!(again[0].replayed, "{again:?}");
    assert_eq!(again[0].info.published_messages, 1);
    assert_eq!(
        broker.summary().stored_bytes,
        used,
        "a replay reserves no memory"
    );
    // The same key on another channel is another publish; on both, only the new channel takes it.
    let both = broker
        .publish(&[id("a"), id("b")], keyed("m1", "k1"))
        .unwrap();
    assert_eq!(
        both.iter().map(|p| p.replayed).collect::<Vec<_>>(),
        [true, false]
    );
    // Another key is another message.
    let other = broker.publish(&[id("a")], keyed("m2", "k2")).unwrap();
    assert_eq!(
        (other[0].replayed, other[0].info.published_messages),
        (false, 2)
    );
    // Unkeyed publishes are never replays.
    for _ in 0..2 {
        assert!(!broker.publish(&[id("a")], text("m")).unwrap()[0].replayed);
    }
}

#[test]
fn a_channel_forgets_keys_beyond_its_window() {
    // settings(): 3 keys per channel.
    let broker = Broker::new(settings());
    for key in ["k1", "k2", "k3", "k4"] {
        assert!(!broker.publish(&[id("a")], keyed("m", key)).unwrap()[0].replayed);
    }
    // k1 was the oldest of four: forgotten, so it publishes again; k4 is still known.
    assert!(!broker.publish(&[id("a")], keyed("m", "k1")).unwrap()[0].replayed);
    assert!(broker.publish(&[id("a")], keyed("m", "k4")).unwrap()[0].replayed);
    // Deleting the channel forgets its keys.
    broker.delete(&[id("a")], None).unwrap();
    assert!(!broker.publish(&[id("a")], keyed("m", "k4")).unwrap()[0].replayed);
}

#[test]
fn idempotency_keys_refused_when_turned_off() {
    let broker = Broker::new(BrokerSettings {
        idempotency_keys_per_channel: 0,
        ..settings()
    });
    assert_eq!(
        broker.publish(&[id("a")], keyed("m", "k")).unwrap_err(),
        BrokerError::IdempotencyKeysOff
    );
    assert!(broker.publish(&[id("a")], text("m")).is_ok());
}

#[test]
fn a_replay_is_answered_when_the_memory_budget_is_full() {
    let broker = Broker::new(BrokerSettings {
        shared_memory_size: Some(1_000),
        max_messages_stored_per_channel: None,
        ..settings()
    });
    assert!(!broker.publish(&[id("a")], keyed("m", "k1")).unwrap()[0].replayed);
    // Fill the budget.
    while broker.publish(&[id("a")], text("filler")).is_ok() {}
    assert!(matches!(
        broker.publish(&[id("a")], keyed("m", "k2")),
        Err(BrokerError::MemoryExhausted { .. })
    ));
    // The retry of k1 needs no room.
    let again = broker.publish(&[id("a")], keyed("m", "k1")).unwrap();
    assert!(again[0].replayed, "{again:?}");
}

#[tokio::test]
async fn a_mirror_whose_history_was_lost_keeps_its_subscribers_and_tells_them() {
    let broker = Broker::new(settings().mirroring());
    let news = id("news");
    let with_event_id = |n: u64, time: u64| Mirrored {
        event_id: Some(format!("e{n}").into()),
        ..mirrored(n, time, "x")
    };
    broker.mirror_message(&news, with_event_id(1, 100));
    broker.mirror_message(&news, with_event_id(2, 101));
    let mut sub = broker
        .subscribe(&[to("news", 0)], &SubscribePolicy::default())
        .expect("subscribe");
    broker.mirror_message(&news, mirrored(3, 102, "old"));
    // Redis lost the channel; a publish made it again: ids start at 1.
    broker.mirror_history_lost(&news, (200, 0));
    broker.mirror_message(&news, mirrored(1, 200, "new1"));
    broker.mirror_message(&news, mirrored(2, 201, "new2"));
    let mut events = Vec::new();
    sub.poll_events(&mut events);
    assert_eq!(texts(&events), ["old", "history-lost", "new1", "new2"]);
    assert_eq!(broker.local_subscribers("news"), 1, "the subscriber stays");
    let info = broker.channel_info("news").expect("channel");
    assert_eq!((info.published_messages, info.stored_messages), (2, 2));
    // A Last-Event-ID of the lost history: everything of the new one, reported truncated.
    let back = broker
        .subscribe(
            &[SubscribeTo {
                channel: news.clone(),
                start: StartAt::AfterEventId("e2".into()),
            }],
            &SubscribePolicy::default(),
        )
        .expect("subscribe");
    assert_eq!(back.recovery(), Recovery::Truncated);
    let mut back = back;
    assert_eq!(texts_of(&mut back), ["new1", "new2"]);
    // A time point before the new history is truncated too; one inside it is complete.
    let at = |time: u64| {
        broker
            .subscribe(
                &[SubscribeTo {
                    channel: news.clone(),
                    start: StartAt::After { time, tag: Some(0) },
                }],
                &SubscribePolicy::default(),
            )
            .expect("subscribe")
            .recovery()
    };
    assert_eq!(at(150), Recovery::Truncated);
    assert_eq!(at(200), Recovery::Complete);
}
