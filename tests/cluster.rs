//! Several Herald nodes sharing channels through Redis (`[engine] kind = "redis"`), each node a
//! separate `herald` process with its own config file, against real `redis-server` processes
//! (tests/common/redis.rs): cross-node delivery on every transport, recovery from Redis history on a
//! node that never saw the publish, a Redis restart in the middle of a stream, one shard down,
//! cluster-wide statistics and limits, DELETE and the events channel across nodes.
//!
//! Every wait is bounded. A failing test prints the stderr of every node it started.

mod common;

use common::http::fetch;
use common::messages::{event, json_lines};
use common::process::BIN;
use common::redis::{channels_on_shard, shard_of, RedisCluster, RedisServer};
use common::{
    client, header, parse_json, poll_until, sse, ws, Cursor, Http, Subscriber, EXPLAIN, RECOVERY,
    WAIT,
};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The nodes' `[engine] command_timeout`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The nodes' `[engine] heartbeat_interval`.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The nodes' `[engine] node_timeout`.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default config's long-polling/polling message template (JSON lines).
const JSON_LINE: &str = "{\"id\": ~id~, \"channel\": \"~channel-json~\", \"text\": \"~text-json~\", \"time\": \"~time~\", \"tag\": ~tag~}\n";

// ---------------------------------------------------------------------------------------------
// Nodes

/// What every node of one test shares: the Redis URLs, the key prefix, extra `[channels]` lines and
/// extra locations.
#[derive(Clone)]
struct Cluster {
    test: String,
    redis_urls: Vec<String>,
    channels: String,
    locations: String,
    /// A whole config to use instead of the generated one (`{PORT}` and `{NODE}` replaced).
    raw_config: Option<String>,
    /// `redis_urls` are the seeds of one Redis Cluster.
    redis_cluster: bool,
}

impl Cluster {
    /// Nodes on `shards` (one Redis URL per shard, in order), with a key prefix unique to `test`.
    fn new(test: &str, shards: &[&RedisServer]) -> Cluster {
        Cluster {
            test: test.to_string(),
            redis_urls: shards.iter().map(|r| r.url()).collect(),
            channels: String::new(),
            locations: String::new(),
            raw_config: None,
            redis_cluster: false,
        }
    }

    /// Nodes on one Redis Cluster (`[engine] cluster = true`, its nodes as seeds).
    fn on_redis_cluster(test: &str, redis: &RedisCluster) -> Cluster {
        Cluster {
            redis_urls: redis.urls(),
            redis_cluster: true,
            ..Cluster::new(test, &[])
        }
    }

    /// Runs every node from `config/examples/cluster.toml`, pointed at this test's Redis and key
    /// prefix, with `{PORT}` as its listen port.
    fn example(mut self) -> Cluster {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/cluster.toml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let urls = self
            .redis_urls
            .iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let replaced = text
            .replace(
                "redis_urls = [\"redis://127.0.0.1:6379/0\"]",
                &format!("redis_urls = [{urls}]"),
            )
            .replace(
                "key_prefix = \"herald\"",
                &format!("key_prefix = {:?}", self.key_prefix()),
            )
            .replace(
                "listen = \"127.0.0.1:8081\"",
                "listen = \"127.0.0.1:{PORT}\"",
            );
        assert!(
            replaced.contains("{PORT}") && !replaced.contains("6379/0\"]"),
            "config/examples/cluster.toml no longer has the lines this test adapts"
        );
        self.raw_config = Some(replaced);
        self
    }

    /// Extra `[channels]` lines.
    fn channels(mut self, lines: &str) -> Cluster {
        self.channels = lines.to_string();
        self
    }

    /// Extra `[[location]]`s.
    fn locations(mut self, toml: &str) -> Cluster {
        self.locations = toml.to_string();
        self
    }

    fn key_prefix(&self) -> String {
        format!("herald-{}-{}", self.test, std::process::id())
    }

