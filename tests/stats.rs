//! The `/channels-stats` location: summary, one channel, groups (`ALL`, `prefix*`, several ids),
//! output formats, and wildcard channels counted apart.

mod common;

use common::messages::{channel_infos, channel_names};
use common::{config, header, parse_json, streaming_location, TestServer, EXPLAIN};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

fn stats_config(channels: &str) -> String {
    config(channels, &streaming_location("/sub/", "~id~:~text~|", ""))
}

const SUMMARY_KEYS: [&str; 12] = [
    "hostname",
    "time",
    "channels",
    "wildcard_channels",
    "published_messages",
    "stored_messages",
    "messages_in_trash",
    "channels_in_delete",
    "channels_in_trash",
    "subscribers",
    "uptime",
    "by_worker",
];

fn assert_local_time(value: &Value) {
    let time = value.as_str().unwrap_or_else(|| panic!("time: {value}"));
    let bytes = time.as_bytes();
    let shape_ok = time.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        });
    assert!(
        shape_ok,
        "time must look like 2024-01-31T12:34:56: {time:?}"
    );
}

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_has_every_key_with_correct_values() {
    let server = TestServer::start(&stats_config("")).await;
    let empty = server.stats("").await;
    for key in SUMMARY_KEYS {
        assert!(empty.get(key).is_some(), "summary lacks {key}: {empty}");
    }
    assert_eq!(empty["channels"], 0);
    assert_eq!(empty["published_messages"], 0);
    assert_eq!(empty["subscribers"], 0);

    server.publish_ok("news", "n1").await;
    server.publish_ok("news", "n2").await;
    server.publish_ok("sports", "s1").await;
    let sub_news = server.subscribe_ok("/sub/news").await;
    let sub_both = server.subscribe_ok("/sub/news/sports").await;
    server.wait_for_subscribers("news", 2).await;
    server.wait_for_subscribers("sports", 1).await;

    let (status, headers, body) = server.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert!(body.ends_with("\r\n"), "{body:?}");
    assert!(
        body.starts_with("{\"hostname\": "),
        "module spacing: {body:?}"
    );
    let s = parse_json(&body);
    let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    for key in SUMMARY_KEYS {
        assert!(keys.contains(&key), "summary lacks {key}: {body}");
    }
    assert_eq!(s["hostname"], hostname());
    assert_local_time(&s["time"]);
    assert_eq!(s["channels"], 2, "{body}");
    assert_eq!(s["wildcard_channels"], 0, "{body}");
    assert_eq!(s["published_messages"], 3, "{body}");
    assert_eq!(s["stored_messages"], 3, "{body}");
    assert_eq!(s["messages_in_trash"], 0, "{body}");
    assert_eq!(s["channels_in_delete"], 0, "{body}");
    assert_eq!(s["channels_in_trash"], 0, "{body}");
    assert_eq!(s["subscribers"], 2, "two connections: {body}");
    let uptime = s["uptime"].as_u64().unwrap_or_else(|| panic!("{body}"));
    assert!(uptime < 30, "{body}");
    let workers = s["by_worker"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(workers.len(), 1, "{body}");
    let worker = &workers[0];
    assert_eq!(
        worker["pid"],
        Value::String(std::process::id().to_string()),
        "pid is a string: {body}"
    );
    assert_eq!(worker["subscribers"], 2, "{body}");
    assert!(worker["uptime"].as_u64().is_some_and(|u| u < 30), "{body}");

    // Subscribers leaving are counted out.
    drop(sub_news);
    drop(sub_both);
    server.wait_for_subscribers("news", 0).await;
    server.wait_for_subscribers("sports", 0).await;
    let s = server.stats("").await;
    assert_eq!(s["subscribers"], 0, "{s}");
    assert_eq!(s["by_worker"][0]["subscribers"], 0, "{s}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uptime_grows() {
    let server = TestServer::start(&stats_config("")).await;
    let grown = common::poll_until(Duration::from_secs(4), Duration::from_millis(100), || {
        let server = &server;
        async move { server.stats("").await["uptime"].as_u64().unwrap_or(0) >= 1 }
    })
    .await;
    assert!(grown, "uptime still 0 after 4s: {}", server.stats("").await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detailed_channel_stats() {
    let server = TestServer::start(&stats_config("")).await;
    server.publish_ok("news", "1").await;
    server.publish_ok("news", "2").await;
    let _sub = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 1).await;
    let (status, headers, body) = server.get("/channels-stats?id=news").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert_eq!(
        body,
        "{\"channel\": \"news\", \"published_messages\": 2, \"stored_messages\": 2, \"subscribers\": 1}\r\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_channel_is_404() {
    let server = TestServer::start(&stats_config("")).await;
    server.publish_ok("news", "1").await;
    let (status, headers, body) = server.get("/channels-stats?id=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!header(&headers, EXPLAIN).is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_lists_every_channel() {
    let server = TestServer::start(&stats_config("")).await;
    for (id, n) in [("news", 2), ("alpha", 1), ("zeta", 3)] {
        for i in 0..n {
            server.publish_ok(id, &format!("m{i}")).await;
        }
    }
    let doc = server.stats("?id=ALL").await;
    for key in [
        "hostname",
        "time",
        "channels",
        "wildcard_channels",
        "uptime",
        "infos",
    ] {
        assert!(doc.get(key).is_some(), "group lacks {key}: {doc}");
    }
    assert_eq!(doc["hostname"], hostname());
    assert_local_time(&doc["time"]);
    assert_eq!(doc["channels"], 3);
    let got = channel_infos(&doc);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "infos sorted by channel id: {doc}");
    assert_eq!(
        sorted,
        vec![
            ("alpha".to_string(), 1, 1, 0),
            ("news".to_string(), 2, 2, 0),
            ("zeta".to_string(), 3, 3, 0)
        ]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_query_lists_only_matching_channels() {
    let server = TestServer::start(&stats_config("")).await;
    for id in ["news", "newer", "old", "anew"] {
        server.publish_ok(id, "x").await;
    }
    let doc = server.stats("?id=new*").await;
    let names = channel_names(&doc);
    assert_eq!(names, ["newer", "news"], "{doc}");
    let none = server.stats("?id=zzz*").await;
    assert_eq!(none["infos"], Value::Array(vec![]), "{none}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ids_give_a_group() {
    let server = TestServer::start(&stats_config("")).await;
    server.publish_ok("a/b", "x").await;
    let doc = server.stats("?id=a/b").await;
    let names = channel_names(&doc);
    assert_eq!(names, ["a", "b"], "{doc}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_formats_follow_accept_and_format_argument() {
    let server = TestServer::start(&stats_config("")).await;
    server.publish_ok("news", "x").await;

    let (status, headers, body) = server
        .get_with("/channels-stats", &[("Accept", "text/plain")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; charset=utf-8"
    );
    assert!(body.contains("channels: 1\r\n"), "{body:?}");
    assert!(body.contains("published_messages: 1\r\n"), "{body:?}");
    assert!(!body.trim_start().starts_with('{'), "{body:?}");

    let (status, headers, body) = server
        .get_with("/channels-stats", &[("Accept", "application/xml")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/xml");
    assert!(body.starts_with("<?xml"), "{body:?}");
    assert!(body.contains("<channels>1</channels>"), "{body:?}");
    assert!(
        body.contains("<published_messages>1</published_messages>"),
        "{body:?}"
    );
    assert!(body.trim_end().ends_with("</root>"), "{body:?}");

    let (status, headers, body) = server
        .get_with("/channels-stats", &[("Accept", "application/yaml")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/yaml");
    assert!(body.contains("channels: 1"), "{body:?}");
    assert!(
        body.contains(&format!("hostname: \"{}\"", hostname())),
        "{body:?}"
    );
    assert!(body.contains("by_worker:"), "{body:?}");

    let (status, headers, body) = server.get("/channels-stats?format=pretty").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/json");
    assert!(body.contains("\n  \"hostname\""), "indented: {body:?}");
    assert_eq!(parse_json(&body)["channels"], 1);

    // The same negotiation applies to one channel.
    let (status, headers, body) = server
        .get_with("/channels-stats?id=news", &[("Accept", "application/xml")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/xml");
    assert!(body.contains("<channel>news</channel>"), "{body:?}");

    // Default and explicit JSON.
    let (_, headers, _) = server
        .get_with("/channels-stats", &[("Accept", "application/json")])
        .await;
    assert_eq!(header(&headers, "content-type"), "application/json");
    let (_, headers, _) = server.get("/channels-stats?format=yaml").await;
    assert_eq!(header(&headers, "content-type"), "application/yaml");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_channels_are_counted_apart() {
    let server = TestServer::start(&stats_config("wildcard_channel_prefix = \"bcast_\"")).await;
    server.publish_ok("bcast_all", "x").await;
    server.publish_ok("bcast_room", "x").await;
    server.publish_ok("normal", "x").await;
    let s = server.stats("").await;
    assert_eq!(s["channels"], 1, "{s}");
    assert_eq!(s["wildcard_channels"], 2, "{s}");
    assert_eq!(s["published_messages"], 3, "{s}");
    let all = server.stats("?id=ALL").await;
    assert_eq!(all["channels"], 1, "{all}");
    assert_eq!(all["wildcard_channels"], 2, "{all}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_location_only_answers_get() {
    let server = TestServer::start(&stats_config("")).await;
    let (status, headers, _) = server
        .request(Method::POST, "/channels-stats", "x", &[])
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&headers, "allow"), "GET");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_empty_channels_are_removed() {
    let server = TestServer::start(&stats_config("channel_inactivity_time = \"1s\"")).await;
    // A channel created by a subscriber, with nothing stored, goes once the subscriber leaves.
    let sub = server.subscribe_ok("/sub/idle").await;
    server.wait_for_subscribers("idle", 1).await;
    // A channel with stored messages stays.
    server.publish_ok("kept", "x").await;
    drop(sub);
    let removed = common::poll_until(Duration::from_secs(6), Duration::from_millis(100), || {
        let server = &server;
        async move {
            let (status, _, _) = server.get("/channels-stats?id=idle").await;
            status == StatusCode::NOT_FOUND
        }
    })
    .await;
    assert!(
        removed,
        "idle channel still listed after 6s: {}",
        server.stats("?id=ALL").await
    );
    let all = server.stats("?id=ALL").await;
    assert_eq!(all["channels"], 1, "{all}");
    assert_eq!(all["infos"][0]["channel"], "kept", "{all}");
    server.stop().await;
}
