//! Memory: the `shared_memory_size` budget for stored messages (refusal, what still works, recovery
//! after expiry), and 10,000 channels created and expired twice without the process growing.

mod common;

use common::{config, header, rss_kb, streaming_location, TestServer, EXPLAIN, WAIT};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

/// Bytes a stored message counts on top of its text and headers.
const OVERHEAD: usize = 200;
/// `shared_memory_size = "10k"`.
const BUDGET: usize = 10 * 1024;
/// Text size of the budget test's messages.
const TEXT: usize = 1000;

/// A 1000-byte text starting with its number.
fn big_text(n: usize) -> String {
    let head = format!("msg-{n:04}-");
    let body: String = (0..TEXT - head.len())
        .map(|i| char::from(b'a' + ((n + i) % 26) as u8))
        .collect();
    head + &body
}

fn budget_config() -> String {
    let locations = format!(
        "{}\n[[location]]\npath = \"/pub-live\"\nmatch = \"exact\"\nrole = \"publisher\"\nstore_messages = false\n",
        streaming_location("/sub/", "~id~:~text~\n", "")
    );
    config(
        "shared_memory_size = \"10k\"\nmessage_ttl = \"3s\"\nchannel_inactivity_time = \"1h\"",
        &locations,
    )
}

/// Publishes stored `big_text(n)` to `channel` from `first` on until refused; returns how many were
/// accepted and the refusal.
async fn fill(
    server: &TestServer,
    channel: &str,
    first: usize,
) -> (usize, (StatusCode, reqwest::header::HeaderMap, String)) {
    for n in first.. {
        let (status, headers, body) = server.publish(channel, &big_text(n), &[]).await;
        if status != StatusCode::OK {
            return (n - first, (status, headers, body));
        }
        assert!(n - first < 100, "the budget never filled up");
    }
    unreachable!()
}

