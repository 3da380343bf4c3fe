//! Long-polling and polling over real sockets: waiting for a publish, recovery headers
//! (`Last-Modified`/`Etag` sent back as `If-Modified-Since`/`If-None-Match`, or as configured query
//! arguments), `Last-Event-ID`, chained requests under a bursty publisher (nothing lost, nothing
//! repeated, on one and on two channels), TTL answers (304 or "Timed out" with `timeout_with_body`),
//! channel deletion, the `X-Nginx-PushStream-Mode` header, polling answers and JSONP. The basic
//! long-poll wait, chaining, several channels and polling from a point run on both engines in
//! `engines.rs`.

mod common;

use common::http::{assert_waiting, fetch, join, spawn_fetch, REQUEST_WAIT};
use common::messages::jsonp_array;
use common::{config, Cursor, TestServer, EPOCH, EXPLAIN, WAIT};
use futures_util::future::join_all;
use reqwest::StatusCode;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Message template of every location here: channel, id and text, one line per message.
const TEMPLATE: &str = "~channel~:~id~:~text~\n";
/// A JSON message template for JSONP answers.
const JSON_TEMPLATE: &str =
    "{\"id\": ~id~, \"channel\": \"~channel-json~\", \"text\": \"~text-json~\"}";

fn location(path: &str, mode: &str, template: &str, extra: &str) -> String {
    format!(
        "[[location]]\npath = {path:?}\nrole = \"subscriber\"\nmode = {mode:?}\nmessage_template = {template:?}\n{extra}\n"
    )
}

/// `/lp/` long-polling, `/lpq/` long-polling with the recovery point in query arguments, `/poll/`
/// polling, `/sub/` streaming, `/jlp/` and `/jpoll/` with a JSON template; `lp_extra` goes to `/lp/`.
fn lp_config(channels: &str, lp_extra: &str) -> String {
    let locations = [
        location("/lp/", "long-polling", TEMPLATE, lp_extra),
        location(
            "/lpq/",
            "long-polling",
            TEMPLATE,
            "last_received_message_time = \"$arg_time\"\nlast_received_message_tag = \"$arg_tag\"\nlast_event_id = \"$arg_last_event_id\"",
        ),
        location("/poll/", "polling", TEMPLATE, ""),
        location("/sub/", "streaming", TEMPLATE, ""),
        location("/jlp/", "long-polling", JSON_TEMPLATE, ""),
        location("/jpoll/", "polling", JSON_TEMPLATE, ""),
    ]
    .concat();
    config(channels, &locations)
}

async fn start() -> TestServer {
    TestServer::start(&lp_config("", "")).await
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after the epoch")
        .as_secs()
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// How a chained client sends its recovery point.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// `If-Modified-Since` and `If-None-Match` headers.
    Headers,
    /// `?time=...&tag=...` (the location reads them with `$arg_time`/`$arg_tag`).
    QueryArgs,
}

fn chained_request(
    base_url: &str,
    cursor: Option<&Cursor>,
    recovery: Recovery,
) -> (String, Vec<(String, String)>) {
    match (cursor, recovery) {
        (None, _) => (base_url.to_string(), Vec::new()),
        (Some(cursor), Recovery::Headers) => (
            base_url.to_string(),
            cursor
                .headers()
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        ),
        (Some(cursor), Recovery::QueryArgs) => (
            format!(
                "{base_url}?time={}&tag={}",
                encode(&cursor.last_modified),
                encode(&cursor.etag)
            ),
            Vec::new(),
        ),
    }
}

/// One received message line `channel:id:text`.
#[derive(Debug, Clone)]
struct Line {
    channel: String,
    id: u64,
    text: String,
}

fn parse_line(line: &str) -> Option<Line> {
    let mut parts = line.splitn(3, ':');
    let channel = parts.next()?.to_string();
    let id = parts.next()?.parse().ok()?;
    let text = parts.next()?.to_string();
    Some(Line { channel, id, text })
}

