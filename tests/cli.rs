//! The `herald` binary: `check-config`, serving with `--config` and `--listen`, the embedded default
//! config, and a clean exit on SIGTERM. Every child process is killed on drop.

mod common;

use common::{parse_json, Subscriber, WAIT};
use reqwest::StatusCode;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A file in the test temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("herald-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write temp config");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion (bounded).
async fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn herald");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} did not exit within 20s"))
        .expect("wait for herald");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `herald` server process; killed (SIGKILL) on drop if still running.
struct Herald {
    child: Child,
    port: u16,
    log: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    client: reqwest::Client,
}

impl Herald {
    /// Starts the binary with `args` plus `--listen 127.0.0.1:<free port>` and waits for its
    /// "listening on" log line.
    async fn start(args: &[&str]) -> Herald {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--listen", &listen])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut herald = Herald {
            child,
            port,
            log,
            seen: Vec::new(),
            client: common::client(),
        };
        let line = herald.wait_for_log("listening on").await;
        assert!(line.contains(&listen), "{line}");
        herald
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    async fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.log.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "herald's stderr closed before {needle:?}; it wrote:\n{}",
                    self.seen.join("\n")
                ),
                Err(_) => panic!(
                    "no {needle:?} in herald's stderr within 10s; it wrote:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(self.url(path))
            .timeout(WAIT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, String) {
        let response = self
            .client
            .post(self.url(path))
            .timeout(WAIT)
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    async fn subscribe(&self, path: &str) -> Subscriber {
        let response = tokio::time::timeout(WAIT, self.client.get(self.url(path)).send())
            .await
            .unwrap_or_else(|_| panic!("GET {path}: no response head"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        Subscriber::new(path, response)
    }

    /// Sends SIGTERM with `kill` and waits (bounded) for the process to exit.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().expect("herald still running").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("herald did not exit within 5s of SIGTERM"))
            .expect("wait for herald");
        status
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        // Only our own child, by its handle; a no-op once it has exited.
        let _ = self.child.start_kill();
    }
}

/// A port that was free a moment ago (bind port 0, read it, release it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

const GOOD_CONFIG: &str = r#"[server]
listen = "127.0.0.1:1"
shutdown_timeout = "2s"

[channels]
message_ttl = "5m"

[[location]]
path = "/publish"
match = "exact"
role = "publisher"
admin = true
channels_path = "$arg_channel"

[[location]]
path = "/stream/"
role = "subscriber"
message_template = "~id~:~text~|"
footer_template = "BYE"

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"
"#;

#[tokio::test]
async fn check_config_accepts_a_valid_file() {
    let file = TempFile::new("good.toml", GOOD_CONFIG);
    let out = run(&["check-config", file.path()]).await;
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status,
        out.stderr
    );
    assert!(out.stdout.contains("valid"), "stdout: {}", out.stdout);
}

#[tokio::test]
async fn check_config_accepts_the_shipped_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald.toml");
    let out = run(&["check-config", path]).await;
    assert!(out.status.success(), "stderr: {}", out.stderr);
}

