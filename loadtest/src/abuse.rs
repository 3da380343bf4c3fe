//! The `abuse` scenario: waves of hostile connections, one kind at a time, while witness
//! subscribers receive a steady publish stream. For each wave it reports the server's RSS and open
//! files at baseline, at the peak and after the wave closed, and how the server answered the
//! hostile connections; at the end, whether the witnesses received every message.
//!
//! Kinds (each `-n` connections, spread over source addresses like subscribers):
//! - `slow-body`: a publish declaring `--body-size` bytes, sends 90% of them at once, then one byte
//!   every 2 s (the memory a slow uploader makes the server buffer);
//! - `ws-fragment`: a WebSocket text frame of `--fragment-size` bytes with FIN = 0, then nothing
//!   (an unfinished fragmented message);
//! - `ws-ping-flood`: ping frames as fast as the socket takes them, never reading the pongs;
//! - `idle`: a TCP connection that sends nothing.
//!
//! Every connection ends when the wave's hold ends (or earlier, when the server closes it); the
//! whole run is bounded by `--timeout`.

use crate::net::{self, UrlTemplate};
use crate::procstat::{self, ProcSample};
use crate::publisher::{self, PubPlan};
use crate::report::Report;
use crate::scenario::{mb, sample_json, Ctx};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A kind of hostile connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SlowBody,
    WsFragment,
    WsPingFlood,
    Idle,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SlowBody => "slow-body",
            Kind::WsFragment => "ws-fragment",
            Kind::WsPingFlood => "ws-ping-flood",
            Kind::Idle => "idle",
        }
    }

    pub fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "slow-body" => Ok(Kind::SlowBody),
            "ws-fragment" => Ok(Kind::WsFragment),
            "ws-ping-flood" => Ok(Kind::WsPingFlood),
            "idle" => Ok(Kind::Idle),
            other => Err(format!(
                "unknown kind {other:?} (slow-body, ws-fragment, ws-ping-flood, idle)"
            )),
        }
    }
}

/// Parameters of `abuse`.
#[derive(Debug, Clone)]
pub struct AbuseParams {
    /// Hostile connections per wave.
    pub connections: u64,
    /// The waves, in order.
    pub kinds: Vec<Kind>,
    /// Seconds each wave holds its connections.
    pub hold_s: f64,
    /// Seconds after a wave closed before the "after" sample.
    pub settle_s: f64,
    /// WebSocket location template (`ws://127.0.0.1:8080/ws/{ch}`) for the WebSocket kinds.
    pub ws: Option<String>,
    /// Declared body of a slow publish, bytes.
    pub body_size: u64,
    /// Payload of the unfinished WebSocket frame, bytes.
    pub fragment_size: u64,
    /// Witness subscribers (on the --sub templates) and their channels.
    pub witnesses: u64,
    pub channels: u64,
    /// Witness publishes per second, in all.
    pub rate: f64,
    /// Messages published per witness channel before the witnesses join and before the baseline,
    /// so that stored windows are as full as they will get.
    pub prefill: u64,
}

/// How one hostile connection ended.
#[derive(Debug, Default)]
struct Tally {
    connected: AtomicU64,
    connect_failed: AtomicU64,
    /// The server answered an HTTP status (counted by status).
    answered: parking::Counts,
    /// The server closed the connection (EOF or reset) without an HTTP answer.
    closed_by_server: AtomicU64,
    /// Still open when the wave's hold ended.
    open_at_end: AtomicU64,
    /// Bytes the hostile clients wrote.
    bytes_sent: AtomicU64,
}

/// A small map of counts shared by connection tasks.
mod parking {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    pub struct Counts(Mutex<BTreeMap<String, u64>>);

    impl Counts {
        pub fn add(&self, key: String) {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            *map.entry(key).or_default() += 1;
        }

        pub fn snapshot(&self) -> BTreeMap<String, u64> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
    }
}