    /// The config of node `name` listening on `port`: the default config's shapes (publisher `/pub`,
    /// stats `/channels-stats`, `/sub/`, `/ev/`, `/lp/`, `/poll/`, `/ws/`, `/metrics`) on the Redis
    /// engine.
    fn config(&self, name: &str, port: u16) -> String {
        if let Some(raw) = &self.raw_config {
            return raw
                .replace("{PORT}", &port.to_string())
                .replace("{NODE}", name);
        }
        let urls = self
            .redis_urls
            .iter()
            .map(|u| format!("{u:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let prefix = self.key_prefix();
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let (command_timeout, heartbeat, node_timeout) =
            (ms(COMMAND_TIMEOUT), ms(HEARTBEAT), ms(NODE_TIMEOUT));
        let channels = &self.channels;
        let locations = &self.locations;
        let cluster_mode = self.redis_cluster;
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_timeout = "1s"
send_timeout = "30s"

[channels]
message_ttl = "30m"
max_messages_stored_per_channel = 100
max_channel_id_length = 200
ping_message_text = " "
channel_deleted_message_text = "Channel deleted"
channel_inactivity_time = "30s"
{channels}

[engine]
kind = "redis"
redis_urls = [{urls}]
cluster = {cluster_mode}
key_prefix = "{prefix}"
node_name = "{name}"
command_timeout = "{command_timeout}"
heartbeat_interval = "{heartbeat}"
node_timeout = "{node_timeout}"

[[location]]
path = "/pub"
match = "exact"
role = "publisher"
admin = true
channels_path = "$arg_id"
store_messages = true

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"
channels_path = "$arg_id"

[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "~text~\n"
ping_message_interval = "10s"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
ping_message_interval = "10s"

[[location]]
path = "/lp/"
role = "subscriber"
mode = "long-polling"
message_template = {JSON_LINE:?}
longpolling_connection_ttl = "30s"
content_type = "application/json"

[[location]]
path = "/poll/"
role = "subscriber"
mode = "polling"
message_template = {JSON_LINE:?}
content_type = "application/json"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
ping_message_interval = "10s"

[[location]]
path = "/metrics"
match = "exact"
role = "metrics"

{locations}
"#
        )
    }

    /// Starts node `name` and waits until it answers `GET /healthz`.
    async fn node(&self, name: &str) -> HeraldNode {
        HeraldNode::start(self, name).await
    }

    /// Nodes `node-a` and `node-b`, started one after the other.
    async fn two_nodes(&self) -> (HeraldNode, HeraldNode) {
        (self.node("node-a").await, self.node("node-b").await)
    }
}

/// One `herald` process. Killed (SIGKILL) when dropped; its stderr goes to a file that is printed
/// when the test fails.
struct HeraldNode {
    name: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    http: Http,
}

impl HeraldNode {
    async fn start(cluster: &Cluster, name: &str) -> HeraldNode {
        // Herald binds port 0 and names the port it got in its "listening on" line: a port picked
        // free beforehand could be taken by another test's server before this one binds, and a
        // health check on it would then reach that server.
        static NEXT_NODE: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herald-cluster-{}-{}-{name}-{}",
            std::process::id(),
            cluster.test,
            NEXT_NODE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {dir:?}: {e}"));
        let config_file = dir.join("herald.toml");
        std::fs::write(&config_file, cluster.config(name, 0))
            .unwrap_or_else(|e| panic!("write {config_file:?}: {e}"));
        let stderr = std::fs::File::create(dir.join("stderr.log"))
            .unwrap_or_else(|e| panic!("create stderr.log in {dir:?}: {e}"));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_file)
            .env(
                "RUST_LOG",
                // The harness reads the port from the "listening on" line (info level).
                std::env::var("RUST_LOG")
                    .map(|filter| format!("{filter},herald=info"))
                    .unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start herald node {name}: {e}"));
        let mut node = HeraldNode {
            name: name.to_string(),
            port: 0,
            dir,
            child: Some(child),
            http: Http::labelled(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                &format!("node {name}: "),
            ),
        };
        let started = async {
            node.port = node.wait_listening(Duration::from_secs(15)).await?;
            node.http = Http::labelled(
                SocketAddr::from(([127, 0, 0, 1], node.port)),
                &format!("node {name}: "),
            );
            node.wait_healthy(Duration::from_secs(15)).await
        };
        if let Err(problem) = started.await {
            panic!(
                "herald node {name} did not start: {problem}\n--- stderr ---\n{}",
                node.stderr()
            );
        }
        node
    }

    /// Waits for the "listening on http://127.0.0.1:PORT" line; Err when the process exits or
    /// `limit` passes.
    async fn wait_listening(&mut self, limit: Duration) -> Result<u16, String> {
        const LINE: &str = "listening on http://127.0.0.1:";
        let deadline = Instant::now() + limit;
        loop {
            let log = self.stderr();
            if let Some(at) = log.find(LINE) {
                let digits: String = log[at + LINE.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return digits
                    .parse()
                    .map_err(|e| format!("cannot read the port in {log:?}: {e}"));
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(format!("no {LINE:?} line within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Err when the process has exited.
    fn check_running(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("the process exited with {status}"));
            }
        }
        Ok(())
    }

    /// Polls `/healthz` until 200; Err when the process exits or `limit` passes.
    async fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_running()?;
            let answer = self
                .client
                .get(self.url("/healthz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if let Ok(response) = answer {
                if response.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no 200 from /healthz within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `http://127.0.0.1:PORT` (for background tasks).
    fn base(&self) -> String {
        self.url("")
    }

    /// What the process wrote to stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /metrics` (asserting 200).
    async fn metrics(&self) -> String {
        let (status, _, text) = self.get("/metrics").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "node {}: /metrics: {text}",
            self.name
        );
        text
    }

    /// Publishes `body` with `Event-Id: event_id` and asserts 200.
    async fn publish_ok(&self, channel: &str, body: &str, event_id: Option<&str>) {
        let headers: Vec<(&str, &str)> = event_id.map(|e| ("Event-Id", e)).into_iter().collect();
        let (status, _, text) = self.publish(channel, body, &headers).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "node {}: publish {body:?} to {channel}: {text}",
            self.name
        );
    }

    /// Publishes `m{n}` with Event-Id `e{n}` for every `n` of `range`, each answered 200.
    async fn publish_events(&self, channel: &str, range: std::ops::RangeInclusive<usize>) {
        for n in range {
            self.publish_ok(channel, &format!("m{n}"), Some(&format!("e{n}")))
                .await;
        }
    }
}

impl Deref for HeraldNode {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Drop for HeraldNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.stderr();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- herald node {} (port {}) stderr, last {} lines ({}) ----\n{}\n---- end of node {} ----",
                self.name,
                self.port,
                tail.len(),
                self.dir.join("stderr.log").display(),
                tail.join("\n"),
                self.name
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading what subscribers received

/// The text lines of a streaming body with `~text~\n` (ping lines, " ", dropped).
fn stream_lines(raw: &str) -> Vec<String> {
    raw.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `m1`..`m{n}` as expected texts.
fn texts(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|n| format!("m{n}")).collect()
}

fn text_of(v: &Value) -> String {
    v["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

/// The EventSource (id, data) of `m{n}` published with Event-Id `e{n}`, for `n` in `range`.
fn events_of(range: std::ops::RangeInclusive<usize>) -> Vec<(Option<String>, String)> {
    range
        .map(|n| (Some(format!("e{n}")), format!("m{n}")))
        .collect()
}

/// What a chain of (long-)polls collected: the messages and the last point (Last-Modified, Etag).
#[derive(Debug)]
struct Chain {
    messages: Vec<Value>,
    last: Cursor,
    requests: usize,
}

/// Chains requests to `base{path}` (each with the previous answer's point; the first from `start`)
/// until `want` messages arrived or `deadline`; `pause` between requests (polling).
async fn chain(
    base: String,
    path: String,
    start: Cursor,
    want: usize,
    pause: Duration,
    deadline: Instant,
) -> Chain {
    let client = client();
    let url = format!("{base}{path}");
    let mut point = start;
    let mut out = Chain {
        messages: Vec::new(),
        last: Cursor::default(),
        requests: 0,
    };
    while out.messages.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{url}: only {} of {want} messages before the deadline: {:?}",
            out.messages.len(),
            out.messages
        );
        let answer = fetch(&client, &url, &point.headers(), left).await;
        out.requests += 1;
        match answer.status {
            StatusCode::OK => {
                out.messages.extend(json_lines(&answer.body));
                point = answer.cursor();
                out.last = point.clone();
            }
            StatusCode::NOT_MODIFIED => {
                if !answer.header("Etag").is_empty() {
                    point = answer.cursor();
                }
            }
            other => panic!(
                "{url} with {point:?}: unexpected {other}: {:?} (collected so far: {:?})",
                answer.body, out.messages
            ),
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    out
}

/// Reads an EventSource subscriber up to the event with data `last`; returns every event so far.
async fn sse_until(
    sub: &mut Subscriber,
    last: &str,
    wait: Duration,
) -> Vec<(Option<String>, String)> {
    let raw = sub.read_until(&format!("data: {last}\n\n"), wait).await;
    sse::ids_and_data(&raw)
}

/// Subscribes on `node` to the EventSource `path` with `headers` (asserting 200), reads up to the
/// event with data `last`, then asserts 300 ms of silence; returns the subscriber and the events.
async fn recovered(
    node: &HeraldNode,
    path: &str,
    headers: &[(&str, &str)],
    last: &str,
) -> (Subscriber, Vec<(Option<String>, String)>) {
    let mut sub = node.subscribe_ok_with(path, headers).await;
    let got = sse_until(&mut sub, last, WAIT).await;
    sub.expect_quiet(Duration::from_millis(300)).await;
    (sub, got)
}

/// A spawned task, aborted when dropped: a failing test does not leave it running against dead nodes.
struct Background<T>(Option<tokio::task::JoinHandle<T>>);

impl<T: Send + 'static> Background<T> {
    fn spawn(task: impl std::future::Future<Output = T> + Send + 'static) -> Background<T> {
        Background(Some(tokio::spawn(task)))
    }

    /// Waits (at most `limit`) for the result; panics with `what` on timeout or failure.
    async fn join(mut self, limit: Duration, what: &str) -> T {
        let handle = self.0.take().expect("joined once");
        tokio::time::timeout(limit, handle)
            .await
            .unwrap_or_else(|_| panic!("{what}: no result within {limit:?}"))
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }
}

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// A publisher tally of test 3.
#[derive(Default, Debug)]
struct Tally {
    accepted: Vec<(usize, Instant)>,
    /// Accepted as a replay (`Idempotent-Replayed`): an earlier attempt had gone out.
    replayed: Vec<usize>,
    unavailable: usize,
    /// 503s saying Redis may have taken the publish.
    unsure: usize,
    transport_errors: usize,
    unexpected: Vec<String>,
    first_failure: Option<Instant>,
    last_failure: Option<Instant>,
}

impl Tally {
    fn failed(&mut self) {
        let now = Instant::now();
        self.first_failure.get_or_insert(now);
        self.last_failure = Some(now);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Delivery

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_node_delivery_every_transport() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("delivery", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    const N: usize = 20;
    let deadline = Instant::now() + Duration::from_secs(20);

    // Subscribers on B on every transport, long-polls on A and B.
    let mut stream = b.subscribe_ok("/sub/news").await;
    let mut events = b.subscribe_ok("/ev/news").await;
    let mut ws = b.websocket("/ws/news").await;
    let epoch = Cursor::epoch();
    // The long-poll chains start from "everything": what they get does not depend on when their
    // first request reaches the node.
    let lp_b = Background::spawn(chain(
        b.base(),
        "/lp/news".into(),
        epoch.clone(),
        N,
        Duration::ZERO,
        deadline,
    ));
    let lp_a = Background::spawn(chain(
        a.base(),
        "/lp/news".into(),
        epoch.clone(),
        N,
        Duration::ZERO,
        deadline,
    ));
    let poll_b = Background::spawn(chain(
        b.base(),
        "/poll/news".into(),
        epoch.clone(),
        N,
        Duration::from_millis(20),
        deadline,
    ));
    // Streaming, EventSource and WebSocket on B are attached.
    b.wait_subscribers("news", WAIT, "at least 3", |n| n >= 3)
        .await;

    a.publish_events("news", 1..=N).await;

    // Streaming on B.
    let raw = stream.read_until(&format!("m{N}\n"), WAIT).await;
    stream.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(stream_lines(&raw), texts(1..=N), "streaming on B: {raw:?}");
    // EventSource on B: ids and texts.
    let got = sse_until(&mut events, &format!("m{N}"), WAIT).await;
    events.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(
        got,
        events_of(1..=N),
        "EventSource on B: {:?}",
        events.received()
    );
    // WebSocket on B.
    let frames = ws::texts(&mut ws, N, WAIT).await;
    ws::expect_quiet(&mut ws, Duration::from_millis(300)).await;
    assert_eq!(frames, texts(1..=N), "WebSocket on B");
    // Long-polling on A and B, polling on B.
    let limit = Duration::from_secs(25);
    let lp_b = lp_b.join(limit, "long-poll chain on B").await;
    let lp_a = lp_a.join(limit, "long-poll chain on A").await;
    let poll_b = poll_b.join(limit, "poll chain on B").await;
    for (what, c) in [
        ("long-polling on B", &lp_b),
        ("long-polling on A", &lp_a),
        ("polling on B", &poll_b),
    ] {
        let got: Vec<String> = c.messages.iter().map(text_of).collect();
        assert_eq!(got, texts(1..=N), "{what}: {c:?}");
    }
    // Ids, times and tags come from Redis: the same on both nodes.
    assert_eq!(
        lp_a.messages, lp_b.messages,
        "long-poll messages (id, time, tag) on A vs B"
    );
    assert_eq!(
        lp_a.last, lp_b.last,
        "Last-Modified/Etag of the last long-poll answer on A vs B"
    );
    assert_eq!(
        lp_b.messages, poll_b.messages,
        "long-poll vs poll messages on B"
    );
    let ids: Vec<u64> = lp_b
        .messages
        .iter()
        .map(|m| m["id"].as_u64().unwrap_or_else(|| panic!("no id in {m}")))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // Everything stored, polled on each node: the same answer.
    let poll_a_all = fetch(&client(), &a.url("/poll/news"), &epoch.headers(), WAIT).await;
    let poll_b_all = fetch(&client(), &b.url("/poll/news"), &epoch.headers(), WAIT).await;
    assert_eq!(poll_a_all.status, StatusCode::OK, "{poll_a_all:?}");
    assert_eq!(poll_b_all.status, StatusCode::OK, "{poll_b_all:?}");
    assert_eq!(
        json_lines(&poll_a_all.body),
        json_lines(&poll_b_all.body),
        "stored messages polled on A vs B"
    );
    for name in ["Last-Modified", "Etag"] {
        assert_eq!(
            header(&poll_a_all.headers, name),
            header(&poll_b_all.headers, name),
            "{name} of a poll on A vs B"
        );
    }
    assert_eq!(
        header(&poll_b_all.headers, "Etag"),
        lp_b.last.etag,
        "poll vs long-poll Etag"
    );
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// 2. Recovery from Redis history

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_on_other_node() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("recovery", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    a.publish_events("hist", 1..=10).await;

    // Last-Event-ID on B.
    let (sub, got) = recovered(&b, "/ev/hist", &[("Last-Event-ID", "e4")], "m10").await;
    assert_eq!(
        got,
        events_of(5..=10),
        "Last-Event-ID: e4 on B: {:?}",
        sub.received()
    );
    assert_eq!(
        header(&sub.headers, RECOVERY),
        "complete",
        "{RECOVERY} with Last-Event-ID"
    );
    drop(sub);

    // Backtrack on B.
    let (sub, got) = recovered(&b, "/ev/hist.b5", &[], "m10").await;
    assert_eq!(got, events_of(6..=10), ".b5 on B: {:?}", sub.received());
    drop(sub);

    // If-Modified-Since + If-None-Match of m7 (as A's poll shows it) on B.
    let all = fetch(
        &client(),
        &a.url("/poll/hist"),
        &Cursor::epoch().headers(),
        WAIT,
    )
    .await;
    assert_eq!(
        all.status,
        StatusCode::OK,
        "poll of everything on A: {all:?}"
    );
    let stored = json_lines(&all.body);
    assert_eq!(
        stored.iter().map(text_of).collect::<Vec<_>>(),
        texts(1..=10),
        "{all:?}"
    );
    let m7 = &stored[6];
    let time = m7["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {m7}"));
    let tag = format!(
        "W/{}",
        m7["tag"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tag in {m7}"))
    );
    let (sub, got) = recovered(
        &b,
        "/ev/hist",
        &[("If-Modified-Since", time), ("If-None-Match", &tag)],
        "m10",
    )
    .await;
    assert_eq!(
        got,
        events_of(8..=10),
        "point of m7 ({time}, {tag}) on B: {:?}",
        sub.received()
    );
    assert_eq!(
        header(&sub.headers, RECOVERY),
        "complete",
        "{RECOVERY} with If-Modified-Since"
    );
    drop(sub);

    // Reconnect: live on B, 5 received, gone, 5 more published on A, back on B from the last id.
    let mut sub = b.subscribe_ok("/ev/recon").await;
    b.wait_subscribers("recon", WAIT, "at least 1", |n| n >= 1)
        .await;
    a.publish_events("recon", 1..=5).await;
    let got = sse_until(&mut sub, "m5", WAIT).await;
    assert_eq!(
        got,
        events_of(1..=5),
        "live on B before the disconnect: {:?}",
        sub.received()
    );
    let last_id = got.last().and_then(|(id, _)| id.clone()).expect("an id");
    drop(sub);
    a.publish_events("recon", 6..=10).await;
    let (mut sub, got) = recovered(&b, "/ev/recon", &[("Last-Event-ID", &last_id)], "m10").await;
    assert_eq!(
        got,
        events_of(6..=10),
        "reconnect on B with Last-Event-ID {last_id}: {:?}",
        sub.received()
    );
    // And it is live again.
    a.publish_ok("recon", "m11", Some("e11")).await;
    let got = sse_until(&mut sub, "m11", WAIT).await;
    assert_eq!(got, events_of(11..=11), "live after the reconnect");
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// 3. Redis restart in the middle of a stream

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_mid_stream_no_loss() {
    const N: usize = 200;
    let mut redis = RedisServer::start_persistent();
    let cluster = Cluster::new("restart", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    let mut sub = b.subscribe_ok("/sub/flow").await;
    b.wait_subscribers("flow", WAIT, "1", |n| n >= 1).await;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (tally, accepted, base) = (tally.clone(), accepted.clone(), a.base());
        Background::spawn(async move {
            let client = client();
            let deadline = Instant::now() + Duration::from_secs(35);
            for n in 1..=N {
                loop {
                    assert!(
                        Instant::now() < deadline,
                        "publisher: m{n} not accepted before the deadline; tally: {:?}",
                        tally.lock().unwrap()
                    );
                    // Every attempt of m{n} carries the same key: an attempt Redis took although
                    // its answer was lost (the kill) is not published again by the retry.
                    let answer = client
                        .post(format!("{base}/pub?id=flow"))
                        .header("Idempotency-Key", format!("m{n}"))
                        .timeout(COMMAND_TIMEOUT * 3)
                        .body(format!("m{n}"))
                        .send()
                        .await;
                    let status = match answer {
                        Ok(r) => {
                            let status = r.status();
                            let replayed = header(r.headers(), "Idempotent-Replayed");
                            let explain = header(r.headers(), EXPLAIN);
                            let body = r.text().await.unwrap_or_default();
                            let mut seen = tally.lock().unwrap();
                            if replayed == "true" {
                                seen.replayed.push(n);
                            }
                            if explain.contains("Unknown whether Redis took the publish") {
                                seen.unsure += 1;
                            }
                            if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE
                            {
                                seen.unexpected.push(format!("m{n}: {status} {body}"));
                            }
                            drop(seen);
                            Some(status)
                        }
                        Err(_) => None,
                    };
                    match status {
                        Some(StatusCode::OK) => {
                            tally.lock().unwrap().accepted.push((n, Instant::now()));
                            accepted.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Some(StatusCode::SERVICE_UNAVAILABLE) => {
                            let mut tally = tally.lock().unwrap();
                            tally.unavailable += 1;
                            tally.failed();
                        }
                        Some(_) => tally.lock().unwrap().failed(),
                        None => {
                            let mut tally = tally.lock().unwrap();
                            tally.transport_errors += 1;
                            tally.failed();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Midway: kill Redis, wait ~1 s, start it again (same port, same data).
    let midway = Instant::now() + Duration::from_secs(15);
    while accepted.load(Ordering::SeqCst) < N / 2 {
        assert!(
            Instant::now() < midway,
            "publisher never reached m{}: {:?}",
            N / 2,
            tally.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed_at = Instant::now();
    let accepted_at_kill = accepted.load(Ordering::SeqCst);
    redis.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| redis.restart());
    let restarted_at = Instant::now();

    publisher
        .join(Duration::from_secs(40), "the publisher on A")
        .await;
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let numbers: Vec<usize> = tally.accepted.iter().map(|(n, _)| *n).collect();
    let first_after_restart = tally
        .accepted
        .iter()
        .find(|(_, at)| *at > restarted_at)
        .map(|(n, at)| (*n, *at - restarted_at));
    println!(
        "redis_restart_mid_stream_no_loss: {} accepted ({} as replays: {:?}), {} answers 503 ({} of them unsure), {} transport errors, {} unexpected answers; \
         Redis killed after {accepted_at_kill} accepted and down for {:?}; publisher saw failures for {:?} \
         (first {:?}, last {:?} after the kill); first accept after the restart: (number, delay) {:?}",
        numbers.len(),
        tally.replayed.len(),
        tally.replayed,
        tally.unavailable,
        tally.unsure,
        tally.transport_errors,
        tally.unexpected.len(),
        restarted_at - killed_at,
        tally.first_failure.zip(tally.last_failure).map(|(f, l)| l - f),
        tally.first_failure.map(|f| f.saturating_duration_since(killed_at)),
        tally.last_failure.map(|l| l.saturating_duration_since(killed_at)),
        first_after_restart,
    );
    assert!(
        tally.unexpected.is_empty(),
        "answers other than 200/503: {:?}",
        tally.unexpected
    );
    assert_eq!(
        numbers,
        (1..=N).collect::<Vec<_>>(),
        "every number is eventually accepted once"
    );

    // The subscriber on B: every accepted message exactly once, in order, on the same connection.
    let raw = sub
        .read_until(&format!("m{N}\n"), Duration::from_secs(15))
        .await;
    sub.expect_quiet(Duration::from_millis(500)).await;
    assert!(!sub.ended(), "the stream on B ended");
    let received: Vec<usize> = stream_lines(&raw)
        .iter()
        .map(|l| {
            l.strip_prefix('m')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?} in {raw:?}"))
        })
        .collect();
    let missing: Vec<usize> = numbers
        .iter()
        .copied()
        .filter(|n| !received.contains(n))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let duplicated: Vec<usize> = received
        .iter()
        .copied()
        .filter(|n| !seen.insert(*n))
        .collect();
    println!(
        "redis_restart_mid_stream_no_loss: subscriber on B received {} lines, {} missing, {} duplicated",
        received.len(),
        missing.len(),
        duplicated.len()
    );
    assert!(
        missing.is_empty() && duplicated.is_empty(),
        "subscriber on B: missing {missing:?}, duplicated {duplicated:?}; received {received:?}"
    );
    assert_eq!(received, numbers, "subscriber on B: order");
    drop((a, b));
}

/// A publish Redis takes only after Herald gave up waiting: the 503 says the outcome is unknown,
/// and the retry with the same Idempotency-Key is answered as a replay; the subscriber gets the
/// message once. (Redis is paused longer than command_timeout, so the script waits in Redis'
/// queue and runs when the pause ends, before the retries queued behind it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_outcome_then_retry_with_the_key_is_a_replay() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("paused", &[&redis]);
    let a = cluster.node("node-a").await;
    let mut sub = a.subscribe_ok("/sub/paused").await;
    a.wait_subscribers("paused", WAIT, "1", |n| n >= 1).await;
    let keyed = |key: &'static str| [("Idempotency-Key", key)];
    let (status, _, body) = a.publish("paused", "m1", &keyed("k1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let pause = COMMAND_TIMEOUT * 5 / 2;
    let paused = redis.cli(&["CLIENT", "PAUSE", &pause.as_millis().to_string(), "ALL"]);
    assert!(paused.contains("OK"), "CLIENT PAUSE: {paused:?}");
    let (status, _, body) = a.publish("paused", "m2", &keyed("k2")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("Unknown whether Redis took the publish")
            && body.contains("Retry with the same Idempotency-Key"),
        "{body}"
    );
    // Retry until answered (the shard may count as down for a moment after the pause).
    let deadline = Instant::now() + Duration::from_secs(15);
    let replayed = loop {
        let (status, headers, body) = a.publish("paused", "m2", &keyed("k2")).await;
        if status == StatusCode::OK {
            break header(&headers, "Idempotent-Replayed");
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "no 200 for the retry: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replayed, "true", "the script had run when the pause ended");
    let info = a.channel_info("paused").await.expect("the channel exists");
    assert_eq!(info["published_messages"], 2, "{info}");
    let raw = sub.read_until("m2\n", WAIT).await;
    sub.expect_quiet(Duration::from_millis(500)).await;
    assert_eq!(stream_lines(&raw), ["m1", "m2"], "{raw:?}");
}

/// Keys left behind by a channel whose other keys went (evicted, or deleted by hand) belong to no
/// channel: when a subscriber re-creates the channel, a publish with such a key is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_of_a_vanished_channel_do_not_replay_on_its_successor() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("vanished", &[&redis]);
    let a = cluster.node("node-a").await;
    let keyed = [("Idempotency-Key", "k-old")];
    let (status, _, body) = a.publish("gone", "old", &keyed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let prefix = cluster.key_prefix();
    let removed = redis.cli(&[
        "DEL",
        &format!("{prefix}:{{gone}}:m"),
        &format!("{prefix}:{{gone}}:l"),
    ]);
    assert_eq!(removed.trim(), "2", "the channel's meta and log keys");
    assert_eq!(
        redis
            .cli(&["EXISTS", &format!("{prefix}:{{gone}}:k")])
            .trim(),
        "1",
        "its idempotency keys are left"
    );
    // A subscriber re-creates the channel (a new incarnation, from id 1).
    let mut sub = a.subscribe_ok("/sub/gone").await;
    a.wait_subscribers("gone", WAIT, "1", |n| n >= 1).await;
    let (status, headers, body) = a.publish("gone", "new", &keyed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        header(&headers, "Idempotent-Replayed"),
        "",
        "{headers:?} {body}"
    );
    assert_eq!(parse_json(&body)["published_messages"], 1, "{body}");
    assert_eq!(stream_lines(&sub.read_until("new\n", WAIT).await), ["new"]);
}

// ---------------------------------------------------------------------------------------------
// 4. One shard down

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shard_down_503_only_its_channels() {
    let shard0 = RedisServer::start();
    let mut shard1 = RedisServer::start();
    let cluster = Cluster::new("shards", &[&shard0, &shard1]);
    let a = cluster.node("node-a").await;
    let on0 = channels_on_shard("s0-", 0, 2, 1).remove(0);
    let on1 = channels_on_shard("s1-", 1, 2, 2);
    let (on1, on1_sub) = (on1[0].clone(), on1[1].clone());
    assert_eq!((shard_of(&on0, 2), shard_of(&on1, 2)), (0, 1));
    a.publish_ok(&on0, "before", None).await;
    a.publish_ok(&on1, "before", None).await;
    let (status, _, body) = a.get("/readyz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "/readyz with both shards up: {body}"
    );

    shard1.kill();
    let slack = Duration::from_millis(300);
    for attempt in 1..=3 {
        let started = Instant::now();
        let (status, headers, body) = a.publish(&on1, &format!("down{attempt}"), &[]).await;
        let took = started.elapsed();
        println!("shard_down: publish #{attempt} to {on1} (shard 1, down): {status} in {took:?}: {body:?}");
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "publish to {on1} on the dead shard: {body}"
        );
        let lower = body.to_lowercase();
        assert!(
            lower.contains("shard") || lower.contains("redis"),
            "the 503 body should name the shard and the reason: {body:?} (explain header {:?})",
            header(&headers, EXPLAIN)
        );
        // It says whether the message went out: surely not (the connection was refused), or
        // unknown (the connection broke while Redis had the script).
        assert!(
            body.contains("Nothing was published.")
                || body.contains("Unknown whether Redis took the publish"),
            "the 503 should say what became of the message: {body:?}"
        );
        assert!(
            took <= COMMAND_TIMEOUT + slack,
            "503 took {took:?}, command_timeout is {COMMAND_TIMEOUT:?}"
        );
    }
    // The other shard is unaffected.
    let started = Instant::now();
    a.publish_ok(&on0, "during", None).await;
    assert!(
        started.elapsed() <= COMMAND_TIMEOUT,
        "publish to shard 0 took {:?}",
        started.elapsed()
    );
    // Subscribing to a channel on the dead shard: 503.
    let mut refused = a.subscribe_with(&format!("/sub/{on1_sub}"), &[]).await;
    let status = refused.status;
    let body = if status == StatusCode::OK {
        refused.received()
    } else {
        refused.read_to_end(WAIT).await
    };
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "subscribe to {on1_sub} on the dead shard: {body:?}"
    );
    drop(refused);
    // Metrics: shard 1 down (once the listener noticed), the failed publishes counted by outcome.
    let down = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { metric(&a.metrics().await, "herald_redis_shard_up{shard=\"1\"}") == Some(0.0) },
    )
    .await;
    let metrics = a.metrics().await;
    assert!(
        down,
        "herald_redis_shard_up{{shard=\"1\"}} never 0: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "herald_redis_shard_up{shard=\"0\"}"),
        Some(1.0),
        "{metrics}"
    );
    let failures = metric(
        &metrics,
        "herald_redis_publish_failures_total{outcome=\"unknown\"}",
    )
    .unwrap_or(0.0)
        + metric(
            &metrics,
            "herald_redis_publish_failures_total{outcome=\"not_published\"}",
        )
        .unwrap_or(0.0);
    assert_eq!(
        failures, 3.0,
        "three publishes to the dead shard: {metrics}"
    );
    // Not ready while a shard is down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = a.get("/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            println!("shard_down: /readyz while shard 1 is down: {body:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body:?} 5 s after shard 1 died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tokio::task::block_in_place(|| shard1.restart());
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(10);
    loop {
        let (status, _, body) = a.get("/readyz").await;
        if status == StatusCode::OK {
            println!(
                "shard_down: /readyz 200 again {:?} after the restart",
                restarted.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} {body:?} 10 s after shard 1 came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.publish_ok(&on1, "after", None).await;
    a.publish_ok(&on0, "after", None).await;
    let metrics = a.metrics().await;
    assert_eq!(
        metric(&metrics, "herald_redis_shard_up{shard=\"1\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "herald_redis_reconnects_total").unwrap_or(0.0) >= 1.0,
        "a reconnection to shard 1 is counted: {metrics}"
    );
    drop(a);
}

/// The value of the series `name{labels}` (written exactly as the exporter does) in a scrape.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// 5. Statistics across nodes

/// The `by_worker` entries of a summary as (node, subscribers).
fn workers(summary: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = summary["by_worker"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|w| {
                    (
                        w["node"].as_str().unwrap_or("<no node>").to_string(),
                        w["subscribers"].as_u64().unwrap_or(u64::MAX),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Polls the summary of `node` until `ok` (bounded); returns it.
async fn wait_summary(
    node: &HeraldNode,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, _, text) = node.get("/channels-stats").await;
        if status == StatusCode::OK {
            let doc = parse_json(&text);
            if ok(&doc) {
                return doc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {}: summary never showed {what} within {limit:?}; last: {status} {text}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_stats() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("stats", &[&redis]);
    let (a, mut b) = cluster.two_nodes().await;
    let _a1 = a.subscribe_ok("/sub/room").await;
    let _a2 = a.subscribe_ok("/sub/room").await;
    let b1 = b.subscribe_ok("/ev/room").await;
    let limit = HEARTBEAT * 2 + Duration::from_secs(3);
    a.wait_subscribers("room", limit, "3 (2 on A + 1 on B)", |n| n == 3)
        .await;
    b.wait_subscribers("room", limit, "3 (2 on A + 1 on B)", |n| n == 3)
        .await;
    let both = vec![("node-a".to_string(), 2), ("node-b".to_string(), 1)];
    for node in [&a, &b] {
        let summary = wait_summary(node, limit, "by_worker node-a: 2, node-b: 1", |s| {
            workers(s) == both
        })
        .await;
        assert_eq!(
            summary["subscribers"], 3,
            "summary subscribers on {}: {summary}",
            node.name
        );
        assert!(
            summary["channels"].as_u64().unwrap_or(0) >= 1,
            "summary channels: {summary}"
        );
    }

    // Node B dies: its subscriber stops counting within node_timeout (+ a heartbeat).
    b.kill();
    let killed = Instant::now();
    drop(b1);
    let limit = NODE_TIMEOUT + HEARTBEAT + Duration::from_secs(2);
    a.wait_subscribers("room", limit, "2 after node B died", |n| n == 2)
        .await;
    let took = killed.elapsed();
    let summary = wait_summary(
        &a,
        Duration::from_secs(2),
        "only node-a in by_worker",
        |s| workers(s) == vec![("node-a".to_string(), 2)],
    )
    .await;
    println!("cluster_stats: node B's subscriber stopped counting {took:?} after the kill (node_timeout {NODE_TIMEOUT:?})");
    assert_eq!(summary["subscribers"], 2, "{summary}");
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// 6. DELETE

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_reaches_all_nodes() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("delete", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    let mut on_a = a.subscribe_ok("/sub/doomed").await;
    let mut on_b = b.subscribe_ok("/sub/doomed").await;
    let mut ws_b = b.websocket("/ws/doomed").await;
    a.wait_subscribers("doomed", WAIT, "at least 1", |n| n >= 1)
        .await;
    b.wait_subscribers("doomed", WAIT, "at least 2", |n| n >= 2)
        .await;
    a.publish_ok("doomed", "hello", None).await;
    on_a.read_until("hello\n", WAIT).await;
    on_b.read_until("hello\n", WAIT).await;
    assert_eq!(ws::texts(&mut ws_b, 1, WAIT).await, ["hello"]);

    let (status, headers, body) = a.request(Method::DELETE, "/pub?id=doomed", "", &[]).await;
    assert_eq!(status, StatusCode::OK, "DELETE on A: {body}");
    assert_eq!(header(&headers, EXPLAIN), "Channel deleted.");
    for (what, sub) in [("on A", &mut on_a), ("on B", &mut on_b)] {
        sub.read_until("Channel deleted\n", WAIT).await;
        let rest = sub.read_to_end(WAIT).await;
        assert!(
            stream_lines(&rest).is_empty(),
            "stream {what} after the deleted message: {rest:?}"
        );
    }
    assert_eq!(
        ws::texts(&mut ws_b, 1, WAIT).await,
        ["Channel deleted"],
        "WebSocket on B"
    );
    ws::expect_close(&mut ws_b, CloseCode::Normal).await;
    // Gone everywhere (stats and channel info), within a heartbeat or so.
    for node in [&a, &b] {
        let deadline = Instant::now() + HEARTBEAT * 2 + Duration::from_secs(2);
        loop {
            let (stats, _, text) = node.get("/channels-stats?id=doomed").await;
            let (info, _, info_text) = node.get("/pub?id=doomed").await;
            if stats == StatusCode::NOT_FOUND && info == StatusCode::NOT_FOUND {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {}: after DELETE, stats {stats} {text:?}, channel info {info} {info_text:?} (expected 404 both)",
                node.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // History gone from Redis: a backtrack on B finds nothing stored.
    let all = fetch(
        &client(),
        &b.url("/poll/doomed"),
        &Cursor::epoch().headers(),
        WAIT,
    )
    .await;
    assert!(
        json_lines(&all.body).is_empty(),
        "poll after DELETE on B: {all:?}"
    );
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// 7. Events channel

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_channel_across_nodes() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("events", &[&redis])
        .channels("events_channel_id = \"events\"")
        .locations(
            "[[location]]\npath = \"/events/\"\nrole = \"subscriber\"\nmode = \"streaming\"\nmessage_template = \"~text~\\n\"\nallow_connections_to_events_channel = true\n",
        );
    let (a, b) = cluster.two_nodes().await;
    let mut events = b.subscribe_ok("/events/events").await;
    b.wait_subscribers("events", WAIT, "at least 1", |n| n >= 1)
        .await;

    // A subscriber on A creates `fresh` and joins it.
    let fresh = a.subscribe_ok("/sub/fresh").await;
    events
        .read_until(&event("channel_created", "fresh"), WAIT)
        .await;
    events
        .read_until(&event("client_subscribed", "fresh"), WAIT)
        .await;
    // A publish on A creates `born`.
    a.publish_ok("born", "x", None).await;
    events
        .read_until(&event("channel_created", "born"), WAIT)
        .await;
    // The subscriber on A leaves.
    drop(fresh);
    events
        .read_until(&event("client_unsubscribed", "fresh"), WAIT)
        .await;
    drop((a, b));
}

// ---------------------------------------------------------------------------------------------
// 8. Subscriber limit across nodes

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_subscribers_cluster_wide() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("limit", &[&redis]).channels("max_subscribers_per_channel = 2");
    max_subscribers_hold(&cluster).await;
}

/// The same on a Redis Cluster (whose RESP3 replies give hashes as maps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_max_subscribers_hold_across_nodes() {
    let redis = tokio::task::block_in_place(|| RedisCluster::start(3));
    let cluster =
        Cluster::on_redis_cluster("rclimit", &redis).channels("max_subscribers_per_channel = 2");
    max_subscribers_hold(&cluster).await;
}

/// One subscriber on A and one on B with a limit of 2: a third on either node is refused; once
/// one leaves, a new one gets in.
async fn max_subscribers_hold(cluster: &Cluster) {
    let (a, b) = cluster.two_nodes().await;
    let on_a = a.subscribe_ok("/sub/capped").await;
    let _on_b = b.subscribe_ok("/sub/capped").await;
    // Let each node hear the other's heartbeat.
    tokio::time::sleep(HEARTBEAT * 2 + Duration::from_millis(200)).await;
    for node in [&a, &b] {
        let mut third = node.subscribe_with("/sub/capped", &[]).await;
        let status = third.status;
        let body = if status == StatusCode::OK {
            third.received()
        } else {
            third.read_to_end(WAIT).await
        };
        let (_, count, stats) = node.subscribers("capped").await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "third subscriber on {} (1 on A + 1 on B, limit 2): {body:?}; stats there: {count:?} {stats}",
            node.name
        );
        assert!(
            body.contains("max_subscribers_per_channel"),
            "the 403 names the limit: {body:?}"
        );
    }
    // One leaves: a new one on A is admitted again (bounded).
    drop(on_a);
    let deadline = Instant::now() + HEARTBEAT * 2 + Duration::from_secs(2);
    loop {
        let mut again = a.subscribe_with("/sub/capped", &[]).await;
        if again.status == StatusCode::OK {
            break;
        }
        let body = again.read_to_end(WAIT).await;
        assert!(
            Instant::now() < deadline,
            "after one subscriber left, a new one on A is still refused: {} {body:?}",
            again.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a, b));
}

/// The acceptance of the issue: `config/examples/cluster.toml` runs two nodes against one Redis; a
/// message published on node A reaches EventSource subscribers on node B; after a reconnect on B,
/// Last-Event-ID recovery gives exactly what was missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_cluster_config_runs_two_nodes() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("example", &[&redis]).example();
    let (a, b) = cluster.two_nodes().await;

    let mut sub = b.subscribe_ok("/ev/news").await;
    b.wait_subscribers("news", WAIT, "the subscriber on B", |n| n == 1)
        .await;
    a.publish_events("news", 1..=3).await;
    let got = sse_until(&mut sub, "m3", WAIT).await;
    assert_eq!(
        got,
        events_of(1..=3),
        "EventSource on B: {:?}",
        sub.received()
    );
    drop(sub);

    // Missed while disconnected, then recovered on B with the last id it saw.
    a.publish_events("news", 4..=6).await;
    let (sub, got) = recovered(&b, "/ev/news", &[("Last-Event-ID", "e3")], "m6").await;
    assert_eq!(got, events_of(4..=6), "recovery on B: {:?}", sub.received());
    assert_eq!(header(&sub.headers, RECOVERY), "complete");
}

/// Redis Cluster (3 masters, sharded pub/sub): channels spread over the cluster's nodes; a message
/// published on node A reaches subscribers on node B on every channel, recovery works on B, and the
/// statistics count every channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_shares_channels_across_nodes() {
    let redis = tokio::task::block_in_place(|| RedisCluster::start(3));
    let cluster = Cluster::on_redis_cluster("rcluster", &redis);
    let (a, b) = cluster.two_nodes().await;
    for node in [&a, &b] {
        let ready = poll_until(WAIT, Duration::from_millis(50), || async {
            node.get("/readyz").await.0 == StatusCode::OK
        })
        .await;
        assert!(
            ready,
            "{} not ready: {:?}",
            node.name,
            node.get("/readyz").await
        );
    }
    let channels: Vec<String> = (0..12).map(|n| format!("rc{n}")).collect();
    let mut subs = Vec::new();
    for channel in &channels {
        subs.push(b.subscribe_ok(&format!("/sub/{channel}")).await);
    }
    for channel in &channels {
        b.wait_subscribers(channel, WAIT, "B's subscriber", |n| n == 1)
            .await;
    }
    for n in 1..=5 {
        for channel in &channels {
            a.publish_ok(channel, &format!("{channel}-m{n}"), None)
                .await;
        }
    }
    for (channel, sub) in channels.iter().zip(subs.iter_mut()) {
        let got = sub.read_until(&format!("{channel}-m5\n"), WAIT).await;
        let want: String = (1..=5).map(|n| format!("{channel}-m{n}\n")).collect();
        assert_eq!(got, want, "subscriber of {channel} on B");
    }
    // The keys are spread over the cluster's masters.
    let holding = redis
        .nodes
        .iter()
        .filter(|n| n.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap_or(0) > 0)
        .count();
    assert!(
        holding >= 2,
        "channels should spread over the masters; {holding} hold keys"
    );
    // Recovery on B from history in the cluster.
    let mut sub = b.subscribe_ok(&format!("/sub/{}.b2", channels[0])).await;
    let got = sub.read_until(&format!("{}-m5\n", channels[0]), WAIT).await;
    assert_eq!(got, format!("{0}-m4\n{0}-m5\n", channels[0]));
    // Cluster-wide statistics on A.
    let summary = a.stats("").await;
    assert_eq!(summary["channels"], 12, "{summary}");
    assert_eq!(summary["published_messages"], 60, "{summary}");
    // Delete on A ends B's subscriber.
    let (status, _, body) = a
        .request(Method::DELETE, &format!("/pub?id={}", channels[1]), "", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rest = subs[1].read_to_end(WAIT).await;
    assert!(rest.contains("Channel deleted"), "{rest:?}");
}

/// Redis restarts *without* its data: the channels a node followed are gone from Redis, but nobody
/// deleted them, so their subscribers stay subscribed and receive what is published after the
/// restart on the same connection (the channel starts again from id 1); publishing works again at
/// once, and a DELETE still ends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_without_data_keeps_followed_channels() {
    let mut redis = RedisServer::start();
    let cluster = Cluster::new("lost", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    let mut sub = b.subscribe_ok("/sub/lost").await;
    b.wait_subscribers("lost", WAIT, "1", |n| n == 1).await;
    a.publish_ok("lost", "before", None).await;
    assert_eq!(sub.read_until("before\n", WAIT).await, "before\n");

    tokio::task::block_in_place(|| {
        redis.kill();
        redis.restart();
    });
    let ready = poll_until(WAIT, Duration::from_millis(50), || async {
        a.get("/readyz").await.0 == StatusCode::OK && b.get("/readyz").await.0 == StatusCode::OK
    })
    .await;
    assert!(ready, "nodes not ready again after the restart");
    let accepted = poll_until(WAIT, Duration::from_millis(50), || async {
        a.publish("lost", "after", &[]).await.0 == StatusCode::OK
    })
    .await;
    assert!(accepted, "publish after the restart");
    assert_eq!(
        sub.read_until("after\n", WAIT).await,
        "after\n",
        "B's subscriber after Redis lost its data"
    );
    let info = a
        .channel_info("lost")
        .await
        .expect("the channel exists again");
    assert_eq!(info["published_messages"], 1, "{info}");
    // A delete is still a delete.
    let (status, _, body) = a.delete("lost", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rest = sub.read_to_end(WAIT).await;
    assert!(rest.contains("Channel deleted"), "{rest:?}");
}

/// A channel deleted while a node's pub/sub connection was down is still a delete, not a loss: the
/// node's catch-up finds the mark the delete left in Redis, and its subscribers get the DELETE's
/// channel-deleted text (their stream ends) instead of staying on a channel nobody publishes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_missed_while_cut_off_still_ends_subscribers() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("missed-delete", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    let mut sub = b.subscribe_ok("/sub/gone").await;
    b.wait_subscribers("gone", WAIT, "1", |n| n == 1).await;
    a.publish_ok("gone", "before", None).await;
    assert_eq!(sub.read_until("before\n", WAIT).await, "before\n");
    // Every pub/sub connection drops; the nodes wait (100 ms at least) before they connect again,
    // and the delete lands meanwhile: B does not hear its announcement.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let (status, _, body) = a.delete("gone", "Gone for good").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rest = sub.read_to_end(Duration::from_secs(10)).await;
    assert!(
        rest.contains("Gone for good"),
        "B's subscriber after a delete it did not hear: {rest:?}"
    );
}

/// Concurrent publishes share round trips to Redis: the node writes them to its shard connection
/// together, so Redis reads many publish scripts per read from the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_share_round_trips() {
    const PUBLISHES: usize = 1000;
    let redis = RedisServer::start();
    let cluster = Cluster::new("pipeline", &[&redis]);
    let a = cluster.node("node-a").await;
    a.publish_ok("warm", "up", None).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let client = client();
    let results = futures_util::stream::iter(0..PUBLISHES)
        .map(|n| {
            let (client, url) = (client.clone(), a.url(&format!("/pub?id=p{}", n % 16)));
            async move {
                client
                    .post(url)
                    .timeout(WAIT)
                    .body(format!("m{n}"))
                    .send()
                    .await
                    .map(|r| r.status())
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let ok = results
        .iter()
        .filter(|r| matches!(r, Ok(s) if *s == StatusCode::OK))
        .count();
    assert_eq!(ok, PUBLISHES, "every publish answered 200");
    let stat = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| {
                v.trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .map(str::to_string)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in {text:?}"))
    };
    let commands = redis.cli(&["INFO", "commandstats"]);
    let scripts = stat(&commands, "cmdstat_evalsha:calls=");
    let reads = stat(&redis.cli(&["INFO", "stats"]), "total_reads_processed:");
    println!("pipelining: {scripts} publish scripts arrived in {reads} socket reads");
    assert!(
        scripts >= PUBLISHES as u64,
        "{scripts} scripts for {PUBLISHES} publishes"
    );
    assert!(
        reads * 5 < scripts * 4,
        "concurrent publishes should share reads: {scripts} scripts in {reads} reads"
    );
}

/// A subscribe request that goes away while Redis is slow leaves nothing behind: the node does not
/// keep following the channel (no pub/sub subscription, no growing buffer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_subscribe_leaves_no_subscription() {
    let redis = RedisServer::start();
    let cluster = Cluster::new("abandon", &[&redis]);
    let a = cluster.node("node-a").await;
    a.publish_ok("other", "x", None).await;
    redis.cli(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let answer = client()
        .get(a.url("/lp/abandoned"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        answer.is_err(),
        "the request should time out while Redis is paused"
    );
    let gone = poll_until(
        Duration::from_secs(6),
        Duration::from_millis(100),
        || async {
            !redis
                .cli(&["PUBSUB", "CHANNELS", "*abandoned*"])
                .contains("abandoned")
        },
    )
    .await;
    assert!(
        gone,
        "still subscribed after the request went away: {:?}",
        redis.cli(&["PUBSUB", "CHANNELS", "*"])
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Redis restarted without its data (no AOF, no RDB)

/// One publish of the attack: its number, when it was answered and how.
#[derive(Debug, Clone)]
struct Attempt {
    n: usize,
    answered: Instant,
    status: Option<StatusCode>,
}

/// How many times each text came.
fn counts(texts: &[String]) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for text in texts {
        *counts.entry(text.clone()).or_insert(0) += 1;
    }
    counts
}

/// A long-poll chain on `/lp/flow` that goes on through 503s and lost connections (asking again
/// with the same point) until it receives `last`, or `deadline`; returns every text received.
async fn long_poll_until(base: String, last: &'static str, deadline: Instant) -> Vec<String> {
    let client = client();
    let url = format!("{base}/lp/flow");
    let mut point = Cursor::default();
    let mut got: Vec<String> = Vec::new();
    while !got.iter().any(|t| t == last) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "long-poll on A: no {last:?} before the deadline; received {got:?}"
        );
        let mut request = client.get(&url).timeout(left.min(Duration::from_secs(10)));
        if !point.last_modified.is_empty() {
            for (name, value) in point.headers() {
                request = request.header(name, value);
            }
        }
        match request.send().await {
            Ok(answer) if answer.status() == StatusCode::OK => {
                let cursor = Cursor {
                    last_modified: header(answer.headers(), "Last-Modified"),
                    etag: header(answer.headers(), "Etag"),
                };
                let body = answer.text().await.unwrap_or_default();
                got.extend(json_lines(&body).iter().map(text_of));
                point = cursor;
            }
            Ok(answer) if answer.status() == StatusCode::NOT_MODIFIED => {}
            // Redis down: 503 within command_timeout; ask again with the same point.
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    got
}

/// Reads a WebSocket's text frames until `last` (bounded by `deadline`).
async fn websocket_until(mut ws: common::ws::Ws, last: &str, deadline: Instant) -> Vec<String> {
    use tokio_tungstenite::tungstenite::Message;
    let mut got: Vec<String> = Vec::new();
    while !got.iter().any(|t| t == last) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("WebSocket on B: no {last:?} before the deadline; received {got:?}"),
            Ok(None) => panic!("WebSocket on B ended; received {got:?}"),
            Ok(Some(Err(e))) => panic!("WebSocket on B failed: {e}; received {got:?}"),
            Ok(Some(Ok(Message::Text(text)))) => got.push(text.as_str().to_string()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                panic!("WebSocket on B closed ({frame:?}); received {got:?}")
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    got
}

/// Issue 14, item 5, as it was attacked: two nodes on one Redis, a publisher at 100/s with
/// Event-Id, EventSource subscribers on both nodes (and a WebSocket and a long-poll chain), Redis
/// killed and restarted *without its data* 2 s later, an EventSource client reconnecting with the
/// Last-Event-ID it had before. A channel Redis forgot is not a channel the publisher deleted:
/// every subscriber stays subscribed and receives every message answered 200 after the restart
/// exactly once; the EventSource streams are told that the history before was lost (a
/// `: history-lost flow` comment), and the reconnecting client gets the new history from its start
/// with `X-Herald-Recovery: truncated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_empty_keeps_subscribers_and_loses_nothing_answered_after() {
    const N: usize = 400;
    const END: &str = "end";
    let mut redis = RedisServer::start();
    let cluster = Cluster::new("emptied", &[&redis]);
    let (a, b) = cluster.two_nodes().await;
    let mut ev_a = a.subscribe_ok("/ev/flow").await;
    let mut ev_b = b.subscribe_ok("/ev/flow").await;
    let mut leaving = b.subscribe_ok("/ev/flow").await;
    let ws_b = b.websocket("/ws/flow").await;
    a.wait_subscribers("flow", WAIT, "4", |n| n >= 4).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let long_poll = Background::spawn(long_poll_until(a.base(), END, deadline));
    let websocket = Background::spawn(websocket_until(ws_b, END, deadline));

    // The publisher: N publishes at 100/s, each sent once (no retry), each with an Event-Id.
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let publisher = {
        let (attempts, base) = (attempts.clone(), a.base());
        Background::spawn(async move {
            let client = client();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut sent = tokio::task::JoinSet::new();
            for n in 1..=N {
                tick.tick().await;
                let (client, attempts) = (client.clone(), attempts.clone());
                let url = format!("{base}/pub?id=flow");
                sent.spawn(async move {
                    let answer = client
                        .post(url)
                        .header("Event-Id", format!("e{n}"))
                        .timeout(COMMAND_TIMEOUT * 3)
                        .body(format!("m{n}"))
                        .send()
                        .await;
                    attempts.lock().unwrap().push(Attempt {
                        n,
                        answered: Instant::now(),
                        status: answer.ok().map(|r| r.status()),
                    });
                });
            }
            while sent.join_next().await.is_some() {}
        })
    };
    let accepted_after = |attempts: &Mutex<Vec<Attempt>>, since: Option<Instant>| {
        attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.status == Some(StatusCode::OK) && since.is_none_or(|s| a.answered > s))
            .count()
    };

    // The client that will come back reads a while, then goes away with its Last-Event-ID.
    let before_kill = poll_until(WAIT, Duration::from_millis(5), || async {
        accepted_after(&attempts, None) >= N / 4
    })
    .await;
    assert!(before_kill, "publisher: {:?}", attempts.lock().unwrap());
    let seen = sse_until(&mut leaving, "m20", WAIT).await;
    let last_event_id = seen
        .last()
        .and_then(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("no Event-Id in {seen:?}"));
    drop(leaving);

    let killed_at = Instant::now();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| redis.restart());
    let restarted_at = Instant::now();

    // It comes back once the new incarnation holds messages answered after the restart.
    let some_after = poll_until(
        Duration::from_secs(20),
        Duration::from_millis(10),
        || async { accepted_after(&attempts, Some(restarted_at)) >= 20 },
    )
    .await;
    assert!(
        some_after,
        "no publish accepted after the restart: {:?}",
        attempts.lock().unwrap()
    );
    let mut back = b
        .subscribe_ok_with("/ev/flow", &[("Last-Event-ID", last_event_id.as_str())])
        .await;
    let recovery = header(&back.headers, RECOVERY);

    publisher
        .join(Duration::from_secs(60), "the publisher on A")
        .await;
    let end_published = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { a.publish("flow", END, &[("Event-Id", END)]).await.0 == StatusCode::OK },
    )
    .await;
    assert!(end_published, "the end marker was never accepted");

    let attempts = std::mem::take(&mut *attempts.lock().unwrap());
    let ok: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status == Some(StatusCode::OK))
        .collect();
    let must: Vec<String> = ok
        .iter()
        .filter(|a| a.answered > restarted_at)
        .map(|a| format!("m{}", a.n))
        .collect();
    println!(
        "redis_restarted_empty: {} publishes, {} answered 200 ({} after the restart), {} not; Redis down {:?}",
        attempts.len(),
        ok.len(),
        must.len(),
        attempts.len() - ok.len(),
        restarted_at - killed_at
    );

    let data =
        |raw: &str| -> Vec<String> { sse::events(raw).into_iter().map(|e| e.data).collect() };
    let limit = Duration::from_secs(30);
    let raw_a = ev_a.read_until("data: end\n\n", limit).await;
    let raw_b = ev_b.read_until("data: end\n\n", limit).await;
    let raw_back = back.read_until("data: end\n\n", limit).await;
    let streams = [
        ("EventSource on A", data(&raw_a)),
        ("EventSource on B", data(&raw_b)),
        ("EventSource on B, back with Last-Event-ID", data(&raw_back)),
        (
            "WebSocket on B",
            websocket.join(limit, "WebSocket on B").await,
        ),
        (
            "long-poll on A",
            long_poll.join(limit, "long-poll on A").await,
        ),
    ];
    for (name, texts) in &streams {
        let counts = counts(texts);
        let missing: Vec<&String> = must.iter().filter(|t| !counts.contains_key(*t)).collect();
        let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
        println!(
            "redis_restarted_empty: {name}: {} messages; of the {} answered after the restart {} missing; {} twice",
            texts.len(),
            must.len(),
            missing.len(),
            twice.len()
        );
        assert!(
            missing.is_empty() && twice.is_empty(),
            "{name}: missing {missing:?}, twice {twice:?}; received {texts:?}"
        );
        assert!(
            !texts.iter().any(|t| t == "Channel deleted"),
            "{name}: told the channel was deleted: {texts:?}"
        );
    }
    // The gap is told: in band on the EventSource streams that stayed, and in the recovery header
    // of the client that came back with a Last-Event-ID from before the restart.
    for (name, raw) in [("EventSource on A", &raw_a), ("EventSource on B", &raw_b)] {
        assert!(
            raw.contains(": history-lost flow\n"),
            "{name}: no history-lost comment in {raw:?}"
        );
    }
    assert_eq!(
        recovery, "truncated",
        "X-Herald-Recovery of the client back with Last-Event-ID {last_event_id}"
    );
    drop((a, b));
}