/// Chains long-polls on `base_url` until `expected` messages arrived. Each message must be the next id
/// of its channel and each answer's (time, tag) must be newer than the previous one. Returns the
/// messages and the last cursor, or everything seen so far on failure.
async fn chained_client(
    client: reqwest::Client,
    base_url: String,
    channels: Vec<String>,
    recovery: Recovery,
    expected: usize,
) -> Result<(Vec<Line>, Cursor), String> {
    let mut log: Vec<String> = Vec::new();
    let mut received: Vec<Line> = Vec::new();
    let mut last_id: HashMap<String, u64> = channels.iter().map(|c| (c.clone(), 0)).collect();
    let mut cursor: Option<Cursor> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < expected {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {expected} messages within 60s; answers:\n{}",
                received.len(),
                log.join("\n")
            ));
        }
        let (url, headers) = chained_request(&base_url, cursor.as_ref(), recovery);
        let answer = fetch(&client, &url, &headers, REQUEST_WAIT).await;
        log.push(format!(
            "GET {url} (cursor {cursor:?}) -> {} Last-Modified={:?} Etag={:?} body={:?}",
            answer.status,
            answer.header("Last-Modified"),
            answer.header("Etag"),
            answer.body
        ));
        let count = received.len();
        let fail = |why: String, log: &[String]| {
            Err(format!(
                "{why}; received {count}+ of {expected}; answers:\n{}",
                log.join("\n")
            ))
        };
        if answer.status != StatusCode::OK || answer.body.is_empty() {
            return fail("expected 200 with messages".into(), &log);
        }
        for text in answer.body.lines() {
            let Some(line) = parse_line(text) else {
                return fail(format!("unparsable line {text:?}"), &log);
            };
            let Some(last) = last_id.get_mut(&line.channel) else {
                return fail(format!("message of an unexpected channel {text:?}"), &log);
            };
            if line.id != *last + 1 {
                return fail(
                    format!(
                        "{text:?}: expected id {} of channel {} (lost or repeated message)",
                        *last + 1,
                        line.channel
                    ),
                    &log,
                );
            }
            *last = line.id;
            received.push(line);
        }
        let next = Cursor {
            last_modified: answer.header("Last-Modified"),
            etag: answer.header("Etag"),
        };
        let Some(key) = next.try_key() else {
            return fail(format!("bad recovery headers {next:?}"), &log);
        };
        if let Some(previous) = &cursor {
            if key <= previous.key() {
                return fail(
                    format!("cursor went from {previous:?} to {next:?}, not forward"),
                    &log,
                );
            }
        }
        cursor = Some(next);
    }
    Ok((received, cursor.expect("at least one answer")))
}

