//! Compatibility with the nginx push-stream module through Herald's nginx.conf importer: a matrix of
//! nginx.conf snippets in the module's style, each imported with `herald::config::nginx`, served by the
//! real server on 127.0.0.1:0 and checked with real clients (reqwest, tokio-tungstenite) — publisher
//! (POST/GET/DELETE, 405 + Allow, store_messages, channel_info_on_publish, body limits), every subscriber
//! mode, statistics, the events channel, wildcards, padding, channel paths from `$arg_id`, `$1` and
//! `$http_x`, inheritance http → server → location, limits, CORS, allow/deny and legacy directive names.
//! Then the `herald` binary: `--nginx-config` serving the example with warnings, `migrate` giving the
//! committed example TOML, the round trip, SIGHUP re-reading the nginx file, and malformed configs
//! failing with file:line.

mod common;

use common::process::{run, HeraldProcess, TempFile};
use common::{header, parse_json, ws, TestServer, EXPLAIN, WAIT};
use futures_util::SinkExt;
use herald::config::nginx;
use reqwest::{Method, StatusCode};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------------
// Harness: an nginx.conf imported and served in-process
// ---------------------------------------------------------------------------------------------------

/// A module-style nginx.conf: `http` lines, then one server with the statistics location at
/// `/channels-stats`, an admin publisher at `/pub` (storing messages), and `server` lines.
fn nginx_conf(http: &str, server: &str) -> String {
    format!(
        r#"
worker_processes 1;
events {{ worker_connections 1024; }}

http {{
    push_stream_shared_memory_size 8m;
    {http}

    server {{
        listen 9080;

        location /channels-stats {{
            push_stream_channels_statistics;
            push_stream_channels_path $arg_id;
        }}

        location /pub {{
            push_stream_publisher admin;
            push_stream_channels_path $arg_id;
            push_stream_store_messages on;
        }}

        {server}
    }}
}}
"#
    )
}

/// Herald serving an imported nginx configuration on 127.0.0.1 and a free port (derefs to the
/// `TestServer`, whose `publish_ok` posts to the `/pub` location every config here has).
struct Nginx {
    server: TestServer,
    warnings: Vec<String>,
}

impl Nginx {
    /// Imports `conf` (as `/compat/nginx.conf`) and serves it until drop.
    async fn start(conf: &str) -> Nginx {
        let import = nginx::import_str(conf, Path::new("/compat/nginx.conf"))
            .unwrap_or_else(|e| panic!("import failed: {e}\n{conf}"));
        Nginx {
            server: TestServer::start_config(&import.config).await,
            warnings: import.warnings.iter().map(|w| w.to_string()).collect(),
        }
    }

    async fn with(http: &str, server: &str) -> Nginx {
        Nginx::start(&nginx_conf(http, server)).await
    }
}

impl Deref for Nginx {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.server
    }
}

// ---------------------------------------------------------------------------------------------------
// Publisher
// ---------------------------------------------------------------------------------------------------

