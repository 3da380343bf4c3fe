//! One broker suite, two engines. Every behaviour below is written once as an `async fn(&Engine)`
//! and instantiated by `engine_tests!` as `memory::<name>` (the in-process engine) and
//! `redis::<name>` (a real `redis-server` per test, `[engine] kind = "redis"`): the same HTTP
//! clients, the same assertions. Waits are bounded; where the Redis engine documents a delay
//! (subscriber counts follow a heartbeat), the assertion is a bounded poll that the memory engine
//! passes at once. The Redis variant also checks afterwards that the server really talked to Redis,
//! so an engine that ignores `[engine]` cannot pass on the memory engine's behaviour.

mod common;

use common::http::{assert_waiting, join};
use common::messages::{
    assert_refused, channel_infos, jsonp_array, numbers, parse_rec, publish_event, Rec,
};
use common::redis::RedisServer;
use common::ws;
use common::{
    config, header, parse_json, poll_until, scenarios, Subscriber, TestServer, EPOCH, EXPLAIN,
    RECOVERY, WAIT,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
/// Silence that proves nothing more is coming.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The engines

/// The engine a behaviour runs against; for Redis it owns the `redis-server` process.
pub struct Engine {
    redis: Option<RedisServer>,
    key_prefix: String,
}

static NEXT_PREFIX: AtomicUsize = AtomicUsize::new(0);

impl Engine {
    fn memory() -> Engine {
        Engine {
            redis: None,
            key_prefix: String::new(),
        }
    }

    fn redis() -> Engine {
        let redis = RedisServer::start();
        let key_prefix = format!(
            "t{}x{}",
            std::process::id(),
            NEXT_PREFIX.fetch_add(1, Ordering::Relaxed)
        );
        Engine {
            redis: Some(redis),
            key_prefix,
        }
    }

    /// The `[engine]` table for this engine ("" for memory: the default).
    fn engine_table(&self) -> String {
        match &self.redis {
            None => String::new(),
            Some(redis) => format!(
                "\n[engine]\nkind = \"redis\"\nredis_urls = [{:?}]\nkey_prefix = {:?}\nheartbeat_interval = \"200ms\"\nnode_timeout = \"1s\"\n",
                redis.url(),
                self.key_prefix
            ),
        }
    }

    /// The suite's config: `[channels]` lines, every location of `LOCATIONS`, this engine.
    fn config(&self, channels: &str) -> String {
        format!("{}{}", config(channels, LOCATIONS), self.engine_table())
    }

    /// A server on this engine with `channels` (TOML lines of `[channels]`).
    /// Like a load balancer, waits until the server is ready (with Redis: connected to its shard).
    async fn start(&self, channels: &str) -> TestServer {
        let server = TestServer::start(&self.config(channels)).await;
        let ready = poll_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async { server.get("/readyz").await.0 == StatusCode::OK },
        )
        .await;
        assert!(
            ready,
            "the server did not become ready: {:?}",
            server.get("/readyz").await
        );
        server
    }

    /// Redis only: the server must have sent Redis real commands (not just the harness's PING).
    fn assert_used(&self) {
        let Some(redis) = &self.redis else { return };
        let stats = redis.cli(&["INFO", "commandstats"]);
        let harness_or_handshake = [
            "ping", "info", "command", "client", "hello", "select", "auth",
        ];
        let used: Vec<&str> = stats
            .lines()
            .filter_map(|l| l.strip_prefix("cmdstat_"))
            .filter_map(|l| l.split(':').next())
            .filter(|c| !harness_or_handshake.iter().any(|h| c.starts_with(h)))
            .collect();
        assert!(
            !used.is_empty(),
            "the server never sent Redis a data command (is [engine] kind = \"redis\" honoured?); \
             INFO commandstats: {stats:?}"
        );
    }
}

/// Every location the suite uses.
const LOCATIONS: &str = r#"
[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "~id~:~text~|"
footer_template = "END"

[[location]]
path = "/chs/"
role = "subscriber"
mode = "streaming"
message_template = "~channel~:~id~:~text~|"

[[location]]
path = "/rec/"
role = "subscriber"
mode = "streaming"
message_template = "~event-id~|~text~|~time~|~tag~\n"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
footer_template = "END"

[[location]]
path = "/lp/"
role = "subscriber"
mode = "long-polling"
message_template = "~channel~:~id~:~text~\n"

[[location]]
path = "/poll/"
role = "subscriber"
mode = "polling"
message_template = "~channel~:~id~:~text~\n"

[[location]]
path = "/recpoll/"
role = "subscriber"
mode = "polling"
message_template = "~event-id~|~text~|~time~|~tag~\n"

[[location]]
path = "/jpoll/"
role = "subscriber"
mode = "polling"
message_template = "{\"id\": ~id~, \"channel\": \"~channel-json~\", \"text\": \"~text-json~\"}"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
message_template = "~channel~:~id~:~text~"

[[location]]
path = "/auth/"
role = "subscriber"
mode = "streaming"
message_template = "~id~:~text~|"
authorized_channels_only = true

[[location]]
path = "/evch/"
role = "subscriber"
mode = "streaming"
message_template = "~text~\n"
allow_connections_to_events_channel = true

[[location]]
path = "/plain/"
role = "subscriber"
mode = "streaming"
message_template = "~text~\n"

[[location]]
path = "/pub-nostore"
match = "exact"
role = "publisher"
channels_path = "$arg_id"
store_messages = false
"#;

/// Instantiates every behaviour for both engines: `memory::<name>` and `redis::<name>`.
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let engine = super::Engine::memory();
                    super::$name(&engine).await;
                }
            )*
        }

        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let engine = super::Engine::redis();
                    super::$name(&engine).await;
                    engine.assert_used();
                }
            )*
        }
    };
}

engine_tests! {
    publish_answers_channel_info_with_consecutive_ids,
    idempotency_key_publishes_once_per_channel,
    idempotency_replays_keep_a_channel_alive_and_collection_forgets_keys,
    idempotency_keys_turned_off,
    streaming_delivers_every_message_once_in_publish_order,
    one_subscription_follows_several_channels,
    backtrack_sends_stored_messages_then_live_ones,
    last_event_id_recovers_after_that_event,
    time_and_tag_recover_after_that_message,
    recovery_is_truncated_when_the_point_was_evicted,
    long_polling_waits_then_chains_from_its_recovery_point,
    polling_and_jsonp_answer_from_the_point,
    a_publish_is_visible_to_a_poll_on_the_same_server_once_answered,
    websocket_delivers_backtrack_and_live_messages,
    unstored_messages_are_delivered_live_only,
    max_messages_stored_per_channel_keeps_the_newest,
    message_ttl_expires_stored_messages,
    inactive_channel_disappears,
    channel_disappears_once_its_messages_expired,
    delete_ends_subscribers_and_a_new_publish_starts_at_id_1,
    a_channel_deleted_on_this_server_starts_afresh_at_once,
    events_channel_reports_the_channel_lifecycle,
    max_number_of_channels_refuses_a_new_channel,
    subscribers_cannot_take_the_channels_kept_for_publishers,
    without_a_reserve_subscribers_may_fill_the_channel_table,
    max_subscribers_per_channel_refuses_until_one_leaves,
    authorized_channels_only_needs_a_stored_message,
    stats_summary_counts_channels_messages_and_subscribers,
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Polls `check` every 50 ms for at most `limit`; panics with `what` and the last stats.
async fn eventually<F, Fut>(server: &TestServer, limit: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !poll_until(limit, Duration::from_millis(50), check).await {
        let summary = server.get("/channels-stats?id=ALL").await.2;
        panic!("{what}: not within {limit:?}; /channels-stats?id=ALL: {summary}");
    }
}

/// Waits (bounded) until the summary's `key` equals `value`.
async fn summary_reaches(server: &TestServer, key: &str, value: u64) {
    eventually(
        server,
        WAIT,
        &format!("summary {key} == {value}"),
        || async { server.stats("").await[key] == value },
    )
    .await;
}

/// Now, in whole seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after the epoch")
        .as_secs()
}

