//! Shared harness for Herald's integration tests: a real server on a real socket (`TestServer`),
//! request helpers, a reader for long-lived subscriber responses (`Subscriber`) and bounded polling
//! of the statistics location. Every wait is bounded; failures print what was received.

#![allow(dead_code)]

pub mod redis;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Default bound for one wait (a response, a message, a stats condition).
pub const WAIT: Duration = Duration::from_secs(5);

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

{locations}
"#
    )
}

/// A streaming subscriber location at `path` with `message_template`, plus any extra TOML lines.
pub fn streaming_location(path: &str, message_template: &str, extra: &str) -> String {
    format!(
        "[[location]]\npath = {path:?}\nrole = \"subscriber\"\nmode = \"streaming\"\nmessage_template = {message_template:?}\n{extra}\n"
    )
}

/// A Herald server running inside the test's runtime, on 127.0.0.1 and a free port.
pub struct TestServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// A client for this server (no proxy, HTTP/1, pooled: concurrent requests get their own
    /// connections).
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Parses `toml_config`, binds 127.0.0.1:0 and runs the server until `stop` or drop.
    pub async fn start(toml_config: &str) -> TestServer {
        let config = herald::Config::from_toml(toml_config, "test.toml", None)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml_config}"));
        let server = herald::Server::bind(&config, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap_or_else(|e| panic!("cannot bind the test server: {e}"));
        let addr = server.local_addr().expect("local address");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            client: client(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Any request with a body and headers; returns status, headers and body text (bounded).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut builder = self
            .client
            .request(method.clone(), self.url(path))
            .timeout(WAIT)
            .body(body);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: cannot read the body: {e}"));
        (status, headers, text)
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> (StatusCode, HeaderMap, String) {
        self.request(Method::GET, path, "", &[]).await
    }

    /// GET `path` with extra headers.
    pub async fn get_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        self.request(Method::GET, path, "", headers).await
    }

    /// POST `body` to `/pub?id={channel}` (`channel` is put in the query as given).
    pub async fn publish(
        &self,
        channel: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        self.request(
            Method::POST,
            &format!("/pub?id={channel}"),
            body.to_string(),
            headers,
        )
        .await
    }

    /// Publishes and asserts 200.
    pub async fn publish_ok(&self, channel: &str, body: &str) {
        let (status, _, text) = self.publish(channel, body, &[]).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "publish {body:?} to {channel}: {text}"
        );
    }

    /// DELETE `/pub?id={channel}` with an optional body.
    pub async fn delete(&self, channel: &str, body: &str) -> (StatusCode, HeaderMap, String) {
        self.request(
            Method::DELETE,
            &format!("/pub?id={channel}"),
            body.to_string(),
            &[],
        )
        .await
    }

    /// GET `/channels-stats{query}` as JSON, asserting 200.
    pub async fn stats(&self, query: &str) -> Value {
        let (status, _, text) = self.get(&format!("/channels-stats{query}")).await;
        assert_eq!(status, StatusCode::OK, "stats {query}: {text}");
        parse_json(&text)
    }

    /// The channel's info document from `/pub?id=`, or `None` on 404.
    pub async fn channel_info(&self, channel: &str) -> Option<Value> {
        let (status, _, text) = self.get(&format!("/pub?id={channel}")).await;
        match status {
            StatusCode::OK => Some(parse_json(&text)),
            StatusCode::NOT_FOUND => None,
            other => panic!("channel info of {channel}: unexpected {other}: {text}"),
        }
    }

    /// Polls `/channels-stats?id={channel}` every 10 ms until it shows `n` subscribers (bounded).
    pub async fn wait_for_subscribers(&self, channel: &str, n: u64) {
        let path = format!("/channels-stats?id={channel}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _, text) = self.get(&path).await;
            let count = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["subscribers"].as_u64());
            if status == StatusCode::OK && count == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "channel {channel} never showed {n} subscribers; last answer: {status} {text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a long-lived subscriber request (GET `path`); bounded wait for the response head.
    pub async fn subscribe(&self, path: &str) -> Subscriber {
        self.subscribe_with(path, &[]).await
    }

    /// `subscribe` with extra request headers.
    pub async fn subscribe_with(&self, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        let mut builder = self.client.get(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = tokio::time::timeout(WAIT, builder.send())
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no response head within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}"));
        Subscriber::new(path, response)
    }

    /// `subscribe`, asserting a 200 answer.
    pub async fn subscribe_ok(&self, path: &str) -> Subscriber {
        let mut sub = self.subscribe(path).await;
        if sub.status != StatusCode::OK {
            let body = sub.read_to_end(WAIT).await;
            panic!("subscribe {path}: expected 200, got {}: {body}", sub.status);
        }
        sub
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
