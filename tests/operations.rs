//! Operating Herald: Prometheus metrics, health endpoints, graceful shutdown of 1000 subscribers
//! (the real binary and SIGTERM), a second signal during the drain, cutting off clients that stop
//! reading (`send_timeout`, `subscriber_lag_limit`), and reloading the configuration (SIGHUP and
//! `herald reload PID`, an invalid file refused).
//!
//! The Prometheus recorder is process-global, so every metrics assertion on an in-process server
//! lives in ONE test (`metrics_location_reports_connections_deliveries_and_process_gauges`); the
//! other tests that move metrics run the real binary as a child process, which has its own recorder.
//! Child processes are killed (only by their own handle) when their guard drops.

mod common;

use common::process::{HeraldProcess, TempFile, BIN};
use common::raw;
use common::ws::Ws;
use common::{
    config, parse_json, poll_until, streaming_location, Http, TestServer, BASE_LOCATIONS, WAIT,
};
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

// ------------------------------------------------------------------------------------------------
// Prometheus text exposition

/// Label pairs of one sample, in order.
type Labels = Vec<(String, String)>;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// A parsed scrape, with its text for failure messages.
struct Scrape {
    samples: Vec<Sample>,
    text: String,
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

/// Parses `{k="v",k2="v2"}` at the start of `text`; returns the labels and the rest after `}`.
fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return Err(format!("labels must start with '{{': {text:?}"));
    }
    let mut i = 1;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i >= bytes.len() {
            return Err(format!("unterminated labels: {text:?}"));
        }
        if bytes[i] == b'}' {
            return Ok((labels, &text[i + 1..]));
        }
        let eq = text[i..]
            .find('=')
            .ok_or_else(|| format!("label without '=': {text:?}"))?;
        let key = text[i..i + eq].trim().to_string();
        i += eq + 1;
        if bytes.get(i) != Some(&b'"') {
            return Err(format!("label value must be quoted: {text:?}"));
        }
        i += 1;
        let mut value = String::new();
        let mut chars = text[i..].char_indices();
        let mut closed = None;
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => break,
                },
                '"' => {
                    closed = Some(at);
                    break;
                }
                other => value.push(other),
            }
        }
        let at = closed.ok_or_else(|| format!("unterminated label value: {text:?}"))?;
        i += at + 1;
        labels.push((key, value));
    }
}

/// Parses the exposition: every non-comment line as `name{labels} value [timestamp]`.
fn parse_exposition(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("metric line without a value: {line:?}"));
        let name = line[..name_end].to_string();
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{e} in line {line:?}"))
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(parse_value)
            .unwrap_or_else(|| panic!("metric line with an invalid value: {line:?}"));
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Scrape {
        samples,
        text: text.to_string(),
    }
}

impl Scrape {
    /// The sample named `name` carrying (at least) `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// `get`, or 0 when the series does not exist yet (counters and gauges before first use).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// `get`, panicking with the whole scrape when the series is missing.
    fn require(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "metric {name}{labels:?} missing from /metrics; scrape was:\n{}",
                self.text
            )
        })
    }
}

#[test]
fn exposition_parser_reads_names_labels_and_values() {
    let scrape = parse_exposition(
        "# HELP x y\n# TYPE x counter\nx 3\ny{a=\"1\",b=\"q\\\"z\"} 2.5\nh_bucket{le=\"+Inf\"} 7\nz{} 1e3\n",
    );
    assert_eq!(scrape.get("x", &[]), Some(3.0));
    assert_eq!(scrape.get("y", &[("a", "1")]), Some(2.5));
    assert_eq!(scrape.get("y", &[("b", "q\"z")]), Some(2.5));
    assert_eq!(scrape.get("y", &[("a", "2")]), None);
    assert_eq!(scrape.get("h_bucket", &[("le", "+Inf")]), Some(7.0));
    assert_eq!(scrape.get("z", &[]), Some(1000.0));
}

async fn scrape(server: &Http) -> Scrape {
    let (status, headers, text) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK, "GET /metrics: {text}");
    let content_type = common::header(&headers, "content-type");
    assert!(
        content_type.starts_with("text/plain"),
        "GET /metrics: content type {content_type:?}"
    );
    parse_exposition(&text)
}

// ------------------------------------------------------------------------------------------------
// In-process: metrics and health

const TRANSPORTS: [&str; 3] = ["streaming", "eventsource", "websocket"];

