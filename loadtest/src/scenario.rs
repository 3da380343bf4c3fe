//! The four scenarios (`idle`, `fanout`, `publish`, `churn`): each opens its subscribers (here or
//! in workers), drives the publisher, samples the server processes and builds a [`Report`].
//!
//! Several server nodes (`--nodes`, e.g. Herald processes sharing channels through Redis): the
//! subscriber templates are spread over them round-robin, the publisher uses the first (or all),
//! and `fanout` adds figures per node (`node<k>_…`) and the CPU time of each `--pid` and
//! `--redis-pid`.

use crate::group::Group;
use crate::http::{self, Event, ResponseReader};
use crate::net::{self, Node, SubTarget, Transport, UrlTemplate};
use crate::procstat::{self, ProcSample};
use crate::publisher::{self, PubPlan, PubStats};
use crate::report::Report;
use crate::subscriber::{unix_ns, GroupPlan, GroupStats};
use crate::{latency, Common, PubTo};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Open files kept free in each process for the publisher, stdio, pipes and the runtime.
const FD_RESERVE: u64 = 512;

/// What every scenario shares: parsed targets, the run's channel prefix and limits.
pub struct Ctx {
    /// The common options.
    pub common: Common,
    /// Subscriber targets.
    pub subs: Vec<SubTarget>,
    /// Publisher targets (every message goes to each; usually one, none without --pub).
    pub publ: Vec<UrlTemplate>,
    /// Statistics URLs: one, or one per `--nodes` node (same order).
    pub stats: Vec<UrlTemplate>,
    /// Server nodes: the `--nodes` first, then any other subscriber address.
    pub nodes: Vec<SocketAddr>,
    /// Channel name prefix of this run.
    pub prefix: String,
    /// Most subscribers one process holds.
    pub max_per_process: u64,
    /// The whole run ends by then.
    pub deadline: Instant,
    /// Start of the run.
    pub started: Instant,
    /// Start of the run, Unix seconds.
    pub started_unix_s: u64,
}

impl Ctx {
    /// Parses the common options; `fd_limit` is this process's open-file limit.
    pub fn new(common: Common, fd_limit: u64) -> Result<Ctx, String> {
        let given_nodes = common
            .nodes
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| Node::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut subs = net::expand_subs(&common.sub, &given_nodes)?
            .iter()
            .map(|raw| SubTarget::parse(raw, common.transport))
            .collect::<Result<Vec<_>, _>>()?;
        let nodes = net::assign_nodes(&mut subs, &given_nodes);
        let publ = match common.publ.as_deref() {
            None => Vec::new(),
            Some(raw) => node_urls(raw, &given_nodes, common.pub_to == PubTo::All, "--pub")?,
        };
        if common.pub_to == PubTo::All && given_nodes.len() > 1 && publ.len() == 1 {
            return Err("--pub-to all needs --pub as a path (/pub?id={ch}) and --nodes".into());
        }
        let stats = match common.stats.as_deref() {
            None => Vec::new(),
            Some(raw) => node_urls(raw, &given_nodes, true, "--stats")?,
        };
        let prefix = common.prefix.clone().unwrap_or_else(|| {
            format!(
                "lt{}p{}c",
                (unix_ns() / 1_000_000) % 100_000_000,
                std::process::id()
            )
        });
        let by_files = fd_limit.saturating_sub(FD_RESERVE).max(1);
        let max_per_process = common
            .max_per_process
            .map_or(by_files, |m| m.min(by_files))
            .max(1);
        let started = Instant::now();
        Ok(Ctx {
            deadline: started + Duration::from_secs(common.timeout.max(1)),
            common,
            subs,
            publ,
            stats,
            nodes,
            prefix,
            max_per_process,
            started,
            started_unix_s: unix_ns() / 1_000_000_000,
        })
    }

    pub(crate) fn publisher(&self) -> Result<Vec<UrlTemplate>, String> {
        if self.publ.is_empty() {
            Err("this scenario needs --pub URL_TEMPLATE".to_string())
        } else {
            Ok(self.publ.clone())
        }
    }