#[tokio::test]
async fn check_config_names_file_line_and_unknown_key() {
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[channels]\nmessage_ttl = \"1m\"\nbogus_key = 1\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n";
    let file = TempFile::new("unknown.toml", text);
    let out = run(&["check-config", file.path()]).await;
    assert!(!out.status.success(), "must fail; stdout: {}", out.stdout);
    let expected = format!("{}:6", file.path());
    assert!(
        out.stderr.contains(&expected),
        "want {expected}: {}",
        out.stderr
    );
    assert!(out.stderr.contains("bogus_key"), "{}", out.stderr);
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_an_invalid_duration() {
    let text = "[channels]\nmax_channel_id_length = 10\nmessage_ttl = \"10 parsecs\"\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n";
    let file = TempFile::new("badttl.toml", text);
    let out = run(&["check-config", file.path()]).await;
    assert!(!out.status.success(), "must fail; stdout: {}", out.stdout);
    let expected = format!("{}:3", file.path());
    assert!(
        out.stderr.contains(&expected),
        "want {expected}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("message_ttl"),
        "key not named: {}",
        out.stderr
    );
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_an_invalid_mode() {
    let text = "[[location]]\npath = \"/p\"\nrole = \"publisher\"\n\n[[location]]\npath = \"/s/\"\nrole = \"subscriber\"\nmode = \"sideways\"\n";
    let file = TempFile::new("badenum.toml", text);
    let out = run(&["check-config", file.path()]).await;
    assert!(!out.status.success(), "must fail; stdout: {}", out.stdout);
    let expected = format!("{}:8", file.path());
    assert!(
        out.stderr.contains(&expected),
        "want {expected}: {}",
        out.stderr
    );
    assert!(out.stderr.contains("mode"), "key not named: {}", out.stderr);
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_a_zero_limit() {
    let text = "[channels]\nmessage_ttl = \"1m\"\nmax_number_of_channels = 0\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n";
    let file = TempFile::new("zero.toml", text);
    let out = run(&["check-config", file.path()]).await;
    assert!(!out.status.success(), "must fail; stdout: {}", out.stdout);
    let expected = format!("{}:3", file.path());
    assert!(
        out.stderr.contains(&expected),
        "want {expected}: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("max_number_of_channels"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn check_config_of_a_missing_file_fails() {
    let out = run(&["check-config", "/nonexistent/herald-test.toml"]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("/nonexistent/herald-test.toml"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn server_refuses_to_start_with_an_invalid_config() {
    let file = TempFile::new("invalid-serve.toml", "[channels]\nnope = 1\n");
    let out = run(&["--config", file.path(), "--listen", "127.0.0.1:1"]).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_config_file_and_exits_on_sigterm() {
    let file = TempFile::new("serve.toml", GOOD_CONFIG);
    let mut herald = Herald::start(&["--config", file.path()]).await;

    let (status, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary = parse_json(&body);
    assert_eq!(summary["channels"], 0, "{body}");
    assert_eq!(
        summary["by_worker"][0]["pid"],
        herald.child.id().unwrap().to_string()
    );

    let (status, body) = herald.post("/publish?channel=news", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse_json(&body)["published_messages"], 1);
    let mut sub = herald.subscribe("/stream/news.b1").await;
    assert_eq!(sub.read_until("|", WAIT).await, "1:hello|");
    let (status, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parse_json(&body)["subscribers"], 1, "{body}");

    let status = herald.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The open subscriber got its footer before the process ended.
    assert_eq!(sub.read_to_end(WAIT).await, "BYE");
    herald.wait_for_log("SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_config_serves_pub_sub_ev_and_stats() {
    let mut herald = Herald::start(&[]).await;

    let (status, body) = herald.post("/pub?id=news", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "{\"channel\": \"news\", \"published_messages\": 1, \"stored_messages\": 1, \"subscribers\": 0}\r\n"
    );
    let (status, body) = herald.get("/pub?id=news").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut stream = herald.subscribe("/sub/news.b1").await;
    assert_eq!(stream.read_until("\n", WAIT).await, "hello\n");
    let mut events = herald.subscribe("/ev/news.b1").await;
    assert_eq!(events.content_type(), "text/event-stream; charset=utf-8");
    assert_eq!(
        events.read_until("data: hello\n\n", WAIT).await,
        ": \n\ndata: hello\n\n"
    );

    let (status, body) = herald.post("/pub?id=news", "live").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stream.read_until("\n", WAIT).await, "live\n");
    assert_eq!(events.read_until("\n\n", WAIT).await, "data: live\n\n");

    let (status, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK);
    let summary = parse_json(&body);
    assert_eq!(summary["channels"], 1, "{body}");
    assert_eq!(summary["published_messages"], 2, "{body}");
    assert_eq!(summary["subscribers"], 2, "{body}");
    let (status, body) = herald.get("/channels-stats?id=news").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parse_json(&body)["subscribers"], 2, "{body}");

    let status = herald.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    stream.read_to_end(WAIT).await;
    events.read_to_end(WAIT).await;
}