/// Reads `count` `/rec/` lines.
async fn read_rec(sub: &mut Subscriber, count: usize) -> Vec<Rec> {
    let mut seen = Vec::new();
    for _ in 0..count {
        seen.push(parse_rec(&sub.read_until("\n", WAIT).await));
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// Publishing

async fn publish_answers_channel_info_with_consecutive_ids(engine: &Engine) {
    let server = engine.start("").await;
    let (status, headers, body) = server.publish("news", "m1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "{\"channel\": \"news\", \"published_messages\": 1, \"stored_messages\": 1, \"subscribers\": 0}\r\n"
    );
    assert!(
        header(&headers, "content-type").starts_with("application/json"),
        "{headers:?}"
    );
    for n in 2..=5 {
        let (status, _, body) = server.publish("news", &format!("m{n}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let doc = parse_json(&body);
        assert_eq!(doc["channel"], "news", "{body}");
        assert_eq!(doc["published_messages"], n, "{body}");
        assert_eq!(doc["stored_messages"], n, "{body}");
        assert_eq!(doc["subscribers"], 0, "{body}");
    }
    // Channel info from the publisher location and the statistics location agree.
    let info_text =
        "{\"channel\": \"news\", \"published_messages\": 5, \"stored_messages\": 5, \"subscribers\": 0}\r\n";
    let (status, _, body) = server.get("/pub?id=news").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, info_text));
    let (status, _, body) = server.get("/channels-stats?id=news").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, info_text));

    // Ids are consecutive from 1.
    let mut sub = server.subscribe_ok("/sub/news.b10").await;
    assert_eq!(
        sub.read_until("5:m5|", WAIT).await,
        "1:m1|2:m2|3:m3|4:m4|5:m5|"
    );

    // Unknown channels are 404 on both locations, with an explanation.
    let (status, headers, body) = server.get("/pub?id=nothing_here").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        header(&headers, EXPLAIN).contains("Channel not found"),
        "{headers:?}"
    );
    let (status, _, body) = server.get("/channels-stats?id=nothing_here").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // One publish to several channels: one info per channel, each channel's own id sequence.
    let (status, _, body) = server.publish("a/news", "both", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = parse_json(&body);
    let infos: Vec<(String, u64, u64)> = channel_infos(&doc)
        .into_iter()
        .map(|(channel, published, stored, _)| (channel, published, stored))
        .collect();
    assert_eq!(
        infos,
        vec![("a".to_string(), 1, 1), ("news".to_string(), 6, 6)],
        "{body}"
    );
    let mut both = server.subscribe_ok("/chs/a.b1/news.b1").await;
    assert_eq!(
        both.read_until("news:6:both|", WAIT).await,
        "a:1:both|news:6:both|"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Streaming delivery

/// `Idempotency-Key`: a repeated key is answered 200 without publishing again (header
/// `Idempotent-Replayed`), per channel, within the channel's last `idempotency_keys_per_channel`
/// keyed publishes; malformed keys get 400 with an explanation.
async fn idempotency_key_publishes_once_per_channel(engine: &Engine) {
    let server = engine.start("idempotency_keys_per_channel = 3").await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    let keyed = |key: &'static str| [("Idempotency-Key", key)];

    let (status, headers, body) = server.publish("news", "first", &keyed("k1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "Idempotent-Replayed"), "", "{headers:?}");
    assert_eq!(parse_json(&body)["published_messages"], 1, "{body}");
    // The retry: same key, answered like a publish, nothing published.
    let (status, headers, body) = server.publish("news", "first", &keyed("k1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        header(&headers, "Idempotent-Replayed"),
        "true",
        "{headers:?}"
    );
    assert_eq!(parse_json(&body)["published_messages"], 1, "{body}");
    // A quoted key (the IETF draft's form) is the same key.
    let (_, headers, _) = server.publish("news", "first", &keyed("\"k1\"")).await;
    assert_eq!(
        header(&headers, "Idempotent-Replayed"),
        "true",
        "{headers:?}"
    );
    let (status, headers, body) = server.publish("news", "second", &keyed("k2")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "Idempotent-Replayed"), "", "{headers:?}");
    assert_eq!(parse_json(&body)["published_messages"], 2, "{body}");
    assert_eq!(sub.read_until("2:second|", WAIT).await, "1:first|2:second|");
    sub.expect_quiet(QUIET).await;

    // Per channel: on news/other, only `other` takes k1.
    let (status, headers, body) = server.publish("news/other", "both", &keyed("k1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        header(&headers, "Idempotent-Replayed"),
        "partial",
        "{headers:?}"
    );
    assert_eq!(
        server
            .channel_info("other")
            .await
            .map(|i| i["published_messages"].clone()),
        Some(Value::from(1))
    );
    sub.expect_quiet(QUIET).await;

    // A channel named twice takes the message once, and the first answer is no replay.
    let (_, headers, body) = server.publish("twice/twice", "t", &keyed("kt")).await;
    assert_eq!(header(&headers, "Idempotent-Replayed"), "", "{headers:?}");
    assert_eq!(
        server
            .channel_info("twice")
            .await
            .map(|i| i["published_messages"].clone()),
        Some(Value::from(1)),
        "{body}"
    );
    let (_, headers, _) = server.publish("twice/twice", "t", &keyed("kt")).await;
    assert_eq!(
        header(&headers, "Idempotent-Replayed"),
        "true",
        "{headers:?}"
    );

    // The window: 3 keys per channel. k1, k2 + k3, k4 push k1 and k2 out; k1 publishes again.
    for key in ["k3", "k4"] {
        let (_, headers, _) = server.publish("news", key, &keyed(key)).await;
        assert_eq!(
            header(&headers, "Idempotent-Replayed"),
            "",
            "{key}: {headers:?}"
        );
    }
    let (_, headers, body) = server.publish("news", "k1 again", &keyed("k1")).await;
    assert_eq!(header(&headers, "Idempotent-Replayed"), "", "{headers:?}");
    assert_eq!(parse_json(&body)["published_messages"], 5, "{body}");
    let (_, headers, _) = server.publish("news", "k4", &keyed("k4")).await;
    assert_eq!(
        header(&headers, "Idempotent-Replayed"),
        "true",
        "{headers:?}"
    );
    assert_eq!(
        sub.read_until("5:k1 again|", WAIT).await,
        "3:k3|4:k4|5:k1 again|"
    );
    sub.expect_quiet(QUIET).await;

    // Malformed keys: 400 naming the rule, nothing published.
    let long = "x".repeat(129);
    for bad in [
        "",
        "\"\"",
        "two words",
        "tab\there",
        "\"unbalanced",
        "in\"side",
        "back\\slash",
        long.as_str(),
    ] {
        let (status, headers, body) = server
            .request(
                Method::POST,
                "/pub?id=news",
                "bad".to_string(),
                &[("Idempotency-Key", bad)],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "key {bad:?}: {body}");
        assert!(
            header(&headers, EXPLAIN).contains("Idempotency-Key must be 1 to 128 visible ASCII"),
            "key {bad:?}: {headers:?}"
        );
    }
    let (status, headers, _) = server
        .request(
            Method::POST,
            "/pub?id=news",
            "bad".to_string(),
            &[("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(header(&headers, EXPLAIN).contains("once"), "{headers:?}");
    assert_eq!(
        server
            .channel_info("news")
            .await
            .map(|i| i["published_messages"].clone()),
        Some(Value::from(5))
    );

    // A deleted channel forgets its keys.
    let (status, _, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, headers, body) = server.publish("news", "k4", &keyed("k4")).await;
    assert_eq!(header(&headers, "Idempotent-Replayed"), "", "{headers:?}");
    assert_eq!(parse_json(&body)["published_messages"], 1, "{body}");
    server.stop().await;
}

/// A replay counts as activity (the channel and its keys stay, as after a publish); once the
/// channel is collected, its keys are forgotten and the key publishes again.
async fn idempotency_replays_keep_a_channel_alive_and_collection_forgets_keys(engine: &Engine) {
    let server = engine.start("channel_inactivity_time = \"3s\"").await;
    let keyed = [("Idempotency-Key", "k-idle")];
    let publish = || async {
        let (status, headers, body) = server
            .request(
                Method::POST,
                "/pub-nostore?id=idle",
                "x".to_string(),
                &keyed,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        header(&headers, "Idempotent-Replayed")
    };
    let started = Instant::now();
    assert_eq!(publish().await, "");
    // Unstored, no subscriber: the channel lives channel_inactivity_time (3 s) after its last
    // activity. Replays at 1.5 s and 3.5 s keep it (and so the key).
    for at in [1500, 3500] {
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        assert_eq!(publish().await, "true", "replay at {at} ms");
    }
    assert!(server.channel_info("idle").await.is_some());
    eventually(
        &server,
        Duration::from_secs(10),
        "the idle channel is collected",
        || async { server.channel_info("idle").await.is_none() },
    )
    .await;
    assert_eq!(publish().await, "", "a collected channel forgot its keys");
    server.stop().await;
}

/// `idempotency_keys_per_channel = 0`: a keyed publish is refused with 400 and an explanation
/// (after the events-channel rule, as without keys); unkeyed publishes work.
async fn idempotency_keys_turned_off(engine: &Engine) {
    let server = engine
        .start("idempotency_keys_per_channel = 0\nevents_channel_id = \"events\"")
        .await;
    let keyed = [("Idempotency-Key", "k")];
    let (status, headers, body) = server.publish("news", "m", &keyed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        header(&headers, EXPLAIN).contains("idempotency_keys_per_channel = 0"),
        "{headers:?}"
    );
    let (status, _, body) = server.publish("events", "m", &keyed).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        server.channel_info("news").await.is_none(),
        "nothing published"
    );
    server.publish_ok("news", "m").await;
    server.stop().await;
}

async fn streaming_delivers_every_message_once_in_publish_order(engine: &Engine) {
    let server = engine.start("").await;
    let mut first = server.subscribe_ok("/sub/news").await;
    let mut second = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 2).await;
    let mut last = String::new();
    for n in 1..=50 {
        let (status, _, body) = server.publish("news", &format!("m{n}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        last = body;
    }
    assert_eq!(parse_json(&last)["subscribers"], 2, "{last}");
    let expected: String = (1..=50).map(|n| format!("{n}:m{n}|")).collect();
    for sub in [&mut first, &mut second] {
        assert_eq!(sub.read_until("50:m50|", WAIT).await, expected);
        sub.expect_quiet(QUIET).await;
    }

    // Four concurrent publishers: ids 1..=100 in order, each exactly once, and every publisher's
    // messages in the order it sent them.
    let mut burst = server.subscribe_ok("/sub/burst").await;
    server.wait_for_subscribers("burst", 1).await;
    let publishers: Vec<JoinHandle<()>> = (0..4)
        .map(|p| {
            let client = server.client.clone();
            let url = server.url("/pub?id=burst");
            tokio::spawn(async move {
                for i in 0..25 {
                    let response = client
                        .post(&url)
                        .body(format!("p{p}-{i}"))
                        .timeout(WAIT)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("publish p{p}-{i}: {e}"));
                    assert_eq!(response.status(), StatusCode::OK, "publish p{p}-{i}");
                }
            })
        })
        .collect();
    for publisher in publishers {
        tokio::time::timeout(Duration::from_secs(15), publisher)
            .await
            .expect("publisher did not finish")
            .expect("publisher panicked");
    }
    let mut next_of = [0usize; 4];
    for id in 1..=100 {
        let frame = burst.read_until("|", WAIT).await;
        let (got_id, text) = frame
            .trim_end_matches('|')
            .split_once(':')
            .unwrap_or_else(|| panic!("bad frame {frame:?}"));
        assert_eq!(got_id, id.to_string(), "{:?}", burst.received());
        let (p, i) = text
            .strip_prefix('p')
            .and_then(|t| t.split_once('-'))
            .unwrap_or_else(|| panic!("bad text {frame:?}"));
        let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
        assert_eq!(
            i,
            next_of[p],
            "publisher {p} out of order: {:?}",
            burst.received()
        );
        next_of[p] += 1;
    }
    assert_eq!(next_of, [25; 4]);
    burst.expect_quiet(QUIET).await;
    let info = server.channel_info("burst").await.expect("burst");
    assert_eq!(info["published_messages"], 100, "{info}");
    server.stop().await;
}

async fn one_subscription_follows_several_channels(engine: &Engine) {
    let server = engine.start("").await;
    let mut sub = server.subscribe_ok("/chs/a/b").await;
    server.wait_for_subscribers("a", 1).await;
    server.wait_for_subscribers("b", 1).await;
    // One connection following two channels counts once in the summary.
    summary_reaches(&server, "subscribers", 1).await;
    server.publish_ok("a", "x").await;
    assert_eq!(sub.read_until("|", WAIT).await, "a:1:x|");
    server.publish_ok("b", "y").await;
    assert_eq!(sub.read_until("|", WAIT).await, "b:1:y|");
    server.publish_ok("a/b", "both").await;
    let both = sub.read_until("both|", WAIT).await + &sub.read_until("both|", WAIT).await;
    assert!(
        both.contains("a:2:both|") && both.contains("b:2:both|"),
        "{both:?}"
    );
    server.publish_ok("other", "not for me").await;
    server.publish_ok("a", "last").await;
    assert_eq!(sub.read_until("|", WAIT).await, "a:3:last|");
    sub.expect_quiet(QUIET).await;
    server.stop().await;
}

async fn backtrack_sends_stored_messages_then_live_ones(engine: &Engine) {
    let server = engine.start("").await;
    for i in 1..=5 {
        server.publish_ok("news", &format!("m{i}")).await;
    }
    let mut sub = server.subscribe_ok("/sub/news.b3").await;
    assert_eq!(sub.read_until("5:m5|", WAIT).await, "3:m3|4:m4|5:m5|");
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m6").await;
    assert_eq!(sub.read_until("|", WAIT).await, "6:m6|");
    assert_eq!(sub.received(), "3:m3|4:m4|5:m5|6:m6|");

    // Larger than the store: everything, in order. None: nothing old.
    let mut all = server.subscribe_ok("/sub/news.b100").await;
    assert_eq!(
        all.read_until("6:m6|", WAIT).await,
        "1:m1|2:m2|3:m3|4:m4|5:m5|6:m6|"
    );
    let mut fresh = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 3).await;
    server.publish_ok("news", "m7").await;
    assert_eq!(fresh.read_until("|", WAIT).await, "7:m7|");

    // Several channels: channel by channel, in URL order.
    server.publish_ok("a", "a1").await;
    server.publish_ok("b", "b1").await;
    server.publish_ok("a", "a2").await;
    server.publish_ok("b", "b2").await;
    server.publish_ok("a", "a3").await;
    let mut two = server.subscribe_ok("/chs/b.b5/a.b2").await;
    assert_eq!(
        two.read_until("a:3:a3|", WAIT).await,
        "b:1:b1|b:2:b2|a:2:a2|a:3:a3|"
    );
    two.expect_quiet(QUIET).await;
    let mut both_all = server.subscribe_ok("/chs/a.b5/b.b5").await;
    assert_eq!(
        both_all.read_until("b:2:b2|", WAIT).await,
        "a:1:a1|a:2:a2|a:3:a3|b:1:b1|b:2:b2|"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Recovery

async fn last_event_id_recovers_after_that_event(engine: &Engine) {
    let server = engine.start("").await;
    for n in 1..=5 {
        publish_event(&server, "news", n).await;
    }
    // Streaming: the messages after e3, then live ones, nothing twice.
    let mut sub = server
        .subscribe_with("/rec/news", &[("Last-Event-ID", "e3")])
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    assert_eq!(header(&sub.headers, RECOVERY), "complete");
    assert_eq!(numbers(&read_rec(&mut sub, 2).await), vec![4, 5]);
    server.wait_for_subscribers("news", 1).await;
    publish_event(&server, "news", 6).await;
    assert_eq!(numbers(&read_rec(&mut sub, 1).await), vec![6]);
    sub.expect_quiet(QUIET).await;

    // EventSource.
    let mut ev = server
        .subscribe_with("/ev/news", &[("Last-Event-ID", "e4")])
        .await;
    assert_eq!(header(&ev.headers, RECOVERY), "complete");
    assert_eq!(
        ev.read_until("data: m6\n\n", WAIT).await,
        ": \n\nid: e5\ndata: m5\n\nid: e6\ndata: m6\n\n"
    );

    // Long-polling answers at once with what follows the event.
    let (status, headers, body) = server
        .get_with("/lp/news", &[("Last-Event-ID", "e2")])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, RECOVERY), "complete");
    assert_eq!(body, "news:3:m3\nnews:4:m4\nnews:5:m5\nnews:6:m6\n");

    // An unknown event id: said so, nothing old replayed.
    let mut unknown = server
        .subscribe_with("/rec/news", &[("Last-Event-ID", "nope")])
        .await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert_eq!(header(&unknown.headers, RECOVERY), "unknown-event-id");
    unknown.expect_quiet(QUIET).await;
    // No point at all: no header.
    let plain = server.subscribe_ok("/rec/news").await;
    assert_eq!(header(&plain.headers, RECOVERY), "");
    server.stop().await;
}

async fn time_and_tag_recover_after_that_message(engine: &Engine) {
    let server = engine.start("").await;
    let mut live = server.subscribe_ok("/rec/news").await;
    server.wait_for_subscribers("news", 1).await;
    for n in 1..=5 {
        publish_event(&server, "news", n).await;
    }
    let seen = read_rec(&mut live, 5).await;
    assert_eq!(numbers(&seen), vec![1, 2, 3, 4, 5]);
    drop(live);

    // Streaming from m2's (time, tag).
    let mut sub = server
        .subscribe_with("/rec/news", &seen[1].time_tag())
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    assert_eq!(header(&sub.headers, RECOVERY), "complete");
    let again = read_rec(&mut sub, 3).await;
    assert_eq!(numbers(&again), vec![3, 4, 5]);
    // The same (time, tag) as the live subscriber saw: assigned once, by the engine.
    for (a, b) in again.iter().zip(&seen[2..]) {
        assert_eq!((&a.time, &a.tag), (&b.time, &b.tag), "message {}", a.n);
    }
    sub.expect_quiet(QUIET).await;

    // Polling from m4: m5, and m5's point in Last-Modified/Etag.
    let (status, headers, body) = server.get_with("/recpoll/news", &seen[3].time_tag()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, RECOVERY), "complete");
    assert_eq!(numbers(&[parse_rec(&body)]), vec![5]);
    assert_eq!(header(&headers, "Last-Modified"), seen[4].time);
    assert_eq!(
        header(&headers, "Etag").trim_start_matches("W/"),
        seen[4].tag,
        "{headers:?}"
    );
    // From the newest: 304 echoing the point.
    let (status, headers, body) = server.get_with("/recpoll/news", &seen[4].time_tag()).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "{body}");
    assert_eq!(header(&headers, "Last-Modified"), seen[4].time);
    // From the epoch: everything stored.
    let (status, headers, body) = server
        .get_with("/recpoll/news", &[("If-Modified-Since", EPOCH)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, RECOVERY), "complete");
    let all: Vec<usize> = body.lines().map(|l| parse_rec(l).n).collect();
    assert_eq!(all, vec![1, 2, 3, 4, 5]);
    server.stop().await;
}

async fn recovery_is_truncated_when_the_point_was_evicted(engine: &Engine) {
    let server = engine.start("max_messages_stored_per_channel = 5").await;
    let mut live = server.subscribe_ok("/rec/win").await;
    server.wait_for_subscribers("win", 1).await;
    for n in 1..=10 {
        publish_event(&server, "win", n).await;
    }
    let seen = read_rec(&mut live, 10).await;
    assert_eq!(numbers(&seen), (1..=10).collect::<Vec<_>>());
    drop(live);
    let info = server.channel_info("win").await.expect("win");
    assert_eq!(info["stored_messages"], 5, "{info}");

    let m = |n: usize| seen[n - 1].time_tag().to_vec();
    // (what, request headers, expected X-Herald-Recovery, expected message numbers)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, Vec<usize>);
    let cases: Vec<Case> = vec![
        (
            "time/tag older than the window",
            m(2),
            "truncated",
            vec![6, 7, 8, 9, 10],
        ),
        (
            "time/tag of the newest evicted",
            m(5),
            "complete",
            vec![6, 7, 8, 9, 10],
        ),
        (
            "time/tag inside the window",
            m(7),
            "complete",
            vec![8, 9, 10],
        ),
        (
            "Last-Event-ID inside the window",
            vec![("Last-Event-ID", "e7")],
            "complete",
            vec![8, 9, 10],
        ),
        (
            "Last-Event-ID evicted",
            vec![("Last-Event-ID", "e2")],
            "unknown-event-id",
            vec![],
        ),
    ];
    for (name, headers, expected_header, expected) in cases {
        // Streaming: the old messages, then silence.
        let mut sub = server.subscribe_with("/rec/win", &headers).await;
        assert_eq!(sub.status, StatusCode::OK, "streaming, {name}");
        let got = numbers(&read_rec(&mut sub, expected.len()).await);
        sub.expect_quiet(QUIET).await;
        assert_eq!(
            (header(&sub.headers, RECOVERY).as_str(), &got),
            (expected_header, &expected),
            "streaming, {name}: (X-Herald-Recovery, old messages)"
        );
        drop(sub);
        // Polling: the same answer in one response (304 when there is nothing to send).
        let (status, response_headers, body) = server.get_with("/recpoll/win", &headers).await;
        let got: Vec<usize> = body.lines().map(|l| parse_rec(l).n).collect();
        let expected_status = if expected.is_empty() {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        assert_eq!(
            (status, header(&response_headers, RECOVERY).as_str(), &got),
            (expected_status, expected_header, &expected),
            "polling, {name}: (status, X-Herald-Recovery, old messages)"
        );
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Long-polling, polling, WebSocket

async fn long_polling_waits_then_chains_from_its_recovery_point(engine: &Engine) {
    let server = engine.start("").await;
    let mut pending = server.spawn_fetch("/lp/news", &[]);
    server.wait_for_subscribers("news", 1).await;
    assert_waiting(&mut pending, "/lp/news without a point").await;
    let before = now_secs();
    server.publish_ok("news", "one").await;
    let after = now_secs();
    let first = join(pending, "first long-poll").await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "news:1:one\n"),
        "{first:?}"
    );
    assert_eq!(
        first.header("Content-Type"),
        "text/plain; charset=utf-8",
        "{first:?}"
    );
    let first_cursor = first.cursor();
    // The recovery point is the publish time and a tag.
    let (time, tag) = first_cursor.key();
    assert!(
        (before..=after).contains(&time),
        "Last-Modified {:?} is not the publish time ({before}..={after}): {first:?}",
        first_cursor.last_modified
    );
    assert!(tag >= 1, "{first:?}");
    // The answered long-poll holds no subscriber.
    server.wait_for_subscribers("news", 0).await;

    // Published while no request is open: the chained request gets both at once.
    server.publish_ok("news", "two").await;
    server.publish_ok("news", "three").await;
    let second = join(
        server.spawn_fetch("/lp/news", &first_cursor.headers()),
        "second long-poll",
    )
    .await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "news:2:two\nnews:3:three\n"),
        "{second:?}"
    );
    let second_cursor = second.cursor();
    assert!(
        second_cursor.key() > first_cursor.key(),
        "{first_cursor:?} then {second_cursor:?}"
    );

    // At the newest point: waits for the next message.
    let mut third = server.spawn_fetch("/lp/news", &second_cursor.headers());
    server.wait_for_subscribers("news", 1).await;
    assert_waiting(&mut third, "chained long-poll at the newest point").await;
    server.publish_ok("news", "four").await;
    let third = join(third, "third long-poll").await;
    assert_eq!(
        (third.status, third.body.as_str()),
        (StatusCode::OK, "news:4:four\n"),
        "{third:?}"
    );
    assert!(third.cursor().key() > second_cursor.key(), "{third:?}");

    // An older point gets everything after it, in order.
    let again = server.fetch("/lp/news", &first_cursor.headers()).await;
    assert_eq!(
        again.body, "news:2:two\nnews:3:three\nnews:4:four\n",
        "{again:?}"
    );
    assert_eq!(again.cursor(), third.cursor(), "{again:?}");
    // The epoch: everything stored.
    let all = server
        .fetch(
            "/lp/news",
            &[("If-Modified-Since", EPOCH), ("If-None-Match", "W/0")],
        )
        .await;
    assert_eq!(
        all.body, "news:1:one\nnews:2:two\nnews:3:three\nnews:4:four\n",
        "{all:?}"
    );

    // Several channels: a message on any of them ends the wait.
    let mut multi = server.spawn_fetch("/lp/a/b/c", &[]);
    for channel in ["a", "b", "c"] {
        server.wait_for_subscribers(channel, 1).await;
    }
    server.publish_ok("other", "not followed").await;
    assert_waiting(&mut multi, "/lp/a/b/c after a publish elsewhere").await;
    server.publish_ok("b", "on b").await;
    let answer = join(multi, "/lp/a/b/c").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "b:1:on b\n"),
        "{answer:?}"
    );
    for channel in ["a", "b", "c"] {
        server.wait_for_subscribers(channel, 0).await;
    }
    // A chained request on the same channels from that point gets the next message of another one.
    let cursor = answer.cursor();
    server.publish_ok("c", "on c").await;
    let next = server.fetch("/lp/a/b/c", &cursor.headers()).await;
    assert_eq!(next.body, "c:1:on c\n", "{next:?}");
    server.stop().await;
}

async fn polling_and_jsonp_answer_from_the_point(engine: &Engine) {
    let server = engine.start("").await;
    server.publish_ok("news", "a").await;
    // No point: 304 at once even with stored messages, and no subscriber held.
    let (status, _, body) = server.get("/poll/news").await;
    assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
    server.wait_for_subscribers("news", 0).await;

    let first = server.fetch("/poll/news.b1", &[]).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "news:1:a\n"),
        "{first:?}"
    );
    let first_cursor = first.cursor();
    server.publish_ok("news", "b").await;
    server.publish_ok("news", "c").await;
    let answer = server.fetch("/poll/news", &first_cursor.headers()).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:2:b\nnews:3:c\n"),
        "{answer:?}"
    );
    let newest = answer.cursor();
    assert!(newest.key() > first_cursor.key(), "{answer:?}");
    let all = server
        .fetch("/poll/news", &[("If-Modified-Since", EPOCH)])
        .await;
    assert_eq!(all.body, "news:1:a\nnews:2:b\nnews:3:c\n", "{all:?}");
    assert_eq!(all.cursor(), newest, "{all:?}");
    // Nothing newer: 304 echoing the point.
    let answer = server.fetch("/poll/news", &newest.headers()).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::NOT_MODIFIED, "")
    );
    assert_eq!(answer.cursor(), newest);
    assert_eq!(answer.header("Last-Modified"), newest.last_modified);
    assert_eq!(answer.header("Etag"), newest.etag);

    // JSONP.
    let (status, headers, body) = server.get("/jpoll/news.b2?callback=cb").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, "Content-Type"), "application/javascript");
    let items = jsonp_array(&body, "cb");
    let items: Vec<(u64, &str, &str)> = items
        .iter()
        .map(|i| {
            (
                i["id"].as_u64().unwrap(),
                i["channel"].as_str().unwrap(),
                i["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(items, vec![(2, "news", "b"), (3, "news", "c")], "{body}");
    let (_, _, body) = server.get("/poll/news.b2?callback=cb").await;
    assert_eq!(body, "cb([news:2:b\n,news:3:c\n]);\r\n");

    // The next message is found from the echoed point.
    server.publish_ok("news", "d").await;
    let answer = server.fetch("/poll/news", &newest.headers()).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:4:d\n"),
        "{answer:?}"
    );
    // Backtrack: the last two stored, and the newest point.
    let answer = server.fetch("/poll/news.b2", &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:3:c\nnews:4:d\n"),
        "{answer:?}"
    );
    assert_eq!(
        answer.cursor(),
        server.fetch("/poll/news.b1", &[]).await.cursor()
    );
    server.stop().await;
}

/// Read-your-writes: once the publish answered, a poll from the previous point on the same server
/// gets the message (with Redis the node's mirror takes the announcement in before the publish
/// answers). Repeated, because a lagging mirror shows only now and then.
async fn a_publish_is_visible_to_a_poll_on_the_same_server_once_answered(engine: &Engine) {
    let server = engine.start("").await;
    server.publish_ok("news", "0").await;
    let mut cursor = server.fetch("/poll/news.b1", &[]).await.cursor();
    for n in 1..=100u32 {
        let text = n.to_string();
        server.publish_ok("news", &text).await;
        let answer = server.fetch("/poll/news", &cursor.headers()).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, format!("news:{}:{text}\n", n + 1).as_str()),
            "poll right after publish #{n}: {answer:?}"
        );
        cursor = answer.cursor();
    }
    server.stop().await;
}