const STREAM_SUB: &str = r#"
        location ~ /sub/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~:~text~\n";
        }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_publisher_publishes_answers_info_and_deletes() {
    let server = Nginx::with("", STREAM_SUB).await;
    let (status, _, text) = server.post("/pub?id=news", "hello").await;
    assert_eq!(status, StatusCode::OK);
    let info = parse_json(&text);
    assert_eq!(
        (
            info["channel"].as_str(),
            info["published_messages"].as_u64(),
            info["stored_messages"].as_u64()
        ),
        (Some("news"), Some(1), Some(1)),
        "{text}"
    );
    let (status, _, text) = server.get("/pub?id=news").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parse_json(&text)["subscribers"].as_u64(), Some(0));

    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "second").await;
    sub.read_until("2:second\n", WAIT).await;
    let (status, headers, _) = server
        .request(Method::DELETE, "/pub?id=news", "", &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, EXPLAIN), "Channel deleted.");
    sub.read_until("-2:Channel deleted\n", WAIT).await;
    sub.read_to_end(WAIT).await;
    assert_eq!(server.get("/pub?id=news").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        server
            .request(Method::DELETE, "/pub?id=news", "", &[])
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_not_allowed_answer_405_with_allow() {
    let server = Nginx::with(
        "",
        r#"
        location /pub-normal {
            push_stream_publisher normal;
            push_stream_channels_path $arg_id;
        }
        location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }"#,
    )
    .await;
    let (status, headers, _) = server
        .request(Method::DELETE, "/pub-normal?id=a", "", &[])
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "GET, POST, PUT");
    let (status, headers, _) = server.request(Method::PATCH, "/pub?id=a", "", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "GET, POST, PUT, DELETE");
    let (status, headers, _) = server.request(Method::POST, "/sub/a", "x", &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "GET");
    let (status, headers, _) = server
        .request(Method::POST, "/channels-stats", "x", &[])
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_messages_is_off_unless_the_config_turns_it_on() {
    let server = Nginx::with(
        "",
        r#"
        location /pub-nostore {
            push_stream_publisher;
            push_stream_channels_path $arg_id;
        }
        location /pub-quiet {
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            push_stream_channel_info_on_publish off;
        }"#,
    )
    .await;
    let (status, _, text) = server.post("/pub-nostore?id=volatile", "gone").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        parse_json(&text)["stored_messages"].as_u64(),
        Some(0),
        "{text}"
    );
    let (status, _, text) = server.post("/pub?id=kept", "kept").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        parse_json(&text)["stored_messages"].as_u64(),
        Some(1),
        "{text}"
    );
    let (status, _, text) = server.post("/pub-quiet?id=kept", "quiet").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_errors_match_the_module() {
    let server = Nginx::with(
        "push_stream_max_channel_id_length 8;",
        r#"
        location /pub-small {
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            client_max_body_size 16;
        }"#,
    )
    .await;
    let (status, headers, _) = server.post("/pub?id=ch", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        header(&headers, EXPLAIN),
        "Empty post requests are not allowed."
    );
    let (status, headers, _) = server.post("/pub", "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(header(&headers, EXPLAIN), "No channel id provided.");
    let (status, headers, _) = server.post("/pub?id=waytoolongid", "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(header(&headers, EXPLAIN).starts_with("Channel id is too large."));
    let (status, headers, _) = server.post("/pub?id=ALL", "x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        header(&headers, EXPLAIN),
        "Channel id not authorized for this method."
    );
    // The publisher that sets client_max_body_size is the only body reader but /pub: they differ,
    // so the server-wide nginx default (1m) applies.
    assert_eq!(
        server.post("/pub-small?id=ch", "x".repeat(100)).await.0,
        StatusCode::OK
    );
    assert!(
        server
            .warnings
            .iter()
            .any(|w| w.contains("client_max_body_size differs")),
        "{:#?}",
        server.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_max_body_size_limits_publishing() {
    let server = Nginx::with("client_max_body_size 16;", "").await;
    assert_eq!(server.post("/pub?id=ch", "short").await.0, StatusCode::OK);
    let (status, _, _) = server.post("/pub?id=ch", "x".repeat(100)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

// ---------------------------------------------------------------------------------------------------
// Subscribers, one test per mode
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_header_messages_pings_and_footer_with_default_type() {
    let server = Nginx::with(
        r#"push_stream_ping_message_text "PING";"#,
        r#"
        location ~ /sub/(.*) {
            push_stream_subscriber streaming;
            push_stream_channels_path $1;
            push_stream_header_template "HEAD\n";
            push_stream_message_template "<~channel~|~id~|~text~>\n";
            push_stream_footer_template "FOOT\n";
            push_stream_ping_message_interval 200ms;
            push_stream_subscriber_connection_ttl 900ms;
            default_type "text/html; charset=utf-8";
        }"#,
    )
    .await;
    server.publish_ok("s1", "old").await;
    let mut sub = server.subscribe_ok("/sub/s1.b1/s2").await;
    assert_eq!(sub.content_type(), "text/html; charset=utf-8");
    assert_eq!(sub.read_until("\n", WAIT).await, "HEAD\n");
    sub.read_until("<s1|1|old>\n", WAIT).await;
    server.wait_for_subscribers("s2", 1).await;
    server.publish_ok("s2", "new").await;
    sub.read_until("<s2|1|new>\n", WAIT).await;
    sub.read_until("<|-1|PING>\n", WAIT).await;
    let rest = sub.read_to_end(WAIT).await;
    assert!(rest.ends_with("FOOT\n"), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_without_default_type_is_text_plain_like_nginx() {
    let server = Nginx::with("", STREAM_SUB).await;
    let sub = server.subscribe_ok("/sub/ch").await;
    assert_eq!(sub.content_type(), "text/plain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_frames_ids_events_and_comments() {
    let server = Nginx::with(
        "",
        r#"
        location ~ /ev/(.*) {
            push_stream_subscriber eventsource;
            push_stream_channels_path $1;
            push_stream_header_template "hello";
            push_stream_message_template "~text~";
        }"#,
    )
    .await;
    let mut sub = server.subscribe_ok("/ev/e1").await;
    assert!(
        sub.content_type().starts_with("text/event-stream"),
        "{}",
        sub.content_type()
    );
    sub.read_until(": hello\n", WAIT).await;
    server.wait_for_subscribers("e1", 1).await;
    let (status, _, _) = server
        .request(
            Method::POST,
            "/pub?id=e1",
            "line one\nline two",
            &[("Event-Id", "42"), ("Event-Type", "score")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let frame = sub.read_until("\n\n", WAIT).await;
    assert!(
        frame.ends_with("id: 42\nevent: score\ndata: line one\ndata: line two\n\n"),
        "{frame:?}"
    );
    // Last-Event-ID recovers what came after that id.
    server.publish_ok("e1", "after").await;
    let mut again = server
        .subscribe_with("/ev/e1", &[("Last-Event-ID", "42")])
        .await;
    again.read_until("data: after\n\n", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_waits_chains_by_etag_and_times_out_with_304() {
    let server = Nginx::with(
        "",
        r#"
        location ~ /lp/(.*) {
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_message_template "~text~";
            push_stream_longpolling_connection_ttl 400ms;
        }
        location ~ /lpq/(.*) {
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_message_template "~text~";
            push_stream_last_received_message_time $arg_time;
            push_stream_last_received_message_tag $arg_tag;
        }"#,
    )
    .await;
    let waiting = {
        let client = server.client.clone();
        let url = server.url("/lp/l1");
        tokio::spawn(async move { client.get(url).timeout(WAIT).send().await })
    };
    server.wait_for_subscribers("l1", 1).await;
    server.publish_ok("l1", "first").await;
    let response = waiting.await.unwrap().expect("long-poll answer");
    assert_eq!(response.status(), StatusCode::OK);
    let last_modified = header(response.headers(), "last-modified");
    let etag = header(response.headers(), "etag");
    assert!(etag.starts_with("W/"), "{etag}");
    assert_eq!(response.text().await.unwrap(), "first");
    server.publish_ok("l1", "second").await;
    let (status, _, text) = server
        .get_with(
            "/lp/l1",
            &[
                ("If-Modified-Since", &last_modified),
                ("If-None-Match", &etag),
            ],
        )
        .await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "second"));
    // The point can come from query arguments instead (push_stream_last_received_message_time/_tag).
    let tag = etag.trim_start_matches("W/");
    let query = format!(
        "/lpq/l1?time={}&tag={tag}",
        last_modified.replace(' ', "%20").replace(',', "%2C")
    );
    let (status, _, text) = server.get(&query).await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "second"));
    // Nothing newer: 304 after the TTL.
    let (status, headers, _) = server
        .get_with(
            "/lp/l1",
            &[
                ("If-Modified-Since", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("If-None-Match", "0"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(!header(&headers, "etag").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_with_body_answers_200_timed_out() {
    let server = Nginx::with(
        "push_stream_timeout_with_body on;",
        r#"
        location ~ /lp/(.*) {
            push_stream_subscriber long-polling;
            push_stream_channels_path $1;
            push_stream_message_template "~id~:~text~";
            push_stream_longpolling_connection_ttl 300ms;
        }"#,
    )
    .await;
    let (status, _, text) = server.get("/lp/t1").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "-3:Timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_answers_at_once_and_jsonp() {
    let server = Nginx::with(
        "",
        r#"
        location ~ /poll/(.*) {
            push_stream_subscriber polling;
            push_stream_channels_path $1;
            push_stream_message_template "\"~text~\"";
            default_type application/json;
        }"#,
    )
    .await;
    server.publish_ok("p1", "one").await;
    let (status, _, _) = server.get("/poll/p1").await;
    assert_eq!(
        status,
        StatusCode::NOT_MODIFIED,
        "no point: 304 at once, as in the module"
    );
    let (status, headers, text) = server.get("/poll/p1.b1").await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "\"one\""));
    assert_eq!(header(&headers, "content-type"), "application/json");
    let (status, headers, text) = server.get("/poll/p1.b1?callback=cb").await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, "cb([\"one\"]);\r\n")
    );
    assert_eq!(header(&headers, "content-type"), "application/javascript");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_header_switches_a_streaming_location_to_polling() {
    let server = Nginx::with("", STREAM_SUB).await;
    server.publish_ok("m1", "one").await;
    let (status, _, text) = server
        .get_with("/sub/m1.b1", &[("X-Nginx-PushStream-Mode", "polling")])
        .await;
    assert_eq!((status, text.as_str()), (StatusCode::OK, "1:one\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_messages_and_publishes_client_frames() {
    let server = Nginx::with(
        "",
        r#"
        location ~ /ws/(.*) {
            push_stream_subscriber websocket;
            push_stream_channels_path $1;
            push_stream_message_template "~channel~:~text~";
            push_stream_websocket_allow_publish on;
            push_stream_store_messages on;
        }"#,
    )
    .await;
    let mut ws = server.websocket("/ws/w1").await;
    server.wait_for_subscribers("w1", 1).await;
    server.publish_ok("w1", "from-http").await;
    assert_eq!(ws::next_text(&mut ws).await, "w1:from-http");
    ws.send(Message::Text("from-ws".into()))
        .await
        .expect("send");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, _, text) = server.get("/pub?id=w1").await;
        if parse_json(&text)["published_messages"].as_u64() == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the client's frame was never published: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_refusals_match_the_module() {
    let server = Nginx::with(
        "push_stream_max_subscribers_per_channel 1;",
        r#"
        location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }
        location ~ /auth/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_authorized_channels_only on;
        }"#,
    )
    .await;
    let _first = server.subscribe_ok("/sub/solo").await;
    server.wait_for_subscribers("solo", 1).await;
    let second = server.subscribe_with("/sub/solo", &[]).await;
    assert_eq!(second.status, StatusCode::FORBIDDEN);
    assert!(header(&second.headers, EXPLAIN)
        .starts_with("Subscribers limit per channel has been exceeded."));
    let denied = server.subscribe_with("/auth/unknown", &[]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(header(&denied.headers, EXPLAIN).starts_with("Subscriber could not create channels."));
    server.publish_ok("known", "stored").await;
    let _allowed = server.subscribe_ok("/auth/known").await;
    let (status, headers, _) = server.get("/sub/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(header(&headers, EXPLAIN), "No channel id provided.");
}

// ---------------------------------------------------------------------------------------------------
// Statistics, events channel, wildcards, padding, CORS
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_statistics_summary_channel_all_and_prefix() {
    let server = Nginx::with("", "").await;
    server.publish_ok("stat_a", "1").await;
    server.publish_ok("stat_b", "2").await;
    server.publish_ok("other", "3").await;
    let (status, _, text) = server.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK);
    let summary = parse_json(&text);
    for field in [
        "hostname",
        "time",
        "channels",
        "wildcard_channels",
        "published_messages",
        "stored_messages",
        "subscribers",
        "uptime",
        "by_worker",
    ] {
        assert!(!summary[field].is_null(), "{field} missing: {text}");
    }
    assert_eq!(summary["channels"].as_u64(), Some(3));
    let (_, _, text) = server.get("/channels-stats?id=stat_a").await;
    assert_eq!(parse_json(&text)["channel"].as_str(), Some("stat_a"));
    let (_, _, text) = server.get("/channels-stats?id=ALL").await;
    assert_eq!(parse_json(&text)["infos"].as_array().map(Vec::len), Some(3));
    let (_, _, text) = server.get("/channels-stats?id=stat_*").await;
    assert_eq!(parse_json(&text)["infos"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        server.get("/channels-stats?id=nothing").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_channel_reports_lifecycle_and_is_protected() {
    let server = Nginx::with(
        r#"push_stream_events_channel_id "events";"#,
        r#"
        location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }
        location ~ /events/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_allow_connections_to_events_channel on;
        }"#,
    )
    .await;
    let refused = server.subscribe_with("/sub/events", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        header(&refused.headers, EXPLAIN),
        "Subscription to events channel is not allowed."
    );
    let mut events = server.subscribe_ok("/events/events").await;
    server.publish_ok("fresh", "x").await;
    events
        .read_until(r#"{"type": "channel_created", "channel": "fresh"}"#, WAIT)
        .await;
    let (status, headers, _) = server.post("/pub?id=events", "forged").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        header(&headers, EXPLAIN),
        "Only internal routines can change events channel."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_channels_follow_prefix_and_limits() {
    let server = Nginx::with(
        r#"push_stream_wildcard_channel_prefix "broad_";
           push_stream_max_number_of_wildcard_channels 2;"#,
        STREAM_SUB,
    )
    .await;
    // The per-request limit defaults to max_number_of_wildcard_channels, as in the module.
    let too_many = server
        .subscribe_with("/sub/ch/broad_1/broad_2/broad_3", &[])
        .await;
    assert_eq!(too_many.status, StatusCode::FORBIDDEN);
    assert!(
        header(&too_many.headers, EXPLAIN).starts_with("Subscribed too much wildcard channels.")
    );
    let only_wildcards = server.subscribe_with("/sub/broad_1", &[]).await;
    assert_eq!(only_wildcards.status, StatusCode::FORBIDDEN);
    let mut sub = server.subscribe_ok("/sub/ch/broad_1").await;
    server.wait_for_subscribers("broad_1", 1).await;
    server.publish_ok("broad_1", "to all").await;
    sub.read_until("1:to all\n", WAIT).await;
    let (_, _, text) = server.get("/channels-stats").await;
    assert!(
        parse_json(&text)["wildcard_channels"].as_u64() >= Some(1),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padding_by_user_agent_pads_matching_clients() {
    let server = Nginx::with(
        "",
        r#"
        location ~ /sub/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_header_template "HEAD\n";
            push_stream_message_template "~text~\n";
            push_stream_padding_by_user_agent "[Oo]ld[Bb]rowser,1024,512";
        }"#,
    )
    .await;
    let mut padded = server
        .subscribe_with("/sub/pad", &[("User-Agent", "OldBrowser/1.0")])
        .await;
    let mut plain = server
        .subscribe_with("/sub/pad", &[("User-Agent", "Modern/2.0")])
        .await;
    server.wait_for_subscribers("pad", 2).await;
    server.publish_ok("pad", "msg").await;
    let padded_text = padded.read_until("msg\n", WAIT).await;
    let plain_text = plain.read_until("msg\n", WAIT).await;
    assert_eq!(plain_text, "HEAD\nmsg\n");
    assert!(
        padded_text.len() >= 1024,
        "header padded to 1024 bytes: {}",
        padded_text.len()
    );
    assert!(padded_text.starts_with("HEAD\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_adds_cors_headers() {
    let server = Nginx::with(
        "",
        r#"
        location /pub-cors {
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            push_stream_allowed_origins "*";
        }"#,
    )
    .await;
    let (status, headers, _) = server
        .request(
            Method::OPTIONS,
            "/pub-cors?id=c",
            "",
            &[("Origin", "https://a.example")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "access-control-allow-origin"), "*");
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        "GET, POST, PUT"
    );
    let (_, headers, _) = server.post("/pub?id=c", "x").await;
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        "",
        "no CORS where not configured"
    );
}

// ---------------------------------------------------------------------------------------------------
// Channel paths, inheritance, access rules, legacy names
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_path_from_arg_capture_and_header() {
    let server = Nginx::with(
        "",
        r#"
        location /by-arg {
            push_stream_subscriber;
            push_stream_channels_path $arg_id;
            push_stream_message_template "~channel~=~text~\n";
        }
        location ~* ^/By-Capture/(\w+)/(\w+)$ {
            push_stream_subscriber;
            push_stream_channels_path "room-$2/${1}";
            push_stream_message_template "~channel~=~text~\n";
        }
        location = /by-header {
            push_stream_subscriber;
            push_stream_channels_path $http_x_channel;
            push_stream_message_template "~channel~=~text~\n";
        }"#,
    )
    .await;
    let mut by_arg = server.subscribe_ok("/by-arg?id=a1/a2").await;
    let mut by_capture = server.subscribe_ok("/by-capture/c1/c2").await;
    let mut by_header = server
        .subscribe_with("/by-header", &[("X-Channel", "h1")])
        .await;
    assert_eq!(by_header.status, StatusCode::OK);
    server.wait_for_subscribers("a2", 1).await;
    server.wait_for_subscribers("room-c2", 1).await;
    server.wait_for_subscribers("c1", 1).await;
    server.wait_for_subscribers("h1", 1).await;
    server.publish_ok("a2/room-c2/h1", "all").await;
    by_arg.read_until("a2=all\n", WAIT).await;
    by_capture.read_until("room-c2=all\n", WAIT).await;
    by_header.read_until("h1=all\n", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_inherit_from_http_to_server_to_location() {
    let conf = r#"
http {
    push_stream_shared_memory_size 8m;
    push_stream_message_template "http[~text~]\n";
    push_stream_header_template "http-header\n";
    push_stream_channels_path $arg_id;

    server {
        listen 9080;
        push_stream_header_template "server-header\n";

        location /channels-stats { push_stream_channels_statistics; }
        location /pub { push_stream_publisher; push_stream_store_messages on; }
        location /inherits { push_stream_subscriber; }
        location /overrides {
            push_stream_subscriber;
            push_stream_message_template "loc[~text~]\n";
            push_stream_header_template "loc-header\n";
        }
        location /outer/ {
            push_stream_footer_template "outer-footer\n";
            location /outer/inner { push_stream_subscriber; push_stream_subscriber_connection_ttl 300ms; }
        }
    }
}
"#;
    let server = Nginx::start(conf).await;
    let mut inherits = server.subscribe_ok("/inherits?id=i").await;
    let mut overrides = server.subscribe_ok("/overrides?id=i").await;
    let mut nested = server.subscribe_ok("/outer/inner?id=i").await;
    server.wait_for_subscribers("i", 3).await;
    server.publish_ok("i", "m").await;
    assert_eq!(
        inherits.read_until("]\n", WAIT).await,
        "server-header\nhttp[m]\n"
    );
    assert_eq!(
        overrides.read_until("]\n", WAIT).await,
        "loc-header\nloc[m]\n"
    );
    assert_eq!(
        nested.read_until("]\n", WAIT).await,
        "server-header\nhttp[m]\n"
    );
    assert_eq!(nested.read_to_end(WAIT).await, "outer-footer\n");
    assert!(
        server
            .warnings
            .iter()
            .any(|w| w.contains("is nested in location /outer/")),
        "{:#?}",
        server.warnings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_protect_locations() {
    let server = Nginx::with(
        "",
        r#"
        location /pub-local {
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            allow 127.0.0.1;
            deny all;
        }
        location /pub-closed {
            push_stream_publisher;
            push_stream_channels_path $arg_id;
            deny all;
        }"#,
    )
    .await;
    assert_eq!(server.post("/pub-local?id=a", "x").await.0, StatusCode::OK);
    assert_eq!(
        server.post("/pub-closed?id=a", "x").await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_directive_names_still_work() {
    let conf = r#"
http {
    push_stream_max_reserved_memory 8m;
    push_stream_min_message_buffer_timeout 10m;
    push_stream_max_message_buffer_length 2;
    push_stream_content_type "text/html";

    server {
        listen 9080;
        location /channels-stats { push_stream_channels_statistics; set $push_stream_channel_id $arg_id; }
        location /pub { push_stream_publisher admin; set $push_stream_channel_id $arg_id; push_stream_store_messages on; }
        location ~ /ev/(.*) {
            push_stream_subscriber;
            push_stream_eventsource_support on;
            set $push_stream_channels_path $1;
            push_stream_message_template "~text~";
        }
    }
}
"#;
    let server = Nginx::start(conf).await;
    for text in ["one", "two", "three"] {
        server.publish_ok("legacy", text).await;
    }
    let (_, _, text) = server.get("/pub?id=legacy").await;
    assert_eq!(
        parse_json(&text)["stored_messages"].as_u64(),
        Some(2),
        "max_message_buffer_length: {text}"
    );
    let mut sub = server.subscribe_ok("/ev/legacy.b5").await;
    assert!(sub.content_type().starts_with("text/event-stream"));
    sub.read_until("data: two\n\ndata: three\n\n", WAIT).await;
    let warnings = server.warnings.join("\n");
    assert!(
        warnings.contains("\"push_stream_content_type\" ignored"),
        "{warnings}"
    );
    assert!(
        warnings.contains("old name of \"push_stream_shared_memory_size\""),
        "{warnings}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_deleted_text_and_subscriber_ttl_come_from_the_config() {
    let server = Nginx::with(
        r#"push_stream_channel_deleted_message_text "gone away";"#,
        r#"
        location ~ /sub/(.*) {
            push_stream_subscriber;
            push_stream_channels_path $1;
            push_stream_message_template "~id~:~text~\n";
            push_stream_footer_template "END";
        }"#,
    )
    .await;
    let mut sub = server.subscribe_ok("/sub/doomed").await;
    server.wait_for_subscribers("doomed", 1).await;
    server
        .request(Method::DELETE, "/pub?id=doomed", "", &[])
        .await;
    sub.read_until("-2:gone away\n", WAIT).await;
    assert_eq!(sub.read_to_end(WAIT).await, "END");
}

// ---------------------------------------------------------------------------------------------------
// The example and the binary
// ---------------------------------------------------------------------------------------------------

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name)
}

#[test]
fn the_committed_example_toml_is_the_migrated_example_conf() {
    let import = nginx::import_file(&example("nginx.conf")).unwrap_or_else(|e| panic!("{e}"));
    let committed =
        std::fs::read_to_string(example("nginx.toml")).expect("config/examples/nginx.toml");
    assert!(
        import.toml == committed,
        "config/examples/nginx.toml is stale; regenerate it with\n  cargo run -- migrate config/examples/nginx.conf > config/examples/nginx.toml\n--- migrated ---\n{}",
        import.toml
    );
    // --config on the migrated file gives exactly the configuration --nginx-config gives.
    let from_toml =
        herald::Config::from_file(&example("nginx.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(format!("{from_toml:?}"), format!("{:?}", import.config));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_prints_the_example_toml_and_warnings() {
    let conf = example("nginx.conf");
    let out = run(&["migrate", conf.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        std::fs::read_to_string(example("nginx.toml")).unwrap()
    );
    assert!(
        out.stderr
            .contains("nginx.conf:9: \"worker_processes\" ignored"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_configs_fail_with_file_and_line() {
    let cases = [
        ("missing-semicolon.conf", "http {\n  server {\n    location /pub {\n      push_stream_publisher admin\n    }\n  }\n}\n", ":5: unexpected \"}\""),
        ("unbalanced.conf", "http {\n  server {\n", ":2: unexpected end of file, expecting \"}\""),
        ("unknown.conf", "http {\n  push_stream_shared_memory_size 1m;\n  push_stream_fancy on;\n}\n", ":3: unknown directive \"push_stream_fancy\""),
        ("bad-time.conf", "http {\n\n  push_stream_message_ttl 10x;\n}\n", ":3: invalid value \"10x\""),
        ("bad-mode.conf", "http { server {\n location /s { push_stream_subscriber sometimes; } } }\n", ":2: invalid push_stream_subscriber mode value"),
        ("quote.conf", "http {\n  push_stream_ping_message_text \"open;\n}\n", ":2: unterminated quoted string"),
        ("include.conf", "http {\n  include nowhere/*.conf;\n  include nowhere.conf;\n}\n", ":3: include \"nowhere.conf\""),
    ];
    for (name, text, expected) in cases {
        let file = TempFile::new(name, text);
        let path = file.path();
        for args in [
            vec!["migrate", path],
            vec!["--nginx-config", path, "--listen", "127.0.0.1:0"],
        ] {
            let out = run(&args).await;
            assert!(!out.status.success(), "{args:?} should fail");
            assert!(
                out.stderr.contains(&format!("{path}{expected}")),
                "{args:?}: stderr {:?} should contain {path}{expected}",
                out.stderr
            );
        }
    }
    let out = run(&["--config", "a.toml", "--nginx-config", "b.conf"]).await;
    assert!(
        !out.status.success() && out.stderr.contains("cannot be used with"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_config_serves_the_example_and_warns() {
    let conf = example("nginx.conf");
    let mut herald = HeraldProcess::start(&[
        "--nginx-config",
        conf.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    let warning = herald
        .wait_for_log("\"worker_processes\" ignored", 0, Duration::from_secs(10))
        .await;
    assert!(warning.contains("nginx.conf:9"), "{warning}");
    let addr = herald.addr;
    let client = common::client();
    let response = client
        .post(format!("http://{addr}/pub?id=example"))
        .body("hi")
        .timeout(WAIT)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), StatusCode::OK);
    let text = client
        .get(format!("http://{addr}/channels-stats?id=example"))
        .timeout(WAIT)
        .send()
        .await
        .expect("stats")
        .text()
        .await
        .expect("stats body");
    assert_eq!(
        parse_json(&text)["published_messages"].as_u64(),
        Some(1),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_re_reads_the_nginx_config() {
    let file = TempFile::new("nginx.conf", &nginx_conf("", ""));
    let mut herald =
        HeraldProcess::start(&["--nginx-config", file.path(), "--listen", "127.0.0.1:0"]).await;
    let addr = herald.addr;
    let client = common::client();
    let publish = || {
        client
            .post(format!("http://{addr}/added?id=x"))
            .body("m")
            .timeout(WAIT)
            .send()
    };
    let before = publish().await.expect("publish before reload");
    assert_eq!(
        before.status(),
        StatusCode::NOT_FOUND,
        "no location /added yet"
    );
    file.write(&nginx_conf(
        "",
        "location /added { push_stream_publisher; push_stream_channels_path $arg_id; }",
    ));
    herald.signal(libc::SIGHUP);
    herald
        .wait_for_log("configuration reloaded", 0, Duration::from_secs(10))
        .await;
    let after = publish().await.expect("publish after reload");
    assert_eq!(after.status(), StatusCode::OK, "the new location serves");
}
