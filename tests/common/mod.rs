//! Shared harness for Herald's integration tests: a real server on a real socket (`TestServer`),
//! request helpers (`http`: the `Http` client every harness derefs to, complete answers and
//! recovery points), a reader for long-lived subscriber responses (`Subscriber`) and bounded polling
//! of the statistics location. Submodules: `process` (the `herald` binary as a child), `raw` (HTTP
//! over a bare `TcpStream`), `ws` (WebSocket clients), `sse` (EventSource parsing), `messages`
//! (message formats, events, JSON lines, JSONP, refusals), `scenarios` (behaviours several suites
//! check alike), `redis` (real `redis-server`s). Every
//! wait is bounded; failures print what was received.

#![allow(dead_code)]

pub mod http;
pub mod messages;
pub mod process;
pub mod raw;
pub mod redis;
pub mod scenarios;
pub mod sse;
pub mod ws;

#[allow(unused_imports)]
pub use http::{Answer, Cursor, Http, EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Default bound for one wait (a response, a message, a stats condition).
pub const WAIT: Duration = Duration::from_secs(5);
/// The header that explains a refusal or an error.
pub const EXPLAIN: &str = "X-Nginx-PushStream-Explain";
/// The header that tells how a recovery point was honoured.
pub const RECOVERY: &str = "X-Herald-Recovery";

/// A config with `[channels]` set to `channels` (TOML lines), an admin publisher at `/pub`
/// (`$arg_id`), the statistics location at `/channels-stats`, then `locations` (more `[[location]]`s).
pub fn config(channels: &str, locations: &str) -> String {
    config_with_server("", channels, locations)
}

/// `config` with extra `[server]` lines.
pub fn config_with_server(server: &str, channels: &str, locations: &str) -> String {
    format!(
        r#"
[server]
shutdown_timeout = "2s"
{server}

[channels]
{channels}
{BASE_LOCATIONS}
{locations}
"#
    )
}

/// The admin publisher at `/pub` (`$arg_id`) and the statistics location at `/channels-stats`.
pub const BASE_LOCATIONS: &str = r#"
[[location]]
path = "/pub"
match = "exact"
role = "publisher"
admin = true
channels_path = "$arg_id"

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"
channels_path = "$arg_id"
"#;

/// A streaming subscriber location at `path` with `message_template`, plus any extra TOML lines.
pub fn streaming_location(path: &str, message_template: &str, extra: &str) -> String {
    format!(
        "[[location]]\npath = {path:?}\nrole = \"subscriber\"\nmode = \"streaming\"\nmessage_template = {message_template:?}\n{extra}\n"
    )
}

/// A Herald server running inside the test's runtime, on 127.0.0.1 and a free port. Derefs to an
/// `Http` client of it (`addr`, `client`, requests, publish, stats, subscribers).
pub struct TestServer {
    pub http: Http,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Parses `toml_config`, binds 127.0.0.1:0 and runs the server until `stop` or drop.
    pub async fn start(toml_config: &str) -> TestServer {
        let config = herald::Config::from_toml(toml_config, "test.toml", None)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml_config}"));
        TestServer::start_config(&config).await
    }

    /// Binds 127.0.0.1:0 with `config` and runs the server until `stop` or drop.
    pub async fn start_config(config: &herald::Config) -> TestServer {
        let server = herald::Server::bind(config, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap_or_else(|e| panic!("cannot bind the test server: {e}"));
        let addr = server.local_addr().expect("local address");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            http: Http::new(addr),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits (bounded) for the server task to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop within 10s")
                .expect("server task panicked");
        }
    }
}

impl Deref for TestServer {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A reqwest client without proxies and without a global timeout (streams are long-lived).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

/// Parses JSON or panics showing the text.
pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("invalid JSON ({e}): {text:?}"))
}

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// This process's resident set size in kB (`VmRSS` of /proc/self/status).
pub fn rss_kb() -> u64 {
    rss_kb_of("/proc/self/status")
}