/// Publishes `m1..=m{bursts*burst}` in bursts of concurrent publishes, message `n` to
/// `channels[n % channels.len()]`.
async fn bursty_publisher(
    client: reqwest::Client,
    pub_url: String,
    channels: Vec<String>,
    bursts: usize,
    burst: usize,
) -> Result<(), String> {
    for b in 0..bursts {
        let publishes = (0..burst).map(|k| {
            let n = b * burst + k + 1;
            let channel = channels[n % channels.len()].clone();
            let request = client
                .post(format!("{pub_url}?id={channel}"))
                .body(format!("m{n}"))
                .timeout(WAIT)
                .send();
            async move {
                match request.await {
                    Ok(response) if response.status() == StatusCode::OK => Ok(()),
                    Ok(response) => Err(format!("publish m{n}: {}", response.status())),
                    Err(e) => Err(format!("publish m{n}: {e}")),
                }
            }
        });
        for result in join_all(publishes).await {
            result?;
        }
        // Load shaping only: lets the client sometimes wait live and sometimes find a backlog.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// `clients` clients chaining long-polls on `path` (following `channels`) while a publisher sends 200
/// messages in 20 bursts of 10 concurrent publishes: every client receives every message exactly once,
/// in order per channel. Several clients make a reader racing a publisher more likely.
async fn chained_long_polls_under_bursts(
    path: &str,
    channels: &[&str],
    recovery: Recovery,
    clients: usize,
) {
    const BURSTS: usize = 20;
    const BURST: usize = 10;
    const TOTAL: usize = BURSTS * BURST;
    let server = start().await;
    let channels: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
    let client_tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(chained_client(
                server.client.clone(),
                server.url(path),
                channels.clone(),
                recovery,
                TOTAL,
            ))
        })
        .collect();
    // The first requests (no recovery point) must be waiting before anything is published.
    for channel in &channels {
        server.wait_for_subscribers(channel, clients as u64).await;
    }
    let publisher = tokio::spawn(bursty_publisher(
        server.client.clone(),
        server.url("/pub"),
        channels.clone(),
        BURSTS,
        BURST,
    ));
    let published = tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publisher did not finish within 60s")
        .expect("publisher task panicked");
    published.unwrap_or_else(|e| panic!("publisher failed: {e}"));
    for (index, task) in client_tasks.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(70), task)
            .await
            .unwrap_or_else(|_| panic!("chained client {index} did not finish"))
            .unwrap_or_else(|e| panic!("chained client {index} panicked: {e}"));
        let (received, last_cursor) =
            outcome.unwrap_or_else(|e| panic!("chained client {index}: {e}"));

        assert_eq!(received.len(), TOTAL, "client {index}");
        let texts: BTreeSet<String> = received.iter().map(|l| l.text.clone()).collect();
        let expected: BTreeSet<String> = (1..=TOTAL).map(|n| format!("m{n}")).collect();
        assert_eq!(
            texts, expected,
            "client {index}: every published text exactly once; received: {received:?}"
        );
        for line in &received {
            let n: usize = line.text[1..].parse().expect("text m<n>");
            assert_eq!(
                line.channel,
                channels[n % channels.len()],
                "client {index}: message on the wrong channel: {line:?}"
            );
        }
        for channel in &channels {
            let count = received.iter().filter(|l| &l.channel == channel).count();
            assert_eq!(
                count,
                TOTAL / channels.len(),
                "client {index}: messages of {channel}"
            );
        }
        // Nothing is left after the last point: the next chained request waits.
        let (url, headers) = chained_request(&server.url(path), Some(&last_cursor), recovery);
        let mut next = spawn_fetch(&server.client, &url, &headers, REQUEST_WAIT);
        assert_waiting(&mut next, "long-poll after the last message").await;
        next.abort();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_long_polls_receive_every_burst_message_exactly_once() {
    chained_long_polls_under_bursts("/lp/news", &["news"], Recovery::Headers, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_long_polls_on_two_channels_receive_every_message_of_both_exactly_once() {
    chained_long_polls_under_bursts("/lp/a/b", &["a", "b"], Recovery::Headers, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_chained_clients_on_two_channels_each_receive_every_message_exactly_once() {
    chained_long_polls_under_bursts("/lp/a/b", &["a", "b"], Recovery::Headers, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_long_polls_through_query_args_receive_every_message_exactly_once() {
    chained_long_polls_under_bursts("/lpq/news", &["news"], Recovery::QueryArgs, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chained_long_polls_through_query_args_on_two_channels_lose_nothing() {
    chained_long_polls_under_bursts("/lpq/a/b", &["a", "b"], Recovery::QueryArgs, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_arg_recovery_point_returns_messages_after_it() {
    let server = start().await;
    let pending = server.spawn_fetch("/lpq/news", &[]);
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "one").await;
    let first = join(pending, "first /lpq/ long-poll").await;
    assert_eq!(first.body, "news:1:one\n", "{first:?}");
    let cursor = first.cursor();
    server.publish_ok("news", "two").await;
    let query = format!(
        "/lpq/news?time={}&tag={}",
        encode(&cursor.last_modified),
        encode(&cursor.etag)
    );
    let second = server.fetch(&query, &[]).await;
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "news:2:two\n"),
        "{second:?}"
    );
    // The location reads the query arguments, not the headers: with headers only, it starts live
    // and waits.
    let mut live = server.spawn_fetch("/lpq/news", &cursor.headers());
    server.wait_for_subscribers("news", 1).await;
    assert_waiting(&mut live, "/lpq/ with headers instead of arguments").await;
    server.publish_ok("news", "three").await;
    let live = join(live, "/lpq/ live").await;
    assert_eq!(live.body, "news:3:three\n", "{live:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_header_returns_messages_after_that_event() {
    let server = start().await;
    for (text, id) in [("a", "ev1"), ("b", "ev2"), ("c", "ev3")] {
        let (status, _, body) = server.publish("news", text, &[("Event-Id", id)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let answer = server.fetch("/lp/news", &[("Last-Event-ID", "ev1")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, "news:2:b\nnews:3:c\n", "{answer:?}");
    answer.cursor();
    let answer = server.fetch("/lp/news", &[("Last-Event-ID", "ev2")]).await;
    assert_eq!(answer.body, "news:3:c\n", "{answer:?}");

    // After the newest event: waits for the next message.
    let mut pending = server.spawn_fetch("/lp/news", &[("Last-Event-ID", "ev3")]);
    server.wait_for_subscribers("news", 1).await;
    assert_waiting(&mut pending, "Last-Event-ID of the newest message").await;
    server.publish_ok("news", "d").await;
    let answer = join(pending, "long-poll after ev3").await;
    assert_eq!(answer.body, "news:4:d\n", "{answer:?}");

    // Polling honours it too.
    let answer = server
        .fetch("/poll/news", &[("Last-Event-ID", "ev2")])
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:3:c\nnews:4:d\n"),
        "{answer:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_last_event_id_argument_returns_messages_after_that_event() {
    let server = start().await;
    for (text, id) in [("a", "ev1"), ("b", "ev2"), ("c", "ev3")] {
        let (status, _, body) = server.publish("news", text, &[("Event-Id", id)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let answer = server.fetch("/lpq/news?last_event_id=ev1", &[]).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:2:b\nnews:3:c\n"),
        "{answer:?}"
    );
    let answer = server.fetch("/lpq/news?last_event_id=ev2", &[]).await;
    assert_eq!(answer.body, "news:3:c\n", "{answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longpolling_connection_ttl_answers_304_with_the_recovery_point() {
    let server = TestServer::start(&lp_config("", "longpolling_connection_ttl = \"300ms\"")).await;
    server.publish_ok("news", "old").await;

    let started = Instant::now();
    let answer = server.fetch("/lp/news", &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{answer:?}");
    assert_eq!(answer.body, "", "{answer:?}");
    assert!(
        elapsed >= Duration::from_millis(250),
        "answered after {elapsed:?}, before the 300ms TTL: {answer:?}"
    );
    let cursor = answer.cursor();
    let (time, tag) = cursor.key();
    assert!(now_secs().abs_diff(time) <= 2, "{answer:?}");
    assert!(tag >= 1, "{answer:?}");

    // The point given on timeout is after "old": chaining from it waits again (and times out).
    let again = server.fetch("/lp/news", &cursor.headers()).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{again:?}");
    assert_eq!(again.body, "", "{again:?}");
    again.cursor();

    // A message published between two requests is not lost.
    server.publish_ok("news", "new").await;
    let next = server.fetch("/lp/news", &cursor.headers()).await;
    assert_eq!(
        (next.status, next.body.as_str()),
        (StatusCode::OK, "news:2:new\n"),
        "{next:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_with_body_answers_200_with_the_timed_out_message() {
    let server = TestServer::start(&lp_config(
        "timeout_with_body = true",
        "longpolling_connection_ttl = \"300ms\"",
    ))
    .await;
    let started = Instant::now();
    let answer = server.fetch("/lp/news", &[]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "answered before the TTL: {answer:?}"
    );
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(answer.body, ":-3:Timed out\n", "{answer:?}");
    answer.cursor();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_delete_ends_a_waiting_long_poll_with_the_deleted_message() {
    let server = start().await;
    server.publish_ok("news", "before").await;
    let pending = server.spawn_fetch("/lp/news", &[]);
    server.wait_for_subscribers("news", 1).await;
    let (status, _, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer = join(pending, "/lp/news during delete").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:-2:Channel deleted\n"),
        "{answer:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_header_switches_a_streaming_location_to_long_polling_or_polling() {
    let server = start().await;
    let pending = server.spawn_fetch("/sub/news", &[("X-Nginx-PushStream-Mode", "long-polling")]);
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "hi").await;
    // A long-poll answer: complete body (the fetch reads it to the end) and recovery headers.
    let answer = join(pending, "/sub/news as long-polling").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:1:hi\n"),
        "{answer:?}"
    );
    let cursor = answer.cursor();

    let polling = [("X-Nginx-PushStream-Mode", "polling")];
    let answer = server.fetch("/sub/news", &polling).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{answer:?}");
    assert_eq!(answer.body, "", "{answer:?}");

    let mut headers = cursor.headers();
    headers.push(polling[0]);
    let answer = server.fetch("/sub/news", &headers).await;
    assert_eq!(answer.status, StatusCode::NOT_MODIFIED, "{answer:?}");

    let old = [
        ("X-Nginx-PushStream-Mode", "polling"),
        ("If-Modified-Since", EPOCH),
    ];
    let answer = server.fetch("/sub/news", &old).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "news:1:hi\n"),
        "{answer:?}"
    );
    assert_eq!(answer.cursor(), cursor, "{answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonp_callback_wraps_polling_answers() {
    let server = start().await;
    for text in ["one", "two \"quoted\"", "three"] {
        server.publish_ok("news", text).await;
    }
    let answer = server.fetch("/jpoll/news.b2?callback=cb", &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        answer.header("Content-Type"),
        "application/javascript",
        "{answer:?}"
    );
    assert!(answer.body.starts_with("cb(["), "{answer:?}");
    let items = jsonp_array(&answer.body, "cb");
    assert_eq!(items.len(), 2, "{answer:?}");
    assert_eq!(items[0]["id"], 2, "{answer:?}");
    assert_eq!(items[0]["text"], "two \"quoted\"", "{answer:?}");
    assert_eq!(items[1]["id"], 3, "{answer:?}");
    assert_eq!(items[1]["channel"], "news", "{answer:?}");
    answer.cursor();

    // The plain template location: the frames joined by commas inside cb([...]);
    let answer = server.fetch("/poll/news.b2?callback=cb", &[]).await;
    assert_eq!(
        answer.body, "cb([news:2:two \"quoted\"\n,news:3:three\n]);\r\n",
        "{answer:?}"
    );
    // Dotted names are allowed.
    let answer = server
        .fetch("/jpoll/news.b1?callback=ns.handlers.cb", &[])
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(jsonp_array(&answer.body, "ns.handlers.cb").len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonp_callback_wraps_long_polling_answers() {
    let server = start().await;
    let pending = server.spawn_fetch("/jlp/news?callback=cb", &[]);
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "hello").await;
    let answer = join(pending, "JSONP long-poll").await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    assert_eq!(
        answer.header("Content-Type"),
        "application/javascript",
        "{answer:?}"
    );
    let items = jsonp_array(&answer.body, "cb");
    assert_eq!(items.len(), 1, "{answer:?}");
    assert_eq!(items[0]["id"], 1, "{answer:?}");
    assert_eq!(items[0]["text"], "hello", "{answer:?}");
    let cursor = answer.cursor();

    // Chained with the recovery headers: both stored messages in one array.
    server.publish_ok("news", "a").await;
    server.publish_ok("news", "b").await;
    let answer = server
        .fetch("/jlp/news?callback=cb", &cursor.headers())
        .await;
    let items = jsonp_array(&answer.body, "cb");
    let texts: Vec<&str> = items.iter().filter_map(|i| i["text"].as_str()).collect();
    assert_eq!(texts, ["a", "b"], "{answer:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_jsonp_callback_names_are_refused() {
    let server = start().await;
    server.publish_ok("news", "x").await;
    for path in [
        "/jpoll/news.b1?callback=alert(1)",
        "/jlp/news?callback=alert(1)",
        "/poll/news.b1?callback=a%3Bb",
        "/jlp/news?callback=%3Cscript%3E",
    ] {
        let answer = server.fetch(path, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {answer:?}");
        assert!(
            answer.header(EXPLAIN).contains("callback"),
            "{path}: {answer:?}"
        );
        assert!(!answer.body.contains("alert(1)(["), "{path}: {answer:?}");
    }
    server.stop().await;
}
