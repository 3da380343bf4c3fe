//! `loadtest`: a load generator for Herald and other push-stream servers (nchan, the nginx
//! push-stream module), driven by URL templates so the same run measures any of them.
//!
//! Scenarios: `idle` (memory per held subscriber), `fanout` (deliveries/s, publish→receive latency,
//! loss and duplication), `publish` (POST throughput over keep-alive connections), `churn`
//! (waves of connect/disconnect while publishing: RSS, fds and subscriber counts before, at the peak
//! and after) and `abuse` (waves of hostile connections: slow bodies, unfinished WebSocket
//! fragments, ping floods, idle sockets, while witnesses must receive every message). `summarize` turns a folder of `--json` reports into a markdown comparison table.
//! See loadtest/README.md.
//!
//! Module map: `net` (targets, connects from several loopback source addresses), `http` and `ws`
//! (byte-level HTTP/1.1 and WebSocket readers), `body` (message markers), `subscriber` (connection
//! tasks), `group` (worker processes), `publisher`, `procstat` (/proc sampling), `latency`
//! (hdrhistogram), `scenario`, `abuse`, `report`.
//!
//! `--nodes` spreads the subscribers of a run over several server nodes (Herald processes sharing
//! channels through Redis) and reports figures per node; `summarize-nodes` tabulates such runs.

mod abuse;
mod body;
mod group;
mod http;
mod latency;
mod net;
mod procstat;
mod publisher;
mod report;
mod scenario;
mod subscriber;
mod ws;

use clap::{Args, Parser, Subcommand, ValueEnum};
use net::Transport;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Load generator for push-stream servers (Herald, nchan): idle, fanout, publish and churn.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold N subscribers open and report the server's memory per subscriber (--pid).
    Idle(IdleArgs),
    /// N subscribers on C channels; publish M messages per channel; deliveries/s, latency, loss.
    Fanout(FanoutArgs),
    /// POST throughput over K keep-alive connections, with 0 or more subscribers per channel.
    Publish(PublishArgs),
    /// Waves of connect/disconnect (every --sub transport) while publishing; leak check.
    Churn(ChurnArgs),
    /// Waves of hostile connections (slow bodies, unfinished WebSocket fragments, ping floods,
    /// idle sockets) while witness subscribers must receive every message; RSS and fds.
    Abuse(AbuseArgs),
    /// Markdown table of medians of the JSON reports in a folder, one server against another.
    Summarize(SummarizeArgs),
    /// Table of medians of multi-node fan-out reports (`--nodes`), one row per node count.
    SummarizeNodes(SummarizeNodesArgs),
    /// Internal: runs a slice of subscribers for a parent loadtest process.
    #[command(hide = true)]
    Worker,
}

/// Where the publisher sends each message when there are several `--nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PubTo {
    /// The first node only: the nodes share channels (Redis engine) and it reaches the others.
    First,
    /// Every node: for nodes that do not share channels (memory engine), to test the plumbing.
    /// With a shared engine this duplicates every message.
    All,
}

