//! Subscribers: one task per connection, for every transport, in this process.
//!
//! A [`LocalGroup`] opens a slice of the run's subscribers (global indexes `first..first+count`,
//! which fix each one's channel, URL template and source address), limits how many connect at
//! once, and lets each read its stream until told to finish. The receive path reads raw bytes into
//! one buffer per connection, decodes only what it must (chunked encoding, WebSocket frames,
//! long-polling response boundaries) and scans the payload for message markers
//! ([`crate::body::Scanner`]): each marker is checked against a per-subscriber bitset (duplicates),
//! its channel (misrouted) and timed (publish→receive latency into a shared histogram per server
//! node).
//!
//! Finishing: [`LocalGroup::finish`] broadcasts how many messages each channel was sent (or "close
//! now"); a subscriber stops when it has all of them or when the grace deadline passes, and reports
//! what it saw. Every wait is bounded by a connect timeout or that deadline.

use crate::body::{Marker, Scanner, MAX_SEQ};
use crate::http::{self, Event, ResponseReader};
use crate::latency::{self, HistData};
use crate::net::{self, SubTarget, Transport};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

/// Bytes read per `read` call by each subscriber.
const READ_BUF: usize = 8 * 1024;
/// Most reconnects of one long-polling subscriber (the server may close keep-alive connections).
const MAX_LP_RECONNECTS: u32 = 10_000;

/// Which subscribers a group opens and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupPlan {
    /// URL templates; subscriber `i` uses `targets[(i / channels) % len]`.
    pub targets: Vec<SubTarget>,
    /// Channels of the run; subscriber `i` joins channel `i % channels`.
    pub channels: u64,
    /// Channel name prefix of the run.
    pub prefix: String,
    /// First global subscriber index of this group.
    pub first: u64,
    /// Subscribers in this group.
    pub count: u64,
    /// Connections per source address before the next one (127.0.0.2 …) is used.
    pub per_source: u64,
    /// Connection attempts in flight at once.
    pub connect_concurrency: usize,
    /// Bound on one subscriber's connect + handshake, ms.
    pub connect_timeout_ms: u64,
}

impl GroupPlan {
    /// Target index and channel of global subscriber `index`.
    pub fn assignment(&self, index: u64) -> (usize, u64) {
        let channels = self.channels.max(1);
        let targets = self.targets.len().max(1) as u64;
        (((index / channels) % targets) as usize, index % channels)
    }

    /// Server nodes the targets point at (at least 1).
    pub fn nodes(&self) -> usize {
        self.targets.iter().map(|t| t.node + 1).max().unwrap_or(1)
    }

    /// Subscribers of global indexes `first..first + count` per server node.
    pub fn per_node(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.nodes()];
        let targets = self.targets.len().max(1) as u64;
        let channels = self.channels.max(1);
        // Target `t` is used by the indexes whose `(i / channels) % targets == t`: count them per
        // target in closed form rather than walking every index.
        for (t, target) in self.targets.iter().enumerate() {
            counts[target.node] +=
                count_assigned(self.first, self.count, channels, targets, t as u64);
        }
        counts
    }

    /// This plan cut into `parts` slices of (nearly) equal size.
    pub fn split(&self, parts: u64) -> Vec<GroupPlan> {
        let parts = parts.max(1);
        (0..parts)
            .map(|p| {
                let start = self.count * p / parts;
                let end = self.count * (p + 1) / parts;
                GroupPlan {
                    first: self.first + start,
                    count: end - start,
                    ..self.clone()
                }
            })
            .collect()
    }
}

/// How many `i` in `first..first + count` have `(i / channels) % targets == t`.
fn count_assigned(first: u64, count: u64, channels: u64, targets: u64, t: u64) -> u64 {
    // Indexes below `n` with that property: whole cycles of `channels * targets`, plus the part of
    // the last cycle that falls in block `t`.
    let below = |n: u64| {
        let cycle = channels * targets;
        let full = n / cycle * channels;
        let rest = n % cycle;
        let start = t * channels;
        full + rest.saturating_sub(start).min(channels)
    };
    below(first + count) - below(first)
}

