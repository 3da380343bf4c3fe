//! The `herald` binary: `check-config`, serving with `--config` and `--listen`, the embedded default
//! config, and a clean exit on SIGTERM. Every child process is killed on drop.

mod common;

use common::process::{run, HeraldProcess, TempFile};
use common::{parse_json, WAIT};
use reqwest::StatusCode;
use std::time::Duration;

/// Starts the binary with `args` plus `--listen 127.0.0.1:0` and checks that it listens on the
/// address given on the command line (a port the kernel picked), not the config's port 1.
async fn start(args: &[&str]) -> HeraldProcess {
    let herald = HeraldProcess::start(&[args, &["--listen", "127.0.0.1:0"]].concat()).await;
    let addr = herald.http.addr;
    assert!(
        addr.ip().is_loopback() && addr.port() != 0 && addr.port() != 1,
        "--listen 127.0.0.1:0 should override the config's 127.0.0.1:1; listening on {addr}"
    );
    herald
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
async fn check_config_connect_reaches_every_redis_and_names_the_one_that_fails() {
    let redis = common::redis::RedisServer::start();
    // A port nothing listens on: bind one, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port");
    let engine = |urls: &str| {
        format!(
            "{GOOD_CONFIG}\n[engine]\nkind = \"redis\"\nredis_urls = [{urls}]\ncommand_timeout = \"1s\"\n"
        )
    };
    let live = format!("{:?}", redis.url());
    let file = TempFile::new("redis-ok.toml", &engine(&live));
    let out = run(&["check-config", "--connect", file.path()]).await;
    assert!(out.status.success(), "stderr: {}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("shard 0 {}: Redis ", redis.url())),
        "stdout: {}",
        out.stdout
    );

    let dead_url = format!("redis://127.0.0.1:{dead}/0");
    let file = TempFile::new("redis-dead.toml", &engine(&format!("{live}, {dead_url:?}")));
    let out = run(&["check-config", "--connect", file.path()]).await;
    assert!(!out.status.success(), "stdout: {}", out.stdout);
    assert!(
        out.stdout.contains("shard 0 ") && out.stderr.contains(&format!("shard 1 {dead_url}: ")),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    // Without --connect the same file is only checked.
    let out = run(&["check-config", file.path()]).await;
    assert!(out.status.success(), "stderr: {}", out.stderr);

    // A memory-engine config has nothing to reach.
    let file = TempFile::new("memory.toml", GOOD_CONFIG);
    let out = run(&["check-config", "--connect", file.path()]).await;
    assert!(
        out.status.success() && out.stdout.contains("engine: memory"),
        "stdout: {}",
        out.stdout
    );
}

#[tokio::test]
async fn check_config_accepts_the_shipped_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald.toml");
    let out = run(&["check-config", path]).await;
    assert!(out.status.success(), "stderr: {}", out.stderr);
}

/// `check-config` on a file named `name` holding `text` fails, and its stderr names the file with
/// `line` and names `key`.
async fn assert_check_config_names(name: &str, text: &str, line: usize, key: &str) {
    let file = TempFile::new(name, text);
    let out = run(&["check-config", file.path()]).await;
    assert!(!out.status.success(), "must fail; stdout: {}", out.stdout);
    let expected = format!("{}:{line}", file.path());
    assert!(
        out.stderr.contains(&expected),
        "want {expected}: {}",
        out.stderr
    );
    assert!(out.stderr.contains(key), "key not named: {}", out.stderr);
}

#[tokio::test]
async fn check_config_names_file_line_and_unknown_key() {
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[channels]\nmessage_ttl = \"1m\"\nbogus_key = 1\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n";
    assert_check_config_names("unknown.toml", text, 6, "bogus_key").await;
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_an_invalid_duration() {
    let text = "[channels]\nmax_channel_id_length = 10\nmessage_ttl = \"10 parsecs\"\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n";
    assert_check_config_names("badttl.toml", text, 3, "message_ttl").await;
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_an_invalid_mode() {
    let text = "[[location]]\npath = \"/p\"\nrole = \"publisher\"\n\n[[location]]\npath = \"/s/\"\nrole = \"subscriber\"\nmode = \"sideways\"\n";
    assert_check_config_names("badenum.toml", text, 8, "mode").await;
}

#[tokio::test]
async fn check_config_names_file_line_and_key_of_a_zero_limit() {
    let text = "[channels]\nmessage_ttl = \"1m\"\nmax_number_of_channels = 0\n\n[[location]]\npath = \"/p\"\nrole = \"publisher\"\n";
    assert_check_config_names("zero.toml", text, 3, "max_number_of_channels").await;
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
    let mut herald = start(&["--config", file.path()]).await;

    let (status, _, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary = parse_json(&body);
    assert_eq!(summary["channels"], 0, "{body}");
    assert_eq!(summary["by_worker"][0]["pid"], herald.pid.to_string());

    let (status, _, body) = herald.post("/publish?channel=news", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(parse_json(&body)["published_messages"], 1);
    let mut sub = herald.subscribe_ok("/stream/news.b1").await;
    assert_eq!(sub.read_until("|", WAIT).await, "1:hello|");
    let (status, _, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parse_json(&body)["subscribers"], 1, "{body}");

    let status = herald.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The open subscriber got its footer before the process ended.
    assert_eq!(sub.read_to_end(WAIT).await, "BYE");
    herald
        .wait_for_log("SIGTERM", 0, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_config_serves_pub_sub_ev_and_stats() {
    let mut herald = start(&[]).await;

    let (status, _, body) = herald.post("/pub?id=news", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "{\"channel\": \"news\", \"published_messages\": 1, \"stored_messages\": 1, \"subscribers\": 0}\r\n"
    );
    let (status, _, body) = herald.get("/pub?id=news").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut stream = herald.subscribe_ok("/sub/news.b1").await;
    assert_eq!(stream.read_until("\n", WAIT).await, "hello\n");
    let mut events = herald.subscribe_ok("/ev/news.b1").await;
    assert_eq!(events.content_type(), "text/event-stream; charset=utf-8");
    assert_eq!(
        events.read_until("data: hello\n\n", WAIT).await,
        ": \n\ndata: hello\n\n"
    );

    let (status, _, body) = herald.post("/pub?id=news", "live").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stream.read_until("\n", WAIT).await, "live\n");
    assert_eq!(events.read_until("\n\n", WAIT).await, "data: live\n\n");

    let (status, _, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK);
    let summary = parse_json(&body);
    assert_eq!(summary["channels"], 1, "{body}");
    assert_eq!(summary["published_messages"], 2, "{body}");
    assert_eq!(summary["subscribers"], 2, "{body}");
    let (status, _, body) = herald.get("/channels-stats?id=news").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parse_json(&body)["subscribers"], 2, "{body}");

    let status = herald.terminate().await;
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    stream.read_to_end(WAIT).await;
    events.read_to_end(WAIT).await;
}

/// `GOOD_CONFIG` (admin publisher at /publish, open statistics) with `server` lines added and the
/// publisher given `publisher` lines.
fn exposed_config(server: &str, publisher: &str) -> String {
    GOOD_CONFIG
        .replace(
            "shutdown_timeout = \"2s\"",
            &format!("shutdown_timeout = \"2s\"\n{server}"),
        )
        .replace(
            "channels_path = \"$arg_channel\"",
            &format!("channels_path = \"$arg_channel\"\n{publisher}"),
        )
}

#[tokio::test]
async fn an_open_admin_publisher_is_not_served_beyond_loopback() {
    // The embedded default config (an admin publisher with no access rule) on every address.
    let out = run(&["--listen", "0.0.0.0:0"]).await;
    assert!(!out.status.success(), "it started: {}", out.stderr);
    for needed in [
        "refusing to start",
        "/pub",
        "allow_addresses",
        "allow_public_admin",
    ] {
        assert!(out.stderr.contains(needed), "{needed}: {}", out.stderr);
    }
    let file = TempFile::new("open-admin.toml", &exposed_config("", ""));
    let out = run(&["--config", file.path(), "--listen", "[::]:0"]).await;
    assert!(!out.status.success(), "it started: {}", out.stderr);
    assert!(out.stderr.contains("/publish"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_or_explicitly_public_admin_publisher_starts_beyond_loopback() {
    // Protected by a bearer secret: starts; the open statistics location is warned about.
    let protected = TempFile::new(
        "protected-admin.toml",
        &exposed_config(
            "",
            "auth_bearer_tokens = [\"a-long-publisher-secret-0123\"]",
        ),
    );
    let mut herald =
        HeraldProcess::start(&["--config", protected.path(), "--listen", "0.0.0.0:0"]).await;
    herald
        .wait_for_log("/channels-stats (statistics) has no access rule", 0, WAIT)
        .await;
    let (status, _, _) = herald.post("/publish?channel=x", "hi").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A reload that would open the admin publisher is refused; the running config stays.
    protected.write(&exposed_config("", ""));
    let since = herald.log_len();
    herald.signal(libc::SIGHUP);
    let line = herald.wait_for_log("reload refused", since, WAIT).await;
    assert!(line.contains("/publish"), "{line}");
    let (status, _, _) = herald.post("/publish?channel=x", "hi").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the running config stays");
    assert!(herald.terminate().await.success());

    // Explicitly public: starts and says so.
    let public = TempFile::new(
        "public-admin.toml",
        &exposed_config("allow_public_admin = true", ""),
    );
    let mut herald =
        HeraldProcess::start(&["--config", public.path(), "--listen", "0.0.0.0:0"]).await;
    herald
        .wait_for_log("allow_public_admin is set", 0, WAIT)
        .await;
    let (status, _, _) = herald.post("/publish?channel=x", "hi").await;
    assert_eq!(status, StatusCode::OK);
    assert!(herald.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_config_that_served_an_open_admin_publisher_keeps_serving_it_with_a_warning() {
    let nginx = "http {\n push_stream_shared_memory_size 10m;\n server {\n  listen 9080;\n  location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; }\n  location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }\n }\n}\n";
    let file = TempFile::new("open-admin-nginx.conf", nginx);
    let out = run(&["migrate", file.path()]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("allow_public_admin = true"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("/pub"),
        "{}",
        out.stderr
    );
    let mut herald =
        HeraldProcess::start(&["--nginx-config", file.path(), "--listen", "0.0.0.0:0"]).await;
    let (status, _, body) = herald.post("/pub?id=x", "hi").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(herald.terminate().await.success());
    // With allow/deny the import needs no exception.
    let guarded = nginx.replace(
        "push_stream_publisher admin;",
        "push_stream_publisher admin; allow 127.0.0.1; deny all;",
    );
    file.write(&guarded);
    let out = run(&["migrate", file.path()]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(!out.stdout.contains("allow_public_admin"), "{}", out.stdout);
}

#[tokio::test]
async fn default_config_prints_the_embedded_config_which_checks_valid() {
    let out = run(&["default-config"]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("[[location]]") && out.stdout.contains("listen = \"127.0.0.1:8080\""),
        "{}",
        out.stdout
    );
    let file = TempFile::new("default.toml", &out.stdout);
    let checked = run(&["check-config", file.path()]).await;
    assert!(checked.status.success(), "{}", checked.stderr);
}

#[tokio::test]
async fn check_config_reads_an_nginx_conf_as_nginx() {
    let nginx = "http {\n push_stream_shared_memory_size 10m;\n server {\n  listen 127.0.0.1:9080;\n  location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; allow 127.0.0.1; deny all; }\n }\n}\n";
    let file = TempFile::new("check.conf", nginx);
    let out = run(&["check-config", file.path()]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("configuration is valid (1 locations)"),
        "{}",
        out.stdout
    );
    // Its errors read like nginx -t, not like TOML.
    file.write(&nginx.replace(
        "push_stream_publisher admin;",
        "push_stream_publisher bogus;",
    ));
    let out = run(&["check-config", file.path()]).await;
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("check.conf:5") && out.stderr.contains("push_stream_publisher"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn reload_refuses_a_process_that_is_not_herald() {
    let mut sleeper = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id().expect("pid").to_string();
    let out = run(&["reload", &pid]).await;
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("not a herald server"), "{}", out.stderr);
    // The process was not signalled (SIGHUP would have ended sleep).
    assert!(sleeper.try_wait().expect("try_wait").is_none());
    let _ = sleeper.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_name_client_channels_status_duration_and_bytes_without_colour_codes() {
    let text = GOOD_CONFIG.replace(
        "shutdown_timeout = \"2s\"",
        "shutdown_timeout = \"2s\"\naccess_log = true",
    );
    let file = TempFile::new("access-log.toml", &text);
    let mut herald = start(&["--config", file.path()]).await;
    let (status, _, _) = herald.post("/publish?channel=news", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let line = herald.wait_for_log("path=/publish", 0, WAIT).await;
    for field in [
        "client=127.0.0.1",
        "method=POST",
        "channels=news",
        "status=200",
        "duration_ms=",
        "bytes=",
        "location=/publish",
    ] {
        assert!(line.contains(field), "{field}: {line}");
    }
    let sub = herald.subscribe_ok("/stream/news").await;
    let line = herald.wait_for_log("path=/stream/news", 0, WAIT).await;
    assert!(
        line.contains("bytes=stream") && line.contains("channels=news"),
        "{line}"
    );
    drop(sub);
    assert!(
        !herald.log_text().contains('\u{1b}'),
        "no ANSI colour codes when stderr is not a terminal:\n{}",
        herald.log_text()
    );
    assert!(herald.terminate().await.success());

    // JSON lines carry the same fields.
    file.write(&text.replace(
        "access_log = true",
        "access_log = true\nlog_format = \"json\"",
    ));
    let mut herald = start(&["--config", file.path()]).await;
    let (status, _, _) = herald.post("/publish?channel=news", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let line = herald.wait_for_log("\"path\":\"/publish\"", 0, WAIT).await;
    let json = parse_json(&line);
    assert_eq!(json["target"], "herald::access", "{line}");
    assert_eq!(json["fields"]["channels"], "news", "{line}");
    assert_eq!(json["fields"]["status"], 200, "{line}");
    assert!(json["fields"]["duration_ms"].is_number(), "{line}");
    assert!(herald.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_is_on_metrics_from_the_start_at_zero() {
    let herald = start(&[]).await;
    let (status, _, text) = herald.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for series in [
        "herald_auth_refusals_total{reason=\"bearer\"} 0",
        "herald_auth_refusals_total{reason=\"token_invalid\"} 0",
        "herald_connection_refusals_total{limit=\"max_connections\"} 0",
        "herald_connection_refusals_total{limit=\"open_files\"} 0",
        "herald_limit_refusals_total{limit=\"max_body_size\"} 0",
        "herald_limit_refusals_total{limit=\"max_buffered_body_size\"} 0",
        "herald_dead_connections_total{reason=\"send_timeout\"} 0",
        "herald_deliveries_total{transport=\"eventsource\"} 0",
        "herald_slow_consumers_total 0",
        "herald_publish_replays_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing:\n{text}"
        );
    }
}

#[tokio::test]
async fn check_config_refuses_a_max_header_size_below_8k() {
    // It used to be raised to 8k without a word.
    let text = "[server]\nmax_header_size = \"4k\"\n";
    assert_check_config_names("small-head.toml", text, 2, "max_header_size").await;
}
