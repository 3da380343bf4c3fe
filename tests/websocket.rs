//! WebSocket subscribers over real sockets with a real client (tokio-tungstenite): messages as text
//! frames through the template, header/footer frames, several channels, backtrack, ping frames,
//! subscriber accounting on close, channel deletion, publishing from the client
//! (`websocket_allow_publish`), close codes for binary/oversized frames and refused subscriptions,
//! the HTTP answers to invalid handshakes, and upgraded connections under the connection limits and
//! the shutdown drain.

mod common;

use common::process::{HeraldProcess, TempFile};
use common::raw::{self, raw_header};
use common::ws::{self, Ws};
use common::{
    config, config_with_server, parse_json, streaming_location, TestServer, EXPLAIN, WAIT,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

fn ws_location(path: &str, template: &str, extra: &str) -> String {
    format!(
        "[[location]]\npath = {path:?}\nrole = \"subscriber\"\nmode = \"websocket\"\nmessage_template = {template:?}\n{extra}\n"
    )
}

/// `/ws/` plain, `/wsh/` with header and footer, `/wsttl/` also with a 300ms connection TTL, `/wsping/` with 200ms pings,
/// `/wspub/` with `websocket_allow_publish`, and a streaming `/sub/`.
fn locations() -> String {
    [
        ws_location("/ws/", "~channel~:~id~:~text~", ""),
        ws_location(
            "/wsh/",
            "<~text~>",
            "header_template = \"HELLO\"\nfooter_template = \"BYE\"",
        ),
        ws_location(
            "/wsttl/",
            "<~text~>",
            "header_template = \"HELLO\"\nfooter_template = \"BYE\"\nsubscriber_connection_ttl = \"300ms\"",
        ),
        ws_location(
            "/wsping/",
            "~channel~:~id~:~text~",
            "ping_message_interval = \"200ms\"",
        ),
        ws_location(
            "/wspub/",
            "~channel~:~id~:~text~",
            "websocket_allow_publish = true",
        ),
        streaming_location("/sub/", "~channel~:~id~:~text~\n", ""),
    ]
    .concat()
}

async fn start() -> TestServer {
    TestServer::start(&config("", &locations())).await
}

/// Sends a ping with `payload` and waits for its pong, failing on any other frame: once it arrives,
/// the server has read everything sent before the ping.
async fn sync_with_ping(ws: &mut Ws, payload: &'static [u8]) {
    ws.send(Message::Ping(Bytes::from_static(payload)))
        .await
        .expect("send ping");
    match ws::next_message(ws, "the pong").await {
        Message::Pong(data) if &data[..] == payload => {}
        other => panic!("expected the pong {payload:?}, got {other:?}"),
    }
}

async fn published_messages(server: &TestServer, channel: &str) -> u64 {
    let info = server
        .channel_info(channel)
        .await
        .unwrap_or_else(|| panic!("channel {channel} does not exist"));
    info["published_messages"]
        .as_u64()
        .unwrap_or_else(|| panic!("no published_messages in {info}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_arrive_as_text_frames_through_the_template() {
    let server = start().await;
    let mut ws = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "hello").await;
    server.publish_ok("news", "wörld").await;
    ws::expect_text(&mut ws, "news:1:hello").await;
    ws::expect_text(&mut ws, "news:2:wörld").await;
    ws.close(None).await.expect("client close");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_frame_comes_first_and_footer_frame_before_the_close() {
    let server = start().await;
    let mut ws = server.websocket("/wsh/news").await;
    ws::expect_text(&mut ws, "HELLO").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "x").await;
    ws::expect_text(&mut ws, "<x>").await;
    // The server ends the connection (channel deleted): footer, then a normal close.
    let (status, _, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ws::expect_text(&mut ws, "<Channel deleted>").await;
    ws::expect_text(&mut ws, "BYE").await;
    ws::expect_close(&mut ws, CloseCode::Normal).await;
    ws::expect_end(&mut ws).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connection_ttl_ends_with_the_footer_and_a_normal_close() {
    let server = start().await;
    let started = tokio::time::Instant::now();
    let mut ws = server.websocket("/wsttl/news").await;
    ws::expect_text(&mut ws, "HELLO").await;
    ws::expect_text(&mut ws, "BYE").await;
    ws::expect_close(&mut ws, CloseCode::Normal).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed after {elapsed:?}, before the 300ms TTL"
    );
    ws::expect_end(&mut ws).await;
    server.wait_for_subscribers("news", 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_in_one_websocket() {
    let server = start().await;
    let mut ws = server.websocket("/ws/a/b").await;
    server.wait_for_subscribers("a", 1).await;
    server.wait_for_subscribers("b", 1).await;
    server.publish_ok("a", "x").await;
    ws::expect_text(&mut ws, "a:1:x").await;
    server.publish_ok("b", "y").await;
    ws::expect_text(&mut ws, "b:1:y").await;
    server.publish_ok("other", "not followed").await;
    server.publish_ok("a", "z").await;
    ws::expect_text(&mut ws, "a:2:z").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtrack_sends_the_last_stored_messages_first() {
    let server = start().await;
    for text in ["m1", "m2", "m3"] {
        server.publish_ok("news", text).await;
    }
    let mut ws = server.websocket("/ws/news.b2").await;
    ws::expect_text(&mut ws, "news:2:m2").await;
    ws::expect_text(&mut ws, "news:3:m3").await;
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "m4").await;
    ws::expect_text(&mut ws, "news:4:m4").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_message_interval_sends_ping_frames() {
    let server = start().await;
    let mut ws = server.websocket("/wsping/news").await;
    let started = tokio::time::Instant::now();
    for n in 1..=2 {
        match ws::next_message(&mut ws, &format!("ping frame {n}")).await {
            Message::Ping(_) => {}
            other => panic!("expected ping frame {n}, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "two pings after {elapsed:?}, faster than the 200ms interval"
    );
    // Pings do not disturb messages.
    server.publish_ok("news", "still here").await;
    ws::expect_text(&mut ws, "news:1:still here").await;
    server.stop().await;
}

/// Reads until the connection ends, however it ends (bounded).
async fn drain(ws: &mut Ws) {
    let drained =
        tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    assert!(drained.is_ok(), "connection did not end within {WAIT:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_websocket_frees_the_subscriber() {
    let server = start().await;
    let mut ws = server.websocket("/ws/news").await;
    let other = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 2).await;

    // A close frame from the client.
    ws.close(None).await.expect("client close");
    drain(&mut ws).await;
    server.wait_for_subscribers("news", 1).await;

    // A connection dropped without a close frame.
    drop(other);
    server.wait_for_subscribers("news", 0).await;
    assert_eq!(server.stats("").await["subscribers"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_frame_is_answered_with_a_close_frame() {
    // RFC 6455 5.5.1: an endpoint that receives a Close frame and has not sent one must send one
    // in response before closing the connection.
    let server = start().await;
    let mut ws = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 1).await;
    ws.close(None).await.expect("client close");
    match ws::next_frame(&mut ws, "the server's close reply").await {
        Message::Close(_) => {}
        other => panic!("expected the close reply, got {other:?}"),
    }
    ws::expect_end(&mut ws).await;
    server.wait_for_subscribers("news", 0).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_delete_sends_the_deleted_message_then_a_normal_close() {
    let server = start().await;
    let mut ws = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 1).await;
    let (status, _, body) = server.delete("news", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    ws::expect_text(&mut ws, "news:-2:Channel deleted").await;
    ws::expect_close(&mut ws, CloseCode::Normal).await;
    ws::expect_end(&mut ws).await;
    assert!(server.channel_info("news").await.is_none());
    assert_eq!(server.stats("").await["subscribers"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frames_are_published_when_websocket_allow_publish_is_on() {
    let server = start().await;
    let mut sender = server.websocket("/wspub/news").await;
    let mut listener = server.websocket("/wspub/news").await;
    let mut streaming = server.subscribe_ok("/sub/news").await;
    server.wait_for_subscribers("news", 3).await;
    assert_eq!(published_messages(&server, "news").await, 0);

    sender
        .send(Message::text("from the client"))
        .await
        .expect("send text");
    ws::expect_text(&mut listener, "news:1:from the client").await;
    ws::expect_text(&mut sender, "news:1:from the client").await;
    assert_eq!(
        streaming.read_until("\n", WAIT).await,
        "news:1:from the client\n"
    );
    assert_eq!(published_messages(&server, "news").await, 1);

    // Several channels: the frame is published to each.
    let mut multi = server.websocket("/wspub/a/b").await;
    server.wait_for_subscribers("b", 1).await;
    multi.send(Message::text("both")).await.expect("send text");
    let mut got = Vec::new();
    for copy in ["first copy", "second copy"] {
        match ws::next_frame(&mut multi, copy).await {
            Message::Text(text) => got.push(text.as_str().to_string()),
            other => panic!("expected the {copy} as text, got {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, ["a:1:both", "b:1:both"]);
    assert_eq!(published_messages(&server, "a").await, 1);
    assert_eq!(published_messages(&server, "b").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frames_are_ignored_when_websocket_allow_publish_is_off() {
    let server = start().await;
    let mut ws = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 1).await;
    ws.send(Message::text("should be ignored"))
        .await
        .expect("send text");
    // The pong proves the server read the text frame; nothing came back before it.
    sync_with_ping(&mut ws, b"sync").await;
    assert_eq!(published_messages(&server, "news").await, 0);
    // The connection is still subscribed and the next message is id 1.
    server.publish_ok("news", "from http").await;
    ws::expect_text(&mut ws, "news:1:from http").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_close_the_connection_with_1003() {
    let server = start().await;
    let mut ws = server.websocket("/wspub/news").await;
    server.wait_for_subscribers("news", 1).await;
    ws.send(Message::binary(vec![0u8, 1, 2, 3]))
        .await
        .expect("send binary");
    ws::expect_close(&mut ws, CloseCode::Unsupported).await;
    ws::expect_end(&mut ws).await;
    server.wait_for_subscribers("news", 0).await;
    assert_eq!(published_messages(&server, "news").await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_text_messages_close_the_connection_with_1009() {
    let server = TestServer::start(&config_with_server(
        "max_body_size = \"1k\"",
        "",
        &locations(),
    ))
    .await;
    let mut ws = server.websocket("/wspub/news").await;
    server.wait_for_subscribers("news", 1).await;
    // Within the limit: published.
    ws.send(Message::text("x".repeat(1000)))
        .await
        .expect("send text");
    ws::expect_text(&mut ws, &format!("news:1:{}", "x".repeat(1000))).await;
    ws.send(Message::text("y".repeat(5000)))
        .await
        .expect("send text");
    ws::expect_close(&mut ws, CloseCode::Size).await;
    server.wait_for_subscribers("news", 0).await;
    assert_eq!(published_messages(&server, "news").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscription_is_told_in_a_1008_close_frame_with_json() {
    let server = TestServer::start(&config("max_subscribers_per_channel = 1", &locations())).await;
    let mut first = server.websocket("/ws/news").await;
    server.wait_for_subscribers("news", 1).await;

    // The handshake succeeds; the refusal comes in the close frame.
    let mut second = server.websocket("/ws/news").await;
    let reason = ws::expect_close(&mut second, CloseCode::Policy).await;
    let json = parse_json(&reason);
    assert_eq!(json["http_status"], 403, "{reason}");
    let explain = json["explain"].as_str().unwrap_or_default();
    assert!(
        explain.contains("Subscribers limit per channel has been exceeded"),
        "{reason}"
    );
    ws::expect_end(&mut second).await;

    // The first subscriber is unaffected.
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "still works").await;
    ws::expect_text(&mut first, "news:1:still works").await;

    // An invalid channel path is refused the same way, with its own status.
    let mut invalid = server.websocket("/ws/").await;
    let reason = ws::expect_close(&mut invalid, CloseCode::Policy).await;
    let json = parse_json(&reason);
    assert_eq!(json["http_status"], 400, "{reason}");
    assert_eq!(json["explain"], "No channel id provided.", "{reason}");
    server.stop().await;
}

/// A raw HTTP/1.1 exchange: writes `request`, reads the status line, headers and
/// `Content-Length` body (bounded).
async fn raw_exchange(server: &TestServer, request: &str) -> (u16, Vec<(String, String)>, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let (head, mut body) = raw::read_head(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("no response head: {e}"));
        let (status, headers) = raw::parse_head(&head);
        let length: usize = raw_header(&headers, "content-length")
            .parse()
            .unwrap_or_else(|_| panic!("no Content-Length in {head:?}"));
        let mut buf = [0u8; 4096];
        while body.len() < length {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed in the body: {head:?}");
            body.extend_from_slice(&buf[..n]);
        }
        let body = String::from_utf8_lossy(&body[..length]).into_owned();
        (status, headers, body)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no complete answer within {WAIT:?} to {request:?}"))
}

const MISSING_HEADERS: &str = "Don't have at least one of the mandatory headers: Connection, Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_sec_websocket_key_is_400() {
    let server = start().await;
    let request = "GET /ws/news HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (status, headers, body) = raw_exchange(&server, request).await;
    assert_eq!(status, 400, "{headers:?} {body:?}");
    assert_eq!(
        raw_header(&headers, EXPLAIN),
        MISSING_HEADERS,
        "{headers:?}"
    );
    assert_eq!(body.trim_end(), MISSING_HEADERS);

    // A plain GET without any upgrade header.
    let (status, headers, body) = server.get("/ws/news").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(common::header(&headers, EXPLAIN), MISSING_HEADERS);
    // No subscriber was left behind.
    assert_eq!(server.stats("").await["subscribers"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_an_unsupported_version_is_400_with_the_supported_versions() {
    let server = start().await;
    let request = "GET /ws/news HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n";
    let (status, headers, body) = raw_exchange(&server, request).await;
    assert_eq!(status, 400, "{headers:?} {body:?}");
    assert_eq!(
        raw_header(&headers, EXPLAIN),
        "Version not supported. Supported versions: 8, 13",
        "{headers:?}"
    );
    assert_eq!(
        raw_header(&headers, "Sec-WebSocket-Version"),
        "8, 13",
        "{headers:?}"
    );

    // Version 8 is accepted: 101 with the accept key of RFC 6455's example.
    let request = "GET /ws/news HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let head = tokio::time::timeout(WAIT, async {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        raw::read_head(&mut stream)
            .await
            .unwrap_or_else(|e| panic!("closed: {e}"))
            .0
    })
    .await
    .expect("no 101 within the wait");
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_an_invalid_sec_websocket_key_is_400() {
    // RFC 6455 4.2.1: the key is the base64 encoding of 16 bytes (24 characters).
    let server = start().await;
    let long = "A".repeat(8000);
    let cases = [
        ("an 8,000-byte key", long.as_str()),
        ("not base64", "not base64 at all, sorry"),
        ("15 bytes", "AAAAAAAAAAAAAAAAAAAA"),
        ("17 bytes", "AAAAAAAAAAAAAAAAAAAAAAA="),
        ("non-canonical padding", "AAAAAAAAAAAAAAAAAAAAAB=="),
        ("empty", ""),
    ];
    for (name, key) in cases {
        let request = format!("GET /ws/news HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let (status, headers, body) = raw_exchange(&server, &request).await;
        assert_eq!(status, 400, "{name}: {headers:?} {body:?}");
        assert_eq!(
            raw_header(&headers, EXPLAIN),
            INVALID_KEY,
            "{name}: {headers:?}"
        );
        assert_eq!(body.trim_end(), INVALID_KEY, "{name}");
    }
    // A key of 16 bytes is accepted.
    let (_ws, response) = ws::handshake(
        server.addr,
        "/ws/news",
        &[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")],
    )
    .await
    .expect("a valid key is accepted");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    server.wait_for_subscribers("news", 1).await;
    server.stop().await;
}

const INVALID_KEY: &str =
    "Invalid Sec-WebSocket-Key: it must be the base64 encoding of 16 bytes (24 characters).";

// ------------------------------------------------------------------------------------------------
// Connection limits and the shutdown drain (issue 14.4)
// ------------------------------------------------------------------------------------------------

/// A WebSocket handshake to `path` must be refused with 503 by a connection limit.
async fn assert_websocket_refused(server: &TestServer, path: &str, limit: &str) {
    match ws::handshake(server.addr, path, &[]).await {
        Err(WsError::Http(response)) => assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{limit}: {response:?}"
        ),
        Ok((_, response)) => {
            panic!("{limit}: a WebSocket past the limit was accepted: {response:?}")
        }
        Err(other) => panic!("{limit}: expected a 503 answer, got {other}"),
    }
}

/// Two open WebSockets fill a limit of two connections (`limit_line`, named `limit` in refusals):
/// a third WebSocket and a streaming subscriber get 503, and closing one WebSocket frees its slot.
async fn websockets_hold_their_connection_slots(limit_line: &str, limit: &str) {
    let server = TestServer::start(&config_with_server(limit_line, "", &locations())).await;
    let mut first = server.websocket("/ws/first").await;
    let mut second = server.websocket("/ws/second").await;
    assert_websocket_refused(&server, "/ws/third", limit).await;
    let answer = raw::exchange(
        server.addr,
        b"GET /sub/third HTTP/1.1\r\nHost: t\r\n\r\n",
        false,
        WAIT,
    )
    .await;
    assert_eq!(answer.status(), Some(503), "{limit}: {:?}", answer.shown());
    assert!(
        answer.text().contains(&format!("Limit: {limit}.")),
        "{:?}",
        answer.shown()
    );
    assert!(answer.closed, "the refused connection is closed");
    ws::close(&mut first).await;
    drain(&mut first).await;
    // Its slot is free again: a new WebSocket gets in (the server may take a moment to see the close).
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut third = loop {
        match ws::handshake(server.addr, "/ws/third", &[]).await {
            Ok((ws, _)) => break ws,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "{limit}: closing a WebSocket did not free its slot within {WAIT:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_websocket_refused(&server, "/ws/fourth", limit).await;
    ws::close(&mut second).await;
    ws::close(&mut third).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_toward_max_connections() {
    websockets_hold_their_connection_slots("max_connections = 2", "max_connections").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_toward_max_connections_per_address() {
    websockets_hold_their_connection_slots(
        "max_connections_per_address = 2",
        "max_connections_per_address",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_with_1001_and_waits_for_their_close() {
    // The drain sees WebSockets: after SIGTERM each gets a close frame 1001, and the process stays
    // until the client answered it (the server waits up to 2s for that answer; the drain up to
    // `shutdown_timeout`, 10s here).
    let config = TempFile::new(
        "websocket-drain.toml",
        &format!(
            "[server]\nshutdown_timeout = \"10s\"\n{}\n{}",
            common::BASE_LOCATIONS,
            locations()
        ),
    );
    let mut herald =
        HeraldProcess::start(&["--config", config.path(), "--listen", "127.0.0.1:0"]).await;
    let mut ws = ws::connect(herald.addr, "/wsh/news").await;
    ws::expect_text(&mut ws, "HELLO").await;
    herald
        .wait_subscribers("news", WAIT, "1", |count| count == 1)
        .await;
    herald.signal(libc::SIGTERM);
    ws::expect_text(&mut ws, "BYE").await;
    let reason = ws::expect_close(&mut ws, CloseCode::Away).await;
    assert_eq!(reason, "Server shutting down.");
    // Well within the server's 2s wait for the answer: the process must still be there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        herald.child.try_wait().expect("try_wait").is_none(),
        "herald exited before the WebSocket's close handshake finished; stderr:\n{}",
        herald.log_text()
    );
    // The client's protocol layer queued the close reply when it read the close frame: send it.
    ws.flush().await.expect("answer the close frame");
    ws::expect_end(&mut ws).await;
    let status = herald
        .wait_exit(WAIT)
        .await
        .unwrap_or_else(|| panic!("herald did not exit once its last WebSocket closed"));
    assert!(status.success(), "exit status {status:?}");
}