async fn websocket_delivers_backtrack_and_live_messages(engine: &Engine) {
    let server = engine.start("").await;
    for text in ["m1", "m2", "m3"] {
        server.publish_ok("news", text).await;
    }
    let mut back = server.websocket("/ws/news.b2").await;
    ws::expect_text(&mut back, "news:2:m2").await;
    ws::expect_text(&mut back, "news:3:m3").await;
    let mut live = server.websocket("/ws/news/other").await;
    server.wait_for_subscribers("news", 2).await;
    server.wait_for_subscribers("other", 1).await;
    server.publish_ok("news", "m4").await;
    server.publish_ok("other", "o1").await;
    ws::expect_text(&mut back, "news:4:m4").await;
    ws::expect_text(&mut live, "news:4:m4").await;
    ws::expect_text(&mut live, "other:1:o1").await;
    ws::expect_quiet(&mut back, QUIET).await;
    // Closing frees the subscriber.
    ws::close(&mut back).await;
    drop(back);
    server.wait_for_subscribers("news", 1).await;
    drop(live);
    server.wait_for_subscribers("news", 0).await;
    server.wait_for_subscribers("other", 0).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Storage

async fn unstored_messages_are_delivered_live_only(engine: &Engine) {
    let server = engine.start("").await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    let (status, _, body) = server
        .request(Method::POST, "/pub-nostore?id=news", "live only", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = parse_json(&body);
    assert_eq!(doc["published_messages"], 1, "{body}");
    assert_eq!(doc["stored_messages"], 0, "{body}");
    assert_eq!(doc["subscribers"], 1, "{body}");
    assert_eq!(sub.read_until("|", WAIT).await, "1:live only|");
    let info = server.channel_info("news").await.expect("channel exists");
    assert_eq!(info["stored_messages"], 0, "{info}");
    assert_eq!(server.stats("").await["stored_messages"], 0);
    // Not in history: a backtracking subscriber's first message is the next one.
    let mut late = server.subscribe_ok("/sub/news.b5").await;
    server.wait_for_subscribers("news", 2).await;
    server.publish_ok("news", "stored one").await;
    assert_eq!(late.read_until("|", WAIT).await, "2:stored one|");
    assert_eq!(sub.read_until("|", WAIT).await, "2:stored one|");
    let info = server.channel_info("news").await.expect("channel exists");
    assert_eq!(
        (&info["published_messages"], &info["stored_messages"]),
        (&Value::from(2), &Value::from(1)),
        "{info}"
    );
    server.stop().await;
}

async fn max_messages_stored_per_channel_keeps_the_newest(engine: &Engine) {
    let server = engine.start("max_messages_stored_per_channel = 3").await;
    let mut last = String::new();
    for i in 1..=5 {
        let (status, _, body) = server.publish("news", &format!("m{i}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        last = body;
    }
    let doc = parse_json(&last);
    assert_eq!(doc["published_messages"], 5, "{last}");
    assert_eq!(doc["stored_messages"], 3, "{last}");
    let info = server.channel_info("news").await.expect("news");
    assert_eq!(info["stored_messages"], 3, "{info}");
    assert_eq!(server.stats("").await["stored_messages"], 3);
    let mut sub = server.subscribe_ok("/sub/news.b10").await;
    assert_eq!(sub.read_until("5:m5|", WAIT).await, "3:m3|4:m4|5:m5|");
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m6").await;
    assert_eq!(sub.read_until("|", WAIT).await, "6:m6|");
    let info = server.channel_info("news").await.expect("news");
    assert_eq!(
        (&info["published_messages"], &info["stored_messages"]),
        (&Value::from(6), &Value::from(3)),
        "{info}"
    );
    let (_, _, body) = server.get("/poll/news.b10").await;
    assert_eq!(body, "news:4:m4\nnews:5:m5\nnews:6:m6\n");
    server.stop().await;
}

async fn message_ttl_expires_stored_messages(engine: &Engine) {
    let server = engine
        .start("message_ttl = \"1s\"\nchannel_inactivity_time = \"1h\"")
        .await;
    server.publish_ok("news", "m1").await;
    server.publish_ok("news", "m2").await;
    assert_eq!(
        server.channel_info("news").await.expect("news")["stored_messages"],
        2
    );
    eventually(
        &server,
        Duration::from_secs(6),
        "stored messages expire",
        || async {
            server
                .channel_info("news")
                .await
                .is_some_and(|info| info["stored_messages"] == 0)
        },
    )
    .await;
    let info = server.channel_info("news").await.expect("channel kept");
    assert_eq!(info["published_messages"], 2, "{info}");
    assert_eq!(server.stats("").await["stored_messages"], 0);
    // Nothing old for a backtracking subscriber; ids go on.
    let mut sub = server.subscribe_ok("/sub/news.b10").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m3").await;
    assert_eq!(sub.read_until("|", WAIT).await, "3:m3|");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Channel lifecycle

async fn inactive_channel_disappears(engine: &Engine) {
    let server = engine.start("channel_inactivity_time = \"1s\"").await;
    // A channel created by a subscriber, nothing stored: kept while subscribed.
    let sub = server.subscribe_ok("/sub/idle").await;
    server.wait_for_subscribers("idle", 1).await;
    // A channel with a stored message stays.
    server.publish_ok("kept", "x").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.channel_info("idle").await.is_some(),
        "a channel with a subscriber was removed"
    );
    drop(sub);
    server.wait_for_subscribers("idle", 0).await;
    let left = Instant::now();
    assert!(
        server.channel_info("idle").await.is_some(),
        "removed at once instead of after channel_inactivity_time"
    );
    eventually(
        &server,
        Duration::from_secs(6),
        "the idle channel is removed (stats 404)",
        || async {
            let (status, _, _) = server.get("/channels-stats?id=idle").await;
            status == StatusCode::NOT_FOUND
        },
    )
    .await;
    assert!(
        left.elapsed() >= Duration::from_millis(500),
        "removed after {:?}, well before channel_inactivity_time",
        left.elapsed()
    );
    assert!(server.channel_info("idle").await.is_none());
    let all = server.stats("?id=ALL").await;
    assert_eq!(all["channels"], 1, "{all}");
    assert_eq!(all["infos"][0]["channel"], "kept", "{all}");
    assert_eq!(server.stats("").await["channels"], 1);
    server.stop().await;
}

async fn channel_disappears_once_its_messages_expired(engine: &Engine) {
    let server = engine
        .start("channel_inactivity_time = \"1s\"\nmessage_ttl = \"1s\"")
        .await;
    server.publish_ok("short", "a").await;
    server.publish_ok("short", "b").await;
    assert_eq!(
        server.channel_info("short").await.expect("short")["stored_messages"],
        2
    );
    eventually(
        &server,
        Duration::from_secs(6),
        "the channel whose messages expired is removed",
        || async { server.channel_info("short").await.is_none() },
    )
    .await;
    let (status, _, body) = server.get("/channels-stats?id=short").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let summary = server.stats("").await;
    assert_eq!(
        (&summary["channels"], &summary["stored_messages"]),
        (&Value::from(0), &Value::from(0)),
        "{summary}"
    );
    server.stop().await;
}

async fn delete_ends_subscribers_and_a_new_publish_starts_at_id_1(engine: &Engine) {
    let server = engine.start("").await;
    server.publish_ok("news", "stored").await;
    server.publish_ok("news", "stored too").await;
    let mut stream = server.subscribe_ok("/sub/news").await;
    let mut events = server.subscribe_ok("/ev/news").await;
    let mut ws = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 3).await;
    let long_poll = server.spawn_fetch("/lp/news", &[]);
    server.wait_for_subscribers("news", 4).await;

    let (status, headers, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, EXPLAIN), "Channel deleted.");
    assert_eq!(stream.read_to_end(WAIT).await, "-2:Channel deleted|END");
    assert_eq!(
        events.read_to_end(WAIT).await,
        ": \n\ndata: Channel deleted\n\n: END\n\n"
    );
    ws::expect_text(&mut ws, "news:-2:Channel deleted").await;
    ws::expect_close(&mut ws, CloseCode::Normal).await;
    let answer = join(long_poll, "long-poll during delete").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:-2:Channel deleted\n"),
        "{answer:?}"
    );

    // Gone: 404 everywhere, nothing counted.
    assert!(server.channel_info("news").await.is_none());
    let (status, _, body) = server.get("/channels-stats?id=news").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    summary_reaches(&server, "subscribers", 0).await;
    let summary = server.stats("").await;
    assert_eq!(
        (&summary["channels"], &summary["stored_messages"]),
        (&Value::from(0), &Value::from(0)),
        "{summary}"
    );
    let (status, headers, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "second delete: {body}");
    assert!(!header(&headers, EXPLAIN).is_empty());

    // A new publish re-creates the channel from id 1 with no history.
    let (status, _, body) = server.publish("news", "again", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = parse_json(&body);
    assert_eq!(
        (&doc["published_messages"], &doc["stored_messages"]),
        (&Value::from(1), &Value::from(1)),
        "{body}"
    );
    let mut sub = server.subscribe_ok("/sub/news.b10").await;
    assert_eq!(sub.read_until("|", WAIT).await, "1:again|");
    sub.expect_quiet(QUIET).await;
    server.stop().await;
}

/// Read-your-writes for delete: once the delete answered, the same server serves the channel
/// afresh (with Redis the node's follow of the old channel has ended before the answer), so a
/// publish and a poll right after see only the new channel. Repeated: a lagging node shows only now
/// and then.
async fn a_channel_deleted_on_this_server_starts_afresh_at_once(engine: &Engine) {
    let server = engine.start("").await;
    for round in 1..=20u32 {
        server.publish_ok("news", "old").await;
        // The poll makes the server follow the channel (with Redis).
        let old = server
            .fetch("/poll/news", &[("If-Modified-Since", EPOCH)])
            .await;
        assert_eq!(old.body, "news:1:old\n", "round {round}: {old:?}");
        let (status, _, body) = server.delete("news", "").await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        let gone = server
            .fetch("/poll/news", &[("If-Modified-Since", EPOCH)])
            .await;
        assert_eq!(
            (gone.status, gone.body.as_str()),
            (StatusCode::NOT_MODIFIED, ""),
            "round {round}: poll right after delete: {gone:?}"
        );
        server.publish_ok("news", "new").await;
        let new = server
            .fetch("/poll/news", &[("If-Modified-Since", EPOCH)])
            .await;
        assert_eq!(
            (new.status, new.body.as_str()),
            (StatusCode::OK, "news:1:new\n"),
            "round {round}: poll right after delete and publish: {new:?}"
        );
        let (status, _, body) = server.delete("news", "").await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Events channel

async fn events_channel_reports_the_channel_lifecycle(engine: &Engine) {
    let server = engine
        .start("events_channel_id = \"events\"\nchannel_inactivity_time = \"1s\"")
        .await;
    scenarios::events_channel_lifecycle(&server, "/evch/", "/plain/").await;

    // The events channel is guarded the same way.
    assert_refused(
        "subscribe /plain/events",
        server.get("/plain/events").await,
        StatusCode::FORBIDDEN,
        "Subscription to events channel is not allowed.",
    );
    assert_refused(
        "POST events",
        server.publish("events", "forged", &[]).await,
        StatusCode::FORBIDDEN,
        "Only internal routines can change events channel.",
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Limits

async fn max_number_of_channels_refuses_a_new_channel(engine: &Engine) {
    let server = engine.start("max_number_of_channels = 2").await;
    server.publish_ok("a", "1").await;
    server.publish_ok("b", "1").await;
    let refusal = "Number of channels were exceeded. Limit: max_number_of_channels = 2.";
    let (status, headers, body) = server.publish("c", "1", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body, format!("{refusal}\n"));
    assert_eq!(header(&headers, EXPLAIN), refusal);

    // A subscriber is refused too (it may not even take the channel kept for publishers).
    let subscriber_refusal = "Number of channels were exceeded. Limit: max_number_of_channels = 2, of which 1 only publishers may create (channels_reserved_for_publishers).";
    let mut sub = server.subscribe("/sub/c").await;
    assert_eq!(
        sub.status,
        StatusCode::FORBIDDEN,
        "subscriber on a 3rd channel"
    );
    assert_eq!(header(&sub.headers, EXPLAIN), subscriber_refusal);
    assert_eq!(
        sub.read_to_end(WAIT).await,
        format!("{subscriber_refusal}\n")
    );
    assert!(server.channel_info("c").await.is_none());

    // A multi-channel publish that would create one more channel changes nothing.
    let (status, _, body) = server.publish("a/d", "x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        server.channel_info("a").await.expect("a")["published_messages"],
        1
    );
    // Existing channels keep working.
    server.publish_ok("a", "2").await;
    let _sub_a = server.subscribe_ok("/sub/a").await;
    assert_eq!(server.stats("").await["channels"], 2);

    // Deleting one frees a slot.
    let (status, _, _) = server.delete("b", "").await;
    assert_eq!(status, StatusCode::OK);
    server.publish_ok("c", "now fits").await;
    assert_eq!(server.stats("").await["channels"], 2);
    server.stop().await;
}

/// Clients subscribing to made-up names cannot fill the channel table publishers need: they may
/// create channels only up to `max_number_of_channels - channels_reserved_for_publishers`.
async fn subscribers_cannot_take_the_channels_kept_for_publishers(engine: &Engine) {
    let server = engine
        .start("max_number_of_channels = 10\nchannels_reserved_for_publishers = 3")
        .await;
    let mut held = Vec::new();
    for n in 0..7 {
        held.push(server.subscribe_ok(&format!("/sub/random-{n}")).await);
    }
    let refusal = "Number of channels were exceeded. Limit: max_number_of_channels = 10, of which 3 only publishers may create (channels_reserved_for_publishers).";
    let mut refused = server.subscribe("/sub/random-7").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(header(&refused.headers, EXPLAIN), refusal);
    refused.read_to_end(WAIT).await;
    // An existing channel can still be joined, and publishers create the 3 kept for them.
    held.push(server.subscribe_ok("/sub/random-0").await);
    for n in 0..3 {
        server.publish_ok(&format!("pub-{n}"), "x").await;
    }
    let (status, headers, _) = server.publish("pub-3", "x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        header(&headers, EXPLAIN),
        "Number of channels were exceeded. Limit: max_number_of_channels = 10."
    );
    // A publish to a channel a subscriber created needs no new channel.
    server.publish_ok("random-3", "hello").await;
    held[3].read_until("hello", WAIT).await;
    drop(held);
    server.stop().await;
}

/// `channels_reserved_for_publishers = 0`: subscribers may fill the whole table, as on the
/// push-stream module.
async fn without_a_reserve_subscribers_may_fill_the_channel_table(engine: &Engine) {
    let server = engine
        .start("max_number_of_channels = 3\nchannels_reserved_for_publishers = 0")
        .await;
    let mut held = Vec::new();
    for n in 0..3 {
        held.push(server.subscribe_ok(&format!("/sub/s-{n}")).await);
    }
    let (status, _, body) = server.publish("p", "x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    drop(held);
    server.stop().await;
}

async fn max_subscribers_per_channel_refuses_until_one_leaves(engine: &Engine) {
    let server = engine.start("max_subscribers_per_channel = 1").await;
    let first = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;

    let refusal =
        "Subscribers limit per channel has been exceeded. Limit: max_subscribers_per_channel = 1.";
    let mut second = server.subscribe("/sub/news").await;
    assert_eq!(second.status, StatusCode::FORBIDDEN);
    assert_eq!(header(&second.headers, EXPLAIN), refusal);
    let body = second.read_to_end(WAIT).await;
    assert!(body.starts_with(refusal), "{body}");
    let (status, _, body) = server.get("/lp/news").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "long-poll: {body}");
    // The refused subscribers left no trace; another channel is not affected.
    server.wait_for_subscribers("news", 1).await;
    let _other = server.subscribe_ok("/sub/other").await;

    drop(first);
    let admitted = poll_until(WAIT, Duration::from_millis(50), || async {
        server.subscribe("/sub/news").await.status == StatusCode::OK
    })
    .await;
    assert!(
        admitted,
        "no subscriber admitted within {WAIT:?} after the first left; stats: {}",
        server.get("/channels-stats?id=news").await.2
    );
    server.stop().await;
}

async fn authorized_channels_only_needs_a_stored_message(engine: &Engine) {
    let server = engine.start("").await;
    let refused = "Subscriber could not create channels.";
    assert_refused(
        "/auth/unknown",
        server.get("/auth/unknown").await,
        StatusCode::FORBIDDEN,
        refused,
    );
    assert!(server.channel_info("unknown").await.is_none());
    let (status, _, body) = server.get("/pub?id=unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown was created: {body}");

    // A stored message makes the channel joinable.
    server.publish_ok("known", "stored").await;
    let mut sub = server.subscribe_ok("/auth/known").await;
    server.wait_for_subscribers("known", 1).await;
    server.publish_ok("known", "live").await;
    assert_eq!(sub.read_until("|", WAIT).await, "2:live|");
    // One known and one unknown channel: refused as a whole, the unknown one not created.
    assert_refused(
        "/auth/known/unknown2",
        server.get("/auth/known/unknown2").await,
        StatusCode::FORBIDDEN,
        refused,
    );
    assert!(server.channel_info("unknown2").await.is_none());
    // A channel that only ever received unstored messages is refused.
    let (status, _, body) = server
        .request(Method::POST, "/pub-nostore?id=volatile", "gone", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let info = server
        .channel_info("volatile")
        .await
        .expect("volatile exists");
    assert_eq!(info["stored_messages"], 0, "{info}");
    assert_refused(
        "/auth/volatile",
        server.get("/auth/volatile").await,
        StatusCode::FORBIDDEN,
        refused,
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Statistics

async fn stats_summary_counts_channels_messages_and_subscribers(engine: &Engine) {
    let server = engine.start("").await;
    let empty = server.stats("").await;
    for key in [
        "channels",
        "published_messages",
        "stored_messages",
        "subscribers",
    ] {
        assert_eq!(empty[key], 0, "{key} of an empty server: {empty}");
    }

    server.publish_ok("news", "n1").await;
    server.publish_ok("news", "n2").await;
    server.publish_ok("sports", "s1").await;
    let sub_news = server.subscribe_ok("/sub/news").await;
    let sub_both = server.subscribe_ok("/chs/news/sports").await;
    server.wait_for_subscribers("news", 2).await;
    server.wait_for_subscribers("sports", 1).await;
    summary_reaches(&server, "subscribers", 2).await;
    let s = server.stats("").await;
    assert_eq!(s["channels"], 2, "{s}");
    assert_eq!(s["published_messages"], 3, "{s}");
    assert_eq!(s["stored_messages"], 3, "{s}");
    assert_eq!(s["subscribers"], 2, "two connections: {s}");
    let workers = s["by_worker"].as_array().unwrap_or_else(|| panic!("{s}"));
    assert_eq!(workers.len(), 1, "one server: {s}");
    assert_eq!(workers[0]["subscribers"], 2, "{s}");

    // The group of every channel, sorted by id.
    let all = server.stats("?id=ALL").await;
    assert_eq!(all["channels"], 2, "{all}");
    assert_eq!(
        channel_infos(&all),
        vec![
            ("news".to_string(), 2, 2, 2),
            ("sports".to_string(), 1, 1, 1)
        ],
        "{all}"
    );

    drop(sub_news);
    drop(sub_both);
    server.wait_for_subscribers("news", 0).await;
    server.wait_for_subscribers("sports", 0).await;
    summary_reaches(&server, "subscribers", 0).await;
    let s = server.stats("").await;
    assert_eq!(s["by_worker"][0]["subscribers"], 0, "{s}");
    assert_eq!(
        (
            &s["channels"],
            &s["published_messages"],
            &s["stored_messages"]
        ),
        (&Value::from(2), &Value::from(3), &Value::from(3)),
        "{s}"
    );
    server.stop().await;
}
