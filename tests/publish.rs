//! Publisher location: PUT publishes like POST, multi-channel publish, delete (DELETE on admin
//! locations), errors, and the publisher flag `channel_info_on_publish`. The POST answer, channel
//! info (GET, 404 for unknown) and `store_messages` are covered on both engines in `engines.rs`.

mod common;

use common::{config, header, parse_json, streaming_location, TestServer, EXPLAIN, WAIT};
use reqwest::{Method, StatusCode};

fn publisher_config(channels: &str) -> String {
    let locations = format!(
        r#"
[[location]]
path = "/pub-ro"
match = "exact"
role = "publisher"
channels_path = "$arg_id"

[[location]]
path = "/pub-noinfo"
match = "exact"
role = "publisher"
channels_path = "$arg_id"
channel_info_on_publish = false

{streaming}

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
footer_template = "END"
"#,
        streaming = streaming_location("/sub/", "~id~:~text~|", "footer_template = \"END\"")
    );
    config(channels, &locations)
}

async fn start() -> TestServer {
    TestServer::start(&publisher_config("")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_publishes_like_post() {
    let server = start().await;
    let (status, _, body) = server
        .request(Method::PUT, "/pub?id=news", "first", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "{\"channel\": \"news\", \"published_messages\": 1, \"stored_messages\": 1, \"subscribers\": 0}\r\n"
    );
    let (status, _, body) = server
        .request(Method::POST, "/pub?id=news", "second", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = parse_json(&body);
    assert_eq!(doc["published_messages"], 2);
    assert_eq!(doc["stored_messages"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_channel_publish_stores_on_each() {
    let server = start().await;
    let (status, _, body) = server.publish("a/b/c", "everywhere", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = parse_json(&body);
    let infos = doc["infos"].as_array().unwrap_or_else(|| panic!("{body}"));
    let names: Vec<&str> = infos
        .iter()
        .map(|i| i["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "{body}");
    for name in ["a", "b", "c"] {
        let info = server
            .channel_info(name)
            .await
            .unwrap_or_else(|| panic!("channel {name} missing after publish"));
        assert_eq!(info["published_messages"], 1, "{name}: {info}");
        assert_eq!(info["stored_messages"], 1, "{name}: {info}");
    }
    // And a backtrack on each channel yields the one message.
    for name in ["a", "b", "c"] {
        let mut sub = server.subscribe_ok(&format!("/sub/{name}.b1")).await;
        assert_eq!(sub.read_until("|", WAIT).await, "1:everywhere|");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body_is_refused() {
    let server = start().await;
    let (status, headers, body) = server.publish("news", "", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("Empty post requests are not allowed."),
        "{body}"
    );
    assert_eq!(
        header(&headers, EXPLAIN),
        "Empty post requests are not allowed."
    );
    assert!(
        server.channel_info("news").await.is_none(),
        "an empty publish must not create the channel"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_channel_id_is_refused() {
    let server = start().await;
    for path in ["/pub", "/pub?id=", "/pub?other=x"] {
        let (status, headers, body) = server.request(Method::POST, path, "text", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("No channel id provided."), "{path}: {body}");
        assert_eq!(header(&headers, EXPLAIN), "No channel id provided.");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_channel_ids_are_forbidden() {
    let server = start().await;
    for id in ["ALL", "news*", "a*b", "ok/ALL"] {
        let (status, headers, body) = server.publish(id, "x", &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "publish to {id}: {body}");
        assert!(!header(&headers, EXPLAIN).is_empty(), "{id}: {headers:?}");
    }
    // A refused multi-channel publish stores nothing anywhere.
    assert!(server.channel_info("ok").await.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_non_admin_location_is_405() {
    let server = start().await;
    let (status, _, body) = server
        .request(Method::POST, "/pub-ro?id=news", "x", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "non-admin publish works: {body}");
    let (status, headers, body) = server
        .request(Method::DELETE, "/pub-ro?id=news", "", &[])
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(header(&headers, "allow"), "GET, POST, PUT");
    // The channel is still there.
    let info = server.channel_info("news").await.expect("channel kept");
    assert_eq!(info["stored_messages"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_delete_ends_subscribers_with_deleted_message_and_footer() {
    let server = start().await;
    server.publish_ok("news", "stored").await;
    let mut stream = server.subscribe_ok("/sub/news").await;
    let mut events = server.subscribe_ok("/ev/news").await;
    server.wait_for_subscribers("news", 2).await;

    let (status, headers, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&headers, EXPLAIN), "Channel deleted.");

    let rest = stream.read_to_end(WAIT).await;
    assert_eq!(rest, "-2:Channel deleted|END");
    let rest = events.read_to_end(WAIT).await;
    assert_eq!(rest, ": \n\ndata: Channel deleted\n\n: END\n\n");

    assert!(
        server.channel_info("news").await.is_none(),
        "deleted channel must be gone"
    );
    let (status, _, body) = server.get("/channels-stats?id=news").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let summary = server.stats("").await;
    assert_eq!(summary["channels"], 0, "{summary}");
    assert_eq!(summary["stored_messages"], 0, "{summary}");
    assert_eq!(summary["subscribers"], 0, "{summary}");

    let (status, headers, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "second delete: {body}");
    assert!(!header(&headers, EXPLAIN).is_empty());
    let (status, _, body) = server.delete("never_existed", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_body_overrides_the_deleted_message_text() {
    let server = start().await;
    server.publish_ok("news", "x").await;
    let mut stream = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    let (status, _, body) = server.delete("news", "gone for good").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stream.read_to_end(WAIT).await, "-2:gone for good|END");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_deleted_message_text_is_configurable() {
    let server = TestServer::start(&publisher_config(
        "channel_deleted_message_text = \"bye bye\"",
    ))
    .await;
    server.publish_ok("news", "x").await;
    let mut stream = server.subscribe_ok("/sub/news").await;
    let mut events = server.subscribe_ok("/ev/news").await;
    server.wait_for_subscribers("news", 2).await;
    let (status, _, _) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.read_to_end(WAIT).await, "-2:bye bye|END");
    assert_eq!(
        events.read_to_end(WAIT).await,
        ": \n\ndata: bye bye\n\n: END\n\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_several_channels_ends_a_multi_channel_subscriber_only_when_all_are_gone() {
    let server = start().await;
    server.publish_ok("a/b", "x").await;
    let mut stream = server.subscribe_ok("/sub/a/b").await;
    server.wait_for_subscribers("a", 1).await;
    server.wait_for_subscribers("b", 1).await;
    let (status, _, _) = server.delete("a", "a gone").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.read_until("|", WAIT).await, "-2:a gone|");
    // Still following b.
    server.publish_ok("b", "still here").await;
    assert_eq!(stream.read_until("|", WAIT).await, "2:still here|");
    let (status, _, _) = server.delete("b", "b gone").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.read_to_end(WAIT).await, "-2:b gone|END");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_info_on_publish_false_answers_empty_200() {
    let server = start().await;
    let (status, _, body) = server
        .request(Method::POST, "/pub-noinfo?id=news", "hello", &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "");
    let info = server.channel_info("news").await.expect("published");
    assert_eq!(info["published_messages"], 1);
    assert_eq!(info["stored_messages"], 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_carry_explain_header_and_text_body() {
    let server = start().await;
    let (status, headers, body) = server.publish("", "x", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(header(&headers, EXPLAIN), body.trim_end());
    assert!(header(&headers, "content-type").starts_with("text/plain"));
    server.stop().await;
}