/// Runs the waves; see the module docs.
pub async fn abuse(ctx: &Ctx, p: &AbuseParams) -> Result<Report, String> {
    ctx.need_subs()?;
    let publ = ctx.publisher()?;
    let ws = match &p.ws {
        Some(raw) => Some(UrlTemplate::parse(raw)?),
        None if p
            .kinds
            .iter()
            .any(|k| matches!(k, Kind::WsFragment | Kind::WsPingFlood)) =>
        {
            return Err("the ws-fragment and ws-ping-flood kinds need --ws URL_TEMPLATE".into())
        }
        None => None,
    };
    let idle = procstat::try_sample(&ctx.common.pids)
        .ok_or("abuse needs --pid of the server (its RSS and open files are the result)")?;
    // Fill the witness channels' stored windows first, so that the baseline is the server in its
    // steady state (stored messages would otherwise grow through the run and look like a leak).
    if p.prefill > 0 {
        let prefill = PubPlan {
            targets: publ.clone(),
            channels: p.channels.max(1),
            prefix: ctx.prefix.clone(),
            per_channel: p.prefill,
            size: 128,
            rate: 0.0,
            conns: 1,
            deadline: ctx.deadline,
            stop: Arc::default(),
        };
        publisher::run(prefill, Arc::new(AtomicU64::new(0))).await;
    }
    // Witnesses first, then a steady publish stream for the whole run.
    let witnesses = ctx.open(0, p.witnesses, p.channels).await?;
    let est_s = p.kinds.len() as f64 * (p.hold_s + p.settle_s + 10.0) + 10.0;
    let per_channel = ((p.rate.max(0.1) * est_s) / p.channels.max(1) as f64).ceil() as u64 + 1;
    let plan = PubPlan {
        targets: publ.clone(),
        channels: p.channels.max(1),
        prefix: ctx.prefix.clone(),
        per_channel,
        size: 128,
        rate: p.rate.max(0.1),
        conns: 1,
        deadline: (Instant::now() + Duration::from_secs_f64(est_s)).min(ctx.deadline),
        stop: Arc::default(),
    };
    let stop = plan.stop.clone();
    let publishing = tokio::spawn(publisher::run(plan, Arc::new(AtomicU64::new(0))));
    // The baseline is the server in its normal work: witnesses connected, messages flowing.
    tokio::time::sleep(Duration::from_secs(2).min(ctx.remaining())).await;
    let baseline = procstat::try_sample(&ctx.common.pids).unwrap_or(idle);

    let mut figures = BTreeMap::new();
    let mut waves = Vec::new();
    let mut worst_peak = baseline;
    let mut worst_after = baseline;
    for (wave, kind) in p.kinds.iter().enumerate() {
        if ctx.remaining().is_zero() {
            break;
        }
        let before = procstat::try_sample(&ctx.common.pids).unwrap_or(baseline);
        let tally = Arc::new(Tally::default());
        let done = Arc::new(AtomicBool::new(false));
        let hold_until = Instant::now() + Duration::from_secs_f64(p.hold_s).min(ctx.remaining());
        let target = match kind {
            Kind::SlowBody | Kind::Idle => publ[0].clone(),
            Kind::WsFragment | Kind::WsPingFlood => ws.clone().ok_or("--ws is needed")?,
        };
        let tasks = launch(
            ctx,
            p,
            *kind,
            &target,
            wave as u64,
            &tally,
            &done,
            hold_until,
        );
        // Sample while the wave holds.
        let mut peak = before;
        while Instant::now() < hold_until {
            if let Some(s) = procstat::try_sample(&ctx.common.pids) {
                peak = max_sample(peak, s);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        done.store(true, Ordering::Relaxed);
        let _ = tasks.await;
        tokio::time::sleep(Duration::from_secs_f64(p.settle_s).min(ctx.remaining())).await;
        let after = procstat::try_sample(&ctx.common.pids).unwrap_or(before);
        worst_peak = max_sample(worst_peak, peak);
        worst_after = max_sample(worst_after, after);
        let name = kind.name();
        figures.insert(format!("{name}_rss_peak_mb"), mb(peak.rss_bytes));
        figures.insert(format!("{name}_rss_after_mb"), mb(after.rss_bytes));
        figures.insert(format!("{name}_fds_peak"), peak.fds as f64);
        figures.insert(format!("{name}_fds_after"), after.fds as f64);
        figures.insert(
            format!("{name}_connected"),
            tally.connected.load(Ordering::Relaxed) as f64,
        );
        figures.insert(
            format!("{name}_open_at_end"),
            tally.open_at_end.load(Ordering::Relaxed) as f64,
        );
        waves.push(json!({
            "kind": name,
            "connected": tally.connected.load(Ordering::Relaxed),
            "connect_failed": tally.connect_failed.load(Ordering::Relaxed),
            "answered": tally.answered.snapshot(),
            "closed_by_server": tally.closed_by_server.load(Ordering::Relaxed),
            "open_at_end": tally.open_at_end.load(Ordering::Relaxed),
            "client_bytes_sent": tally.bytes_sent.load(Ordering::Relaxed),
            "before": sample_json(&Some(before)),
            "peak": sample_json(&Some(peak)),
            "after": sample_json(&Some(after)),
        }));
    }
    stop.store(true, Ordering::Relaxed);
    let pubstats = publishing.await.unwrap_or_default();
    let grace = Duration::from_secs(5).min(ctx.remaining());
    let stats = witnesses
        .finish(Some(pubstats.per_channel_ok.clone()), grace)
        .await;
    figures.insert("rss_idle_mb".into(), mb(idle.rss_bytes));
    figures.insert("rss_baseline_mb".into(), mb(baseline.rss_bytes));
    figures.insert("rss_peak_mb".into(), mb(worst_peak.rss_bytes));
    figures.insert("rss_after_mb".into(), mb(worst_after.rss_bytes));
    figures.insert(
        "rss_after_over_baseline".into(),
        worst_after.rss_bytes as f64 / baseline.rss_bytes.max(1) as f64,
    );
    figures.insert("fds_baseline".into(), baseline.fds as f64);
    figures.insert("fds_peak".into(), worst_peak.fds as f64);
    figures.insert("fds_after".into(), worst_after.fds as f64);
    figures.insert("messages_published".into(), pubstats.ok as f64);
    figures.insert("publish_failed".into(), pubstats.failed as f64);
    figures.insert("witnesses_connected".into(), stats.connected as f64);
    figures.insert("witness_deliveries".into(), stats.unique as f64);
    figures.insert("witness_lost".into(), stats.lost as f64);
    figures.insert("witness_duplicated".into(), stats.duplicated as f64);
    figures.insert(
        "witnesses_ended_by_server".into(),
        stats.ended_by_server as f64,
    );
    let kinds: Vec<&str> = p.kinds.iter().map(|k| k.name()).collect();
    Ok(ctx.report(
        "abuse",
        json!({"connections_per_wave": p.connections, "kinds": kinds, "hold_s": p.hold_s,
               "settle_s": p.settle_s, "body_size": p.body_size, "fragment_size": p.fragment_size,
               "witnesses": p.witnesses, "channels": p.channels, "rate": p.rate,
               "sub": ctx.common.sub, "pub": ctx.common.publ, "ws": p.ws, "pids": ctx.common.pids}),
        figures,
        json!({"waves": waves, "baseline": sample_json(&Some(baseline)), "publisher": pubstats,
               "witness_errors": stats.errors}),
    ))
}

fn max_sample(a: ProcSample, b: ProcSample) -> ProcSample {
    ProcSample {
        rss_bytes: a.rss_bytes.max(b.rss_bytes),
        pss_bytes: a.pss_bytes.max(b.pss_bytes),
        fds: a.fds.max(b.fds),
        cpu_s: b.cpu_s,
    }
}

/// Starts the wave's connections (bounded connect concurrency); the returned task ends when every
/// connection has.
#[allow(clippy::too_many_arguments)]
fn launch(
    ctx: &Ctx,
    p: &AbuseParams,
    kind: Kind,
    target: &UrlTemplate,
    wave: u64,
    tally: &Arc<Tally>,
    done: &Arc<AtomicBool>,
    hold_until: Instant,
) -> tokio::task::JoinHandle<()> {
    let connecting = Arc::new(Semaphore::new(ctx.common.connect_concurrency.max(1)));
    let per_source = ctx.common.per_source.max(1);
    let prefix = format!("{}abuse{wave}-", ctx.prefix);
    let count = p.connections;
    let (body_size, fragment_size) = (p.body_size, p.fragment_size);
    let target = target.clone();
    let tally = tally.clone();
    let done = done.clone();
    tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for index in 0..count {
            let Ok(permit) = connecting.clone().acquire_owned().await else {
                break;
            };
            let source = match net::source_for(index, per_source) {
                Ok(source) => source,
                Err(_) => break,
            };
            let (target, tally, done) = (target.clone(), tally.clone(), done.clone());
            let channel = format!("{prefix}{}", index % 100);
            set.spawn(async move {
                let connected =
                    tokio::time::timeout(Duration::from_secs(10), net::connect(target.addr, source))
                        .await;
                drop(permit);
                let Ok(Ok(stream)) = connected else {
                    tally.connect_failed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                tally.connected.fetch_add(1, Ordering::Relaxed);
                let path = target.path_for(&channel);
                let outcome = tokio::select! {
                    outcome = attack(kind, stream, &target.host, &path, body_size, fragment_size, &tally) => outcome,
                    _ = until(hold_until, &done) => Outcome::OpenAtEnd,
                };
                match outcome {
                    Outcome::Answered(status) => tally.answered.add(status),
                    Outcome::Closed => {
                        tally.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::OpenAtEnd => {
                        tally.open_at_end.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while set.join_next().await.is_some() {}
    })
}

/// Resolves at `deadline` or once `done` is set.
async fn until(deadline: Instant, done: &AtomicBool) {
    while Instant::now() < deadline && !done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

enum Outcome {
    /// The first line of the server's answer (`HTTP/1.1 408 …` → "408").
    Answered(String),
    Closed,
    OpenAtEnd,
}

/// One hostile connection; returns when the server answers or closes (else runs until dropped).
async fn attack(
    kind: Kind,
    stream: TcpStream,
    host: &str,
    path: &str,
    body_size: u64,
    fragment_size: u64,
    tally: &Tally,
) -> Outcome {
    let (mut reader, mut writer) = stream.into_split();
    let sent = &tally.bytes_sent;
    let attacking = async {
        match kind {
            Kind::Idle => std::future::pending::<()>().await,
            Kind::SlowBody => {
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {body_size}\r\n\r\n"
                );
                if writer.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let quick = body_size * 9 / 10;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = quick;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if writer.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                    left -= n as u64;
                }
                for _ in quick..body_size {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if writer.write_all(b"x").await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::future::pending::<()>().await
            }
            Kind::WsFragment | Kind::WsPingFlood => {
                let head = crate::http::websocket_request(host, path);
                if writer.write_all(&head).await.is_err() {
                    return;
                }
                if kind == Kind::WsFragment {
                    let frame = masked_frame(0x01, fragment_size);
                    let payload = vec![b'x'; 64 * 1024];
                    if writer.write_all(&frame).await.is_err() {
                        return;
                    }
                    let mut left = fragment_size;
                    while left > 0 {
                        let n = left.min(payload.len() as u64) as usize;
                        if writer.write_all(&payload[..n]).await.is_err() {
                            return;
                        }
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                        left -= n as u64;
                    }
                    std::future::pending::<()>().await
                }
                let mut pings = Vec::with_capacity(64 * 1024);
                while pings.len() + 131 < 64 * 1024 {
                    pings.extend_from_slice(&masked_frame(0x89, 125));
                    pings.extend_from_slice(&[b'p'; 125]);
                }
                loop {
                    if writer.write_all(&pings).await.is_err() {
                        return;
                    }
                    sent.fetch_add(pings.len() as u64, Ordering::Relaxed);
                }
            }
        }
    };
    // The ping flood never reads (that is the attack); the others read the server's answer.
    if kind == Kind::WsPingFlood {
        attacking.await;
        return Outcome::Closed;
    }
    let reading = async {
        let mut first = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if first.len() < 64 {
                        first.extend_from_slice(&buf[..n.min(64)]);
                    }
                    // A WebSocket handshake's 101 is not the end: read on until the close.
                    if !first.starts_with(b"HTTP/1.1 101") {
                        break;
                    }
                }
            }
        }
        let line = String::from_utf8_lossy(&first);
        match line.split_whitespace().nth(1) {
            None => Outcome::Closed,
            Some("101") => Outcome::Answered("101 then closed".into()),
            Some(status) => Outcome::Answered(status.to_string()),
        }
    };
    tokio::select! {
        outcome = reading => outcome,
        _ = attacking => Outcome::Closed,
    }
}

/// A masked client frame header (FIN bit and opcode in `first`) for a payload of `len` bytes
/// with an all-zero mask (the payload then goes as is).
fn masked_frame(first: u8, len: u64) -> Vec<u8> {
    let mut frame = vec![first];
    match len {
        0..=125 => frame.push(0x80 | len as u8),
        126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&len.to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_kinds() {
        assert_eq!(masked_frame(0x89, 125), vec![0x89, 0x80 | 125, 0, 0, 0, 0]);
        assert_eq!(masked_frame(0x01, 1 << 20)[..2], [0x01, 0x80 | 127]);
        assert_eq!(masked_frame(0x01, 300)[..4], [0x01, 0x80 | 126, 1, 44]);
        for kind in [
            Kind::SlowBody,
            Kind::WsFragment,
            Kind::WsPingFlood,
            Kind::Idle,
        ] {
            assert_eq!(Kind::parse(kind.name()), Ok(kind));
        }
        assert!(Kind::parse("nope").is_err());
    }
}
