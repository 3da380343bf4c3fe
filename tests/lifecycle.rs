//! Channel lifecycle over real sockets: the events channel (its JSON events and who may use it),
//! wildcard channels and their limits, removal of inactive channels and expired messages (with the
//! trash counters), and connection TTLs on every live transport. Authorized-channels-only is
//! covered on both engines in `engines.rs`.

mod common;

use common::messages::{assert_refused, assert_refused_exactly, event, next_event};
use common::{config, header, poll_until, scenarios, streaming_location, ws, TestServer, WAIT};
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The summary of `/channels-stats`.
async fn summary(server: &TestServer) -> Value {
    server.stats("").await
}

// ---------------------------------------------------------------------------------------------
// Events channel

fn events_config(inactivity: &str) -> String {
    let locations = format!(
        "{}\n{}",
        streaming_location(
            "/sub/",
            "~text~\n",
            "allow_connections_to_events_channel = true"
        ),
        streaming_location("/plain/", "~text~\n", "")
    );
    config(
        &format!("events_channel_id = \"events\"\nchannel_inactivity_time = \"{inactivity}\""),
        &locations,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_channel_reports_channel_and_subscriber_lifecycle() {
    let server = TestServer::start(&events_config("1s")).await;
    scenarios::events_channel_lifecycle(&server, "/sub/", "/sub/").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_channel_reports_multi_channel_subscribers_and_deleted_subscribed_channels() {
    let server = TestServer::start(&events_config("1h")).await;
    let mut events = server.subscribe_ok("/sub/events").await;
    server.wait_for_subscribers("events", 1).await;
    let mut sub = server.subscribe_ok("/sub/a/b").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_event(&mut events, WAIT).await);
    }
    assert_eq!(
        got,
        vec![
            event("channel_created", "a"),
            event("client_subscribed", "a"),
            event("channel_created", "b"),
            event("client_subscribed", "b"),
        ]
    );
    // Deleting a channel with a subscriber: the subscriber leaves it, and it is destroyed.
    let (status, _, body) = server.delete("a", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        sub.read_until("Channel deleted\n", WAIT).await,
        "Channel deleted\n"
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next_event(&mut events, WAIT).await);
    }
    got.sort();
    let mut expected = vec![
        event("channel_destroyed", "a"),
        event("client_unsubscribed", "a"),
    ];
    expected.sort();
    assert_eq!(got, expected);
    drop(sub);
    assert_eq!(
        next_event(&mut events, WAIT).await,
        event("client_unsubscribed", "b")
    );
    events.expect_quiet(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_channel_is_guarded() {
    let server = TestServer::start(&events_config("1h")).await;
    let not_allowed = "Subscription to events channel is not allowed.";
    assert_refused_exactly(
        "subscribe /plain/events",
        server.get("/plain/events").await,
        StatusCode::FORBIDDEN,
        not_allowed,
    );
    assert_refused_exactly(
        "subscribe /plain/other/events",
        server.get("/plain/other/events").await,
        StatusCode::FORBIDDEN,
        not_allowed,
    );
    assert!(
        server.channel_info("other").await.is_none(),
        "a refused subscription created a channel"
    );
    let internal = "Only internal routines can change events channel.";
    assert_refused_exactly(
        "POST events",
        server.publish("events", "forged", &[]).await,
        StatusCode::FORBIDDEN,
        internal,
    );
    assert_refused_exactly(
        "PUT events",
        server
            .request(Method::PUT, "/pub?id=events", "forged", &[])
            .await,
        StatusCode::FORBIDDEN,
        internal,
    );
    assert_refused_exactly(
        "POST x/events",
        server.publish("x/events", "forged", &[]).await,
        StatusCode::FORBIDDEN,
        internal,
    );
    assert!(
        server.channel_info("x").await.is_none(),
        "a refused publish created a channel"
    );
    // Make the events channel exist, then try to delete it.
    server.publish_ok("made", "hello").await;
    assert!(server.channel_info("events").await.is_some());
    assert_refused_exactly(
        "DELETE events",
        server.delete("events", "").await,
        StatusCode::FORBIDDEN,
        internal,
    );
    assert!(server.channel_info("events").await.is_some());
    // Nothing forged got in: the only stored event is about "made".
    let mut sub = server.subscribe_ok("/sub/events.b10").await;
    assert_eq!(
        next_event(&mut sub, WAIT).await,
        event("channel_created", "made")
    );
    sub.expect_quiet(Duration::from_millis(300)).await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Wildcard channels

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_channels_limits_and_stats() {
    let locations = format!(
        "{}\n{}",
        streaming_location("/sub/", "~text~\n", "wildcard_channel_max_qtd = 1"),
        streaming_location("/any/", "~text~\n", "")
    );
    let server = TestServer::start(&config(
        "wildcard_channel_prefix = \"bc_\"\nmax_number_of_wildcard_channels = 2",
        &locations,
    ))
    .await;
    let too_many_in_request = "Subscribed too much wildcard channels.";

    let mut first = server.subscribe_ok("/sub/ch/bc_1").await;
    let stats = summary(&server).await;
    assert_eq!(
        (&stats["channels"], &stats["wildcard_channels"]),
        (&Value::from(1), &Value::from(1)),
        "{stats}"
    );
    assert_refused(
        "/sub/bc_1 alone",
        server.get("/sub/bc_1").await,
        StatusCode::FORBIDDEN,
        too_many_in_request,
    );
    assert_refused(
        "/sub/ch/bc_1/bc_2",
        server.get("/sub/ch/bc_1/bc_2").await,
        StatusCode::FORBIDDEN,
        too_many_in_request,
    );
    assert!(
        server.channel_info("bc_2").await.is_none(),
        "a refused request created bc_2"
    );
    // The location without wildcard_channel_max_qtd takes wildcard-only requests.
    let _second = server.subscribe_ok("/any/bc_2").await;
    let stats = summary(&server).await;
    assert_eq!(
        (&stats["channels"], &stats["wildcard_channels"]),
        (&Value::from(1), &Value::from(2)),
        "{stats}"
    );
    // A third wildcard channel is over max_number_of_wildcard_channels, on subscribe or publish.
    let over = "Number of channels were exceeded. Limit: max_number_of_wildcard_channels = 2.";
    assert_refused_exactly(
        "/sub/ch/bc_3",
        server.get("/sub/ch/bc_3").await,
        StatusCode::FORBIDDEN,
        over,
    );
    assert_refused_exactly(
        "publish bc_3",
        server.publish("bc_3", "x", &[]).await,
        StatusCode::FORBIDDEN,
        over,
    );
    assert!(server.channel_info("bc_3").await.is_none());
    // Normal channels are not limited by the wildcard limit, and existing wildcards still work.
    server.publish_ok("normal", "n").await;
    server.publish_ok("bc_1", "to wildcard").await;
    assert_eq!(first.read_until("\n", WAIT).await, "to wildcard\n");
    let stats = summary(&server).await;
    assert_eq!(
        (&stats["channels"], &stats["wildcard_channels"]),
        (&Value::from(2), &Value::from(2)),
        "{stats}"
    );
    let info = server.stats("?id=ch").await;
    assert_eq!(info["subscribers"], 1, "{info}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Inactivity and expiry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_channel_left_by_its_subscriber_is_removed_and_counted_in_trash() {
    let server = TestServer::start(&config(
        "channel_inactivity_time = \"1s\"",
        &streaming_location("/sub/", "~text~\n", ""),
    ))
    .await;
    let sub = server.subscribe_ok("/sub/idle").await;
    server.wait_for_subscribers("idle", 1).await;
    // Subscribed: kept however long it is idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        server.channel_info("idle").await.is_some(),
        "a channel with a subscriber was removed"
    );
    drop(sub);
    server.wait_for_subscribers("idle", 0).await;
    let left = Instant::now();
    assert!(
        server.channel_info("idle").await.is_some(),
        "removed at once instead of after channel_inactivity_time"
    );
    let gone = poll_until(
        Duration::from_secs(6),
        Duration::from_millis(50),
        || async { server.channel_info("idle").await.is_none() },
    )
    .await;
    let removed_after = left.elapsed();
    assert!(gone, "the empty channel was never removed");
    assert!(
        removed_after >= Duration::from_millis(900),
        "removed after {removed_after:?}, before channel_inactivity_time"
    );
    let stats = summary(&server).await;
    assert_eq!(stats["channels"], 0, "{stats}");
    assert_eq!(stats["channels_in_trash"], 1, "{stats}");
    assert_eq!(stats["messages_in_trash"], 0, "{stats}");
    // The trash count lingers for about 10 s, then goes.
    let removed = Instant::now();
    let emptied = poll_until(
        Duration::from_secs(14),
        Duration::from_millis(200),
        || async { summary(&server).await["channels_in_trash"] == 0 },
    )
    .await;
    let lingered = removed.elapsed();
    assert!(emptied, "channels_in_trash never went back to 0");
    assert!(
        lingered >= Duration::from_secs(7),
        "channels_in_trash dropped after only {lingered:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_with_stored_messages_stays_until_they_expire() {
    // message_ttl 3 s, inactivity 1 s: an empty channel goes after ~1-2 s, one holding stored
    // messages only once they expired.
    let server = TestServer::start(&config(
        "channel_inactivity_time = \"1s\"\nmessage_ttl = \"3s\"",
        &streaming_location("/sub/", "~text~\n", ""),
    ))
    .await;
    let published = Instant::now();
    for text in ["one", "two", "three"] {
        server.publish_ok("kept", text).await;
    }
    drop(server.subscribe_ok("/sub/empty").await);
    server.wait_for_subscribers("empty", 0).await;
    let empty_gone = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { server.channel_info("empty").await.is_none() },
    )
    .await;
    assert!(empty_gone, "the empty channel was never removed");
    let info = server.channel_info("kept").await;
    assert!(
        published.elapsed() < Duration::from_millis(2900),
        "too slow to tell the channels apart ({:?})",
        published.elapsed()
    );
    let info = info.expect("the channel with stored messages was removed before they expired");
    assert_eq!(info["stored_messages"], 3, "{info}");

    // The messages expire (stats show them in the trash), then the channel goes.
    let expired = poll_until(
        Duration::from_secs(6),
        Duration::from_millis(50),
        || async { summary(&server).await["stored_messages"] == 0 },
    )
    .await;
    assert!(expired, "stored messages never expired");
    assert!(
        published.elapsed() >= Duration::from_millis(2900),
        "expired after {:?}, before message_ttl",
        published.elapsed()
    );
    let stats = summary(&server).await;
    assert_eq!(stats["messages_in_trash"], 3, "{stats}");
    let kept_gone = poll_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { server.channel_info("kept").await.is_none() },
    )
    .await;
    assert!(kept_gone, "the channel stayed after its messages expired");
    let stats = summary(&server).await;
    assert_eq!(stats["channels"], 0, "{stats}");
    assert_eq!(stats["channels_in_trash"], 2, "{stats}");
    assert_eq!(stats["messages_in_trash"], 3, "{stats}");
    assert_eq!(stats["published_messages"], 3, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_with_one_second_messages_disappears_after_expiry() {
    let server = TestServer::start(&config(
        "channel_inactivity_time = \"1s\"\nmessage_ttl = \"1s\"",
        &streaming_location("/sub/", "~text~\n", ""),
    ))
    .await;
    server.publish_ok("short", "a").await;
    server.publish_ok("short", "b").await;
    assert_eq!(
        server.channel_info("short").await.expect("short")["stored_messages"],
        2
    );
    let gone = poll_until(
        Duration::from_secs(6),
        Duration::from_millis(50),
        || async { server.channel_info("short").await.is_none() },
    )
    .await;
    assert!(gone, "channel never removed after its messages expired");
    let stats = summary(&server).await;
    assert_eq!(
        (
            &stats["channels"],
            &stats["stored_messages"],
            &stats["messages_in_trash"],
            &stats["channels_in_trash"]
        ),
        (
            &Value::from(0),
            &Value::from(0),
            &Value::from(2),
            &Value::from(1)
        ),
        "{stats}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connection TTLs

fn ttl_config() -> String {
    let locations = r#"
[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "~text~\n"
footer_template = "BYE"
subscriber_connection_ttl = "1s"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
footer_template = "BYE"
subscriber_connection_ttl = "1s"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
footer_template = "BYE"
subscriber_connection_ttl = "1s"

[[location]]
path = "/lp/"
role = "subscriber"
mode = "long-polling"
footer_template = "BYE"
longpolling_connection_ttl = "1s"
"#;
    config("", locations)
}

fn assert_on_time(what: &str, elapsed: Duration) {
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{what} ended after {elapsed:?}, expected about 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connection_ttl_ends_streaming_with_footer() {
    let server = TestServer::start(&ttl_config()).await;
    let start = Instant::now();
    let mut sub = server.subscribe_ok("/sub/t").await;
    server.wait_for_subscribers("t", 1).await;
    server.publish_ok("t", "hi").await;
    assert_eq!(sub.read_until("\n", WAIT).await, "hi\n");
    assert_eq!(sub.read_to_end(WAIT).await, "BYE");
    assert_on_time("streaming", start.elapsed());
    assert_eq!(sub.received(), "hi\nBYE");
    server.wait_for_subscribers("t", 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connection_ttl_ends_eventsource_with_footer() {
    let server = TestServer::start(&ttl_config()).await;
    let start = Instant::now();
    let mut sub = server.subscribe_ok("/ev/t").await;
    server.wait_for_subscribers("t", 1).await;
    server.publish_ok("t", "hi").await;
    assert_eq!(
        sub.read_until("data: hi\n\n", WAIT).await,
        ": \n\ndata: hi\n\n"
    );
    assert_eq!(sub.read_to_end(WAIT).await, ": BYE\n\n");
    assert_on_time("eventsource", start.elapsed());
    server.wait_for_subscribers("t", 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connection_ttl_ends_websocket_with_footer_and_normal_close() {
    let server = TestServer::start(&ttl_config()).await;
    let start = Instant::now();
    let mut ws = server.websocket("/ws/t").await;
    server.wait_for_subscribers("t", 1).await;
    server.publish_ok("t", "hi").await;
    let mut frames: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let close = loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("websocket: no close within {WAIT:?}; frames {frames:?}"),
            Ok(Some(Ok(WsMessage::Text(text)))) => frames.push(text.as_str().to_string()),
            Ok(Some(Ok(WsMessage::Close(frame)))) => break frame,
            Ok(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => {}
            Ok(other) => panic!("websocket: unexpected {other:?}; frames {frames:?}"),
        }
    };
    assert_on_time("websocket", start.elapsed());
    assert_eq!(frames, vec!["hi".to_string(), "BYE".to_string()]);
    let close = close.expect("close frame without a code");
    assert_eq!(close.code, CloseCode::Normal, "{close:?}");
    ws::close(&mut ws).await;
    server.wait_for_subscribers("t", 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longpolling_connection_ttl_answers_304() {
    let server = TestServer::start(&ttl_config()).await;
    let start = Instant::now();
    let (status, headers, body) = server.get("/lp/t").await;
    assert_on_time("long-poll", start.elapsed());
    assert_eq!(status, StatusCode::NOT_MODIFIED, "{body:?}");
    assert_eq!(body, "");
    assert!(
        !header(&headers, "Last-Modified").is_empty() && !header(&headers, "Etag").is_empty(),
        "a timed-out long-poll tells the client where it stands: {headers:?}"
    );
    // A long-poll that gets a message within the TTL answers it at once.
    let waiting = {
        let client = server.client.clone();
        let url = server.url("/lp/t");
        tokio::spawn(async move {
            let response = client
                .get(url)
                .timeout(WAIT)
                .send()
                .await
                .expect("long-poll");
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        })
    };
    server.wait_for_subscribers("t", 1).await;
    server.publish_ok("t", "news").await;
    let (status, body) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("long-poll did not answer")
        .expect("long-poll task");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "newsBYE"));
    server.stop().await;
}