/// What each subscriber is told when the run ends.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Messages successfully published per channel; `None` = close now (idle, churn).
    pub expected: Option<Arc<Vec<u64>>>,
    /// Give up waiting for missing messages at this instant.
    pub deadline: Instant,
}

/// Live counters of a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Subscribers whose connection is established.
    pub connected: u64,
    /// Subscribers that could not connect.
    pub failed: u64,
    /// Messages received so far (duplicates included).
    pub received: u64,
}

/// Results of one server node's subscribers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStats {
    /// Subscribers planned on this node.
    pub subscribers: u64,
    /// Subscribers that connected.
    pub connected: u64,
    /// Subscribers that could not connect.
    pub failed: u64,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Expected messages a connected subscriber of this node never received.
    pub lost: u64,
    /// Markers of another channel, out of range or beyond what was expected.
    pub corrupt: u64,
    /// Connections the server ended before the run finished.
    pub ended_by_server: u64,
    /// Publish→receive latency of this node's subscribers.
    pub latency: HistData,
    /// First and last receive time of a message on this node, ns since the Unix epoch.
    pub first_recv_unix_ns: u64,
    /// See `first_recv_unix_ns`.
    pub last_recv_unix_ns: u64,
}

impl NodeStats {
    fn merge(&mut self, other: &NodeStats) {
        self.subscribers += other.subscribers;
        self.connected += other.connected;
        self.failed += other.failed;
        self.received += other.received;
        self.unique += other.unique;
        self.duplicated += other.duplicated;
        self.lost += other.lost;
        self.corrupt += other.corrupt;
        self.ended_by_server += other.ended_by_server;
        self.latency = merge_hist(&self.latency, &other.latency);
        self.first_recv_unix_ns = min_nonzero(self.first_recv_unix_ns, other.first_recv_unix_ns);
        self.last_recv_unix_ns = self.last_recv_unix_ns.max(other.last_recv_unix_ns);
    }
}

fn min_nonzero(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

fn merge_hist(a: &HistData, b: &HistData) -> HistData {
    if b.buckets.is_empty() {
        return a.clone();
    }
    if a.buckets.is_empty() {
        return b.clone();
    }
    let mut hist = latency::histogram();
    latency::import(&mut hist, a);
    latency::import(&mut hist, b);
    latency::export(&hist)
}

/// Results of a group (or the sum of several).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupStats {
    /// Subscribers planned.
    pub subscribers: u64,
    /// Subscribers that connected.
    pub connected: u64,
    /// Subscribers that could not connect.
    pub failed: u64,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received more than once (each extra copy counts).
    pub duplicated: u64,
    /// Expected messages a connected subscriber never received.
    pub lost: u64,
    /// Distinct messages beyond what was expected (a publish that failed on our side but was
    /// delivered).
    pub unexpected: u64,
    /// Markers for another channel than the subscriber's.
    pub misrouted: u64,
    /// Markers with an out-of-range sequence number.
    pub invalid: u64,
    /// Connected subscribers that got every expected message.
    pub complete: u64,
    /// Connections the server ended before the run finished.
    pub ended_by_server: u64,
    /// Long-polling requests answered.
    pub longpoll_responses: u64,
    /// Payload bytes read (after the response head).
    pub bytes: u64,
    /// Errors by kind (connect errors, protocol errors, status codes).
    pub errors: BTreeMap<String, u64>,
    /// Deliveries per transport.
    pub by_transport: BTreeMap<String, u64>,
    /// Publish→receive latency.
    pub latency: HistData,
    /// First and last receive time of a message, ns since the Unix epoch (0 = none).
    pub first_recv_unix_ns: u64,
    /// See `first_recv_unix_ns`.
    pub last_recv_unix_ns: u64,
    /// CPU seconds used by the processes that ran these subscribers (workers only; the caller adds
    /// its own).
    pub client_cpu_s: f64,
    /// The same per server node (index = the targets' `node`).
    #[serde(default)]
    pub by_node: Vec<NodeStats>,
}

