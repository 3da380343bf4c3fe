//! Reconnect-and-recover on every subscriber transport (streaming, EventSource, long-polling,
//! polling, WebSocket with headers or query arguments): a publisher sends 500 messages in bursts
//! while a client reads some, goes away at deterministic points and comes back with its recovery
//! point; it must see exactly 1..=500, in order. Then the `X-Herald-Recovery` header: `complete`
//! inside the stored window, `truncated` before it, `unknown-event-id` for an unknown
//! `Last-Event-ID`, absent without a point.

mod common;

use common::messages::{parse_rec, publish_event, Rec};
use common::ws::{self, Ws};
use common::{config, header, sse, TestServer, EPOCH, RECOVERY, WAIT};
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Messages each recovery run publishes.
const TOTAL: usize = 500;
/// The channel of the 500-message runs.
const CHANNEL: &str = "rec";
/// Every location formats a message the same way, so that any transport yields (event id, text,
/// time, tag).
const LINE: &str = "~event-id~|~text~|~time~|~tag~";
/// Bound of one whole 500-message run.
const RUN_LIMIT: Duration = Duration::from_secs(25);

/// Every subscriber location, all with the `LINE` template.
fn recovery_config(channels: &str, lp_ttl: &str) -> String {
    let locations = format!(
        r#"
[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "{LINE}\n"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
message_template = "{LINE}"

[[location]]
path = "/lp/"
role = "subscriber"
mode = "long-polling"
message_template = "{LINE}\n"
longpolling_connection_ttl = "{lp_ttl}"

[[location]]
path = "/poll/"
role = "subscriber"
mode = "polling"
message_template = "{LINE}\n"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
message_template = "{LINE}"

[[location]]
path = "/wsq/"
role = "subscriber"
mode = "websocket"
message_template = "{LINE}"
last_event_id = "$arg_last_event_id"
last_received_message_time = "$arg_time"
last_received_message_tag = "$arg_tag"
"#
    );
    config(channels, &locations)
}

/// Parses one EventSource frame `id: eN\ndata: eN|mN|time|tag\n\n`.
fn parse_sse(event: sse::Event) -> Rec {
    assert!(
        !event.data.contains('\n') && event.event.is_none(),
        "not one id and one data line: {event:?}"
    );
    let seen = parse_rec(&event.data);
    assert_eq!(
        event.id.as_deref(),
        Some(seen.event_id.as_str()),
        "id: line does not match the message: {event:?}"
    );
    seen
}

/// Reads the next message frame of an EventSource stream, skipping comments (header, pings).
async fn next_sse(sub: &mut common::Subscriber) -> Rec {
    loop {
        let frame = sub.read_until("\n\n", WAIT).await;
        if frame.starts_with(':') {
            continue;
        }
        // A message frame holds its id and data lines only: no comment inside it.
        assert!(
            !frame.lines().any(|line| line.starts_with(':')),
            "unexpected comment line in {frame:?}"
        );
        return parse_sse(sse::event(&frame));
    }
}

/// A client's recovery point.
#[derive(Debug, Clone)]
enum Point {
    /// No point at all.
    Nothing,
    /// `Last-Event-ID`.
    EventId(String),
    /// `If-Modified-Since` + `If-None-Match` (time, tag).
    Time(String, String),
}

impl Point {
    fn of(seen: &Rec, by_time: bool) -> Point {
        if by_time {
            Point::Time(seen.time.clone(), seen.tag.clone())
        } else {
            Point::EventId(seen.event_id.clone())
        }
    }

    /// As request headers.
    fn headers(&self) -> Vec<(String, String)> {
        match self {
            Point::Nothing => Vec::new(),
            Point::EventId(id) => vec![("Last-Event-ID".into(), id.clone())],
            Point::Time(time, tag) => vec![
                ("If-Modified-Since".into(), time.clone()),
                ("If-None-Match".into(), tag.clone()),
            ],
        }
    }

    /// As the query string of the `/wsq/` location (`$arg_last_event_id`, `$arg_time`, `$arg_tag`).
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        match self {
            Point::Nothing => {}
            Point::EventId(id) => {
                query.append_pair("last_event_id", id);
            }
            Point::Time(time, tag) => {
                query.append_pair("time", time).append_pair("tag", tag);
            }
        }
        let query = query.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

fn refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// What a client of one transport has seen so far, and how it got there (for failure messages).
struct Progress {
    transport: &'static str,
    seen: Vec<Rec>,
    log: Vec<String>,
}

impl Progress {
    fn new(transport: &'static str) -> Progress {
        Progress {
            transport,
            seen: Vec::new(),
            log: Vec::new(),
        }
    }

    fn done(&self) -> bool {
        self.seen.len() >= TOTAL
    }

    fn last(&self) -> Option<&Rec> {
        self.seen.last()
    }

    /// Notes how the client (re)connected.
    fn note(&mut self, what: String) {
        self.log.push(what);
    }

    /// Accepts the next message; it must be exactly the one after the last seen.
    fn accept(&mut self, seen: Rec) {
        let expected = self.seen.len() + 1;
        if seen.n != expected {
            let tail: Vec<usize> = self.seen.iter().rev().take(5).rev().map(|s| s.n).collect();
            panic!(
                "{}: expected message {expected}, got {} ({}: lost or duplicated); last seen {:?}; \
                 connections so far: {:#?}",
                self.transport,
                seen.n,
                if seen.n > expected {
                    "messages lost"
                } else {
                    "duplicate"
                },
                tail,
                self.log
            );
        }
        self.seen.push(seen);
    }

    fn check_deadline(&self, deadline: Instant) {
        assert!(
            Instant::now() < deadline,
            "{}: only {} of {TOTAL} messages after {RUN_LIMIT:?}; connections: {:#?}",
            self.transport,
            self.seen.len(),
            self.log
        );
    }

    /// Final check: exactly 1..=TOTAL, in order.
    fn assert_complete(&self) {
        let numbers: Vec<usize> = self.seen.iter().map(|s| s.n).collect();
        let expected: Vec<usize> = (1..=TOTAL).collect();
        assert_eq!(
            numbers, expected,
            "{}: did not see exactly 1..={TOTAL}",
            self.transport
        );
    }
}

/// Publishes `m1`..`m500` (Event-Id `e1`..`e500`) to `rec` in bursts of varying size.
fn spawn_publisher(server: &TestServer) -> JoinHandle<()> {
    let client = server.client.clone();
    let url = server.url(&format!("/pub?id={CHANNEL}"));
    tokio::spawn(async move {
        let bursts = [7usize, 23, 41, 3, 60, 17, 29, 11];
        let mut n = 1;
        let mut burst = 0;
        while n <= TOTAL {
            for _ in 0..bursts[burst % bursts.len()] {
                if n > TOTAL {
                    break;
                }
                let response = client
                    .post(&url)
                    .header("Event-Id", format!("e{n}"))
                    .body(format!("m{n}"))
                    .timeout(WAIT)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("publish m{n} failed: {e}"));
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                assert_eq!(status, StatusCode::OK, "publish m{n}: {body}");
                n += 1;
            }
            burst += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

async fn finish_publisher(publisher: Option<JoinHandle<()>>) {
    if let Some(publisher) = publisher {
        tokio::time::timeout(RUN_LIMIT, publisher)
            .await
            .expect("publisher did not finish")
            .expect("publisher task panicked");
    }
}

/// How many messages the client reads on its `connection`-th connection before going away.
fn quota(connection: usize) -> usize {
    37 + (connection * 7) % 13
}

/// The recovery point for the next connection: none at first, then alternately `Last-Event-ID` and
/// (time, tag) when `time_too`.
fn next_point(progress: &Progress, connection: usize, time_too: bool) -> Point {
    match progress.last() {
        None => Point::Nothing,
        Some(last) => Point::of(last, time_too && connection % 2 == 1),
    }
}

/// A server for one 500-message run: every message stored.
async fn start_run() -> TestServer {
    TestServer::start(&recovery_config(
        "max_messages_stored_per_channel = 1000",
        "3s",
    ))
    .await
}

/// The end of a reconnecting run: the publisher finished, exactly 1..=500 seen, over at least 10
/// connections.
async fn finish_reconnects(
    server: TestServer,
    publisher: Option<JoinHandle<()>>,
    progress: &Progress,
    connections: usize,
) {
    let transport = progress.transport;
    finish_publisher(publisher).await;
    progress.assert_complete();
    eprintln!("{transport}: {TOTAL} messages over {connections} connections");
    assert!(
        connections >= 10,
        "{transport}: only {connections} connections"
    );
    server.stop().await;
}

fn expected_recovery(point: &Point) -> &'static str {
    match point {
        Point::Nothing => "",
        _ => "complete",
    }
}

/// Streaming (`sse` false) or EventSource (`sse` true) over `path`: read a quota, drop the
/// connection, reconnect with the last message's point.
async fn http_stream_run(transport: &'static str, path: &str, sse: bool, time_too: bool) {
    let server = start_run().await;
    let mut progress = Progress::new(transport);
    let mut publisher = None;
    let deadline = Instant::now() + RUN_LIMIT;
    let mut connection = 0;
    while !progress.done() {
        progress.check_deadline(deadline);
        let point = next_point(&progress, connection, time_too);
        let headers = point.headers();
        progress.note(format!("connection {connection}: {point:?}"));
        let mut sub = server.subscribe_with(path, &refs(&headers)).await;
        assert_eq!(
            sub.status,
            StatusCode::OK,
            "{transport}: reconnect with {point:?}"
        );
        assert_eq!(
            header(&sub.headers, RECOVERY),
            expected_recovery(&point),
            "{transport}: X-Herald-Recovery with {point:?}"
        );
        if publisher.is_none() {
            // The first connection has no point: it must be subscribed before anything is sent.
            server.wait_for_subscribers(CHANNEL, 1).await;
            publisher = Some(spawn_publisher(&server));
        }
        for _ in 0..quota(connection) {
            if progress.done() {
                break;
            }
            let seen = if sse {
                next_sse(&mut sub).await
            } else {
                parse_rec(&sub.read_until("\n", WAIT).await)
            };
            progress.accept(seen);
        }
        // Go away, possibly with more already buffered: those must come again.
        drop(sub);
        connection += 1;
    }
    finish_reconnects(server, publisher, &progress, connection).await;
}

/// Opens a WebSocket to `path` with extra handshake headers.
async fn ws_connect(
    server: &TestServer,
    path: &str,
    headers: &[(String, String)],
) -> (Ws, Response) {
    ws::handshake(server.addr, path, &refs(headers))
        .await
        .unwrap_or_else(|e| panic!("websocket {path}: handshake failed: {e}"))
}

/// The next text frame (pings and pongs skipped), or `None` on timeout, close or end.
async fn ws_next_text(ws: &mut Ws, wait: Duration, frames: &mut Vec<String>) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                frames.push(text.as_str().to_string());
                return Some(text.as_str().to_string());
            }
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
            Ok(other) => {
                frames.push(format!("{other:?}"));
                return None;
            }
        }
    }
}

