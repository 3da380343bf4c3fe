//! Talking HTTP to one Herald (an in-process `TestServer`, a child `herald` process, a cluster node):
//! `Http` with the request, publish, statistics, subscriber and WebSocket helpers every harness
//! shares (the default layout: admin publisher at `/pub?id=`, statistics at `/channels-stats?id=`),
//! and complete answers (`Answer`, `fetch`, background requests for long-polls that wait) with the
//! recovery point they carry (`Cursor`).

#![allow(dead_code)]

use super::ws::{self, Ws};
use super::{client, header, parse_json, Subscriber, WAIT};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long `wait_for_subscribers` polls before giving up.
pub const SUBSCRIBER_WAIT: Duration = Duration::from_secs(20);
/// Bound of one complete (long-)poll request.
pub const REQUEST_WAIT: Duration = Duration::from_secs(15);
/// An `If-Modified-Since` older than anything: "everything stored".
pub const EPOCH: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

/// A client of one Herald at `addr`.
#[derive(Clone)]
pub struct Http {
    /// The server's address.
    pub addr: SocketAddr,
    /// A client without proxies (HTTP/1, pooled: concurrent requests get their own connections).
    pub client: reqwest::Client,
    /// Prefix of failure messages: "" or e.g. "node node-a: ".
    pub label: String,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http::labelled(addr, "")
    }

    /// `new`, naming the server in every failure message.
    pub fn labelled(addr: SocketAddr, label: &str) -> Http {
        Http {
            addr,
            client: client(),
            label: label.to_string(),
        }
    }

    /// `http://ADDR{path}`.
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
        let label = &self.label;
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
            .unwrap_or_else(|e| panic!("{label}{method} {path} failed: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{label}{method} {path}: cannot read the body: {e}"));
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

    /// POST `body` to `path`.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, HeaderMap, String) {
        self.request(Method::POST, path, body, &[]).await
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
            "{}publish {body:?} to {channel}: {text}",
            self.label
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
        assert_eq!(
            status,
            StatusCode::OK,
            "{}stats {query}: {text}",
            self.label
        );
        parse_json(&text)
    }

    /// The channel's info document from `/pub?id=`, or `None` on 404.
    pub async fn channel_info(&self, channel: &str) -> Option<Value> {
        let (status, _, text) = self.get(&format!("/pub?id={channel}")).await;
        match status {
            StatusCode::OK => Some(parse_json(&text)),
            StatusCode::NOT_FOUND => None,
            other => panic!(
                "{}channel info of {channel}: unexpected {other}: {text}",
                self.label
            ),
        }
    }

    /// `/channels-stats?id={channel}`: the status, its `subscribers` (only on 200 with a number) and
    /// the body.
    pub async fn subscribers(&self, channel: &str) -> (StatusCode, Option<u64>, String) {
        let (status, _, text) = self.get(&format!("/channels-stats?id={channel}")).await;
        let count = (status == StatusCode::OK)
            .then(|| serde_json::from_str::<Value>(&text).ok())
            .flatten()
            .and_then(|v| v["subscribers"].as_u64());
        (status, count, text)
    }

    /// Polls `/channels-stats?id={channel}` every 10 ms until `ok(status, subscribers)` (bounded by
    /// `limit`, `what` names the wait in the failure); returns how long it took.
    pub async fn wait_subscribers_where(
        &self,
        channel: &str,
        limit: Duration,
        what: &str,
        ok: impl Fn(StatusCode, Option<u64>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let (status, count, text) = self.subscribers(channel).await;
            if ok(status, count) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{}channel {channel} never showed {what} subscribers within {limit:?}; last answer: {status} {text}",
                self.label
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until the channel's statistics show a subscriber count for which `ok` holds.
    pub async fn wait_subscribers(
        &self,
        channel: &str,
        limit: Duration,
        what: &str,
        ok: impl Fn(u64) -> bool,
    ) -> Duration {
        self.wait_subscribers_where(channel, limit, what, |_, count| count.is_some_and(&ok))
            .await
    }

    /// Polls until the channel shows exactly `n` subscribers (bounded by `SUBSCRIBER_WAIT`).
    pub async fn wait_for_subscribers(&self, channel: &str, n: u64) {
        self.wait_subscribers(channel, SUBSCRIBER_WAIT, &n.to_string(), |count| count == n)
            .await;
    }

    /// Opens a long-lived subscriber request (GET `path`); bounded wait for the response head.
    pub async fn subscribe(&self, path: &str) -> Subscriber {
        self.subscribe_with(path, &[]).await
    }

    /// `subscribe` with extra request headers.
    pub async fn subscribe_with(&self, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        let label = &self.label;
        let mut builder = self.client.get(self.url(path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = tokio::time::timeout(WAIT, builder.send())
            .await
            .unwrap_or_else(|_| panic!("{label}GET {path}: no response head within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{label}GET {path} failed: {e}"));
        Subscriber::new(&format!("{label}{path}"), response)
    }

    /// `subscribe_with`, asserting a 200 answer.
    pub async fn subscribe_ok_with(&self, path: &str, headers: &[(&str, &str)]) -> Subscriber {
        let mut sub = self.subscribe_with(path, headers).await;
        if sub.status != StatusCode::OK {
            let status = sub.status;
            let body = sub.read_to_end(WAIT).await;
            panic!(
                "{}subscribe {path}: expected 200, got {status}: {body}",
                self.label
            );
        }
        sub
    }

    /// `subscribe`, asserting a 200 answer.
    pub async fn subscribe_ok(&self, path: &str) -> Subscriber {
        self.subscribe_ok_with(path, &[]).await
    }

    /// Opens a WebSocket to `path` (bounded) and checks the 101 answer.
    pub async fn websocket(&self, path: &str) -> Ws {
        ws::connect(self.addr, path).await
    }

    /// GET `path` with headers and the whole answer (bounded by `REQUEST_WAIT`).
    pub async fn fetch(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        fetch(&self.client, &self.url(path), headers, REQUEST_WAIT).await
    }

    /// `fetch` in the background (a long-poll that waits).
    pub fn spawn_fetch(&self, path: &str, headers: &[(&str, &str)]) -> JoinHandle<Answer> {
        spawn_fetch(&self.client, &self.url(path), headers, REQUEST_WAIT)
    }
}

/// One complete HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The value of header `name`, or "".
    pub fn header(&self, name: &str) -> String {
        header(&self.headers, name)
    }

    /// The recovery point this answer gives (`Last-Modified`, `Etag`); panics when one is missing.
    pub fn cursor(&self) -> Cursor {
        let cursor = Cursor {
            last_modified: self.header("Last-Modified"),
            etag: self.header("Etag"),
        };
        assert!(
            !cursor.last_modified.is_empty() && !cursor.etag.is_empty(),
            "answer without Last-Modified/Etag: {self:?}"
        );
        cursor
    }
}

/// GET `url` with headers, the whole answer bounded by `wait`.
pub async fn fetch<K: AsRef<str>, V: AsRef<str>>(
    client: &reqwest::Client,
    url: &str,
    headers: &[(K, V)],
    wait: Duration,
) -> Answer {
    let mut builder = client.get(url).timeout(wait);
    for (name, value) in headers {
        builder = builder.header(name.as_ref(), value.as_ref());
    }
    let shown: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    let response = builder
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} {shown:?} failed (limit {wait:?}): {e}"));
    let status = response.status();
    let response_headers = response.headers().clone();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: cannot read the body: {e}"));
    Answer {
        status,
        headers: response_headers,
        body,
    }
}

/// `fetch` in a spawned task.
pub fn spawn_fetch<K: AsRef<str>, V: AsRef<str>>(
    client: &reqwest::Client,
    url: &str,
    headers: &[(K, V)],
    wait: Duration,
) -> JoinHandle<Answer> {
    let (client, url) = (client.clone(), url.to_string());
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    tokio::spawn(async move { fetch(&client, &url, &headers, wait).await })
}

/// Waits (bounded) for a background request.
pub async fn join(handle: JoinHandle<Answer>, what: &str) -> Answer {
    tokio::time::timeout(REQUEST_WAIT + WAIT, handle)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"))
        .unwrap_or_else(|e| panic!("{what}: request task failed: {e}"))
}

/// Asserts that a background long-poll is still waiting after 200 ms.
pub async fn assert_waiting(handle: &mut JoinHandle<Answer>, what: &str) {
    if let Ok(answer) = tokio::time::timeout(Duration::from_millis(200), &mut *handle).await {
        panic!("{what}: expected the long-poll to wait, it answered {answer:?}");
    }
}

/// A client's recovery point: `Last-Modified` and `Etag` of an answer, sent back as
/// `If-Modified-Since` and `If-None-Match`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub last_modified: String,
    pub etag: String,
}

impl Cursor {
    /// Before everything stored.
    pub fn epoch() -> Cursor {
        Cursor {
            last_modified: EPOCH.to_string(),
            etag: "W/0".to_string(),
        }
    }

    /// As request headers.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("If-Modified-Since", self.last_modified.as_str()),
            ("If-None-Match", self.etag.as_str()),
        ]
    }

    /// (seconds, tag); panics on a malformed value.
    pub fn key(&self) -> (u64, u64) {
        self.try_key().unwrap_or_else(|| {
            panic!("malformed recovery point {self:?}: expected an HTTP date and W/<tag>")
        })
    }

    /// (seconds, tag) when `Last-Modified` is an HTTP date and `Etag` is `W/<tag>`.
    pub fn try_key(&self) -> Option<(u64, u64)> {
        let time = httpdate::parse_http_date(&self.last_modified).ok()?;
        let secs = time.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let tag = self.etag.strip_prefix("W/")?.parse().ok()?;
        Some((secs, tag))
    }
}