/// Options every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Subscriber URL template, `[TRANSPORT=]URL` with `{ch}` for the channel, e.g.
    /// `http://127.0.0.1:8080/ev/{ch}` or `ws=ws://127.0.0.1:8080/ws/{ch}`. Repeat to mix
    /// transports (subscribers are spread over them). With --nodes, a path (`/ev/{ch}`,
    /// `ws=/ws/{ch}`) is used on every node.
    #[arg(long = "sub", value_name = "URL_TEMPLATE")]
    pub sub: Vec<String>,
    /// Publisher URL template, e.g. `http://127.0.0.1:8080/pub?id={ch}`. With --nodes, a path
    /// (`/pub?id={ch}`) goes to the first node (or every node with --pub-to all).
    #[arg(long = "pub", value_name = "URL_TEMPLATE")]
    pub publ: Option<String>,
    /// Server nodes sharing the channels, as base URLs (`http://127.0.0.1:18101`), comma-separated
    /// or repeated. Subscribers are spread round-robin over them; figures are also given per node
    /// (`node0_…`, `node1_…`), and `--pid`s are taken as the nodes' processes in the same order.
    #[arg(long = "nodes", value_name = "URL[,URL…]", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// With --nodes: publish to the first node (`first`) or to every node (`all`).
    #[arg(long, value_enum, default_value_t = PubTo::First)]
    pub pub_to: PubTo,
    /// Transport of --sub templates without a `TRANSPORT=` prefix (ws:// URLs are WebSocket):
    /// sse, streaming, websocket, long-polling.
    #[arg(long, default_value = "sse", value_parser = parse_transport)]
    pub transport: Transport,
    /// Server process to sample (/proc VmRSS, Pss, fds, CPU); repeat for several (nginx master
    /// and worker): figures are sums.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Other process whose CPU time is reported apart (`redis_cpu_s`), e.g. each redis-server of
    /// a Redis engine; repeat for several.
    #[arg(long = "redis-pid", value_name = "PID")]
    pub redis_pids: Vec<u32>,
    /// Server statistics URL giving a subscriber count (Herald's /channels-stats JSON or nchan's
    /// stub status). With --nodes, a path (`/channels-stats`) is asked of every node.
    #[arg(long, value_name = "URL")]
    pub stats: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Name of this configuration in reports (the comparison groups runs by it).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Name of the server measured, in reports (e.g. herald, nchan).
    #[arg(long, default_value = "")]
    pub server: String,
    /// Channel name prefix (default: unique per run, so stored messages of earlier runs never
    /// reach this one's subscribers).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Connections per source address before using the next (127.0.0.2, 127.0.0.3 …).
    #[arg(long, default_value_t = 25_000)]
    pub per_source: u64,
    /// Most subscribers per process (default: the open-file limit less a reserve); more run in
    /// worker processes.
    #[arg(long, value_name = "N")]
    pub max_per_process: Option<u64>,
    /// Runtime threads of this process (1 = a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Connection attempts in flight at once (per process).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Bound on one subscriber's connect and handshake, ms.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Bound on the whole run, seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: u64,
    /// Channels they are spread over.
    #[arg(long, short = 'c', default_value_t = 100)]
    channels: u64,
    /// Seconds to hold them after connecting, before sampling memory.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers in all.
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: u64,
    /// Channels (subscriber i joins channel i % C).
    #[arg(long, short = 'c', default_value_t = 1)]
    channels: u64,
    /// Messages per channel.
    #[arg(long, short = 'm', default_value_t = 100)]
    messages: u64,
    /// Message body size, bytes.
    #[arg(long, short = 's', default_value_t = 128)]
    size: usize,
    /// Total publishes per second (0 = as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Publisher keep-alive connections.
    #[arg(long, default_value_t = 1)]
    pub_conns: usize,
    /// Pause between "all connected" and the first publish, ms.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Seconds to wait for missing messages after the last publish.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    common: Common,
    /// Channels the requests are spread over.
    #[arg(long, short = 'c', default_value_t = 100)]
    channels: u64,
    /// Requests in all (rounded up to a multiple of the channels).
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Subscribers per channel (0 = nobody listens).
    #[arg(long, default_value_t = 0)]
    subs_per_channel: u64,
    /// Message body size, bytes.
    #[arg(long, short = 's', default_value_t = 128)]
    size: usize,
    /// Total requests per second (0 = as fast as the server answers).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to wait for missing messages after the last publish.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
}

#[derive(Debug, Args)]
struct ChurnArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers per wave (spread over the --sub transports).
    #[arg(long, short = 'n', default_value_t = 1000)]
    subscribers: u64,
    /// Channels.
    #[arg(long, short = 'c', default_value_t = 100)]
    channels: u64,
    /// Waves of connect, hold, disconnect.
    #[arg(long, default_value_t = 3)]
    waves: u64,
    /// Seconds each wave is held.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Publishes per second during the churn (0 = none).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Message body size, bytes.
    #[arg(long, short = 's', default_value_t = 128)]
    size: usize,
    /// Seconds to wait after the last wave before the final sample.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

#[derive(Debug, Args)]
struct AbuseArgs {
    #[command(flatten)]
    common: Common,
    /// Hostile connections per wave.
    #[arg(long, short = 'n', default_value_t = 2000)]
    connections: u64,
    /// The waves, in order (comma-separated): slow-body, ws-fragment, ws-ping-flood, idle.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "slow-body,ws-fragment,ws-ping-flood,idle"
    )]
    kinds: Vec<String>,
    /// Seconds each wave holds its connections.
    #[arg(long, default_value_t = 15.0)]
    hold: f64,
    /// Seconds after a wave before its "after" sample.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// WebSocket location template for the WebSocket kinds, e.g. `ws://127.0.0.1:8080/ws/{ch}`.
    #[arg(long, value_name = "URL_TEMPLATE")]
    ws: Option<String>,
    /// Declared body of each slow publish, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    body_size: u64,
    /// Payload of each unfinished WebSocket frame, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    fragment_size: u64,
    /// Witness subscribers (on the --sub templates).
    #[arg(long, default_value_t = 100)]
    witnesses: u64,
    /// Channels of the witnesses.
    #[arg(long, short = 'c', default_value_t = 10)]
    channels: u64,
    /// Witness publishes per second, in all.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Messages published per channel before the baseline (to channels like the witnesses'), so
    /// that the server's stored windows are full when the baseline is taken (the default config
    /// keeps 100 per channel).
    #[arg(long, default_value_t = 100)]
    prefill: u64,
}