/// WebSocket over `/ws/` (point in handshake headers) or `/wsq/` (point in query arguments).
async fn ws_run(transport: &'static str, query_args: bool) {
    let server = start_run().await;
    let mut progress = Progress::new(transport);
    let mut publisher = None;
    let deadline = Instant::now() + RUN_LIMIT;
    let mut connection = 0;
    while !progress.done() {
        progress.check_deadline(deadline);
        let point = next_point(&progress, connection, true);
        progress.note(format!("connection {connection}: {point:?}"));
        let (mut ws, response) = if query_args {
            ws_connect(&server, &format!("/wsq/{CHANNEL}{}", point.query()), &[]).await
        } else {
            ws_connect(&server, &format!("/ws/{CHANNEL}"), &point.headers()).await
        };
        let recovery = response
            .headers()
            .get(RECOVERY)
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_default();
        assert_eq!(
            recovery,
            expected_recovery(&point),
            "{transport}: X-Herald-Recovery with {point:?}"
        );
        if publisher.is_none() {
            server.wait_for_subscribers(CHANNEL, 1).await;
            publisher = Some(spawn_publisher(&server));
        }
        let mut frames = Vec::new();
        for _ in 0..quota(connection) {
            if progress.done() {
                break;
            }
            let Some(text) = ws_next_text(&mut ws, WAIT, &mut frames).await else {
                panic!(
                    "{transport}: no message {} within {WAIT:?} on connection {connection}; \
                     frames on this connection: {frames:?}",
                    progress.seen.len() + 1
                );
            };
            progress.accept(parse_rec(&text));
        }
        // Leave politely every other time, else just drop the socket.
        if connection % 2 == 0 {
            ws::close(&mut ws).await;
        }
        drop(ws);
        connection += 1;
    }
    finish_reconnects(server, publisher, &progress, connection).await;
}

