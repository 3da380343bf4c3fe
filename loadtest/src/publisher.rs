//! The publisher: `conns` keep-alive connections POSTing messages round-robin over the channels,
//! as fast as the server answers or at a fixed total rate.
//!
//! Message `j` of the run goes to channel `j % channels` with sequence number `j / channels`; its
//! body carries that sequence number, the channel index and the send time ([`crate::body`]). The
//! result counts successful publishes per channel, which is what subscribers must receive.
//!
//! With several targets (`--nodes … --pub-to all`: server nodes that do not share channels), each
//! message is POSTed to every target in turn over one keep-alive connection per target; it counts
//! as published when every target accepted it.

use crate::body;
use crate::http::{self, Event, ResponseReader};
use crate::latency::{self, Summary};
use crate::net::{self, UrlTemplate};
use crate::subscriber::unix_ns;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound on one request's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What to publish.
#[derive(Debug, Clone)]
pub struct PubPlan {
    /// Publisher URL templates: every message goes to each (usually one).
    pub targets: Vec<UrlTemplate>,
    /// Channels (indexes `0..channels`).
    pub channels: u64,
    /// Channel name prefix of the run.
    pub prefix: String,
    /// Messages per channel.
    pub per_channel: u64,
    /// Body size, bytes.
    pub size: usize,
    /// Total messages per second (0 = as fast as possible).
    pub rate: f64,
    /// Keep-alive connections.
    pub conns: usize,
    /// Stop sending at this instant even if messages are left.
    pub deadline: Instant,
    /// Stop sending when this becomes true.
    pub stop: Arc<AtomicBool>,
}

/// What the publisher did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PubStats {
    /// Requests sent.
    pub attempted: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed (status or connection).
    pub failed: u64,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Connections opened (1 per connection, plus reconnects).
    pub connects: u64,
    /// Request round-trip time.
    pub latency: Summary,
    /// Seconds from the first send to the last answer.
    pub elapsed_s: f64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// First send, ns since the Unix epoch.
    pub first_send_unix_ns: u64,
    /// Successful publishes per channel.
    #[serde(skip)]
    pub per_channel_ok: Vec<u64>,
}