impl GroupStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &GroupStats) {
        self.subscribers += other.subscribers;
        self.connected += other.connected;
        self.failed += other.failed;
        self.received += other.received;
        self.unique += other.unique;
        self.duplicated += other.duplicated;
        self.lost += other.lost;
        self.unexpected += other.unexpected;
        self.misrouted += other.misrouted;
        self.invalid += other.invalid;
        self.complete += other.complete;
        self.ended_by_server += other.ended_by_server;
        self.longpoll_responses += other.longpoll_responses;
        self.bytes += other.bytes;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.by_transport {
            *self.by_transport.entry(k.clone()).or_default() += v;
        }
        self.latency = merge_hist(&self.latency, &other.latency);
        self.first_recv_unix_ns = min_nonzero(self.first_recv_unix_ns, other.first_recv_unix_ns);
        self.last_recv_unix_ns = self.last_recv_unix_ns.max(other.last_recv_unix_ns);
        self.client_cpu_s += other.client_cpu_s;
        if self.by_node.len() < other.by_node.len() {
            self.by_node
                .resize_with(other.by_node.len(), NodeStats::default);
        }
        for (mine, theirs) in self.by_node.iter_mut().zip(&other.by_node) {
            mine.merge(theirs);
        }
    }

    fn count_error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }
}

/// State shared by the subscriber tasks of one process.
struct Shared {
    connected: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    /// Latency per server node (the run's histogram is their sum).
    histograms: Vec<Mutex<Histogram<u64>>>,
    connect_permits: Semaphore,
}

/// Nanoseconds since the Unix epoch now.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Outcome {
    channel: u64,
    node: usize,
    transport: Option<Transport>,
    connected: bool,
    error: Option<String>,
    received: u64,
    unique: u64,
    duplicated: u64,
    misrouted: u64,
    invalid: u64,
    bytes: u64,
    ended_by_server: bool,
    longpoll_responses: u64,
    first_ns: u64,
    last_ns: u64,
}

/// Reads a group's live counters.
#[derive(Clone)]
pub struct Probe(Arc<Shared>);

impl Probe {
    /// Live counters.
    pub fn counts(&self) -> Counts {
        Counts {
            connected: self.0.connected.load(Ordering::Relaxed),
            failed: self.0.failed.load(Ordering::Relaxed),
            received: self.0.received.load(Ordering::Relaxed),
        }
    }
}

/// The subscribers of one process.
pub struct LocalGroup {
    count: u64,
    shared: Arc<Shared>,
    finish: watch::Sender<Option<Finish>>,
    tasks: Vec<JoinHandle<Outcome>>,
    connect_timeout: Duration,
}

impl LocalGroup {
    /// Spawns the subscribers of `plan` (must run inside a tokio runtime). They connect in the
    /// background; see [`LocalGroup::wait_connected`].
    pub fn start(plan: &GroupPlan) -> Result<LocalGroup, String> {
        if plan.targets.is_empty() {
            return Err("no subscriber URL (--sub)".into());
        }
        let shared = Arc::new(Shared {
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            histograms: (0..plan.nodes())
                .map(|_| Mutex::new(latency::histogram()))
                .collect(),
            connect_permits: Semaphore::new(plan.connect_concurrency.max(1)),
        });
        let (finish, finish_rx) = watch::channel(None);
        let connect_timeout = Duration::from_millis(plan.connect_timeout_ms.max(1));
        let mut tasks = Vec::with_capacity(plan.count as usize);
        for index in plan.first..plan.first + plan.count {
            let (target, channel) = plan.assignment(index);
            let target = plan.targets[target].clone();
            let source = net::source_for(index, plan.per_source)?;
            let name = net::channel_name(&plan.prefix, channel);
            let sub = Subscriber {
                target,
                channel,
                path_channel: name,
                source,
                shared: shared.clone(),
                finish: Finisher::new(finish_rx.clone()),
                connect_timeout,
            };
            tasks.push(tokio::spawn(sub.run()));
        }
        Ok(LocalGroup {
            count: plan.count,
            shared,
            finish,
            tasks,
            connect_timeout,
        })
    }

    /// Live counters.
    pub fn counts(&self) -> Counts {
        self.probe().counts()
    }

    /// Subscribers planned.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// A handle that reads the live counters, usable after [`LocalGroup::finish`] took the group.
    pub fn probe(&self) -> Probe {
        Probe(self.shared.clone())
    }