/// Long-polling (`waits`) or polling: chain requests with `Last-Modified`/`Etag`; every fifth request
/// is abandoned after a millisecond (the client went away; whatever it would have carried must come
/// again with the next request from the same point).
async fn poll_run(transport: &'static str, path: &str, waits: bool) {
    let server = start_run().await;
    let mut progress = Progress::new(transport);
    // Everything stored, from the start: the publisher may begin at once.
    let mut since = EPOCH.to_string();
    let mut etag: Option<String> = None;
    let publisher = Some(spawn_publisher(&server));
    let deadline = Instant::now() + RUN_LIMIT;
    let url = server.url(path);
    let mut request = 0usize;
    let mut answers = 0usize;
    while !progress.done() {
        progress.check_deadline(deadline);
        request += 1;
        let mut builder = server
            .client
            .get(&url)
            .header("If-Modified-Since", &since)
            .timeout(Duration::from_secs(10));
        if let Some(tag) = &etag {
            builder = builder.header("If-None-Match", tag);
        }
        let exchange = async move {
            let response = builder.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        };
        if request % 5 == 3 {
            progress.note(format!(
                "request {request}: abandoned (since {since:?}, etag {etag:?})"
            ));
            let _ = tokio::time::timeout(Duration::from_millis(1), exchange).await;
            continue;
        }
        let (status, headers, body) = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .unwrap_or_else(|_| panic!("{transport}: request {request} got no answer"))
            .unwrap_or_else(|e| panic!("{transport}: request {request} failed: {e}"));
        progress.note(format!(
            "request {request}: since {since:?}, etag {etag:?} -> {status}"
        ));
        match status {
            StatusCode::OK => {
                answers += 1;
                assert_eq!(
                    header(&headers, RECOVERY),
                    "complete",
                    "{transport}: request {request}"
                );
                assert!(!body.is_empty(), "{transport}: empty 200");
                for line in body.lines() {
                    progress.accept(parse_rec(line));
                }
                since = header(&headers, "Last-Modified");
                let tag = header(&headers, "Etag");
                assert!(
                    !since.is_empty() && !tag.is_empty(),
                    "{transport}: 200 without Last-Modified/Etag: {headers:?}"
                );
                etag = Some(tag);
            }
            StatusCode::NOT_MODIFIED => {
                if !waits {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            other => panic!("{transport}: unexpected {other}: {body}"),
        }
    }
    finish_publisher(publisher).await;
    progress.assert_complete();
    eprintln!("{transport}: {TOTAL} messages in {answers} answers over {request} requests");
    assert!(answers >= 2, "{transport}: only {answers} answers");
    server.stop().await;
}

/// `#[tokio::test]`s on a multi-thread runtime with `$workers` workers, each awaiting one run.
macro_rules! runs {
    ($workers:tt; $($name:ident => $run:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
        async fn $name() {
            $run.await;
        }
    )*};
}

runs! {
    4;
    streaming_reconnects_recover_500_messages =>
        http_stream_run("streaming", &format!("/sub/{CHANNEL}"), false, true),
    eventsource_reconnects_with_last_event_id_recover_500_messages =>
        http_stream_run("eventsource", &format!("/ev/{CHANNEL}"), true, false),
    eventsource_reconnects_with_time_and_tag_recover_500_messages =>
        http_stream_run("eventsource (time)", &format!("/ev/{CHANNEL}"), true, true),
    websocket_reconnects_with_headers_recover_500_messages => ws_run("websocket", false),
    websocket_reconnects_with_query_args_recover_500_messages =>
        ws_run("websocket (query args)", true),
    long_polling_chain_recovers_500_messages =>
        poll_run("long-polling", &format!("/lp/{CHANNEL}"), true),
    polling_chain_recovers_500_messages => poll_run("polling", &format!("/poll/{CHANNEL}"), false),
}

// ---------------------------------------------------------------------------------------------
// X-Herald-Recovery against a small stored window.

/// Channel of the window tests.
const WIN: &str = "win";

/// A server storing 5 messages per channel, with `e1`..`e10` published to `win` (so `e6`..`e10`
/// are stored), and the (time, tag) of every one of them as a live subscriber saw them.
async fn window_setup() -> (TestServer, Vec<Rec>) {
    let server = TestServer::start(&recovery_config(
        "max_messages_stored_per_channel = 5",
        "1s",
    ))
    .await;
    let mut live = server.subscribe_ok(&format!("/sub/{WIN}")).await;
    for n in 1..=10 {
        publish_event(&server, WIN, n).await;
    }
    let mut seen = Vec::new();
    for n in 1..=10 {
        let line = parse_rec(&live.read_until("\n", WAIT).await);
        assert_eq!(line.n, n, "live subscriber: {:?}", live.received());
        seen.push(line);
    }
    drop(live);
    let info = server.channel_info(WIN).await.expect("channel win");
    assert_eq!(info["stored_messages"], 5, "{info}");
    (server, seen)
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Streaming,
    EventSource,
    LongPolling,
    Polling,
    WebSocket,
    WebSocketQuery,
}

/// Subscribes to `win` over `transport` from `point` (`suffix` appended to the channel, e.g.
/// `.b2`); returns the `X-Herald-Recovery` header ("" when absent) and the numbers of the old
/// messages delivered at once. Streams read `expect` messages, then must stay quiet for 300 ms.
async fn recover(
    server: &TestServer,
    transport: Transport,
    suffix: &str,
    point: &Point,
    expect: usize,
) -> (String, Vec<usize>) {
    let headers = point.headers();
    let quiet = Duration::from_millis(300);
    match transport {
        Transport::Streaming | Transport::EventSource => {
            let sse = matches!(transport, Transport::EventSource);
            let prefix = if sse { "/ev/" } else { "/sub/" };
            let mut sub = server
                .subscribe_with(&format!("{prefix}{WIN}{suffix}"), &refs(&headers))
                .await;
            assert_eq!(sub.status, StatusCode::OK, "{transport:?} {point:?}");
            let mut got = Vec::new();
            for _ in 0..expect {
                let seen = if sse {
                    next_sse(&mut sub).await
                } else {
                    parse_rec(&sub.read_until("\n", WAIT).await)
                };
                got.push(seen.n);
            }
            if sse && expect == 0 {
                // The header comment is sent on connect.
                assert_eq!(sub.read_until("\n\n", WAIT).await, ": \n\n");
            }
            sub.expect_quiet(quiet).await;
            (header(&sub.headers, RECOVERY), got)
        }
        Transport::LongPolling | Transport::Polling => {
            let prefix = if matches!(transport, Transport::Polling) {
                "/poll/"
            } else {
                "/lp/"
            };
            let (status, response_headers, body) = server
                .get_with(&format!("{prefix}{WIN}{suffix}"), &refs(&headers))
                .await;
            let got = match status {
                StatusCode::OK => body.lines().map(|l| parse_rec(l).n).collect(),
                StatusCode::NOT_MODIFIED => Vec::new(),
                other => panic!("{transport:?} {point:?}: unexpected {other}: {body}"),
            };
            (header(&response_headers, RECOVERY), got)
        }
        Transport::WebSocket | Transport::WebSocketQuery => {
            let (mut ws, response) = if matches!(transport, Transport::WebSocketQuery) {
                ws_connect(server, &format!("/wsq/{WIN}{suffix}{}", point.query()), &[]).await
            } else {
                ws_connect(server, &format!("/ws/{WIN}{suffix}"), &headers).await
            };
            let recovery = response
                .headers()
                .get(RECOVERY)
                .map(|v| v.to_str().unwrap_or("?").to_string())
                .unwrap_or_default();
            let mut frames = Vec::new();
            let mut got = Vec::new();
            for _ in 0..expect {
                let text = ws_next_text(&mut ws, WAIT, &mut frames)
                    .await
                    .unwrap_or_else(|| panic!("{transport:?} {point:?}: frames {frames:?}"));
                got.push(parse_rec(&text).n);
            }
            if let Some(extra) = ws_next_text(&mut ws, quiet, &mut frames).await {
                panic!("{transport:?} {point:?}: unexpected frame {extra:?} after {got:?}");
            }
            ws::close(&mut ws).await;
            (recovery, got)
        }
    }
}

/// Runs every recovery case of the window on one transport.
async fn window_cases(transport: Transport) {
    let (server, seen) = window_setup().await;
    let m = |n: usize| &seen[n - 1];
    let by_time = |n: usize| Point::Time(m(n).time.clone(), m(n).tag.clone());
    let cases: Vec<(&str, &str, Point, &str, Vec<usize>)> = vec![
        (
            "Last-Event-ID inside the window",
            "",
            Point::EventId("e7".into()),
            "complete",
            vec![8, 9, 10],
        ),
        (
            "Last-Event-ID of the newest message",
            "",
            Point::EventId("e10".into()),
            "complete",
            vec![],
        ),
        (
            "time/tag inside the window",
            "",
            by_time(7),
            "complete",
            vec![8, 9, 10],
        ),
        (
            "time/tag of the oldest stored message",
            "",
            by_time(6),
            "complete",
            vec![7, 8, 9, 10],
        ),
        (
            "time/tag older than the window",
            "",
            by_time(2),
            "truncated",
            vec![6, 7, 8, 9, 10],
        ),
        (
            "time/tag of the newest evicted message",
            "",
            by_time(5),
            "complete",
            vec![6, 7, 8, 9, 10],
        ),
        (
            "Last-Event-ID of an evicted message",
            "",
            Point::EventId("e2".into()),
            "unknown-event-id",
            vec![],
        ),
        (
            "Last-Event-ID never published",
            "",
            Point::EventId("nope".into()),
            "unknown-event-id",
            vec![],
        ),
        ("no point", "", Point::Nothing, "", vec![]),
    ];
    for (name, suffix, point, header_value, expected) in cases {
        // Polling and long-polling answer nothing without a point (polling at once, long-polling
        // after its 1 s TTL); both are still checked for the header.
        let (recovery, got) = recover(&server, transport, suffix, &point, expected.len()).await;
        assert_eq!(
            (recovery.as_str(), &got),
            (header_value, &expected),
            "{transport:?}, {name} ({point:?}): (X-Herald-Recovery, old messages delivered)"
        );
    }
    if !matches!(transport, Transport::WebSocketQuery) {
        // `.bN` wins over the point and is not a recovery: no header.
        let (recovery, got) =
            recover(&server, transport, ".b2", &Point::EventId("e7".into()), 2).await;
        assert_eq!(
            (recovery.as_str(), got),
            ("", vec![9, 10]),
            "{transport:?}: .b2 with Last-Event-ID e7"
        );
    }
    server.stop().await;
}

runs! {
    2;
    recovery_header_streaming => window_cases(Transport::Streaming),
    recovery_header_eventsource => window_cases(Transport::EventSource),
    recovery_header_long_polling => window_cases(Transport::LongPolling),
    recovery_header_polling => window_cases(Transport::Polling),
    recovery_header_websocket => window_cases(Transport::WebSocket),
    recovery_header_websocket_query_args => window_cases(Transport::WebSocketQuery),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_arg_location_ignores_recovery_headers() {
    let (server, seen) = window_setup().await;
    // `/wsq/` reads the point from query arguments only: headers are not a point there.
    for point in [
        Point::EventId("e7".into()),
        Point::Time(seen[6].time.clone(), seen[6].tag.clone()),
    ] {
        let (mut ws, response) =
            ws_connect(&server, &format!("/wsq/{WIN}"), &point.headers()).await;
        assert!(
            response.headers().get(RECOVERY).is_none(),
            "{point:?} as headers on /wsq/: {:?}",
            response.headers()
        );
        let mut frames = Vec::new();
        if let Some(extra) = ws_next_text(&mut ws, Duration::from_millis(300), &mut frames).await {
            panic!("{point:?} as headers on /wsq/: old message {extra:?} replayed");
        }
        ws::close(&mut ws).await;
    }
    // And the query-arg point still reaches live messages after the recovered ones.
    let (mut ws, response) = ws_connect(
        &server,
        &format!("/wsq/{WIN}{}", Point::EventId("e9".into()).query()),
        &[],
    )
    .await;
    assert_eq!(
        response
            .headers()
            .get(RECOVERY)
            .and_then(|v| v.to_str().ok()),
        Some("complete")
    );
    let mut frames = Vec::new();
    let first = ws_next_text(&mut ws, WAIT, &mut frames).await;
    assert_eq!(first.map(|t| parse_rec(&t).n), Some(10), "{frames:?}");
    server.wait_for_subscribers(WIN, 1).await;
    publish_event(&server, WIN, 11).await;
    let next = ws_next_text(&mut ws, WAIT, &mut frames).await;
    assert_eq!(next.map(|t| parse_rec(&t).n), Some(11), "{frames:?}");
    ws::close(&mut ws).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_stream_continues_live_without_gap_or_repeat() {
    let (server, seen) = window_setup().await;
    // A client that saw e8 (by event id) and one that saw e8 (by time/tag): both get e9, e10, then
    // the next live message and nothing in between.
    let mut by_id = server
        .subscribe_with(&format!("/sub/{WIN}"), &[("Last-Event-ID", "e8")])
        .await;
    let time = seen[7].time.clone();
    let tag = seen[7].tag.clone();
    let mut by_time = server
        .subscribe_with(
            &format!("/sub/{WIN}"),
            &[("If-Modified-Since", &time), ("If-None-Match", &tag)],
        )
        .await;
    server.wait_for_subscribers(WIN, 2).await;
    publish_event(&server, WIN, 11).await;
    for (name, sub) in [("Last-Event-ID", &mut by_id), ("time/tag", &mut by_time)] {
        assert_eq!(header(&sub.headers, RECOVERY), "complete", "{name}");
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(parse_rec(&sub.read_until("\n", WAIT).await).n);
        }
        assert_eq!(got, vec![9, 10, 11], "{name}: {:?}", sub.received());
        sub.expect_quiet(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_after_expiry_too() {
    // Messages that expired (rather than were evicted) also make an older point "truncated"; a
    // point at the newest expired message is still "complete" (nothing after it was lost).
    let server = TestServer::start(&recovery_config(
        "message_ttl = \"1s\"\nchannel_inactivity_time = \"1h\"",
        "1s",
    ))
    .await;
    let mut live = server.subscribe_ok("/sub/exp").await;
    server.wait_for_subscribers("exp", 1).await;
    publish_event(&server, "exp", 1).await;
    publish_event(&server, "exp", 2).await;
    let m1 = parse_rec(&live.read_until("\n", WAIT).await);
    let m2 = parse_rec(&live.read_until("\n", WAIT).await);
    assert_eq!((m1.n, m2.n), (1, 2), "{:?}", live.received());
    drop(live);
    let expired = common::poll_until(
        Duration::from_secs(6),
        Duration::from_millis(100),
        || async {
            server
                .channel_info("exp")
                .await
                .is_some_and(|i| i["stored_messages"] == 0)
        },
    )
    .await;
    assert!(expired, "m1 and m2 never expired");
    publish_event(&server, "exp", 3).await;
    for (point, expected) in [(&m1, "truncated"), (&m2, "complete")] {
        let (status, headers, body) = server
            .get_with(
                "/poll/exp",
                &[
                    ("If-Modified-Since", point.time.as_str()),
                    ("If-None-Match", point.tag.as_str()),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            header(&headers, RECOVERY),
            expected,
            "point at m{} after m1 and m2 expired",
            point.n
        );
        assert_eq!(
            body.lines().map(|l| parse_rec(l).n).collect::<Vec<_>>(),
            vec![3],
            "point at m{}",
            point.n
        );
    }
    server.stop().await;
}