/// Publishes `plan`; `progress` counts answered requests.
pub async fn run(plan: PubPlan, progress: Arc<AtomicU64>) -> PubStats {
    let total = plan.per_channel.saturating_mul(plan.channels);
    // paths[target][channel]
    let paths: Arc<Vec<Vec<String>>> = Arc::new(
        plan.targets
            .iter()
            .map(|target| {
                (0..plan.channels)
                    .map(|c| target.path_for(&net::channel_name(&plan.prefix, c)))
                    .collect()
            })
            .collect(),
    );
    let per_channel: Arc<Vec<AtomicU64>> =
        Arc::new((0..plan.channels).map(|_| AtomicU64::new(0)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(Mutex::new(latency::histogram()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let start = Instant::now();
    let first_send_unix_ns = unix_ns();
    let mut tasks = Vec::new();
    for _ in 0..plan.conns.max(1) {
        let plan = plan.clone();
        let paths = paths.clone();
        let per_channel = per_channel.clone();
        let next = next.clone();
        let histogram = histogram.clone();
        let errors = errors.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut conns: Vec<Connection> =
                plan.targets.iter().cloned().map(Connection::new).collect();
            let mut body_buf = Vec::with_capacity(plan.size + 64);
            let mut request = Vec::with_capacity(plan.size + 256);
            let mut sent = 0u64;
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= total
                    || Instant::now() >= plan.deadline
                    || plan.stop.load(Ordering::Relaxed)
                {
                    break;
                }
                if plan.rate > 0.0 {
                    let due = start + Duration::from_secs_f64(j as f64 / plan.rate);
                    if due >= plan.deadline {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    if plan.stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                let channel = j % plan.channels;
                let seq = j / plan.channels;
                body::encode(&mut body_buf, seq, channel, unix_ns(), plan.size);
                let mut all_ok = true;
                for (t, conn) in conns.iter_mut().enumerate() {
                    http::post_request(
                        &mut request,
                        &conn.target.host,
                        &paths[t][channel as usize],
                        &body_buf,
                    );
                    let began = Instant::now();
                    let answer = conn.send(&request).await;
                    let error = match answer {
                        Ok(status) if (200..300).contains(&status) => {
                            if let Ok(mut h) = histogram.lock() {
                                latency::record(&mut h, began.elapsed().as_micros() as u64);
                            }
                            None
                        }
                        Ok(status) => Some(format!("publish status {status}")),
                        Err(err) => Some(err),
                    };
                    if let Some(error) = error {
                        all_ok = false;
                        if let Ok(mut errors) = errors.lock() {
                            *errors.entry(error).or_default() += 1;
                        }
                    }
                }
                sent += 1;
                if all_ok {
                    per_channel[channel as usize].fetch_add(1, Ordering::Relaxed);
                }
                progress.fetch_add(1, Ordering::Relaxed);
            }
            (sent, conns.iter().map(|c| c.connects).sum::<u64>())
        }));
    }
    let mut stats = PubStats {
        first_send_unix_ns,
        ..PubStats::default()
    };
    for task in tasks {
        // Each task stops by itself: its loop is bounded by the message count and the deadline,
        // and each request by REQUEST_TIMEOUT.
        match task.await {
            Ok((sent, connects)) => {
                stats.attempted += sent;
                stats.connects += connects;
            }
            Err(err) => {
                *stats
                    .errors
                    .entry(format!("publisher task failed: {err}"))
                    .or_default() += 1;
            }
        }
    }
    stats.elapsed_s = start.elapsed().as_secs_f64();
    stats.per_channel_ok = per_channel
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    stats.ok = stats.per_channel_ok.iter().sum();
    stats.failed = stats.attempted.saturating_sub(stats.ok);
    if let Ok(errors) = errors.lock() {
        for (k, v) in errors.iter() {
            *stats.errors.entry(k.clone()).or_default() += v;
        }
    }
    if let Ok(h) = histogram.lock() {
        stats.latency = latency::summary(&h);
    }
    if stats.elapsed_s > 0.0 {
        stats.requests_per_s = stats.ok as f64 / stats.elapsed_s;
    }
    stats
}

/// Why reading an answer failed.
enum ReadError {
    /// The connection closed before any byte of the answer (a stale keep-alive connection).
    ClosedBeforeAnswer,
    Other(String),
}

/// One keep-alive connection to the publisher location.
struct Connection {
    target: UrlTemplate,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    connects: u64,
}

impl Connection {
    fn new(target: UrlTemplate) -> Connection {
        Connection {
            target,
            stream: None,
            buf: vec![0u8; 16 * 1024],
            connects: 0,
        }
    }

    /// Sends `request` and reads the answer; returns its status. A reused connection that turns
    /// out to be closed is replaced once.
    async fn send(&mut self, request: &[u8]) -> Result<u16, String> {
        for attempt in 0..2 {
            let fresh = self.stream.is_none();
            let mut stream = match self.stream.take() {
                Some(stream) => stream,
                None => {
                    self.connects += 1;
                    tokio::time::timeout(REQUEST_TIMEOUT, net::connect(self.target.addr, None))
                        .await
                        .map_err(|_| "publish connect: timed out".to_string())?
                        .map_err(|e| format!("publish connect: {}", e.kind()))?
                }
            };
            if let Err(err) = stream.write_all(request).await {
                if !fresh && attempt == 0 {
                    continue;
                }
                return Err(format!("publish send: {}", err.kind()));
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, read_answer(&mut stream, &mut self.buf))
                .await
            {
                Ok(Ok((status, close))) => {
                    if !close {
                        self.stream = Some(stream);
                    }
                    return Ok(status);
                }
                Ok(Err(ReadError::ClosedBeforeAnswer)) if !fresh && attempt == 0 => continue,
                Ok(Err(ReadError::ClosedBeforeAnswer)) => {
                    return Err("publish: closed before answering".into())
                }
                Ok(Err(ReadError::Other(err))) => return Err(err),
                Err(_) => return Err("publish: answer timed out".into()),
            }
        }
        Err("publish: connection closed twice".into())
    }
}

/// Reads one answer; returns its status and whether the server closes the connection after it.
async fn read_answer(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(u16, bool), ReadError> {
    let mut reader = ResponseReader::default();
    let mut status = None;
    let mut close = false;
    let mut read_any = false;
    loop {
        let n = stream
            .read(buf)
            .await
            .map_err(|e| ReadError::Other(format!("publish read: {}", e.kind())))?;
        if n == 0 {
            return match status {
                Some(status) if reader.reading_until_close() => Ok((status, true)),
                _ if !read_any => Err(ReadError::ClosedBeforeAnswer),
                _ => Err(ReadError::Other("publish: answer cut short".into())),
            };
        }
        read_any = true;
        let mut rest = &buf[..n];
        loop {
            let (used, event) = reader
                .feed(rest, &mut |_: &[u8]| {})
                .map_err(|e| ReadError::Other(format!("publish protocol: {e}")))?;
            rest = &rest[used..];
            match event {
                Event::NeedMore => break,
                Event::Head(head) => {
                    status = Some(head.status);
                    close = head.close;
                }
                Event::End => {
                    let status = status.unwrap_or(0);
                    return Ok((status, close));
                }
            }
        }
    }
}