fn metrics_locations() -> String {
    r#"
[[location]]
path = "/metrics"
match = "exact"
role = "metrics"

[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "~id~:~text~\n"
ping_message_interval = "100ms"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
message_template = "~id~:~text~"
ping_message_interval = "100ms"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
message_template = "~id~:~text~"
ping_message_interval = "100ms"
"#
    .to_string()
}

/// A WebSocket subscriber read by a task (so pings are answered); text frames go to `texts`.
struct WsReader {
    texts: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl WsReader {
    /// Reads `ws` in a task from now on.
    fn new(ws: Ws) -> WsReader {
        let (tx, texts) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut ws = ws;
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    WsMessage::Text(text) => {
                        let _ = tx.send(text.to_string());
                    }
                    WsMessage::Close(_) => break,
                    _ => {}
                }
            }
        });
        WsReader { texts, task }
    }

    /// Waits (bounded) for a text frame equal to `wanted`; returns every frame seen.
    async fn read_until(&mut self, wanted: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.texts.recv()).await {
                Ok(Some(text)) => {
                    let done = text == wanted;
                    seen.push(text);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("websocket closed before {wanted:?}; frames: {seen:?}"),
                Err(_) => panic!("websocket: no {wanted:?} within {WAIT:?}; frames: {seen:?}"),
            }
        }
    }
}

impl Drop for WsReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_location_reports_connections_deliveries_and_process_gauges() {
    let server = TestServer::start(&config(
        "max_subscribers_per_channel = 3",
        &metrics_locations(),
    ))
    .await;
    let before = scrape(&server).await;
    let labels = |t: &'static str| [("transport", t)];
    let pub_ok = [("location", "/pub"), ("status", "200")];
    let refusal = [("limit", "max_subscribers_per_channel")];

