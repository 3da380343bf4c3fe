//! Subscriber locations over real sockets: streaming (header, message template tokens, footer,
//! pings) and EventSource (content type, framing, comments, pings). Multi-channel subscriptions and
//! backtrack are covered on both engines in `engines.rs`.

mod common;

use common::{config, parse_json, streaming_location, TestServer, WAIT};
use reqwest::StatusCode;
use std::time::{Duration, SystemTime};

/// Streaming `/sub/` with `template` and `extra` TOML lines, EventSource `/ev/` with `ev_extra`.
fn sub_config(channels: &str, template: &str, extra: &str, ev_extra: &str) -> String {
    let locations = format!(
        "{}\n[[location]]\npath = \"/ev/\"\nrole = \"subscriber\"\nmode = \"eventsource\"\n{ev_extra}\n",
        streaming_location("/sub/", template, extra)
    );
    config(channels, &locations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_header_messages_and_footer() {
    let server = TestServer::start(&sub_config(
        "",
        "<~text~>",
        "header_template = \"HEAD\\n\"\nfooter_template = \"FOOT\"\nsubscriber_connection_ttl = \"1s\"",
        "",
    ))
    .await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    assert_eq!(sub.content_type(), "text/plain; charset=utf-8");
    // The header arrives on connect, before any message.
    assert_eq!(sub.read_until("HEAD\n", WAIT).await, "HEAD\n");
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "one").await;
    server.publish_ok("news", "two").await;
    assert_eq!(sub.read_until("<two>", WAIT).await, "<one><two>");
    // subscriber_connection_ttl ends the connection: footer is the last thing, then the body ends.
    let rest = sub.read_to_end(WAIT).await;
    assert_eq!(rest, "FOOT");
    assert_eq!(sub.received(), "HEAD\n<one><two>FOOT");
    assert!(sub.ended());
    server.wait_for_subscribers("news", 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_template_tokens_are_replaced() {
    let template = "[~text~|~id~|~channel~|~tag~|~time~|~event-id~|~event-type~|~size~]\n";
    let server = TestServer::start(&sub_config("", template, "", "")).await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    let before = SystemTime::now();
    let (status, _, body) = server
        .publish(
            "news",
            "héllo wörld",
            &[("Event-Id", "ev-42"), ("Event-Type", "update")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.publish_ok("news", "plain").await;

    let first = sub.read_until("]\n", WAIT).await;
    let inner = first
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix("]\n"))
        .unwrap_or_else(|| panic!("bad frame {first:?}"));
    let fields: Vec<&str> = inner.split('|').collect();
    assert_eq!(fields.len(), 8, "{first:?}");
    assert_eq!(fields[0], "héllo wörld");
    assert_eq!(fields[1], "1");
    assert_eq!(fields[2], "news");
    let tag1: u64 = fields[3]
        .parse()
        .unwrap_or_else(|_| panic!("tag {first:?}"));
    assert!(tag1 >= 1, "{first:?}");
    let time =
        httpdate::parse_http_date(fields[4]).unwrap_or_else(|e| panic!("~time~ {e}: {first:?}"));
    let skew = |t: SystemTime| {
        t.duration_since(before)
            .unwrap_or_else(|e| e.duration())
            .as_secs()
    };
    assert!(skew(time) <= 5, "~time~ far from now: {first:?}");
    assert_eq!(fields[5], "ev-42");
    assert_eq!(fields[6], "update");
    assert_eq!(
        fields[7],
        "héllo wörld".len().to_string(),
        "~size~ is bytes"
    );

    let second = sub.read_until("]\n", WAIT).await;
    let fields2: Vec<&str> = second
        .trim_start_matches('[')
        .trim_end_matches("]\n")
        .split('|')
        .collect();
    assert_eq!(fields2[0], "plain");
    assert_eq!(fields2[1], "2");
    assert_eq!(fields2[5], "", "no Event-Id header: {second:?}");
    assert_eq!(fields2[6], "", "no Event-Type header: {second:?}");
    assert_eq!(fields2[7], "5");
    // (time, tag) increases with the id.
    let time2 = httpdate::parse_http_date(fields2[4]).unwrap();
    let tag2: u64 = fields2[3].parse().unwrap();
    assert!((time2, tag2) > (time, tag1), "{first:?} then {second:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_json_token_produces_valid_json() {
    let template =
        "{\"id\": ~id~, \"channel\": \"~channel-json~\", \"text\": \"~text-json~\", \"type\": \"~event-type-json~\"}\n";
    let server = TestServer::start(&sub_config("", template, "", "")).await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    let text = "say \"hi\"\nnew line\ttab \\ backslash";
    let (status, _, _) = server
        .publish("news", text, &[("Event-Type", "quo\"te")])
        .await;
    assert_eq!(status, StatusCode::OK);
    // The JSON text has no raw newline, so the frame ends at the template's newline.
    let frame = sub.read_until("}\n", WAIT).await;
    let doc = parse_json(frame.trim_end());
    assert_eq!(doc["id"], 1);
    assert_eq!(doc["channel"], "news");
    assert_eq!(doc["text"], text);
    assert_eq!(doc["type"], "quo\"te");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_like_text_in_messages_is_not_expanded() {
    let server = TestServer::start(&sub_config("", "<~text~>", "", "")).await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "~id~ ~channel~").await;
    assert_eq!(sub.read_until(">", WAIT).await, "<~id~ ~channel~>");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_ping_uses_the_template_and_default_text() {
    let server = TestServer::start(&sub_config(
        "",
        "~id~:~text~|",
        "ping_message_interval = \"200ms\"",
        "",
    ))
    .await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    assert_eq!(sub.read_until("|", WAIT).await, "-1: |");
    assert_eq!(sub.read_until("|", WAIT).await, "-1: |");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_ping_text_is_configurable() {
    let server = TestServer::start(&sub_config(
        "ping_message_text = \"PING\"",
        "~id~:~text~|",
        "ping_message_interval = \"200ms\"",
        "",
    ))
    .await;
    let started = tokio::time::Instant::now();
    let mut sub = server.subscribe_ok("/sub/news").await;
    assert_eq!(sub.read_until("|", WAIT).await, "-1:PING|");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "the first ping must wait for the interval"
    );
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "real").await;
    let text = sub.read_until("1:real|", WAIT).await;
    assert!(
        text.trim_start_matches("-1:PING|") == "1:real|",
        "only pings may precede the message: {text:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_of_streaming_location_is_configurable() {
    let server = TestServer::start(&sub_config(
        "",
        "~text~",
        "content_type = \"application/x-ndjson\"",
        "",
    ))
    .await;
    let sub = server.subscribe_ok("/sub/news").await;
    assert_eq!(sub.content_type(), "application/x-ndjson");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_location_refuses_other_methods_and_bad_paths() {
    let server = TestServer::start(&sub_config("", "~text~", "", "")).await;
    let (status, headers, _) = server
        .request(reqwest::Method::POST, "/sub/news", "x", &[])
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(common::header(&headers, "allow"), "GET");
    let (status, _, body) = server.get("/sub/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("No channel id provided."), "{body}");
    for reserved in ["/sub/ALL", "/sub/news*"] {
        let (status, _, body) = server.get(reserved).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{reserved}: {body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_opens_with_comment_and_has_sse_content_type() {
    let server = TestServer::start(&sub_config("", "~text~", "", "")).await;
    let mut sub = server.subscribe_ok("/ev/news").await;
    assert_eq!(sub.content_type(), "text/event-stream; charset=utf-8");
    assert_eq!(sub.read_until("\n\n", WAIT).await, ": \n\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_header_template_becomes_comment_lines() {
    let server = TestServer::start(&sub_config(
        "",
        "~text~",
        "",
        "header_template = \"hello\\nworld\"",
    ))
    .await;
    let mut sub = server.subscribe_ok("/ev/news").await;
    assert_eq!(sub.read_until("\n\n", WAIT).await, ": hello\n: world\n\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_frames_messages_with_id_event_and_data_lines() {
    let server = TestServer::start(&sub_config("", "~text~", "", "")).await;
    let mut sub = server.subscribe_ok("/ev/news").await;
    assert_eq!(sub.read_until("\n\n", WAIT).await, ": \n\n");
    server.wait_for_subscribers("news", 1).await;
    let (status, _, _) = server
        .publish(
            "news",
            "line1\nline2",
            &[("Event-Id", "ev-7"), ("Event-Type", "update")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sub.read_until("\n\n", WAIT).await,
        "id: ev-7\nevent: update\ndata: line1\ndata: line2\n\n"
    );
    server.publish_ok("news", "plain").await;
    assert_eq!(sub.read_until("\n\n", WAIT).await, "data: plain\n\n");
    let (status, _, _) = server
        .publish("news", "only id", &[("Event-Id", "x1")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        sub.read_until("\n\n", WAIT).await,
        "id: x1\ndata: only id\n\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_applies_the_message_template() {
    let server = TestServer::start(&sub_config(
        "",
        "~text~",
        "",
        "message_template = \"{\\\"id\\\": ~id~, \\\"text\\\": \\\"~text-json~\\\"}\"",
    ))
    .await;
    let mut sub = server.subscribe_ok("/ev/news").await;
    sub.read_until(": \n\n", WAIT).await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "two\nlines").await;
    let frame = sub.read_until("\n\n", WAIT).await;
    let data = frame
        .strip_prefix("data: ")
        .and_then(|f| f.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("{frame:?}"));
    let doc = parse_json(data);
    assert_eq!(doc["id"], 1);
    assert_eq!(doc["text"], "two\nlines");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_backtrack_and_ping() {
    let server = TestServer::start(&sub_config(
        "",
        "~text~",
        "",
        "ping_message_interval = \"200ms\"\nfooter_template = \"bye\"\nsubscriber_connection_ttl = \"1s\"",
    ))
    .await;
    server.publish_ok("news", "old1").await;
    server.publish_ok("news", "old2").await;
    let mut sub = server.subscribe_ok("/ev/news.b1").await;
    assert_eq!(sub.read_until("\n\n", WAIT).await, ": \n\n");
    assert_eq!(sub.read_until("\n\n", WAIT).await, "data: old2\n\n");
    assert_eq!(sub.read_until("\n\n", WAIT).await, ": -1\n\n");
    assert_eq!(sub.read_until("\n\n", WAIT).await, ": -1\n\n");
    let rest = sub.read_to_end(WAIT).await;
    let rest = rest.replace(": -1\n\n", "");
    assert_eq!(rest, ": bye\n\n", "the footer comment ends the stream");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscribers_with_the_footer() {
    let server =
        TestServer::start(&sub_config("", "~text~|", "footer_template = \"FOOT\"", "")).await;
    let mut sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m").await;
    assert_eq!(sub.read_until("|", WAIT).await, "m|");
    server.stop().await;
    assert_eq!(sub.read_to_end(WAIT).await, "FOOT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_and_exact_locations_take_channels_from_captures_and_args() {
    let locations = r#"
[[location]]
path = "^/rooms/([a-z]+)/live$"
match = "regex"
role = "subscriber"
channels_path = "room-$1"
message_template = "~channel~:~text~|"

[[location]]
path = "/listen"
match = "exact"
role = "subscriber"
channels_path = "$arg_ch"
message_template = "~channel~=~text~|"
"#;
    let server = TestServer::start(&config("", locations)).await;
    let mut by_regex = server.subscribe_ok("/rooms/lobby/live").await;
    let mut by_arg = server.subscribe_ok("/listen?ch=room-lobby").await;
    server.wait_for_subscribers("room-lobby", 2).await;
    server.publish_ok("room-lobby", "hi").await;
    assert_eq!(by_regex.read_until("|", WAIT).await, "room-lobby:hi|");
    assert_eq!(by_arg.read_until("|", WAIT).await, "room-lobby=hi|");
    let (status, _, body) = server.get("/rooms/Lobby/live").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no location matches: {body}");
    server.stop().await;
}