fn assert_full(what: &str, refusal: &(StatusCode, reqwest::header::HeaderMap, String)) {
    let (status, headers, body) = refusal;
    assert_eq!(
        *status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{what}: body {body:?}"
    );
    assert!(body.contains("shared_memory_size"), "{what}: body {body:?}");
    assert!(
        body.starts_with("Message storage is full."),
        "{what}: body {body:?}"
    );
    assert!(
        header(headers, EXPLAIN).contains("shared_memory_size = 10240 bytes"),
        "{what}: {EXPLAIN} {:?}",
        header(headers, EXPLAIN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_size_limits_stored_messages() {
    let server = TestServer::start(&budget_config()).await;
    let capacity = BUDGET / (TEXT + OVERHEAD);
    assert_eq!(capacity, 8);

    // A live subscriber on another channel, for the unstored publishes later.
    let mut live = server.subscribe_ok("/sub/live").await;
    server.wait_for_subscribers("live", 1).await;

    let started = Instant::now();
    let (accepted, refusal) = fill(&server, "full", 1).await;
    assert_eq!(
        accepted, capacity,
        "stored {accepted} messages of {TEXT} bytes in {BUDGET} bytes"
    );
    assert_full("publish past the budget", &refusal);
    // The budget is process-wide: another channel is refused too (and not left half-created with
    // a message).
    let other = server.publish("other", &big_text(99), &[]).await;
    assert_full("publish to another channel", &other);
    let stats = server.stats("").await;
    assert_eq!(stats["stored_messages"], capacity, "{stats}");
    let info = server.channel_info("full").await.expect("full");
    assert_eq!(
        (&info["published_messages"], &info["stored_messages"]),
        (&Value::from(capacity), &Value::from(capacity)),
        "{info}"
    );

    // Everything stored is still served, intact.
    let mut back = server.subscribe_ok("/sub/full.b100").await;
    for n in 1..=capacity {
        let line = back.read_until("\n", WAIT).await;
        assert_eq!(
            line,
            format!("{n}:{}\n", big_text(n)),
            "backtracked message {n}"
        );
    }
    back.expect_quiet(Duration::from_millis(200)).await;

    // Unstored publishes still go live (to the full channel and to another one).
    for channel in ["full", "live"] {
        let (status, _, body) = server
            .request(
                Method::POST,
                &format!("/pub-live?id={channel}"),
                "volatile",
                &[],
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "unstored publish to {channel}: {body}"
        );
    }
    assert_eq!(
        back.read_until("\n", WAIT).await,
        format!("{}:volatile\n", capacity + 1)
    );
    assert_eq!(live.read_until("\n", WAIT).await, "1:volatile\n");
    // Still full for stored ones (checked within the 3 s TTL: room for a loaded machine).
    let again = server.publish("full", &big_text(50), &[]).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(2900),
        "too slow ({elapsed:?}) to check the full budget before message_ttl"
    );
    assert_full("publish while still full", &again);

    // message_ttl (3 s) frees the budget: a whole budget's worth can be stored again.
    let emptied = common::poll_until(
        Duration::from_secs(8),
        Duration::from_millis(50),
        || async { server.stats("").await["stored_messages"] == 0 },
    )
    .await;
    assert!(emptied, "stored messages never expired");
    let (accepted, refusal) = fill(&server, "full", 101).await;
    assert_eq!(accepted, capacity, "after expiry");
    assert_full("publish past the budget after expiry", &refusal);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_channel_frees_its_budget() {
    let server = TestServer::start(&budget_config()).await;
    let (accepted, refusal) = fill(&server, "a", 1).await;
    assert_eq!(accepted, 8);
    assert_full("first fill", &refusal);
    let (status, _, body) = server.delete("a", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (accepted, refusal) = fill(&server, "b", 1).await;
    assert_eq!(accepted, 8, "after DELETE");
    assert_full("second fill", &refusal);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 10,000 channels, twice

const CHANNELS: usize = 10_000;
const TASKS: usize = 8;

/// Publishes one small message to each of `CHANNELS` channels named `r{round}-{i}` from `TASKS`
/// concurrent tasks sharing the keep-alive client.
async fn publish_round(server: &TestServer, round: usize) {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = server.client.clone();
        let base = server.url("/pub?id=");
        tasks.push(tokio::spawn(async move {
            for i in (task..CHANNELS).step_by(TASKS) {
                let url = format!("{base}r{round}-{i}");
                let response = client
                    .post(&url)
                    .body("x")
                    .timeout(WAIT)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: publish to r{round}-{i}: {e}"));
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "round {round}: publish to r{round}-{i}: {body}"
                );
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("publisher task did not finish")
            .expect("publisher task panicked");
    }
}

/// Waits (bounded) until the summary shows no channel and no stored message.
async fn wait_until_empty(server: &TestServer, round: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = server.stats("").await;
        if stats["channels"] == 0 && stats["stored_messages"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: channels never went back to 0; last summary {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_channels_expire_without_memory_growth() {
    let server = TestServer::start(&config(
        "message_ttl = \"1s\"\nchannel_inactivity_time = \"1s\"",
        &streaming_location("/sub/", "~text~", ""),
    ))
    .await;
    let before = rss_kb();
    let mut after = Vec::new();
    for round in 1..=2 {
        let started = Instant::now();
        publish_round(&server, round).await;
        let published = started.elapsed();
        let stats = server.stats("").await;
        assert_eq!(
            stats["published_messages"],
            CHANNELS * round,
            "round {round}: {stats}"
        );
        wait_until_empty(&server, round).await;
        let rss = rss_kb();
        eprintln!(
            "round {round}: published to {CHANNELS} channels in {published:?}, all gone after {:?}; \
             VmRSS {rss} kB",
            started.elapsed()
        );
        after.push(rss);
    }
    eprintln!(
        "VmRSS before: {before} kB, after round 1: {} kB, after round 2: {} kB",
        after[0], after[1]
    );
    let stats = server.stats("").await;
    assert_eq!(stats["channels"], 0, "{stats}");
    assert_eq!(stats["stored_messages"], 0, "{stats}");
    let slack_kb = 32 * 1024;
    assert!(
        after[1] <= after[0] + slack_kb,
        "VmRSS grew from {} kB after round 1 to {} kB after round 2 (more than {slack_kb} kB)",
        after[0],
        after[1]
    );
    server.stop().await;
}