    // One subscriber of each long-lived transport on channel "m" (the channel's limit is 3).
    let mut stream = server.subscribe_ok("/sub/m").await;
    let mut events = server.subscribe_ok("/ev/m").await;
    let mut ws = WsReader::new(server.websocket("/ws/m").await);
    server.wait_for_subscribers("m", 3).await;
    let (status, _, text) = server.get("/sub/m").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "4th subscriber: {text}");

    const N: u64 = 5;
    for i in 1..=N {
        server.publish_ok("m", &format!("m{i}")).await;
    }
    let last = format!("{N}:m{N}");
    stream.read_until(&format!("{last}\n"), WAIT).await;
    events.read_until(&format!("data: {last}\n\n"), WAIT).await;
    ws.read_until(&last).await;

    let during = scrape(&server).await;
    for t in TRANSPORTS {
        let open = during.require("herald_connections", &labels(t));
        assert!(
            open >= 1.0,
            "herald_connections{{transport={t:?}}} = {open}, want >= 1\n{}",
            during.text
        );
        let delivered = during.require("herald_deliveries_total", &labels(t))
            - before.value("herald_deliveries_total", &labels(t));
        assert_eq!(
            delivered, N as f64,
            "herald_deliveries_total{{transport={t:?}}} grew by {delivered}, want {N}\n{}",
            during.text
        );
        assert!(
            during.require("herald_bytes_written_total", &labels(t))
                > before.value("herald_bytes_written_total", &labels(t)),
            "herald_bytes_written_total{{transport={t:?}}} did not grow\n{}",
            during.text
        );
    }
    let published = during.require("herald_messages_published_total", &[])
        - before.value("herald_messages_published_total", &[]);
    assert_eq!(
        published, N as f64,
        "herald_messages_published_total grew by {published}\n{}",
        during.text
    );
    assert_eq!(
        during.require("herald_channels", &[("kind", "normal")]),
        1.0,
        "herald_channels{{kind=\"normal\"}}\n{}",
        during.text
    );
    assert_eq!(
        during.require("herald_stored_messages", &[]),
        N as f64,
        "herald_stored_messages\n{}",
        during.text
    );
    assert!(
        during.require("herald_subscriptions", &[]) >= 3.0,
        "herald_subscriptions\n{}",
        during.text
    );
    let requests = during.require("herald_http_requests_total", &pub_ok)
        - before.value("herald_http_requests_total", &pub_ok);
    assert_eq!(
        requests, N as f64,
        "herald_http_requests_total{{location=\"/pub\",status=\"200\"}} grew by {requests}\n{}",
        during.text
    );
    let refused = during.require("herald_limit_refusals_total", &refusal)
        - before.value("herald_limit_refusals_total", &refusal);
    assert_eq!(
        refused, 1.0,
        "herald_limit_refusals_total{{limit=\"max_subscribers_per_channel\"}} grew by {refused}\n{}",
        during.text
    );
    // Each connection records the latency of its first delivery (then 1 in 16).
    let latencies = during.require("herald_publish_to_write_seconds_count", &[])
        - before.value("herald_publish_to_write_seconds_count", &[]);
    assert!(
        latencies >= 3.0,
        "herald_publish_to_write_seconds_count grew by {latencies}, want >= 3\n{}",
        during.text
    );
    assert!(
        during.require("herald_process_open_fds", &[]) > 0.0,
        "{}",
        during.text
    );
    assert!(
        during.require("herald_process_resident_memory_bytes", &[]) > 1_000_000.0,
        "{}",
        during.text
    );

    // Pings every 100ms on each transport.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = scrape(&server).await;
    for t in TRANSPORTS {
        let pings_then = during.value("herald_pings_sent_total", &labels(t));
        let pings_now = later.require("herald_pings_sent_total", &labels(t));
        assert!(
            pings_now > pings_then,
            "herald_pings_sent_total{{transport={t:?}}} did not grow in 400ms: {pings_then} -> {pings_now}\n{}",
            later.text
        );
    }

    // Subscribers leave: the connection gauges fall back to where they were.
    drop(stream);
    drop(events);
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrape(&server).await;
        let back = TRANSPORTS.iter().all(|t| {
            now.value("herald_connections", &[("transport", t)])
                == before.value("herald_connections", &[("transport", t)])
        });
        if back {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "herald_connections did not drop back within 10s after the subscribers left; last scrape:\n{}",
            now.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.wait_for_subscribers("m", 0).await;

    // A retried publish with the same Idempotency-Key counts as a replay, not as a publish.
    let key = [("Idempotency-Key", "metrics-retry")];
    let before_retry = scrape(&server).await;
    for _ in 0..2 {
        let (status, _, body) = server.publish("m", "retried", &key).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let after_retry = scrape(&server).await;
    let replays = after_retry.require("herald_publish_replays_total", &[])
        - before_retry.value("herald_publish_replays_total", &[]);
    let published = after_retry.require("herald_messages_published_total", &[])
        - before_retry.value("herald_messages_published_total", &[]);
    assert_eq!(
        (replays, published),
        (1.0, 1.0),
        "herald_publish_replays_total and herald_messages_published_total after a publish and its retry\n{}",
        after_retry.text
    );
    server.stop().await;
}

#[tokio::test]
async fn health_endpoints_answer_ok_and_ready() {
    let server = TestServer::start(&config("", "")).await;
    let (status, _, body) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "/healthz: {body}");
    assert_eq!(body.trim(), "ok", "/healthz body");
    let (status, _, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "/readyz: {body}");
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// Child processes

/// The `herald` binary serving `--config FILE --listen 127.0.0.1:0` (derefs to the process and,
/// through it, to an `Http` client), with its config file.
struct Herald {
    process: HeraldProcess,
    config: TempFile,
}

impl Herald {
    async fn start(name: &str, config_text: &str) -> Herald {
        let config = TempFile::new(name, config_text);
        let process =
            HeraldProcess::start(&["--config", config.path(), "--listen", "127.0.0.1:0"]).await;
        Herald { process, config }
    }

    /// POST `body` to `path`, asserting 200.
    async fn publish(&self, path: &str, body: impl Into<reqwest::Body>) {
        let (status, _, text) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {text}");
    }

    /// Subscribers on `channel` per `/channels-stats?id=` (0 once the channel is gone).
    async fn subscriber_count(&self, channel: &str) -> (u64, String) {
        let (status, count, text) = self.subscribers(channel).await;
        match status {
            StatusCode::OK => (
                count.unwrap_or_else(|| panic!("no subscribers in {text}")),
                text,
            ),
            StatusCode::NOT_FOUND => (0, text),
            other => panic!("stats of {channel}: {other} {text}"),
        }
    }

    /// Polls until `channel` shows `n` subscribers (a channel that is gone shows 0), bounded by
    /// `limit`; returns the time it took.
    async fn wait_for_subscribers(&self, channel: &str, n: u64, limit: Duration) -> Duration {
        self.wait_subscribers_where(channel, limit, &n.to_string(), |status, count| {
            count == Some(n) || (n == 0 && status == StatusCode::NOT_FOUND)
        })
        .await
    }
}

impl Deref for Herald {
    type Target = HeraldProcess;

    fn deref(&self) -> &HeraldProcess {
        &self.process
    }
}

impl DerefMut for Herald {
    fn deref_mut(&mut self) -> &mut HeraldProcess {
        &mut self.process
    }
}

/// Publisher (stored) at `/pub`, stats, publisher without storage at `/pubns`, metrics, and
/// `extra_locations`.
fn child_config(server: &str, channels: &str, extra_locations: &str) -> String {
    format!(
        r#"
[server]
{server}

[channels]
{channels}
{BASE_LOCATIONS}
[[location]]
path = "/pubns"
match = "exact"
role = "publisher"
channels_path = "$arg_id"
store_messages = false

[[location]]
path = "/metrics"
match = "exact"
role = "metrics"

{extra_locations}
"#
    )
}

// ------------------------------------------------------------------------------------------------
// Raw HTTP/1.1 subscribers

/// Decodes a chunked body: the decoded bytes and whether the terminating chunk arrived.
fn decode_chunked(mut raw: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return Ok((out, false));
        };
        let size_text = String::from_utf8_lossy(&raw[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
        let size = usize::from_str_radix(&size_text, 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        let data_start = line_end + 2;
        if size == 0 {
            return Ok((out, raw.len() >= data_start + 2));
        }
        if raw.len() < data_start + size + 2 {
            return Ok((out, false));
        }
        out.extend_from_slice(&raw[data_start..data_start + size]);
        if &raw[data_start + size..data_start + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".to_string());
        }
        raw = &raw[data_start + size + 2..];
    }
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: herald-ops-test\r\n\r\n")
}

/// What one raw streaming subscriber saw.
struct RawOutcome {
    head: String,
    body: Vec<u8>,
    complete: bool,
    eof_at: Instant,
}

/// One subscriber of the 1000: connects, reads the head (reports on `connected`), reads until
/// `first` arrived (reports on `primed`), then reads to EOF.
async fn raw_streaming_subscriber(
    addr: SocketAddr,
    path: String,
    first: &'static str,
    connected: mpsc::UnboundedSender<()>,
    primed: mpsc::UnboundedSender<()>,
) -> Result<RawOutcome, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(get_request(&path).as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let (head, mut body) = raw::read_head(&mut stream).await?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected head: {head:?}"));
    }
    let _ = connected.send(());
    let mut buf = vec![0u8; 4096];
    let mut primed = Some(primed);
    loop {
        if primed.is_some() {
            let (decoded, _) = decode_chunked(&body)?;
            if String::from_utf8_lossy(&decoded).contains(first) {
                let _ = primed.take().unwrap().send(());
            }
        }
        let n = stream.read(&mut buf).await.map_err(|e| {
            format!(
                "read body: {e}; so far {:?}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let eof_at = Instant::now();
    let (decoded, complete) = decode_chunked(&body)?;
    Ok(RawOutcome {
        head,
        body: decoded,
        complete,
        eof_at,
    })
}

/// A subscriber that sends its GET and never reads, with a small receive buffer so that the server's
/// writes stall soon.
async fn non_reading_subscriber(addr: SocketAddr, path: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    stream
        .write_all(get_request(path).as_bytes())
        .await
        .expect("send GET");
    stream
}

/// `non_reading_subscriber` on `/sub/{channel}`, once the statistics count it.
async fn stuck_subscriber(herald: &Herald, channel: &str) -> TcpStream {
    let stream = non_reading_subscriber(herald.addr, &format!("/sub/{channel}")).await;
    herald
        .wait_for_subscribers(channel, 1, Duration::from_secs(5))
        .await;
    stream
}

/// Publishes `count` messages of `size` bytes to `channel` without storing them.
async fn publish_big(herald: &Herald, channel: &str, count: usize, size: usize) {
    for i in 0..count {
        let mut body = format!("{i:06}:").into_bytes();
        body.resize(size, b'x');
        herald.publish(&format!("/pubns?id={channel}"), body).await;
    }
}

// ------------------------------------------------------------------------------------------------
// Graceful shutdown

const SUBSCRIBERS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_a_thousand_streams_with_their_footer_and_exits_0() {
    let streaming = streaming_location("/sub/", "~text~\n", "footer_template = \"BYE\"");
    let mut herald = Herald::start(
        "drain.toml",
        &child_config("shutdown_timeout = \"5s\"", "", &streaming),
    )
    .await;
    let drain_time = Duration::from_secs(5);

    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel();
    let (primed_tx, mut primed_rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let path = format!("/sub/drain{}", i % 10);
        let task = raw_streaming_subscriber(
            herald.addr,
            path,
            "hello\n",
            connected_tx.clone(),
            primed_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(40), task)
                .await
                .unwrap_or_else(|_| Err("did not end within 40s".to_string()))
        }));
    }
    drop(connected_tx);
    drop(primed_tx);
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0..SUBSCRIBERS {
        if tokio::time::timeout_at(deadline, connected_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            let failures: Vec<String> = futures_util::future::join_all(
                tasks.into_iter().filter(|t| t.is_finished()).take(5),
            )
            .await
            .into_iter()
            .map(|r| match r {
                Ok(Err(e)) => e,
                other => format!("{:?}", other.map(|r| r.map(|o| o.head))),
            })
            .collect();
            panic!("only {n} of {SUBSCRIBERS} subscribers got a 200 head within 30s; failures: {failures:?}");
        }
    }
    let ok = poll_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let (_, _, text) = herald.get("/channels-stats").await;
            parse_json(&text)["subscribers"] == SUBSCRIBERS as u64
        },
    )
    .await;
    let (_, _, text) = herald.get("/channels-stats").await;
    assert!(ok, "stats never showed {SUBSCRIBERS} subscribers: {text}");

    // Every stream is live: one message on each of the 10 channels reaches all of them.
    for c in 0..10 {
        herald.publish(&format!("/pub?id=drain{c}"), "hello").await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in 0..SUBSCRIBERS {
        if tokio::time::timeout_at(deadline, primed_rx.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            panic!("only {n} of {SUBSCRIBERS} subscribers received the live message within 20s");
        }
    }

    let signalled = Instant::now();
    herald.signal(libc::SIGTERM);
    let status = herald
        .wait_exit(drain_time + Duration::from_secs(2))
        .await
        .unwrap_or_else(|| {
            panic!(
                "herald did not exit within {:?} of SIGTERM; stderr:\n{}",
                drain_time + Duration::from_secs(2),
                herald.log_text()
            )
        });
    let exited_after = signalled.elapsed();

    let mut last_close = signalled;
    let mut failures = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Err(_) => failures.push(format!("subscriber {i}: still open 10s after exit")),
            Ok(Err(e)) => failures.push(format!("subscriber {i}: task failed: {e}")),
            Ok(Ok(Err(e))) => failures.push(format!("subscriber {i}: {e}")),
            Ok(Ok(Ok(outcome))) => {
                last_close = last_close.max(outcome.eof_at);
                let body = String::from_utf8_lossy(&outcome.body);
                if body != "hello\nBYE" || !outcome.complete {
                    failures.push(format!(
                        "subscriber {i}: body {body:?} (terminating chunk: {}); head {:?}",
                        outcome.complete, outcome.head
                    ));
                }
            }
        }
    }
    let drained_in = last_close.duration_since(signalled);
    eprintln!(
        "graceful shutdown with {SUBSCRIBERS} streaming subscribers: last connection closed {drained_in:?} after SIGTERM; process exited after {exited_after:?} with {status:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {SUBSCRIBERS} subscribers did not end cleanly with the footer; first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}; stderr:\n{}",
        herald.log_text()
    );
    assert!(
        exited_after <= drain_time + Duration::from_secs(1),
        "exit took {exited_after:?}, shutdown_timeout is {drain_time:?}"
    );
    assert!(
        drained_in <= drain_time,
        "the last connection closed {drained_in:?} after SIGTERM (shutdown_timeout {drain_time:?})"
    );
}