    /// Several server nodes: per-node figures are reported.
    fn multi_node(&self) -> bool {
        self.nodes.len() > 1 || !self.common.nodes.is_empty()
    }

    pub(crate) fn need_subs(&self) -> Result<(), String> {
        if self.subs.is_empty() {
            Err("this scenario needs --sub URL_TEMPLATE".into())
        } else {
            Ok(())
        }
    }

    fn plan(&self, first: u64, count: u64, channels: u64) -> GroupPlan {
        GroupPlan {
            targets: self.subs.clone(),
            channels: channels.max(1),
            prefix: self.prefix.clone(),
            first,
            count,
            per_source: self.common.per_source.max(1),
            connect_concurrency: self.common.connect_concurrency.max(1),
            connect_timeout_ms: self.common.connect_timeout_ms,
        }
    }

    fn processes_for(&self, count: u64) -> u64 {
        count.div_ceil(self.max_per_process).max(1)
    }

    fn bar(&self, len: u64, message: &str) -> ProgressBar {
        if self.common.no_progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos}/{len} {elapsed}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_string());
        bar
    }

    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Starts `count` subscribers (global indexes from `first`) on `channels` and waits until they
    /// are connected (or failed, or the connect phase's bound).
    pub(crate) async fn open(
        &self,
        first: u64,
        count: u64,
        channels: u64,
    ) -> Result<Group, String> {
        let plan = self.plan(first, count, channels);
        let processes = self.processes_for(count);
        let group = Group::start(&plan, processes, self.remaining()).await?;
        let bar = self.bar(count, "connecting");
        // Connect phase bound: the connect timeout per wave of `connect_concurrency` attempts,
        // within the run's deadline.
        let waves = count.div_ceil(self.common.connect_concurrency.max(1) as u64) + 1;
        let bound = Duration::from_millis(self.common.connect_timeout_ms.saturating_mul(waves));
        let deadline = (Instant::now() + bound).min(self.deadline);
        group
            .wait_connected(deadline, |c| bar.set_position(c.connected + c.failed))
            .await;
        bar.finish_and_clear();
        Ok(group)
    }

    pub(crate) fn report(
        &self,
        scenario: &str,
        params: serde_json::Value,
        figures: BTreeMap<String, f64>,
        details: serde_json::Value,
    ) -> Report {
        Report {
            tool: "herald-loadtest".into(),
            scenario: scenario.into(),
            label: self.common.label.clone(),
            server: self.common.server.clone(),
            started_unix_s: self.started_unix_s,
            duration_s: self.started.elapsed().as_secs_f64(),
            params,
            figures,
            details,
        }
    }

    /// Number of subscribers the server reports at `--stats` (the first node's with --nodes: a
    /// shared engine counts the whole cluster there), if given and readable.
    async fn server_subscribers(&self) -> Option<f64> {
        subscribers_at(self.stats.first()?).await
    }

    /// With `--stats`, waits (at most 10 s) until the server counts at least `subscribers`, so that
    /// no subscriber misses the first message because the server had not registered it yet.
    /// With a statistics URL per node, `planned` (subscribers per node) bounds what each node's
    /// count contributes: a node of a shared engine counts the whole cluster, one of separate
    /// engines only its own.
    async fn wait_server_sees(&self, subscribers: u64, planned: &[u64]) {
        if self.stats.is_empty() || subscribers == 0 {
            return;
        }
        let deadline = (Instant::now() + Duration::from_secs(10)).min(self.deadline);
        while Instant::now() < deadline {
            let mut seen = 0.0;
            for (node, url) in self.stats.iter().enumerate() {
                let Some(n) = subscribers_at(url).await else {
                    return;
                };
                seen += if self.stats.len() > 1 {
                    n.min(planned.get(node).copied().unwrap_or(0) as f64)
                } else {
                    n
                };
            }
            if seen >= subscribers as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("loadtest: the server does not count all {subscribers} subscribers yet; publishing anyway");
    }

    /// Publishes with a progress bar showing publishes and deliveries.
    async fn publish(&self, plan: PubPlan, group: Option<&Group>) -> PubStats {
        let total = plan.per_channel.saturating_mul(plan.channels);
        let progress = Arc::new(AtomicU64::new(0));
        let bar = self.bar(total, "publishing");
        let mut task = tokio::spawn(publisher::run(plan, progress.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let stats = loop {
            tokio::select! {
                done = &mut task => break done.unwrap_or_else(|err| PubStats {
                    errors: [(format!("publisher failed: {err}"), 1)].into(),
                    ..PubStats::default()
                }),
                _ = tick.tick() => {
                    bar.set_position(progress.load(Ordering::Relaxed));
                    if let Some(group) = group {
                        bar.set_message(format!("{} recv", group.counts().received));
                    }
                }
            }
        };
        bar.finish_and_clear();
        stats
    }
}

/// `raw` as URL templates: a full URL as it is; a path joined to the first node, or to every node
/// when `every`.
fn node_urls(
    raw: &str,
    nodes: &[Node],
    every: bool,
    option: &str,
) -> Result<Vec<UrlTemplate>, String> {
    if !raw.starts_with('/') {
        return Ok(vec![UrlTemplate::parse(raw)?]);
    }
    if nodes.is_empty() {
        return Err(format!(
            "{option} {raw:?} is a path: give --nodes too, or a full URL"
        ));
    }
    let take = if every { nodes.len() } else { 1 };
    nodes[..take]
        .iter()
        .map(|node| UrlTemplate::parse(&node.join(raw)))
        .collect()
}

/// Subscribers counted by the statistics at `url`.
async fn subscribers_at(url: &UrlTemplate) -> Option<f64> {
    match tokio::time::timeout(Duration::from_secs(5), fetch(url)).await {
        Ok(Ok(body)) => parse_subscribers(&body),
        Ok(Err(err)) => {
            eprintln!("loadtest: --stats {}: {err}", url.raw);
            None
        }
        Err(_) => {
            eprintln!("loadtest: --stats {}: timed out", url.raw);
            None
        }
    }
}

async fn fetch(url: &UrlTemplate) -> Result<String, String> {
    let mut stream = net::connect(url.addr, None)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut request = http::get_request(&url.host, &url.path, Some("application/json"));
    // Ask for the connection to end with the answer.
    request.truncate(request.len() - 2);
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut reader = ResponseReader::default();
    let mut body = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut status = 0;
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        let mut ended = false;
        while !rest.is_empty() {
            let (used, event) = reader
                .feed(rest, &mut |b: &[u8]| {
                    if body.len() < 4 * 1024 * 1024 {
                        body.extend_from_slice(b)
                    }
                })
                .map_err(|e| e.to_string())?;
            rest = &rest[used..];
            match event {
                Event::NeedMore => break,
                Event::Head(head) => status = head.status,
                Event::End => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            break;
        }
    }
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `subscribers` from Herald's JSON summary, or the `subscribers: N` line of nchan's stub status.
pub fn parse_subscribers(body: &str) -> Option<f64> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(n) = value.get("subscribers").and_then(|v| v.as_f64()) {
            return Some(n);
        }
    }
    body.lines()
        .find_map(|line| line.trim().strip_prefix("subscribers:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

pub(crate) fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn insert_latency(figures: &mut BTreeMap<String, f64>, stats: &GroupStats) {
    let mut hist = latency::histogram();
    latency::import(&mut hist, &stats.latency);
    let summary = latency::summary(&hist);
    figures.insert("latency_p50_ms".into(), summary.p50_ms);
    figures.insert("latency_p90_ms".into(), summary.p90_ms);
    figures.insert("latency_p99_ms".into(), summary.p99_ms);
    figures.insert("latency_p999_ms".into(), summary.p999_ms);
    figures.insert("latency_max_ms".into(), summary.max_ms);
}

fn insert_delivery(figures: &mut BTreeMap<String, f64>, stats: &GroupStats) {
    figures.insert("subscribers".into(), stats.subscribers as f64);
    figures.insert("connected".into(), stats.connected as f64);
    figures.insert("failed".into(), stats.failed as f64);
    figures.insert("deliveries".into(), stats.unique as f64);
    figures.insert("lost".into(), stats.lost as f64);
    figures.insert("duplicated".into(), stats.duplicated as f64);
    figures.insert(
        "corrupt".into(),
        (stats.misrouted + stats.invalid + stats.unexpected) as f64,
    );
    figures.insert("ended_by_server".into(), stats.ended_by_server as f64);
}

/// `stats` without the raw latency histogram (the figures carry its percentiles), so reports stay
/// small.
fn without_buckets(stats: &GroupStats) -> GroupStats {
    let mut stats = GroupStats {
        latency: latency::HistData::default(),
        ..stats.clone()
    };
    for node in &mut stats.by_node {
        node.latency = latency::HistData::default();
    }
    stats
}

/// Deliveries per second from the first send to the last receive.
fn rate(deliveries: u64, first_send_ns: u64, last_recv_ns: u64) -> f64 {
    let span_s = last_recv_ns.saturating_sub(first_send_ns) as f64 / 1e9;
    if span_s > 0.0 {
        deliveries as f64 / span_s
    } else {
        0.0
    }
}

/// Figures per server node: `node<k>_deliveries_per_s` (that node's subscribers' distinct
/// messages / (their last receive − the first send)), connected, deliveries, lost, duplicated,
/// latency, and `node<k>_cpu_s` when there is one `--pid` per node; plus `nodes` and the mean
/// `deliveries_per_s_per_node`.
fn insert_nodes(
    figures: &mut BTreeMap<String, f64>,
    stats: &GroupStats,
    first_send_ns: u64,
    nodes: usize,
    cpu_each: Option<&[f64]>,
) {
    figures.insert("nodes".into(), nodes as f64);
    let mut sum = 0.0;
    for k in 0..nodes {
        let node = stats.by_node.get(k).cloned().unwrap_or_default();
        let per_s = rate(node.unique, first_send_ns, node.last_recv_unix_ns);
        sum += per_s;
        let mut put = |name: &str, value: f64| {
            figures.insert(format!("node{k}_{name}"), value);
        };
        put("connected", node.connected as f64);
        put("deliveries", node.unique as f64);
        put("deliveries_per_s", per_s);
        put("lost", node.lost as f64);
        put("duplicated", node.duplicated as f64);
        put("corrupt", node.corrupt as f64);
        let mut hist = latency::histogram();
        latency::import(&mut hist, &node.latency);
        let summary = latency::summary(&hist);
        put("latency_p50_ms", summary.p50_ms);
        put("latency_p99_ms", summary.p99_ms);
        if let Some(cpu) = cpu_each.filter(|c| c.len() == nodes).map(|c| c[k]) {
            put("cpu_s", cpu);
        }
    }
    figures.insert(
        "deliveries_per_s_per_node".into(),
        sum / nodes.max(1) as f64,
    );
}

/// CPU seconds each pid used between two [`procstat::try_cpu_each`] samples.
fn cpu_used(before: &Option<Vec<f64>>, after: &Option<Vec<f64>>) -> Option<Vec<f64>> {
    match (before, after) {
        (Some(b), Some(a)) if a.len() == b.len() => {
            Some(a.iter().zip(b).map(|(a, b)| a - b).collect())
        }
        _ => None,
    }
}

pub(crate) fn sample_json(sample: &Option<ProcSample>) -> serde_json::Value {
    serde_json::to_value(sample).unwrap_or(serde_json::Value::Null)
}

/// `idle`: hold `subscribers` connections on `channels` for `hold` and report the server's memory
/// per subscriber.
pub async fn idle(ctx: &Ctx, subscribers: u64, channels: u64, hold: f64) -> Result<Report, String> {
    ctx.need_subs()?;
    let before = procstat::try_sample(&ctx.common.pids);
    let group = ctx.open(0, subscribers, channels).await?;
    let hold = Duration::from_secs_f64(hold.max(0.0)).min(ctx.remaining());
    tokio::time::sleep(hold).await;
    let counts = group.counts();
    let after = procstat::try_sample(&ctx.common.pids);
    let server_subscribers = ctx.server_subscribers().await;
    let mut stats = group.finish(None, Duration::ZERO).await;
    stats.client_cpu_s += procstat::own_cpu_seconds();
    let mut figures = BTreeMap::new();
    figures.insert("subscribers".into(), subscribers as f64);
    figures.insert("connected".into(), counts.connected as f64);
    figures.insert("failed".into(), stats.failed as f64);
    figures.insert("ended_by_server".into(), stats.ended_by_server as f64);
    if let (Some(b), Some(a)) = (before, after) {
        let per = |x: u64, y: u64| {
            if counts.connected == 0 {
                0.0
            } else {
                (y as f64 - x as f64) / counts.connected as f64
            }
        };
        figures.insert("rss_before_mb".into(), mb(b.rss_bytes));
        figures.insert("rss_after_mb".into(), mb(a.rss_bytes));
        figures.insert("pss_before_mb".into(), mb(b.pss_bytes));
        figures.insert("pss_after_mb".into(), mb(a.pss_bytes));
        figures.insert("rss_per_sub_bytes".into(), per(b.rss_bytes, a.rss_bytes));
        figures.insert("pss_per_sub_bytes".into(), per(b.pss_bytes, a.pss_bytes));
        figures.insert("fds_after".into(), a.fds as f64);
    }
    if let Some(n) = server_subscribers {
        figures.insert("server_subscribers".into(), n);
    }
    Ok(ctx.report(
        "idle",
        json!({"subscribers": subscribers, "channels": channels, "hold_s": hold.as_secs_f64(),
               "sub": ctx.common.sub, "pids": ctx.common.pids, "processes": ctx.processes_for(subscribers)}),
        figures,
        json!({"before": sample_json(&before), "after": sample_json(&after), "subscribers": without_buckets(&stats),
               "errors": stats.errors}),
    ))
}

/// Parameters of `fanout` (and of `publish`'s subscribers).
#[derive(Debug, Clone)]
pub struct FanoutParams {
    /// Subscribers in all.
    pub subscribers: u64,
    /// Channels.
    pub channels: u64,
    /// Messages per channel.
    pub messages: u64,
    /// Body size.
    pub size: usize,
    /// Total publishes per second (0 = max).
    pub rate: f64,
    /// Publisher connections.
    pub pub_conns: usize,
    /// Pause between connected and the first publish, ms.
    pub settle_ms: u64,
    /// Wait for missing messages after the last publish, s.
    pub grace_s: f64,
}

/// `fanout` (and `publish`): subscribers, then the publisher, then the deliveries.
pub async fn fanout(ctx: &Ctx, p: &FanoutParams, scenario: &str) -> Result<Report, String> {
    let publ = ctx.publisher()?;
    if p.subscribers > 0 {
        ctx.need_subs()?;
    }
    let before = procstat::try_sample(&ctx.common.pids);
    let group = if p.subscribers > 0 {
        Some(ctx.open(0, p.subscribers, p.channels).await?)
    } else {
        None
    };
    let connected = group.as_ref().map(|g| g.counts());
    if let Some(counts) = connected {
        let planned = ctx.plan(0, p.subscribers, p.channels).per_node();
        ctx.wait_server_sees(counts.connected, &planned).await;
    }
    tokio::time::sleep(Duration::from_millis(p.settle_ms).min(ctx.remaining())).await;
    let cpu_before = procstat::try_sample(&ctx.common.pids);
    let cpu_each_before = procstat::try_cpu_each(&ctx.common.pids);
    let redis_before = procstat::try_cpu_each(&ctx.common.redis_pids);
    let plan = PubPlan {
        targets: publ,
        channels: p.channels.max(1),
        prefix: ctx.prefix.clone(),
        per_channel: p.messages,
        size: p.size,
        rate: p.rate,
        conns: p.pub_conns.max(1),
        deadline: ctx.deadline,
        stop: Arc::default(),
    };
    let pubstats = ctx.publish(plan, group.as_ref()).await;
    let cpu_after_publish = procstat::try_sample(&ctx.common.pids);
    let stats = match group {
        Some(group) => {
            let grace = Duration::from_secs_f64(p.grace_s.max(0.0)).min(ctx.remaining());
            let mut stats = group
                .finish(Some(pubstats.per_channel_ok.clone()), grace)
                .await;
            stats.client_cpu_s += procstat::own_cpu_seconds();
            Some(stats)
        }
        None => None,
    };
    let after = procstat::try_sample(&ctx.common.pids);
    let cpu_each = cpu_used(&cpu_each_before, &procstat::try_cpu_each(&ctx.common.pids));
    let redis_cpu = cpu_used(
        &redis_before,
        &procstat::try_cpu_each(&ctx.common.redis_pids),
    );
    let mut figures = BTreeMap::new();
    figures.insert("messages_published".into(), pubstats.ok as f64);
    figures.insert("publish_failed".into(), pubstats.failed as f64);
    figures.insert("publishes_per_s".into(), pubstats.requests_per_s);
    let publish_cpu = match (cpu_before, cpu_after_publish) {
        (Some(b), Some(a)) => Some(a.cpu_s - b.cpu_s),
        _ => None,
    };
    if scenario == "publish" {
        figures.insert("requests_per_s".into(), pubstats.requests_per_s);
        figures.insert("request_p50_ms".into(), pubstats.latency.p50_ms);
        figures.insert("request_p99_ms".into(), pubstats.latency.p99_ms);
        figures.insert("request_max_ms".into(), pubstats.latency.max_ms);
        if let Some(cpu) = publish_cpu.filter(|cpu| *cpu > 0.0) {
            figures.insert("requests_per_server_cpu_s".into(), pubstats.ok as f64 / cpu);
        }
    }
    let mut server_cpu = publish_cpu;
    if let Some(stats) = &stats {
        insert_delivery(&mut figures, stats);
        insert_latency(&mut figures, stats);
        let span_s = stats
            .last_recv_unix_ns
            .saturating_sub(pubstats.first_send_unix_ns) as f64
            / 1e9;
        let per_s = rate(
            stats.unique,
            pubstats.first_send_unix_ns,
            stats.last_recv_unix_ns,
        );
        figures.insert("delivery_span_s".into(), span_s);
        figures.insert("deliveries_per_s".into(), per_s);
        if ctx.multi_node() {
            insert_nodes(
                &mut figures,
                stats,
                pubstats.first_send_unix_ns,
                ctx.nodes.len(),
                cpu_each.as_deref(),
            );
        }
        figures.insert("client_cpu_s".into(), stats.client_cpu_s);
        if let (Some(b), Some(a)) = (cpu_before, after) {
            let cpu = a.cpu_s - b.cpu_s;
            server_cpu = Some(cpu);
            if cpu > 0.0 {
                figures.insert(
                    "deliveries_per_server_cpu_s".into(),
                    stats.unique as f64 / cpu,
                );
            }
        }
    } else {
        figures.insert("client_cpu_s".into(), procstat::own_cpu_seconds());
    }
    if let Some(cpu) = server_cpu {
        figures.insert("server_cpu_s".into(), cpu);
    }
    if let Some(redis) = &redis_cpu {
        let total: f64 = redis.iter().sum();
        figures.insert("redis_cpu_s".into(), total);
        for (k, cpu) in redis.iter().enumerate() {
            figures.insert(format!("redis{k}_cpu_s"), *cpu);
        }
        if let (Some(stats), Some(server)) = (&stats, server_cpu) {
            if server + total > 0.0 {
                figures.insert(
                    "deliveries_per_total_cpu_s".into(),
                    stats.unique as f64 / (server + total),
                );
            }
        }
    }
    if let (Some(b), Some(a)) = (before, after) {
        figures.insert("rss_before_mb".into(), mb(b.rss_bytes));
        figures.insert("rss_after_mb".into(), mb(a.rss_bytes));
    }
    let cpu_by_pid: BTreeMap<String, f64> = ctx
        .common
        .pids
        .iter()
        .zip(cpu_each.iter().flatten())
        .chain(ctx.common.redis_pids.iter().zip(redis_cpu.iter().flatten()))
        .map(|(pid, cpu)| (pid.to_string(), *cpu))
        .collect();
    let nodes: Vec<String> = ctx.nodes.iter().map(|a| a.to_string()).collect();
    let mut errors = pubstats.errors.clone();
    if let Some(stats) = &stats {
        for (k, v) in &stats.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    Ok(ctx.report(
        scenario,
        json!({"subscribers": p.subscribers, "channels": p.channels, "messages_per_channel": p.messages,
               "size": p.size, "rate": p.rate, "pub_conns": p.pub_conns, "settle_ms": p.settle_ms,
               "sub": ctx.common.sub, "pub": ctx.common.publ, "pids": ctx.common.pids,
               "redis_pids": ctx.common.redis_pids, "nodes": nodes,
               "pub_to": if ctx.publ.len() > 1 { "all" } else { "first" },
               "processes": ctx.processes_for(p.subscribers), "connected_at_start": connected}),
        figures,
        json!({"publisher": pubstats, "subscribers": stats.as_ref().map(without_buckets), "before": sample_json(&before),
               "after": sample_json(&after), "cpu_s_by_pid": cpu_by_pid, "errors": errors}),
    ))
}

/// Parameters of `churn`.
#[derive(Debug, Clone)]
pub struct ChurnParams {
    /// Subscribers per wave.
    pub subscribers: u64,
    /// Channels.
    pub channels: u64,
    /// Waves of connect, hold, disconnect.
    pub waves: u64,
    /// Hold time per wave, s.
    pub hold_s: f64,
    /// Publishes per second during the waves.
    pub rate: f64,
    /// Body size.
    pub size: usize,
    /// Wait after the last wave before the final sample, s.
    pub settle_s: f64,
}

/// `churn`: waves of subscribers of every given transport while publishing; server RSS, fds and
/// subscriber counts at baseline, peak and after.
pub async fn churn(ctx: &Ctx, p: &ChurnParams) -> Result<Report, String> {
    ctx.need_subs()?;
    let publ = ctx.publisher()?;
    let baseline = procstat::try_sample(&ctx.common.pids);
    let baseline_subs = ctx.server_subscribers().await;
    // Publish in the background for the whole churn, bounded by the run's deadline and by a
    // message budget large enough for the waves.
    let est_s = p.waves as f64 * (p.hold_s + 5.0) + 10.0;
    let per_channel = ((p.rate.max(0.0) * est_s) / p.channels.max(1) as f64).ceil() as u64 + 1;
    let pub_deadline = (Instant::now() + Duration::from_secs_f64(est_s)).min(ctx.deadline);
    let plan = PubPlan {
        targets: publ,
        channels: p.channels.max(1),
        prefix: ctx.prefix.clone(),
        per_channel: if p.rate > 0.0 { per_channel } else { 0 },
        size: p.size,
        rate: p.rate,
        conns: 1,
        deadline: pub_deadline,
        stop: Arc::default(),
    };
    let stop = plan.stop.clone();
    let publisher = tokio::spawn(publisher::run(plan, Arc::new(AtomicU64::new(0))));
    let mut peak = baseline;
    let mut peak_subs = baseline_subs;
    let mut waves = Vec::new();
    let mut total = GroupStats::default();
    let bar = ctx.bar(p.waves, "waves");
    for wave in 0..p.waves {
        if Instant::now() >= ctx.deadline {
            break;
        }
        let group = ctx
            .open(wave * p.subscribers, p.subscribers, p.channels)
            .await?;
        let hold = Duration::from_secs_f64(p.hold_s.max(0.0)).min(ctx.remaining());
        tokio::time::sleep(hold).await;
        let sample = procstat::try_sample(&ctx.common.pids);
        let subs = ctx.server_subscribers().await;
        if let Some(s) = sample {
            peak = Some(match peak {
                Some(pk) => ProcSample {
                    rss_bytes: pk.rss_bytes.max(s.rss_bytes),
                    pss_bytes: pk.pss_bytes.max(s.pss_bytes),
                    fds: pk.fds.max(s.fds),
                    cpu_s: s.cpu_s,
                },
                None => s,
            });
        }
        if let Some(n) = subs {
            peak_subs = Some(peak_subs.map_or(n, |pk: f64| pk.max(n)));
        }
        let stats = group.finish(None, Duration::ZERO).await;
        waves.push(
            json!({"wave": wave, "connected": stats.connected, "failed": stats.failed,
                          "received": stats.received, "by_transport": stats.by_transport,
                          "server": sample_json(&sample), "server_subscribers": subs}),
        );
        total.merge(&stats);
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Stop publishing (it checks the flag before each message; each request is bounded).
    stop.store(true, Ordering::Relaxed);
    let pubstats = publisher.await.ok();
    tokio::time::sleep(Duration::from_secs_f64(p.settle_s.max(0.0)).min(ctx.remaining())).await;
    let after = procstat::try_sample(&ctx.common.pids);
    let after_subs = ctx.server_subscribers().await;
    let mut figures = BTreeMap::new();
    figures.insert("waves".into(), waves.len() as f64);
    if let Some(pubstats) = &pubstats {
        figures.insert("messages_published".into(), pubstats.ok as f64);
        figures.insert("publish_failed".into(), pubstats.failed as f64);
    }
    figures.insert("connected".into(), total.connected as f64);
    figures.insert("failed".into(), total.failed as f64);
    figures.insert("received".into(), total.received as f64);
    figures.insert("duplicated".into(), total.duplicated as f64);
    figures.insert("corrupt".into(), (total.misrouted + total.invalid) as f64);
    if let (Some(b), Some(pk), Some(a)) = (baseline, peak, after) {
        figures.insert("rss_baseline_mb".into(), mb(b.rss_bytes));
        figures.insert("rss_peak_mb".into(), mb(pk.rss_bytes));
        figures.insert("rss_after_mb".into(), mb(a.rss_bytes));
        figures.insert(
            "rss_growth_bytes".into(),
            a.rss_bytes as f64 - b.rss_bytes as f64,
        );
        figures.insert("fds_baseline".into(), b.fds as f64);
        figures.insert("fds_peak".into(), pk.fds as f64);
        figures.insert("fds_after".into(), a.fds as f64);
        figures.insert("fds_growth".into(), a.fds as f64 - b.fds as f64);
    }
    for (name, value) in [
        ("server_subscribers_baseline", baseline_subs),
        ("server_subscribers_peak", peak_subs),
        ("server_subscribers_after", after_subs),
    ] {
        if let Some(v) = value {
            figures.insert(name.into(), v);
        }
    }
    let transports: Vec<&str> = ctx.subs.iter().map(|s| s.transport.name()).collect();
    Ok(ctx.report(
        "churn",
        json!({"subscribers_per_wave": p.subscribers, "channels": p.channels, "waves": p.waves,
               "hold_s": p.hold_s, "rate": p.rate, "size": p.size, "transports": transports,
               "sub": ctx.common.sub, "pub": ctx.common.publ, "pids": ctx.common.pids}),
        figures,
        json!({"waves": waves, "baseline": sample_json(&baseline), "peak": sample_json(&peak),
               "after": sample_json(&after), "publisher": pubstats,
               "subscribers": without_buckets(&total), "errors": total.errors}),
    ))
}

/// Transports named in reports, for `--transport` help.
pub fn transport_names() -> [&'static str; 4] {
    [
        Transport::Sse.name(),
        Transport::Streaming.name(),
        Transport::Websocket.name(),
        Transport::LongPolling.name(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_subscriber_counts() {
        assert_eq!(
            parse_subscribers(r#"{"hostname": "h", "subscribers": 12, "channels": 3}"#),
            Some(12.0)
        );
        let nchan = "total active subscribers: 5\nsubscribers: 7\nchannels: 2\n";
        assert_eq!(parse_subscribers(nchan), Some(7.0));
        assert_eq!(parse_subscribers("nothing"), None);
    }
}
