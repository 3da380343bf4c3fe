//! Smoke test of the load tool: a real Herald (in this test process, on 127.0.0.1:0) and the real
//! `loadtest` binary, each scenario for about a second with tiny counts. It checks that the tool
//! works end to end (0 lost, 0 duplicated, sane figures), not how fast anything is: no performance
//! thresholds. Every wait is bounded.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Subscriber and publisher locations like the default config (pings every 10 s).
const CONFIG: &str = r#"
[server]
shutdown_timeout = "1s"

[channels]
max_messages_stored_per_channel = 20

[[location]]
path = "/pub"
match = "exact"
role = "publisher"
admin = true
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
longpolling_connection_ttl = "30s"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
ping_message_interval = "10s"

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"
channels_path = "$arg_id"
"#;

/// Herald on its own runtime thread; stopped when dropped.
struct Herald {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Herald {
    fn start() -> Herald {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = herald::Config::from_toml(CONFIG, "smoke.toml", None)
                    .expect("smoke config is valid");
                let listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
                let server = herald::Server::bind(&config, Some(listen))
                    .await
                    .expect("bind 127.0.0.1:0");
                addr_tx
                    .send(server.local_addr().expect("local address"))
                    .expect("test is waiting");
                server
                    .run(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("herald started");
        Herald {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `loadtest ARGS --json` (bounded to 60 s) and returns its report.
fn loadtest(args: &[String]) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .args(["--json", "--no-progress", "--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadtest starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadtest {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "loadtest {args:?} failed: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("loadtest printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

fn figures(report: &Value) -> BTreeMap<String, f64> {
    serde_json::from_value(report["figures"].clone()).expect("figures are numbers")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Asserts a fanout-style report delivered `expected` messages exactly once each.
fn assert_delivered(report: &Value, subscribers: f64, expected: f64) {
    let f = figures(report);
    let errors = &report["details"]["errors"];
    assert_eq!(f["connected"], subscribers, "{report:#}");
    assert_eq!(f["failed"], 0.0, "{errors}");
    assert_eq!(f["lost"], 0.0, "{report:#}");
    assert_eq!(f["duplicated"], 0.0, "{report:#}");
    assert_eq!(f["corrupt"], 0.0, "{report:#}");
    assert_eq!(f["deliveries"], expected, "{report:#}");
    assert_eq!(f["publish_failed"], 0.0, "{errors}");
    assert!(f["deliveries_per_s"] > 0.0, "{report:#}");
    assert!(f["latency_p50_ms"] > 0.0, "{report:#}");
    assert!(f["latency_max_ms"] >= f["latency_p99_ms"], "{report:#}");
    assert!(f["latency_max_ms"] < 30_000.0, "{report:#}");
}

#[test]
fn fanout_over_every_transport() {
    type Url = fn(&Herald) -> String;
    let transports: [Url; 4] = [
        |h| format!("sse={}", h.url("/ev/{ch}")),
        |h| format!("streaming={}", h.url("/sub/{ch}")),
        |h| format!("ws://{}/ws/{{ch}}", h.addr),
        |h| format!("long-polling={}", h.url("/lp/{ch}")),
    ];
    for url in transports {
        // A fresh server each time, so its subscriber count is this run's alone.
        let herald = Herald::start();
        let sub = url(&herald);
        let mut a = args(&[
            "fanout",
            "-n",
            "12",
            "-c",
            "3",
            "-m",
            "20",
            "--settle-ms",
            "100",
        ]);
        a.extend(["--sub".into(), sub.clone()]);
        a.extend(["--pub".into(), herald.url("/pub?id={ch}")]);
        // The tool starts publishing once the server counts every subscriber (long-polling
        // requests must be registered before the first message).
        a.extend(["--stats".into(), herald.url("/channels-stats")]);
        let report = loadtest(&a);
        assert_delivered(&report, 12.0, 12.0 * 20.0);
        let by_transport = &report["details"]["subscribers"]["by_transport"];
        assert_eq!(
            by_transport.as_object().map(|o| o.len()),
            Some(1),
            "{sub}: {by_transport}"
        );
    }
}

#[test]
fn fanout_in_worker_processes_from_several_source_addresses() {
    let herald = Herald::start();
    let a = args(&[
        "fanout",
        "-n",
        "30",
        "-c",
        "5",
        "-m",
        "10",
        "--rate",
        "200",
        "--settle-ms",
        "200",
        "--max-per-process",
        "10",
        "--per-source",
        "12",
        "--sub",
        &herald.url("/ev/{ch}"),
        "--sub",
        &format!("ws://{}/ws/{{ch}}", herald.addr),
        "--sub",
        &format!("streaming={}", herald.url("/sub/{ch}")),
        "--pub",
        &herald.url("/pub?id={ch}"),
        "--stats",
        &herald.url("/channels-stats"),
    ]);
    let report = loadtest(&a);
    assert_eq!(report["params"]["processes"], 3, "{report:#}");
    assert_delivered(&report, 30.0, 300.0);
    let by_transport = report["details"]["subscribers"]["by_transport"]
        .as_object()
        .map(|o| o.len());
    assert_eq!(by_transport, Some(3), "{report:#}");
}

/// `--nodes`: subscribers spread round-robin over two servers (separate memory engines here, so
/// the publisher posts to both with `--pub-to all`), figures per node, CPU of `--redis-pid`.
#[test]
fn fanout_over_several_nodes() {
    let nodes = [Herald::start(), Herald::start()];
    let list = format!("{},{}", nodes[0].url(""), nodes[1].url(""));
    let pid = std::process::id().to_string();
    let base = args(&[
        "fanout",
        "-n",
        "16",
        "-c",
        "2",
        "-m",
        "15",
        "--settle-ms",
        "100",
        "--nodes",
        &list,
        "--sub",
        "/ev/{ch}",
        "--sub",
        "ws=/ws/{ch}",
        "--pub",
        "/pub?id={ch}",
        "--stats",
        "/channels-stats",
    ]);
    let mut a = base.clone();
    a.extend(args(&[
        "--pub-to",
        "all",
        "--pid",
        &pid,
        "--pid",
        &pid,
        "--redis-pid",
        &pid,
    ]));
    let report = loadtest(&a);
    assert_delivered(&report, 16.0, 240.0);
    let f = figures(&report);
    assert_eq!(f["nodes"], 2.0, "{report:#}");
    for k in 0..2 {
        assert_eq!(f[&format!("node{k}_connected")], 8.0, "{report:#}");
        assert_eq!(f[&format!("node{k}_deliveries")], 120.0, "{report:#}");
        assert_eq!(f[&format!("node{k}_lost")], 0.0, "{report:#}");
        assert_eq!(f[&format!("node{k}_duplicated")], 0.0, "{report:#}");
        assert!(f[&format!("node{k}_deliveries_per_s")] > 0.0, "{report:#}");
        assert!(f[&format!("node{k}_cpu_s")] >= 0.0, "{report:#}");
    }
    assert!(
        f["redis_cpu_s"] >= 0.0 && f.contains_key("redis0_cpu_s"),
        "{report:#}"
    );
    assert!(f["deliveries_per_s_per_node"] > 0.0, "{report:#}");
    assert_eq!(
        report["params"]["nodes"].as_array().map(|n| n.len()),
        Some(2)
    );

    // Publishing to the first node only: separate engines do not share, so every message is
    // lost on the second node, and the per-node figures say where.
    // The second node's subscribers wait for messages that never come: a short grace.
    let mut a = base;
    a.extend(args(&["--grace", "1"]));
    let report = loadtest(&a);
    let f = figures(&report);
    assert_eq!(f["node0_lost"], 0.0, "{report:#}");
    assert_eq!(f["node0_deliveries"], 120.0, "{report:#}");
    assert_eq!(f["node1_lost"], 120.0, "{report:#}");
    assert_eq!(f["node1_deliveries"], 0.0, "{report:#}");
    assert_eq!(f["lost"], 120.0, "{report:#}");
}

#[test]
fn idle_reports_memory_per_subscriber() {
    let herald = Herald::start();
    let pid = std::process::id().to_string();
    let a = args(&[
        "idle",
        "-n",
        "20",
        "-c",
        "4",
        "--hold",
        "0.5",
        "--pid",
        &pid,
        "--sub",
        &herald.url("/ev/{ch}"),
        "--stats",
        &herald.url("/channels-stats"),
    ]);
    let report = loadtest(&a);
    let f = figures(&report);
    assert_eq!(f["connected"], 20.0, "{report:#}");
    assert_eq!(f["failed"], 0.0, "{report:#}");
    assert_eq!(f["server_subscribers"], 20.0, "{report:#}");
    assert!(
        f["rss_after_mb"] > 0.0 && f["pss_after_mb"] > 0.0,
        "{report:#}"
    );
    assert!(f["rss_per_sub_bytes"].is_finite(), "{report:#}");
    assert!(f["fds_after"] >= 20.0, "{report:#}");
}

#[test]
fn publish_with_and_without_subscribers() {
    let herald = Herald::start();
    let pid = std::process::id().to_string();
    let publisher = herald.url("/pub?id={ch}");
    let report = loadtest(&args(&[
        "publish",
        "-c",
        "10",
        "--requests",
        "300",
        "--conns",
        "4",
        "--pid",
        &pid,
        "--pub",
        &publisher,
    ]));
    let f = figures(&report);
    assert_eq!(f["messages_published"], 300.0, "{report:#}");
    assert_eq!(f["publish_failed"], 0.0, "{report:#}");
    assert!(f["requests_per_s"] > 0.0, "{report:#}");
    assert!(f["request_p99_ms"] > 0.0, "{report:#}");
    assert!(f["server_cpu_s"] >= 0.0, "{report:#}");

    let report = loadtest(&args(&[
        "publish",
        "-c",
        "10",
        "--requests",
        "300",
        "--conns",
        "4",
        "--subs-per-channel",
        "1",
        "--sub",
        &herald.url("/sub/{ch}"),
        "--pub",
        &publisher,
        "--stats",
        &herald.url("/channels-stats"),
    ]));
    assert_delivered(&report, 10.0, 300.0);
}

#[test]
fn churn_waves_of_every_transport() {
    let herald = Herald::start();
    let pid = std::process::id().to_string();
    let a = args(&[
        "churn",
        "-n",
        "8",
        "-c",
        "4",
        "--waves",
        "2",
        "--hold",
        "0.3",
        "--rate",
        "50",
        "--settle",
        "0.3",
        "--pid",
        &pid,
        "--sub",
        &format!("sse={}", herald.url("/ev/{ch}")),
        "--sub",
        &format!("streaming={}", herald.url("/sub/{ch}")),
        "--sub",
        &format!("ws://{}/ws/{{ch}}", herald.addr),
        "--sub",
        &format!("lp={}", herald.url("/lp/{ch}")),
        "--pub",
        &herald.url("/pub?id={ch}"),
        "--stats",
        &herald.url("/channels-stats"),
    ]);
    let report = loadtest(&a);
    let f = figures(&report);
    assert_eq!(f["waves"], 2.0, "{report:#}");
    assert_eq!(f["connected"], 16.0, "{report:#}");
    assert_eq!(f["failed"], 0.0, "{report:#}");
    assert_eq!(f["duplicated"], 0.0, "{report:#}");
    assert_eq!(f["corrupt"], 0.0, "{report:#}");
    assert_eq!(f["publish_failed"], 0.0, "{report:#}");
    assert_eq!(f["server_subscribers_peak"], 8.0, "{report:#}");
    assert!(f["server_subscribers_after"] <= 8.0, "{report:#}");
    assert!(f["rss_peak_mb"] >= f["rss_baseline_mb"] * 0.5, "{report:#}");
    assert!(f["fds_peak"] >= f["fds_baseline"], "{report:#}");
}

#[test]
fn summarize_renders_a_comparison_table() {
    let herald = Herald::start();
    let dir = std::env::temp_dir().join(format!("loadtest-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for server in ["herald", "nchan"] {
        let out = dir.join(format!("{server}.json"));
        let _ = loadtest(&args(&[
            "publish",
            "-c",
            "2",
            "--requests",
            "20",
            "--conns",
            "1",
            "--label",
            "publish-smoke",
            "--server",
            server,
            "--pub",
            &herald.url("/pub?id={ch}"),
            "--out",
            &out.to_string_lossy(),
        ]));
    }
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .arg("summarize")
        .arg(&dir)
        .output()
        .expect("summarize runs");
    let _ = std::fs::remove_dir_all(&dir);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(
        table.contains("| publish-smoke (n=1/1) | requests_per_s |"),
        "{table}"
    );
}