/// A stream whose footer cannot be written (its client never reads and the socket buffers are
/// full) holds the drain for up to `shutdown_timeout` (30s); a second signal exits at once.
async fn second_signal_exits_during_the_drain(second: i32, name: &str) {
    let streaming = streaming_location("/sub/", "~text~\n", "footer_template = \"BYE\"");
    let mut herald = Herald::start(
        name,
        &child_config(
            "shutdown_timeout = \"30s\"\nsend_timeout = \"60s\"",
            "",
            &streaming,
        ),
    )
    .await;
    let _stuck = stuck_subscriber(&herald, "stuck").await;
    publish_big(&herald, "stuck", 128, 64 * 1024).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let first = Instant::now();
    herald.signal(libc::SIGTERM);
    herald
        .wait_for_log("shutting down", 0, Duration::from_secs(5))
        .await;
    if let Some(status) = herald.wait_exit(Duration::from_millis(1500)).await {
        panic!(
            "premise failed: herald exited ({status:?}) {:?} after the first SIGTERM although a stream could not be drained; stderr:\n{}",
            first.elapsed(),
            herald.log_text()
        );
    }
    let second_at = Instant::now();
    herald.signal(second);
    let status = herald
        .wait_exit(Duration::from_secs(3))
        .await
        .unwrap_or_else(|| {
            panic!(
                "herald still running 3s after the second signal ({second}); stderr:\n{}",
                herald.log_text()
            )
        });
    eprintln!(
        "second signal ({second}) during the drain: exited after {:?} ({status:?}); {:?} after the first SIGTERM",
        second_at.elapsed(),
        first.elapsed()
    );
    assert!(
        first.elapsed() < Duration::from_secs(10),
        "exit took {:?} after the first signal",
        first.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_during_drain_exits_at_once() {
    second_signal_exits_during_the_drain(libc::SIGTERM, "twice-term.toml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_after_sigterm_during_drain_exits_at_once() {
    second_signal_exits_during_the_drain(libc::SIGINT, "term-int.toml").await;
}

// ------------------------------------------------------------------------------------------------
// Clients that stop reading

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_timeout_cuts_off_a_subscriber_that_never_reads() {
    let streaming = streaming_location("/sub/", "~text~\n", "");
    let herald = Herald::start(
        "send-timeout.toml",
        &child_config("send_timeout = \"1s\"", "", &streaming),
    )
    .await;
    let before = scrape(&herald).await;
    let dead = [("reason", "send_timeout")];
    // A reading subscriber on the same channel must not be affected.
    let mut reader = herald.subscribe_ok("/sub/slow").await;
    let _stuck = non_reading_subscriber(herald.addr, "/sub/slow").await;
    herald
        .wait_for_subscribers("slow", 2, Duration::from_secs(5))
        .await;

    let published = Instant::now();
    let reader_task = tokio::spawn(async move {
        let mut total = 0usize;
        let body = reader.read_until("000063:", Duration::from_secs(20)).await;
        total += body.len();
        total
    });
    publish_big(&herald, "slow", 64, 64 * 1024).await;
    let publish_took = published.elapsed();
    let took = herald
        .wait_for_subscribers("slow", 1, Duration::from_secs(8))
        .await;
    eprintln!(
        "send_timeout = 1s: 64 x 64KB published in {publish_took:?}; the non-reading subscriber was cut off {:?} after publishing began",
        publish_took + took
    );
    let received = tokio::time::timeout(Duration::from_secs(20), reader_task)
        .await
        .expect("reading subscriber did not get every message")
        .expect("reader task");
    assert!(received >= 63 * 64 * 1024, "reader got {received} bytes");

    let after = scrape(&herald).await;
    let cut = after.value("herald_dead_connections_total", &dead)
        - before.value("herald_dead_connections_total", &dead);
    assert!(
        cut >= 1.0,
        "herald_dead_connections_total{{reason=\"send_timeout\"}} grew by {cut}; scrape:\n{}",
        after.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_cut_off_by_the_send_timeout_despite_a_lag_limit() {
    let streaming = streaming_location("/sub/", "~text~\n", "");
    // A client that stops reading entirely is never polled again, so the lag limit (checked when the
    // subscription is read) cannot see it: the send timeout cuts it off, and until then it costs
    // only its socket buffers (messages are not queued per subscriber).
    let herald = Herald::start(
        "lag.toml",
        &child_config(
            "send_timeout = \"2s\"",
            "subscriber_lag_limit = 8",
            &streaming,
        ),
    )
    .await;
    let _stuck = stuck_subscriber(&herald, "lag").await;
    let started = Instant::now();
    publish_big(&herald, "lag", 128, 64 * 1024).await;
    // Keep publishing small messages while waiting: the subscriber is 100+ messages behind.
    let mut n = 0;
    let cut = loop {
        let (count, text) = herald.subscriber_count("lag").await;
        if count == 0 {
            break Some(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(6) {
            eprintln!("lag: still subscribed after 6s: {text}");
            break None;
        }
        herald.publish("/pubns?id=lag", format!("small {n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let metrics = scrape(&herald).await;
    let slow = metrics.value("herald_slow_consumers_total", &[]);
    eprintln!(
        "subscriber_lag_limit = 8: non-reading subscriber cut off after {cut:?}; herald_slow_consumers_total = {slow}"
    );
    assert!(
        cut.is_some(),
        "a subscriber that never reads and is 128+ messages behind was still subscribed 6s later (send_timeout = 2s); herald_slow_consumers_total = {slow}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_the_lag_limit_gets_the_footer_when_it_reads_again() {
    let streaming = streaming_location("/sub/", "~text~\n", "footer_template = \"CUT\"");
    let herald = Herald::start(
        "lag-resume.toml",
        &child_config(
            "send_timeout = \"60s\"",
            "subscriber_lag_limit = 8",
            &streaming,
        ),
    )
    .await;
    let mut stream = stuck_subscriber(&herald, "lagr").await;
    publish_big(&herald, "lagr", 128, 64 * 1024).await;
    // Now read again: the server's writes resume, it notices the lag and ends the response (the
    // connection itself may stay open for keep-alive, so read until the terminating chunk).
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended = false;
    while !raw.ends_with(b"\r\n0\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                ended = true;
                break;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("reading the lagging stream: {e}"),
            Err(_) => break,
        }
    }
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let (body, complete) = decode_chunked(&raw[head_end..]).expect("chunked body");
    let body = String::from_utf8_lossy(&body);
    let tail: String = body.chars().skip(body.len().saturating_sub(40)).collect();
    assert!(
        complete,
        "the lagging stream did not end within 10s of reading again (EOF: {ended}); {} bytes, tail {tail:?}",
        body.len()
    );
    assert!(
        body.ends_with("CUT") && complete,
        "a lagging subscriber must get the footer and a complete body; tail {tail:?}, complete {complete}"
    );
    assert!(
        !body.contains("000127:"),
        "the lagging subscriber still received the last message: the lag limit did not apply"
    );
    herald
        .wait_for_subscribers("lagr", 0, Duration::from_secs(5))
        .await;
    let metrics = scrape(&herald).await;
    assert!(
        metrics.require("herald_slow_consumers_total", &[]) >= 1.0,
        "herald_slow_consumers_total; scrape:\n{}",
        metrics.text
    );
}

// ------------------------------------------------------------------------------------------------
// Reload

/// Runs `herald reload PID` (bounded by 10 s).
async fn herald_reload(pid: i32) -> std::process::Output {
    tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(BIN)
            .args(["reload", &pid.to_string()])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("herald reload did not finish within 10s")
    .expect("run herald reload")
}

fn reload_config(template: &str) -> String {
    let streaming = streaming_location("/sub/", template, "");
    child_config("shutdown_timeout = \"2s\"", "", &streaming)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_herald_reload_apply_a_new_config_to_new_connections_only() {
    let mut herald = Herald::start("reload.toml", &reload_config("OLD:~text~\n")).await;
    let mut a = herald.subscribe_ok("/sub/r").await;
    herald
        .wait_for_subscribers("r", 1, Duration::from_secs(5))
        .await;

    // SIGHUP with a new template.
    herald.config.write(&reload_config("NEW:~text~\n"));
    let since = herald.log_len();
    herald.signal(libc::SIGHUP);
    herald
        .wait_for_log("configuration reloaded", since, WAIT)
        .await;
    let mut b = herald.subscribe_ok("/sub/r").await;
    herald
        .wait_for_subscribers("r", 2, Duration::from_secs(5))
        .await;
    herald.publish("/pub?id=r", "one").await;
    assert_eq!(a.read_until("\n", WAIT).await, "OLD:one\n");
    assert_eq!(b.read_until("\n", WAIT).await, "NEW:one\n");

    // `herald reload PID` with another template.
    herald.config.write(&reload_config("NEWER:~text~\n"));
    let since = herald.log_len();
    let out = herald_reload(herald.pid).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("is valid; asked process"),
        "{out:?}"
    );
    assert!(
        out.status.success(),
        "herald reload {}: {:?}; stderr: {}",
        herald.pid,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    herald
        .wait_for_log("configuration reloaded", since, WAIT)
        .await;
    let mut d = herald.subscribe_ok("/sub/r").await;
    herald
        .wait_for_subscribers("r", 3, Duration::from_secs(5))
        .await;
    herald.publish("/pub?id=r", "two").await;
    assert_eq!(a.read_until("\n", WAIT).await, "OLD:two\n");
    assert_eq!(b.read_until("\n", WAIT).await, "NEW:two\n");
    assert_eq!(d.read_until("\n", WAIT).await, "NEWER:two\n");

    // An invalid file is refused and the running configuration stays.
    herald.config.write(
        "[channels]\nbogus_reload_key = 1\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n",
    );
    let since = herald.log_len();
    herald.signal(libc::SIGHUP);
    let line = herald.wait_for_log("reload refused", since, WAIT).await;
    assert!(
        line.contains("bogus_reload_key"),
        "the refusal should name the offending key: {line}"
    );
    assert!(
        line.contains("ERROR"),
        "a refused reload is logged as an error: {line}"
    );
    // `herald reload PID` validates the file the process runs from before signalling: refused,
    // exit 1, nothing sent (the server logs no new reload).
    let since = herald.log_len();
    let out = herald_reload(herald.pid).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("bogus_reload_key") && stderr.contains("nothing sent"),
        "{stderr}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !herald.log_text_since(since).contains("reload"),
        "nothing was sent: {}",
        herald.log_text_since(since)
    );
    let mut c = herald.subscribe_ok("/sub/r").await;
    herald
        .wait_for_subscribers("r", 4, Duration::from_secs(5))
        .await;
    herald.publish("/pub?id=r", "three").await;
    assert_eq!(c.read_until("\n", WAIT).await, "NEWER:three\n");
    assert_eq!(a.read_until("\n", WAIT).await, "OLD:three\n");
    assert_eq!(b.read_until("\n", WAIT).await, "NEW:three\n");
    assert_eq!(d.read_until("\n", WAIT).await, "NEWER:three\n");
    let (status, _, _) = herald.get("/pub?id=r").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the old publisher location still serves"
    );

    herald.signal(libc::SIGTERM);
    let status = herald
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("herald did not exit within 5s of SIGTERM");
    assert!(
        status.success(),
        "{status:?}; stderr:\n{}",
        herald.log_text()
    );
}

// ------------------------------------------------------------------------------------------------
// The open-file limit (issue 14)

/// `GET path` on a new connection: the response head, or why there is none within `WAIT` (a
/// client left hanging).
async fn head_of_new_request(addr: SocketAddr, path: &str) -> Result<(String, TcpStream), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(get_request(path).as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    match tokio::time::timeout(WAIT, raw::read_head(&mut stream)).await {
        Err(_) => Err(format!("no answer to GET {path} within {WAIT:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok((head, _))) => Ok((head, stream)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_file_limit_new_clients_get_503_and_healthz_still_answers() {
    const OPEN_FILES: u64 = 256;
    let config = TempFile::new(
        "open-files.toml",
        &child_config(
            "max_connections = 1000\nheader_read_timeout = \"60s\"",
            "",
            &streaming_location("/sub/", "~text~\n", ""),
        ),
    );
    let mut herald = HeraldProcess::start_with_open_file_limit(
        &["--config", config.path(), "--listen", "127.0.0.1:0"],
        OPEN_FILES,
    )
    .await;
    // The start log states the capacity the limit leaves and warns that max_connections is more.
    let line = herald.wait_for_log("connection capacity", 0, WAIT).await;
    let capacity: u64 = line
        .split("connection capacity ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no capacity in {line:?}"));
    assert!(
        capacity > 100 && capacity < OPEN_FILES,
        "capacity {capacity} with {OPEN_FILES} descriptors: {line}"
    );
    herald
        .wait_for_log(
            &format!(
                "server.max_connections = 1000 is more than the connection capacity {capacity}"
            ),
            0,
            WAIT,
        )
        .await;

    // Subscribers until the server refuses: every client gets an answer, none hangs.
    let mut held = Vec::new();
    let refusal = loop {
        assert!(
            held.len() as u64 <= capacity,
            "{} subscribers admitted with a capacity of {capacity}",
            held.len()
        );
        let (head, stream) = head_of_new_request(herald.addr, "/sub/fd")
            .await
            .unwrap_or_else(|e| panic!("client {}: {e}", held.len() + 1));
        if !head.starts_with("HTTP/1.1 200") {
            break head;
        }
        held.push(stream);
    };
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("Limit: max_connections."), "{refusal}");
    assert_eq!(
        held.len() as u64,
        capacity,
        "refusals start at the capacity"
    );
    // At the limit: new clients keep getting 503, a client that sends nothing too, and /healthz
    // answers 200.
    for i in 0..40 {
        let (head, _) = head_of_new_request(herald.addr, "/sub/more")
            .await
            .unwrap_or_else(|e| panic!("new client {i} at the limit: {e}"));
        assert!(head.starts_with("HTTP/1.1 503"), "new client {i}: {head}");
    }
    let mut silent = TcpStream::connect(herald.addr).await.expect("connect");
    let reply = raw::read_to_close(&mut silent, Vec::new(), WAIT).await;
    assert_eq!(
        reply.status(),
        Some(503),
        "a silent client: {:?}",
        reply.shown()
    );
    for _ in 0..5 {
        let (head, _) = head_of_new_request(herald.addr, "/healthz")
            .await
            .unwrap_or_else(|e| panic!("/healthz at the limit: {e}"));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "/healthz at the limit: {head}"
        );
    }
    // Two leave: a publish gets through (on one freed slot) to the subscribers still held, and a
    // new subscriber is admitted (on the other).
    held.truncate(held.len() - 2);
    let published = poll_until(WAIT, Duration::from_millis(50), || async {
        herald.publish("fd", "still here", &[]).await.0 == StatusCode::OK
    })
    .await;
    assert!(published, "a freed slot must let a publish through");
    let reply = raw::read_to_close(&mut held[0], Vec::new(), Duration::from_millis(500)).await;
    assert!(reply.text().contains("still here"), "{:?}", reply.text());
    let admitted = poll_until(WAIT, Duration::from_millis(50), || async {
        head_of_new_request(herald.addr, "/sub/fd")
            .await
            .is_ok_and(|(head, _)| head.starts_with("HTTP/1.1 200"))
    })
    .await;
    assert!(admitted, "a freed slot must admit a new subscriber");
    drop(held);
    assert!(herald.terminate().await.success(), "{}", herald.log_text());
}