    /// Tells every subscriber to finish (see [`Finish`]), waits for them (bounded by `grace` plus
    /// the connect timeout) and sums what they saw.
    pub async fn finish(self, expected: Option<Vec<u64>>, grace: Duration) -> GroupStats {
        let deadline = Instant::now() + grace;
        let expected = expected.map(Arc::new);
        self.finish.send_replace(Some(Finish {
            expected: expected.clone(),
            deadline,
        }));
        let hard_deadline = deadline + self.connect_timeout + Duration::from_secs(5);
        let mut stats = GroupStats {
            subscribers: self.count,
            by_node: vec![NodeStats::default(); self.shared.histograms.len()],
            ..GroupStats::default()
        };
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(hard_deadline, task).await {
                Ok(Ok(outcome)) => add_outcome(&mut stats, &outcome, expected.as_deref()),
                Ok(Err(err)) => stats.count_error(format!("subscriber task failed: {err}")),
                Err(_) => {
                    abort.abort();
                    stats.count_error("subscriber did not stop in time".into());
                }
            }
        }
        let mut total = latency::histogram();
        for (node, histogram) in self.shared.histograms.iter().enumerate() {
            if let Ok(histogram) = histogram.lock() {
                let _ = total.add(&*histogram);
                if let Some(node) = stats.by_node.get_mut(node) {
                    node.latency = latency::export(&histogram);
                }
            }
        }
        stats.latency = latency::export(&total);
        stats
    }
}

fn add_outcome(stats: &mut GroupStats, outcome: &Outcome, expected: Option<&Vec<u64>>) {
    if stats.by_node.len() <= outcome.node {
        stats
            .by_node
            .resize_with(outcome.node + 1, NodeStats::default);
    }
    add_node_outcome(&mut stats.by_node[outcome.node], outcome, expected);
    if let Some(error) = &outcome.error {
        stats.count_error(error.clone());
    }
    if !outcome.connected {
        stats.failed += 1;
        return;
    }
    stats.connected += 1;
    stats.received += outcome.received;
    stats.unique += outcome.unique;
    stats.duplicated += outcome.duplicated;
    stats.misrouted += outcome.misrouted;
    stats.invalid += outcome.invalid;
    stats.bytes += outcome.bytes;
    stats.longpoll_responses += outcome.longpoll_responses;
    if outcome.ended_by_server {
        stats.ended_by_server += 1;
    }
    if let Some(transport) = outcome.transport {
        *stats
            .by_transport
            .entry(transport.name().to_string())
            .or_default() += outcome.received;
    }
    if let Some(expected) = expected {
        let want = expected.get(outcome.channel as usize).copied().unwrap_or(0);
        stats.lost += want.saturating_sub(outcome.unique);
        stats.unexpected += outcome.unique.saturating_sub(want);
        if outcome.unique >= want {
            stats.complete += 1;
        }
    }
    if outcome.first_ns != 0 {
        stats.first_recv_unix_ns = match stats.first_recv_unix_ns {
            0 => outcome.first_ns,
            current => current.min(outcome.first_ns),
        };
    }
    stats.last_recv_unix_ns = stats.last_recv_unix_ns.max(outcome.last_ns);
}

fn add_node_outcome(node: &mut NodeStats, outcome: &Outcome, expected: Option<&Vec<u64>>) {
    node.subscribers += 1;
    if !outcome.connected {
        node.failed += 1;
        return;
    }
    node.connected += 1;
    node.received += outcome.received;
    node.unique += outcome.unique;
    node.duplicated += outcome.duplicated;
    node.corrupt += outcome.misrouted + outcome.invalid;
    if outcome.ended_by_server {
        node.ended_by_server += 1;
    }
    if let Some(expected) = expected {
        let want = expected.get(outcome.channel as usize).copied().unwrap_or(0);
        node.lost += want.saturating_sub(outcome.unique);
        node.corrupt += outcome.unique.saturating_sub(want);
    }
    node.first_recv_unix_ns = min_nonzero(node.first_recv_unix_ns, outcome.first_ns);
    node.last_recv_unix_ns = node.last_recv_unix_ns.max(outcome.last_ns);
}