#[derive(Debug, Args)]
struct SummarizeNodesArgs {
    /// Folder of JSON reports of `fanout --nodes` runs.
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct SummarizeArgs {
    /// Folder of JSON reports.
    dir: PathBuf,
    /// Server compared (numerator of the ratio).
    #[arg(long, default_value = "herald")]
    subject: String,
    /// Server compared against (denominator).
    #[arg(long, default_value = "nchan")]
    baseline: String,
}

fn parse_transport(s: &str) -> Result<Transport, String> {
    s.parse::<Transport>()
        .map_err(|e| format!("{e}; one of {}", scenario::transport_names().join(", ")))
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Prints a summary table, or the error.
fn print_table(table: Result<String, String>) -> ExitCode {
    match table {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("loadtest: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fd_limit = procstat::raise_fd_limit();
    let common = match &cli.command {
        Command::Summarize(args) => {
            return print_table(report::summarize(&args.dir, &args.subject, &args.baseline));
        }
        Command::SummarizeNodes(args) => return print_table(report::summarize_nodes(&args.dir)),
        Command::Worker => {
            let result = match runtime(1) {
                Ok(rt) => rt.block_on(group::worker_main()),
                Err(err) => Err(format!("cannot start the runtime: {err}")),
            };
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("loadtest worker: {err}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Idle(a) => a.common.clone(),
        Command::Fanout(a) => a.common.clone(),
        Command::Publish(a) => a.common.clone(),
        Command::Churn(a) => a.common.clone(),
        Command::Abuse(a) => a.common.clone(),
    };
    let rt = match runtime(common.threads) {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("loadtest: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let json = common.json;
    let out = common.out.clone();
    let timeout = Duration::from_secs(common.timeout.max(1) + 60);
    let ctx = match scenario::Ctx::new(common, fd_limit) {
        Ok(ctx) => ctx,
        Err(err) => {
            eprintln!("loadtest: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let run = async {
            match &cli.command {
                Command::Idle(a) => scenario::idle(&ctx, a.subscribers, a.channels, a.hold).await,
                Command::Fanout(a) => {
                    let p = scenario::FanoutParams {
                        subscribers: a.subscribers,
                        channels: a.channels,
                        messages: a.messages,
                        size: a.size,
                        rate: a.rate,
                        pub_conns: a.pub_conns,
                        settle_ms: a.settle_ms,
                        grace_s: a.grace,
                    };
                    scenario::fanout(&ctx, &p, "fanout").await
                }
                Command::Publish(a) => {
                    let channels = a.channels.max(1);
                    let p = scenario::FanoutParams {
                        subscribers: channels * a.subs_per_channel,
                        channels,
                        messages: a.requests.div_ceil(channels),
                        size: a.size,
                        rate: a.rate,
                        pub_conns: a.conns,
                        settle_ms: if a.subs_per_channel > 0 { 500 } else { 0 },
                        grace_s: a.grace,
                    };
                    scenario::fanout(&ctx, &p, "publish").await
                }
                Command::Churn(a) => {
                    let p = scenario::ChurnParams {
                        subscribers: a.subscribers,
                        channels: a.channels,
                        waves: a.waves,
                        hold_s: a.hold,
                        rate: a.rate,
                        size: a.size,
                        settle_s: a.settle,
                    };
                    scenario::churn(&ctx, &p).await
                }
                Command::Abuse(a) => {
                    let kinds = a
                        .kinds
                        .iter()
                        .map(|k| abuse::Kind::parse(k.trim()))
                        .collect::<Result<Vec<_>, _>>()?;
                    let p = abuse::AbuseParams {
                        connections: a.connections,
                        kinds,
                        hold_s: a.hold,
                        settle_s: a.settle,
                        ws: a.ws.clone(),
                        body_size: a.body_size,
                        fragment_size: a.fragment_size,
                        witnesses: a.witnesses,
                        channels: a.channels,
                        rate: a.rate,
                        prefill: a.prefill,
                    };
                    abuse::abuse(&ctx, &p).await
                }
                Command::Summarize(_) | Command::SummarizeNodes(_) | Command::Worker => {
                    Err("not a scenario".into())
                }
            }
        };
        // Every phase has its own bound; this one catches anything that would not stop.
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err("the run did not finish within --timeout".into()),
        }
    });
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            eprintln!("loadtest: {err}");
            return ExitCode::FAILURE;
        }
    };
    let text = match serde_json::to_string_pretty(&report) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("loadtest: cannot encode the report: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = out {
        if let Err(err) = std::fs::write(&path, format!("{text}\n")) {
            eprintln!("loadtest: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if json {
        println!("{text}");
    } else {
        report::print_human(&report);
    }
    // Worker processes and connections end with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    ExitCode::SUCCESS
}