/// The resident set size in kB in a `/proc/PID/status` file.
pub fn rss_kb_of(status_path: &str) -> u64 {
    let status =
        std::fs::read_to_string(status_path).unwrap_or_else(|e| panic!("{status_path}: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status_path}:\n{status}"))
}

/// Calls `check` every `interval` until it returns true or `limit` elapses; returns whether it did.
pub async fn poll_until<F, Fut>(limit: Duration, interval: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(interval).await;
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A long-lived response body read incrementally. `read_until` consumes text up to a needle;
/// `received` shows everything so far.
pub struct Subscriber {
    /// Request path (for messages).
    pub path: String,
    /// Response status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    stream: ByteStream,
    received: Vec<u8>,
    consumed: usize,
    ended: bool,
}

impl Subscriber {
    /// Wraps a response.
    pub fn new(path: &str, response: reqwest::Response) -> Subscriber {
        Subscriber {
            path: path.to_string(),
            status: response.status(),
            headers: response.headers().clone(),
            stream: Box::pin(response.bytes_stream()),
            received: Vec::new(),
            consumed: 0,
            ended: false,
        }
    }

    /// The `Content-Type` header, or "".
    pub fn content_type(&self) -> String {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }

    /// Everything received so far.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// True once the body ended cleanly.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads one more chunk before `deadline`. Returns false on timeout.
    async fn fill(&mut self, deadline: Instant, waiting_for: &str) -> bool {
        match tokio::time::timeout_at(deadline, self.stream.next()).await {
            Err(_) => false,
            Ok(Some(Ok(chunk))) => {
                self.received.extend_from_slice(&chunk);
                true
            }
            Ok(Some(Err(e))) => panic!(
                "{}: body error while waiting for {waiting_for}: {e}; received: {:?}",
                self.path,
                self.received()
            ),
            Ok(None) => {
                self.ended = true;
                true
            }
        }
    }

    /// Waits (at most `wait`) until the unconsumed text contains `needle`; returns the text up to and
    /// including it and consumes it. Panics with everything received on timeout or end of body.
    pub async fn read_until(&mut self, needle: &str, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let pending = &self.received[self.consumed..];
            if let Some(at) = find(pending, needle.as_bytes()) {
                let end = self.consumed + at + needle.len();
                let text = String::from_utf8_lossy(&self.received[self.consumed..end]).into_owned();
                self.consumed = end;
                return text;
            }
            if self.ended {
                panic!(
                    "{}: body ended before {needle:?}; received: {:?}",
                    self.path,
                    self.received()
                );
            }
            if !self.fill(deadline, &format!("{needle:?}")).await {
                panic!(
                    "{}: timed out after {wait:?} waiting for {needle:?}; received: {:?}",
                    self.path,
                    self.received()
                );
            }
        }
    }

    /// Waits (at most `wait`) for the body to end cleanly; returns the unconsumed rest.
    pub async fn read_to_end(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        while !self.ended {
            if !self.fill(deadline, "the end of the body").await {
                panic!(
                    "{}: body did not end within {wait:?}; received: {:?}",
                    self.path,
                    self.received()
                );
            }
        }
        let rest = String::from_utf8_lossy(&self.received[self.consumed..]).into_owned();
        self.consumed = self.received.len();
        rest
    }

    /// Asserts nothing arrives (and the body does not end) during `period`.
    pub async fn expect_quiet(&mut self, period: Duration) {
        let before = self.received.len();
        let deadline = Instant::now() + period;
        while self.fill(deadline, "silence").await {
            if self.ended || self.received.len() != before {
                panic!(
                    "{}: expected nothing for {period:?}, got {:?} (ended: {})",
                    self.path,
                    String::from_utf8_lossy(&self.received[before..]),
                    self.ended
                );
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name`, or "" when absent.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("").to_string())
        .unwrap_or_default()
}