/// Feeds body bytes of a streaming response to `tracker`; true when the response ended.
fn feed_stream(
    reader: &mut ResponseReader,
    tracker: &mut Tracker,
    bytes: &[u8],
) -> Result<bool, String> {
    if bytes.is_empty() {
        return Ok(false);
    }
    let now = unix_ns();
    // `feed` uses all of the input unless the response ends (or a new one starts, which a
    // streaming answer never has).
    let (_, event) = reader
        .feed(bytes, &mut |b: &[u8]| tracker.scan(b, now))
        .map_err(|e| format!("protocol: {e}"))?;
    Ok(!matches!(event, Event::NeedMore))
}

/// Watches for the finish broadcast and its deadline.
struct Finisher {
    rx: watch::Receiver<Option<Finish>>,
    finish: Option<Finish>,
    sleep: Pin<Box<Sleep>>,
}

impl Finisher {
    fn new(rx: watch::Receiver<Option<Finish>>) -> Finisher {
        Finisher {
            rx,
            finish: None,
            // Re-armed when the finish arrives; never polled before that.
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
        }
    }

    /// The finish arrived and this subscriber has everything it expects (or must close now).
    fn done(&self, channel: u64, unique: u64) -> bool {
        match &self.finish {
            None => false,
            Some(Finish { expected: None, .. }) => true,
            Some(Finish {
                expected: Some(expected),
                ..
            }) => unique >= expected.get(channel as usize).copied().unwrap_or(0),
        }
    }

    fn deadline_passed(&self) -> bool {
        self.finish
            .as_ref()
            .is_some_and(|f| Instant::now() >= f.deadline)
    }
}

/// Result of waiting for data.
enum Step {
    Data(usize),
    Eof,
    Error(std::io::Error),
    /// The finish broadcast arrived (check `done`).
    Finish,
    /// The finish deadline passed, or the group was dropped.
    Stop,
}

async fn read_or_finish(stream: &mut TcpStream, buf: &mut [u8], finisher: &mut Finisher) -> Step {
    if finisher.deadline_passed() {
        return Step::Stop;
    }
    let waiting = finisher.finish.is_none();
    tokio::select! {
        read = stream.read(buf) => match read {
            Ok(0) => Step::Eof,
            Ok(n) => Step::Data(n),
            Err(err) => Step::Error(err),
        },
        changed = finisher.rx.changed(), if waiting => {
            if changed.is_err() {
                return Step::Stop;
            }
            let finish = finisher.rx.borrow_and_update().clone();
            if let Some(finish) = finish {
                finisher.sleep.as_mut().reset(finish.deadline);
                finisher.finish = Some(finish);
            }
            Step::Finish
        }
        _ = finisher.sleep.as_mut(), if !waiting => Step::Stop,
    }
}

/// Per-subscriber bookkeeping of received markers.
struct Tracker {
    channel: u64,
    node: usize,
    seen: Vec<u64>,
    scanner: Scanner,
    latencies: Vec<u64>,
    out: Outcome,
}

impl Tracker {
    fn scan(&mut self, bytes: &[u8], now_ns: u64) {
        let Tracker {
            channel,
            node: _,
            seen,
            scanner,
            latencies,
            out,
        } = self;
        out.bytes += bytes.len() as u64;
        scanner.feed(bytes, |marker: Marker| {
            out.received += 1;
            if marker.channel != *channel {
                out.misrouted += 1;
                return;
            }
            if marker.seq >= MAX_SEQ {
                out.invalid += 1;
                return;
            }
            let word = (marker.seq / 64) as usize;
            let bit = 1u64 << (marker.seq % 64);
            if seen.len() <= word {
                seen.resize(word + 1, 0);
            }
            if seen[word] & bit != 0 {
                out.duplicated += 1;
                return;
            }
            seen[word] |= bit;
            out.unique += 1;
            if out.first_ns == 0 {
                out.first_ns = now_ns;
            }
            out.last_ns = now_ns;
            latencies.push(now_ns.saturating_sub(marker.send_ns) / 1000);
        });
    }

