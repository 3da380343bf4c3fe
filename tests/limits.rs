//! Limits from `[server]` and `[channels]`: stored messages per channel, message TTL, channel id
//! length and characters, request body size, number of channels, subscribers per channel. Every
//! refusal names the limit and its configured value.

mod common;

use common::{
    config_with_server, header, parse_json, streaming_location, TestServer, EXPLAIN, WAIT,
};
use reqwest::{Method, StatusCode};
use std::time::Duration;

fn limits_config(server: &str, channels: &str) -> String {
    config_with_server(
        server,
        channels,
        &streaming_location("/sub/", "~id~:~text~|", ""),
    )
}

async fn start(channels: &str) -> TestServer {
    TestServer::start(&limits_config("", channels)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_messages_stored_per_channel_keeps_the_newest() {
    let server = start("max_messages_stored_per_channel = 3").await;
    let mut last = String::new();
    for i in 1..=5 {
        let (status, _, body) = server.publish("news", &format!("m{i}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        last = body;
    }
    let doc = parse_json(&last);
    assert_eq!(doc["published_messages"], 5, "{last}");
    assert_eq!(doc["stored_messages"], 3, "{last}");
    let info = server.channel_info("news").await.expect("channel");
    assert_eq!(info["stored_messages"], 3, "{info}");
    assert_eq!(server.stats("").await["stored_messages"], 3);

    let mut sub = server.subscribe_ok("/sub/news.b10").await;
    assert_eq!(sub.read_until("5:m5|", WAIT).await, "3:m3|4:m4|5:m5|");
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m6").await;
    assert_eq!(sub.read_until("|", WAIT).await, "6:m6|");
    assert_eq!(
        server.channel_info("news").await.unwrap()["stored_messages"],
        3
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ttl_expires_stored_messages() {
    let server = start("message_ttl = \"1s\"\nchannel_inactivity_time = \"1h\"").await;
    server.publish_ok("news", "m1").await;
    server.publish_ok("news", "m2").await;
    assert_eq!(
        server.channel_info("news").await.unwrap()["stored_messages"],
        2
    );
    let mut last = serde_json::Value::Null;
    let expired = common::poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let server = &server;
        async move {
            server
                .channel_info("news")
                .await
                .is_some_and(|info| info["stored_messages"] == 0)
        }
    })
    .await;
    if !expired {
        last = server.channel_info("news").await.unwrap_or_default();
    }
    assert!(expired, "messages still stored after ~5s: {last}");
    let info = server.channel_info("news").await.expect("channel kept");
    assert_eq!(info["published_messages"], 2, "{info}");
    assert_eq!(server.stats("").await["stored_messages"], 0);

    // A backtracking subscriber finds nothing old: its first message is the next one.
    let mut sub = server.subscribe_ok("/sub/news.b10").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m3").await;
    assert_eq!(sub.read_until("|", WAIT).await, "3:m3|");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_channel_id_length_is_enforced() {
    let server = start("max_channel_id_length = 5").await;
    server.publish_ok("abcde", "fits").await;
    let (status, headers, body) = server.publish("abcdef", "too long", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("Channel id is too large."), "{body}");
    assert!(body.contains("max_channel_id_length = 5"), "{body}");
    assert!(header(&headers, EXPLAIN).contains("Channel id is too large."));

    let (status, _, body) = server.get("/sub/abcdef").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "subscriber: {body}");
    assert!(body.contains("max_channel_id_length = 5"), "{body}");

    let (status, _, body) = server.get("/channels-stats?id=abcdef").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "stats: {body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_id_with_space_is_refused() {
    let server = start("").await;
    for id in ["a%20b", "a+b"] {
        let (status, _, body) = server.publish(id, "x", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "publish id={id}: {body}");
        assert!(body.contains("channel_id_pattern"), "{body}");
    }
    let (status, _, body) = server.get("/sub/a%20b").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "subscribe: {body}");
    assert_eq!(server.stats("").await["channels"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_id_pattern_is_configurable() {
    let server = start("channel_id_pattern = \"[a-z]+\"").await;
    server.publish_ok("news", "ok").await;
    let (status, _, body) = server.publish("News1", "x", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("channel_id_pattern = [a-z]+"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_size_refuses_large_publishes_and_keeps_stored_messages() {
    let server = TestServer::start(&limits_config("max_body_size = \"1k\"", "")).await;
    server.publish_ok("news", "before").await;

    let big = "x".repeat(2000);
    let (status, headers, body) = server.publish("news", &big, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body.contains("max_body_size"), "{body}");
    assert!(body.contains("1024"), "{body}");
    assert!(!header(&headers, EXPLAIN).is_empty());

    // Without Content-Length (chunked) the limit holds as well.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..20)
        .map(|_| Ok(bytes::Bytes::from(vec![b'y'; 100])))
        .collect();
    let (status, _, body) = server
        .request(
            Method::POST,
            "/pub?id=news",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "chunked: {body}");

    let info = server.channel_info("news").await.expect("channel");
    assert_eq!(info["published_messages"], 1, "{info}");
    assert_eq!(info["stored_messages"], 1, "{info}");
    let mut sub = server.subscribe_ok("/sub/news.b5").await;
    assert_eq!(sub.read_until("|", WAIT).await, "1:before|");

    // Exactly the limit is accepted.
    let exact = "z".repeat(1024);
    server.publish_ok("news", &exact).await;
    assert_eq!(sub.read_until("|", WAIT).await, format!("2:{exact}|"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_number_of_channels_refuses_publishers_and_subscribers() {
    let server = start("max_number_of_channels = 2").await;
    server.publish_ok("a", "1").await;
    server.publish_ok("b", "1").await;
    let (status, headers, body) = server.publish("c", "1", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("Number of channels were exceeded."), "{body}");
    assert!(body.contains("max_number_of_channels = 2"), "{body}");
    assert!(header(&headers, EXPLAIN).contains("Number of channels were exceeded."));

    let mut sub = server.subscribe("/sub/c").await;
    assert_eq!(
        sub.status,
        StatusCode::FORBIDDEN,
        "subscriber on a 3rd channel"
    );
    let body = sub.read_to_end(WAIT).await;
    assert!(body.contains("Number of channels were exceeded."), "{body}");
    assert!(body.contains("max_number_of_channels = 2"), "{body}");

    // A multi-channel publish that would create one more channel changes nothing.
    let (status, _, body) = server.publish("a/d", "x", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        server.channel_info("a").await.unwrap()["published_messages"],
        1
    );

    // Existing channels keep working.
    server.publish_ok("a", "2").await;
    let _sub_a = server.subscribe_ok("/sub/a").await;
    let summary = server.stats("").await;
    assert_eq!(summary["channels"], 2, "{summary}");

    // Deleting one frees a slot.
    let (status, _, _) = server.delete("b", "").await;
    assert_eq!(status, StatusCode::OK);
    server.publish_ok("c", "now fits").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_subscribers_per_channel_refuses_extra_subscribers_until_one_leaves() {
    let server = start("max_subscribers_per_channel = 1").await;
    let first = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;

    let mut second = server.subscribe("/sub/news").await;
    assert_eq!(second.status, StatusCode::FORBIDDEN);
    let body = second.read_to_end(WAIT).await;
    assert!(
        body.contains("Subscribers limit per channel has been exceeded."),
        "{body}"
    );
    assert!(body.contains("max_subscribers_per_channel = 1"), "{body}");
    assert_eq!(
        common::header(&second.headers, EXPLAIN),
        "Subscribers limit per channel has been exceeded. Limit: max_subscribers_per_channel = 1."
    );
    // The refused subscriber left no trace.
    server.wait_for_subscribers("news", 1).await;
    // Another channel is not affected.
    let _other = server.subscribe_ok("/sub/other").await;

    // The first subscriber disconnects; a new one gets in (bounded retry).
    drop(first);
    let mut attempts = 0;
    let mut last = String::new();
    let admitted = common::poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        attempts += 1;
        let server = &server;
        async move {
            let sub = server.subscribe("/sub/news").await;
            sub.status == StatusCode::OK
        }
    })
    .await;
    if !admitted {
        last = format!("{:?}", server.stats("?id=news").await);
    }
    assert!(
        admitted,
        "no subscriber admitted within 5s after the first disconnected ({attempts} attempts); stats: {last}"
    );
    server.stop().await;
}
