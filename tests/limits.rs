//! Limits from `[server]` and `[channels]`: channel id length and characters, request body size.
//! Every refusal names the limit and its configured value. Stored messages per channel, message
//! TTL, number of channels and subscribers per channel are covered on both engines in `engines.rs`.

mod common;

use common::{config_with_server, header, streaming_location, TestServer, EXPLAIN, WAIT};
use reqwest::{Method, StatusCode};

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