    /// Moves the latencies of the last read into the shared histogram.
    fn flush(&mut self, shared: &Shared) {
        if self.latencies.is_empty() {
            return;
        }
        shared
            .received
            .fetch_add(self.latencies.len() as u64, Ordering::Relaxed);
        let Some(histogram) = shared.histograms.get(self.node) else {
            self.latencies.clear();
            return;
        };
        if let Ok(mut histogram) = histogram.lock() {
            for &us in &self.latencies {
                latency::record(&mut histogram, us);
            }
        }
        self.latencies.clear();
    }
}

/// One subscriber connection.
struct Subscriber {
    target: SubTarget,
    channel: u64,
    path_channel: String,
    source: Option<Ipv4Addr>,
    shared: Arc<Shared>,
    finish: Finisher,
    connect_timeout: Duration,
}

/// An established connection and the bytes read past the response head.
struct Established {
    stream: TcpStream,
    leftover: Vec<u8>,
    reader: ResponseReader,
}

impl Subscriber {
    async fn run(mut self) -> Outcome {
        let mut tracker = Tracker {
            channel: self.channel,
            node: self.target.node,
            seen: Vec::new(),
            scanner: Scanner::default(),
            latencies: Vec::with_capacity(16),
            out: Outcome {
                channel: self.channel,
                node: self.target.node,
                transport: Some(self.target.transport),
                ..Outcome::default()
            },
        };
        let path = self.target.url.path_for(&self.path_channel);
        let established = {
            let _permit = self.shared.connect_permits.acquire().await.ok();
            tokio::time::timeout(self.connect_timeout, self.establish(&path)).await
        };
        let established = match established {
            Ok(Ok(established)) => established,
            Ok(Err(err)) => {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                tracker.out.error = Some(err);
                return tracker.out;
            }
            Err(_) => {
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                tracker.out.error = Some("connect: timed out".into());
                return tracker.out;
            }
        };
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        tracker.out.connected = true;
        let result = match self.target.transport {
            Transport::Sse | Transport::Streaming => {
                self.receive_stream(established, &mut tracker).await
            }
            Transport::Websocket => self.receive_websocket(established, &mut tracker).await,
            Transport::LongPolling => {
                self.receive_longpoll(established, &path, &mut tracker)
                    .await
            }
        };
        tracker.flush(&self.shared);
        if let Err(err) = result {
            tracker.out.error = Some(err);
        }
        tracker.out
    }

    async fn establish(&self, path: &str) -> Result<Established, String> {
        let url = &self.target.url;
        let mut stream = net::connect(url.addr, self.source)
            .await
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let request = match self.target.transport {
            Transport::Sse => http::get_request(&url.host, path, Some("text/event-stream")),
            Transport::Streaming => http::get_request(&url.host, path, None),
            Transport::Websocket => http::websocket_request(&url.host, path),
            Transport::LongPolling => http::longpoll_request(&url.host, path, None, None),
        };
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("send request: {}", e.kind()))?;
        let mut reader = ResponseReader::default();
        if self.target.transport == Transport::LongPolling {
            // The answer comes with the first message.
            return Ok(Established {
                stream,
                leftover: Vec::new(),
                reader,
            });
        }
        let mut buf = vec![0u8; 4096];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read head: {}", e.kind()))?;
            if n == 0 {
                return Err("closed before answering".into());
            }
            let (used, event) = reader
                .feed(&buf[..n], &mut |_: &[u8]| {})
                .map_err(|e| format!("protocol: {e}"))?;
            if let Event::Head(head) = event {
                let wanted = if self.target.transport == Transport::Websocket {
                    101
                } else {
                    200
                };
                if head.status != wanted {
                    return Err(format!("status {}", head.status));
                }
                return Ok(Established {
                    stream,
                    leftover: buf[used..n].to_vec(),
                    reader,
                });
            }
        }
    }

    /// Streaming and EventSource: one response whose body never ends until the server closes it.
    async fn receive_stream(
        &mut self,
        established: Established,
        tracker: &mut Tracker,
    ) -> Result<(), String> {
        let Established {
            mut stream,
            leftover,
            mut reader,
        } = established;
        if feed_stream(&mut reader, tracker, &leftover)? {
            tracker.out.ended_by_server = true;
            return Ok(());
        }
        tracker.flush(&self.shared);
        let mut buf = vec![0u8; READ_BUF];
        loop {
            if self.finish.done(self.channel, tracker.out.unique) {
                return Ok(());
            }
            match read_or_finish(&mut stream, &mut buf, &mut self.finish).await {
                Step::Data(n) => {
                    if feed_stream(&mut reader, tracker, &buf[..n])? {
                        tracker.out.ended_by_server = true;
                        return Ok(());
                    }
                    tracker.flush(&self.shared);
                }
                Step::Eof => {
                    tracker.out.ended_by_server = true;
                    return Ok(());
                }
                Step::Error(err) => return Err(format!("read: {}", err.kind())),
                Step::Finish => {}
                Step::Stop => return Ok(()),
            }
        }
    }

    /// WebSocket: frames after the 101 answer; pings are answered with pongs.
    async fn receive_websocket(
        &mut self,
        established: Established,
        tracker: &mut Tracker,
    ) -> Result<(), String> {
        let Established {
            mut stream,
            leftover,
            ..
        } = established;
        let mut frames = crate::ws::FrameReader::default();
        let mut control = crate::ws::Control::default();
        let mut buf = vec![0u8; READ_BUF];
        let mut pending_len = leftover.len();
        buf[..pending_len.min(READ_BUF)].copy_from_slice(&leftover[..pending_len.min(READ_BUF)]);
        if leftover.len() > READ_BUF {
            // A head read is at most 4 KiB, so this cannot happen; stay safe anyway.
            return Err("websocket: oversized first read".into());
        }
        let result = loop {
            if pending_len > 0 {
                let now = unix_ns();
                if let Err(err) =
                    frames.feed(&buf[..pending_len], &mut control, &mut |b: &[u8]| {
                        tracker.scan(b, now)
                    })
                {
                    break Err(format!("websocket: {err}"));
                }
                pending_len = 0;
                tracker.flush(&self.shared);
                for ping in control.pings.drain(..) {
                    if stream.write_all(&crate::ws::pong(&ping)).await.is_err() {
                        break;
                    }
                }
                if control.closed {
                    tracker.out.ended_by_server = true;
                    return Ok(());
                }
            }
            if self.finish.done(self.channel, tracker.out.unique) {
                break Ok(());
            }
            match read_or_finish(&mut stream, &mut buf, &mut self.finish).await {
                Step::Data(n) => pending_len = n,
                Step::Eof => {
                    tracker.out.ended_by_server = true;
                    return Ok(());
                }
                Step::Error(err) => break Err(format!("read: {}", err.kind())),
                Step::Finish => {}
                Step::Stop => break Ok(()),
            }
        };
        // Leave politely; the server may already be gone.
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            stream.write_all(&crate::ws::close()),
        )
        .await;
        result
    }

    /// Long-polling: request, answer, request again with the answer's `Last-Modified` / `Etag`.
    async fn receive_longpoll(
        &mut self,
        established: Established,
        path: &str,
        tracker: &mut Tracker,
    ) -> Result<(), String> {
        let Established {
            mut stream,
            mut reader,
            ..
        } = established;
        let url = self.target.url.clone();
        let mut buf = vec![0u8; READ_BUF];
        let mut last_modified: Option<String> = None;
        let mut etag: Option<String> = None;
        let mut status = 0u16;
        let mut close_after = false;
        let mut reconnects = 0u32;
        loop {
            let mut answered = false;
            match read_or_finish(&mut stream, &mut buf, &mut self.finish).await {
                Step::Data(n) => {
                    let now = unix_ns();
                    let mut rest = &buf[..n];
                    loop {
                        let deliver = status == 200;
                        let (used, event) = reader
                            .feed(rest, &mut |b: &[u8]| {
                                if deliver {
                                    tracker.scan(b, now)
                                }
                            })
                            .map_err(|e| format!("protocol: {e}"))?;
                        rest = &rest[used..];
                        match event {
                            Event::NeedMore => break,
                            Event::Head(head) => {
                                if head.status != 200 && head.status != 304 {
                                    return Err(format!("status {}", head.status));
                                }
                                status = head.status;
                                close_after = head.close;
                                if head.last_modified.is_some() {
                                    last_modified = head.last_modified;
                                }
                                if head.etag.is_some() {
                                    etag = head.etag;
                                }
                            }
                            Event::End => {
                                answered = true;
                                status = 0;
                                tracker.out.longpoll_responses += 1;
                                break;
                            }
                        }
                    }
                    tracker.flush(&self.shared);
                }
                Step::Eof => {
                    if reader.reading_until_close() {
                        tracker.out.longpoll_responses += 1;
                        tracker.flush(&self.shared);
                    }
                    reader = ResponseReader::default();
                    status = 0;
                    answered = true;
                    close_after = true;
                }
                Step::Error(err) => return Err(format!("read: {}", err.kind())),
                Step::Finish => {}
                Step::Stop => return Ok(()),
            }
            if self.finish.done(self.channel, tracker.out.unique) {
                return Ok(());
            }
            if !answered {
                continue;
            }
            if close_after {
                reconnects += 1;
                if reconnects > MAX_LP_RECONNECTS {
                    return Err("long-polling: too many reconnects".into());
                }
                stream =
                    tokio::time::timeout(self.connect_timeout, net::connect(url.addr, self.source))
                        .await
                        .map_err(|_| "reconnect: timed out".to_string())?
                        .map_err(|e| format!("reconnect: {}", e.kind()))?;
                close_after = false;
            }
            let request =
                http::longpoll_request(&url.host, path, last_modified.as_deref(), etag.as_deref());
            stream
                .write_all(&request)
                .await
                .map_err(|e| format!("send request: {}", e.kind()))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: usize, templates: usize, channels: u64, first: u64, count: u64) -> GroupPlan {
        let mut targets = Vec::new();
        for _ in 0..templates {
            for node in 0..nodes {
                let mut target =
                    SubTarget::parse(&format!("http://127.0.0.1:{}/ev/{{ch}}", 9000 + node), {
                        Transport::Sse
                    })
                    .expect("valid");
                target.node = node;
                targets.push(target);
            }
        }
        GroupPlan {
            targets,
            channels,
            prefix: "t".into(),
            first,
            count,
            per_source: 100,
            connect_concurrency: 1,
            connect_timeout_ms: 1,
        }
    }

    /// The closed form against a walk over every index.
    #[test]
    fn counts_subscribers_per_node() {
        for (nodes, templates, channels, first, count) in [
            (1, 1, 1, 0, 10),
            (2, 1, 1, 0, 2000),
            (4, 1, 1, 0, 2001),
            (3, 2, 5, 7, 123),
            (2, 3, 4, 0, 1),
            (4, 1, 3, 5, 0),
        ] {
            let plan = plan(nodes, templates, channels, first, count);
            let mut walked = vec![0u64; nodes];
            for i in first..first + count {
                let (t, _) = plan.assignment(i);
                walked[plan.targets[t].node] += 1;
            }
            assert_eq!(
                plan.per_node(),
                walked,
                "{nodes} {templates} {channels} {first} {count}"
            );
            let sliced: Vec<u64> = plan
                .split(3)
                .iter()
                .map(|p| p.per_node())
                .fold(vec![0; nodes], |acc, v| {
                    acc.iter().zip(&v).map(|(a, b)| a + b).collect()
                });
            assert_eq!(sliced, walked);
        }
        assert_eq!(plan(2, 1, 1, 0, 2000).per_node(), [1000, 1000]);
    }

    #[test]
    fn merges_node_stats() {
        let mut a = GroupStats {
            by_node: vec![NodeStats {
                unique: 3,
                last_recv_unix_ns: 5,
                first_recv_unix_ns: 2,
                ..NodeStats::default()
            }],
            ..GroupStats::default()
        };
        let b = GroupStats {
            by_node: vec![
                NodeStats {
                    unique: 1,
                    first_recv_unix_ns: 1,
                    last_recv_unix_ns: 4,
                    ..NodeStats::default()
                },
                NodeStats {
                    lost: 2,
                    ..NodeStats::default()
                },
            ],
            ..GroupStats::default()
        };
        a.merge(&b);
        assert_eq!(a.by_node.len(), 2);
        assert_eq!(a.by_node[0].unique, 4);
        assert_eq!(a.by_node[0].first_recv_unix_ns, 1);
        assert_eq!(a.by_node[0].last_recv_unix_ns, 5);
        assert_eq!(a.by_node[1].lost, 2);
    }
}
