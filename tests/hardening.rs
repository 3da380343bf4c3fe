//! Hostile input over raw TCP (issue 10): garbage request lines, bad UTF-8 in paths, queries and
//! headers, huge heads, invalid chunked bodies, bodies shorter than their Content-Length, and
//! truncated, malformed or unmasked WebSocket frames after a valid handshake (down to a frame
//! claiming 2^63 bytes). After each, the connection must end within a bound (no hang), the answer
//! must be HTTP or nothing (never a 5xx the case does not expect), no server task may have
//! panicked, and the server must still answer `/healthz` and carry a normal publish to a subscriber.
//!
//! Memory attacks on WebSockets run against the `herald` binary, whose RSS is read from /proc:
//! messages started and never finished, and a ping flood from a client that never reads its pongs.
//!
//! Panics are seen through a panic hook that records every panic not raised by test code itself
//! (the server runs in the test's process; tokio would otherwise swallow a panicking task). A test
//! marked `#[ignore = "known gap: …"]` fails today and passes once that gap is closed.

mod common;

use common::process::{HeraldProcess, TempFile};
use common::raw::{self, Reply};
use common::{config_with_server, TestServer, WAIT};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long the server gets to end a connection after the client is done.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
const BEARER: &str = "hardening-bearer-0123456789";
const JWT_SECRET: &str = "hardening-secret-0123456789";

// ------------------------------------------------------------------------------------------------
// Panic watch
// ------------------------------------------------------------------------------------------------

static SERVER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records panics raised outside the test code (in Herald or a dependency), as they would otherwise
/// vanish with the tokio task that raised them.
fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let from_tests = info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/") || l.file().contains("/tests/"));
            if !from_tests {
                SERVER_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

fn assert_no_server_panic(after: &str) {
    let panics = SERVER_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(panics.is_empty(), "server panicked ({after}): {panics:#?}");
}

// ------------------------------------------------------------------------------------------------
// Server and helpers
// ------------------------------------------------------------------------------------------------

fn location(path: &str, role: &str, extra: &str) -> String {
    format!("[[location]]\npath = {path:?}\nrole = {role:?}\n{extra}\n")
}

async fn start() -> TestServer {
    watch_panics();
    let locations = [
        location("/sub/", "subscriber", "message_template = \"~channel~:~id~:~text~\\n\""),
        location(
            "/ev/",
            "subscriber",
            "mode = \"eventsource\"\nmessage_template = '{\"t\": \"~text-json~\", \"e\": \"~event-id-json~\"}'",
        ),
        location("/poll/", "subscriber", "mode = \"polling\""),
        location(
            "/pollq/",
            "subscriber",
            "mode = \"polling\"\nlast_received_message_time = \"$arg_time\"\nlast_received_message_tag = \"$arg_tag\"\nlast_event_id = \"$arg_last_event_id\"",
        ),
        location(
            "/lp/",
            "subscriber",
            "mode = \"long-polling\"\nlongpolling_connection_ttl = \"300ms\"\nmessage_template = \"~text-json~|~event-id-json~|~event-type-json~\"",
        ),
        location(
            "/pad/",
            "subscriber",
            "mode = \"polling\"\npadding_by_user_agent = \"[Aa]gent,100,10\"",
        ),
        location("/cors/", "subscriber", "mode = \"polling\"\nallowed_origins = \"$http_origin\""),
        location("/ws/", "subscriber", "mode = \"websocket\"\nwebsocket_allow_publish = true"),
        location(
            "/jwtcookie/",
            "subscriber",
            &format!("mode = \"polling\"\njwt_secret = {JWT_SECRET:?}\ntoken = \"$cookie_herald\""),
        ),
        format!(
            "[[location]]\npath = \"/secure\"\nmatch = \"exact\"\nrole = \"publisher\"\nauth_bearer_tokens = [{BEARER:?}]\n"
        ),
        "[[location]]\npath = \"/metrics\"\nmatch = \"exact\"\nrole = \"metrics\"\n".to_string(),
    ]
    .concat();
    TestServer::start(&config_with_server(
        "max_body_size = \"64k\"\nheader_read_timeout = \"3s\"\ntrusted_proxies = [\"127.0.0.1\"]",
        "",
        &locations,
    ))
    .await
}

/// Sends `request` on a new connection, half-closes it when `half_close`, and reads everything the
/// server sends until it closes the connection (at most `CLOSE_WITHIN`).
async fn exchange(addr: SocketAddr, request: &[u8], half_close: bool) -> Reply {
    raw::exchange(addr, request, half_close, CLOSE_WITHIN).await
}

/// `request` with `Connection: close` after its first line (so that a complete request ends the
/// connection once answered, without the client closing its side).
fn with_close(request: &[u8]) -> Vec<u8> {
    match request.windows(2).position(|w| w == b"\r\n") {
        Some(at) => [
            &request[..at + 2],
            b"Connection: close\r\n",
            &request[at + 2..],
        ]
        .concat(),
        None => request.to_vec(),
    }
}

/// Sends a malformed but complete request (with `Connection: close`) and checks the server's
/// behaviour: it answers with one of the `allowed` statuses (any non-5xx when empty) and closes the
/// connection within `CLOSE_WITHIN`; then the server must still be healthy.
async fn hostile(server: &TestServer, name: &str, request: &[u8], allowed: &[u16]) -> Reply {
    let answer = exchange(server.addr, &with_close(request), false).await;
    check(name, &answer, allowed, true);
    assert_healthy(server, name).await;
    answer
}

/// Sends a request that the client then ends early (half-close, as a client that goes away): the
/// server must close the connection within `CLOSE_WITHIN`; when it answers at all, the status is one
/// of `allowed`; then the server must still be healthy.
async fn hostile_eof(server: &TestServer, name: &str, request: &[u8], allowed: &[u16]) -> Reply {
    let answer = exchange(server.addr, request, true).await;
    check(name, &answer, allowed, false);
    assert_healthy(server, name).await;
    answer
}

fn check(name: &str, answer: &Reply, allowed: &[u16], must_answer: bool) {
    assert!(
        answer.closed,
        "{name}: connection still open {CLOSE_WITHIN:?} after the request; got {:?}",
        answer.shown()
    );
    assert!(
        !must_answer || !answer.bytes.is_empty(),
        "{name}: closed without an answer"
    );
    if !answer.bytes.is_empty() {
        let status = answer
            .status()
            .unwrap_or_else(|| panic!("{name}: not an HTTP answer: {:?}", answer.shown()));
        if allowed.is_empty() {
            assert!(status < 500, "{name}: server error: {:?}", answer.shown());
        } else {
            assert!(
                allowed.contains(&status),
                "{name}: status {status} not in {allowed:?}: {:?}",
                answer.shown()
            );
        }
    }
    assert_no_server_panic(name);
}

static HEALTH_CHANNEL: AtomicUsize = AtomicUsize::new(0);

/// `/healthz` answers and a publish reaches a new subscriber.
async fn assert_healthy(server: &TestServer, after: &str) {
    assert_no_server_panic(after);
    let (status, _, body) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{after}: /healthz {body}");
    let channel = format!("health-{}", HEALTH_CHANNEL.fetch_add(1, Ordering::Relaxed));
    let mut sub = server.subscribe_ok(&format!("/sub/{channel}")).await;
    server.wait_for_subscribers(&channel, 1).await;
    server.publish_ok(&channel, "alive").await;
    sub.read_until(&format!("{channel}:1:alive\n"), WAIT).await;
    assert_no_server_panic(after);
}

// ------------------------------------------------------------------------------------------------
// Malformed HTTP
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn garbage_request_lines() {
    let server = start().await;
    let long_method = format!("{} / HTTP/1.1\r\n\r\n", "A".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("word", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        (
            "binary",
            b"\x00\x01\x02\x03\xff\xfe\x80\r\n\r\n".to_vec(),
            &[400],
        ),
        ("method only", b"GET\r\n\r\n".to_vec(), &[400]),
        ("no version", b"GET /sub/x\r\n\r\n".to_vec(), &[400]),
        (
            "unknown version",
            b"GET /healthz HTTP/9.9\r\n\r\n".to_vec(),
            &[400, 505],
        ),
        (
            "extra token",
            b"GET /healthz HTTP/1.1 extra\r\n\r\n".to_vec(),
            &[400],
        ),
        ("no method", b" / HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        (
            "blank lines",
            b"\r\n\r\n\r\n\r\nGET\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "long method",
            long_method.into_bytes(),
            &[400, 404, 405, 431],
        ),
        (
            "bad authority",
            b"GET http://[::1 HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "absolute form",
            b"GET http://h/healthz HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            &[200],
        ),
        (
            "bad percent",
            b"GET /poll/%ZZ%2 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            &[304],
        ),
        (
            "NUL channel",
            b"GET /poll/%00 HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "header without colon",
            b"GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "space before colon",
            b"GET /healthz HTTP/1.1\r\nHost : h\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "obs-fold",
            b"GET /healthz HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "NUL in header",
            b"GET /healthz HTTP/1.1\r\nX-A: a\x00b\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "bare LF",
            b"GET /healthz HTTP/1.1\nHost: h\n\n".to_vec(),
            &[200],
        ),
        (
            "CR only",
            b"GET /healthz HTTP/1.1\rHost: h\r\r".to_vec(),
            &[400],
        ),
        (
            "two Content-Lengths",
            b"POST /pub?id=g HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .to_vec(),
            &[400],
        ),
        (
            "negative Content-Length",
            b"POST /pub?id=g HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "huge Content-Length",
            b"POST /pub?id=g HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "Content-Length over max_body_size",
            b"POST /pub?id=g HTTP/1.1\r\nContent-Length: 1000000\r\n\r\nabc".to_vec(),
            &[413],
        ),
        (
            // hyper reserves u64::MAX and refuses it as too large.
            "Content-Length u64::MAX",
            b"POST /pub?id=g HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n".to_vec(),
            &[400, 413, 431],
        ),
        (
            "pipelined garbage after a good request",
            b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n\xff\xfe garbage\r\n\r\n".to_vec(),
            &[200],
        ),
        (
            "TLS hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            &[400],
        ),
    ];
    for (name, request, allowed) in cases {
        hostile(&server, name, &request, allowed).await;
    }
    assert!(
        server.channel_info("g").await.is_none(),
        "nothing was published"
    );
    assert_healthy(&server, "garbage request lines").await;
    server.stop().await;
}

#[tokio::test]
async fn bad_utf8_in_paths_queries_and_headers() {
    let server = start().await;
    // Raw bytes over 0x7f in the request target are not HTTP.
    hostile(
        &server,
        "raw bytes in path",
        b"GET /poll/\xff\xfe HTTP/1.1\r\nHost: h\r\n\r\n",
        &[400],
    )
    .await;
    hostile(
        &server,
        "raw bytes in query",
        b"GET /poll/x?\xff=\xfe HTTP/1.1\r\nHost: h\r\n\r\n",
        &[400],
    )
    .await;
    hostile(
        &server,
        "raw byte in header name",
        b"GET /healthz HTTP/1.1\r\nX-\xff: a\r\n\r\n",
        &[400],
    )
    .await;

    // Percent-encoded invalid UTF-8 in a channel id is refused, never replaced: `%FF` and `%FE`
    // would otherwise both name the channel U+FFFD. Every way a channel id arrives is checked.
    for (name, request) in [
        ("publish id", &b"POST /pub?id=%FF HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx"[..]),
        ("publish second id", b"POST /pub?id=ok/%FE HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"),
        ("form-encoded id", b"POST /pub?id=a+%C3%28 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"),
        ("stream path", b"GET /sub/%FF%FE HTTP/1.1\r\n\r\n"),
        ("eventsource path", b"GET /ev/%C3%28.b1 HTTP/1.1\r\n\r\n"),
        ("long-poll path", b"GET /lp/ok/%FF HTTP/1.1\r\n\r\n"),
        ("websocket path", b"GET /ws/%FF HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"),
        ("stats id", b"GET /channels-stats?id=%FF%FE HTTP/1.1\r\n\r\n"),
        ("stats prefix", b"GET /channels-stats?id=%FF* HTTP/1.1\r\n\r\n"),
    ] {
        let answer = hostile(&server, name, request, &[400]).await;
        assert!(
            answer.shown().contains("is not valid UTF-8"),
            "{name}: {}",
            answer.shown()
        );
    }
    let (_, _, body) = server.get("/channels-stats?id=ALL").await;
    assert!(!body.contains('\u{fffd}'), "no channel was created: {body}");
    // Valid UTF-8 (here U+FFFD itself, percent-encoded) is a channel like any other; headers may
    // carry any byte over 0x7f, and message bodies are bytes.
    let answer = hostile(
        &server,
        "publish with bad UTF-8 in headers and body",
        b"POST /pub?id=%EF%BF%BD%EF%BF%BD HTTP/1.1\r\nHost: h\r\nEvent-Id: \xff\xfe\r\nEvent-Type: \xc3\x28\r\nContent-Length: 3\r\n\r\n\xff\xfe\xfd",
        &[200],
    )
    .await;
    assert!(
        answer.shown().contains("published_messages"),
        "{}",
        answer.shown()
    );
    let mut sub = server.subscribe_ok("/ev/%EF%BF%BD%EF%BF%BD.b1").await;
    let event = sub.read_until("\n\n", WAIT).await; // the header comment
    let event = format!("{event}{}", sub.read_until("}\n\n", WAIT).await);
    assert!(event.contains("id: \u{fffd}\u{fffd}"), "{event:?}");
    drop(sub);
    let (status, _, body) = server.get("/lp/%EF%BF%BD%EF%BF%BD.b1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\u{fffd}\u{fffd}\u{fffd}|"), "{body:?}");

    let header_cases: &[(&str, &[u8], &[u16])] = &[
        ("Last-Event-ID", b"GET /poll/bad HTTP/1.1\r\nLast-Event-ID: \xff\xfe\r\n\r\n", &[200, 304]),
        (
            "recovery headers",
            b"GET /poll/bad HTTP/1.1\r\nIf-Modified-Since: \xff\xfe\r\nIf-None-Match: W/\"\xff\"\r\n\r\n",
            &[200, 304],
        ),
        (
            "recovery arguments",
            b"GET /pollq/bad?time=%FF%FE&tag=%FF&last_event_id=%FF%FE HTTP/1.1\r\n\r\n",
            &[200, 304],
        ),
        (
            "huge tag",
            b"GET /poll/bad HTTP/1.1\r\nIf-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\nIf-None-Match: 999999999999999999999999999\r\n\r\n",
            &[200, 304],
        ),
        (
            "date past 9999",
            b"GET /poll/bad HTTP/1.1\r\nIf-Modified-Since: Fri, 31 Dec 99999 23:59:59 GMT\r\n\r\n",
            &[200, 304],
        ),
        ("callback", b"GET /poll/bad.b1?callback=%FF HTTP/1.1\r\n\r\n", &[400]),
        ("mode header", b"GET /poll/x HTTP/1.1\r\nX-Nginx-PushStream-Mode: \xff\r\n\r\n", &[304]),
        ("origin", b"GET /cors/x HTTP/1.1\r\nOrigin: \xff\xfe\r\n\r\n", &[304]),
        ("user agent", b"GET /pad/x HTTP/1.1\r\nUser-Agent: Agent \xff\r\n\r\n", &[304]),
        ("cookie token", b"GET /jwtcookie/x HTTP/1.1\r\nCookie: herald=\xff\xfe; a=\xff\r\n\r\n", &[401]),
        (
            "bearer",
            b"POST /secure?id=x HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 1\r\n\r\nx",
            &[401],
        ),
        (
            "forwarded for",
            b"POST /secure?id=x HTTP/1.1\r\nX-Forwarded-For: \xff, 10.0.0.1\r\nContent-Length: 1\r\n\r\nx",
            &[401],
        ),
        (
            "websocket key",
            b"GET /ws/x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: \xff\xfe\r\n\r\n",
            &[400],
        ),
        (
            "websocket version",
            b"GET /ws/x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: \xff\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            &[400],
        ),
        ("slash in encoded channel", b"GET /poll/a%2Fb%2F%2F HTTP/1.1\r\n\r\n", &[304]),
        ("lone percent", b"GET /poll/% HTTP/1.1\r\n\r\n", &[304]),
    ];
    for (name, request, allowed) in header_cases {
        hostile(&server, name, request, allowed).await;
    }
    assert_healthy(&server, "bad UTF-8").await;
    server.stop().await;
}

#[tokio::test]
async fn huge_heads_are_refused() {
    let server = start().await;
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    // The server may reset the connection (unread data) before the answer is read; when read, it is 431.
    hostile_eof(&server, "1 MiB header", huge_header.as_bytes(), &[431]).await;
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /healthz HTTP/1.1\r\n{many}\r\n");
    hostile(&server, "500 headers", many_headers.as_bytes(), &[431]).await;
    let long_uri = format!("GET /poll/{} HTTP/1.1\r\n\r\n", "c".repeat(100_000));
    hostile(
        &server,
        "100 KB request target",
        long_uri.as_bytes(),
        &[400, 414, 431],
    )
    .await;
    let cookies: String = (0..600).map(|i| format!("c{i}=v; ")).collect();
    let many_cookies = format!("GET /jwtcookie/x HTTP/1.1\r\nCookie: {cookies}herald=x\r\n\r\n");
    hostile(&server, "many cookies", many_cookies.as_bytes(), &[401]).await;
    let channels: String = (0..2000).map(|i| format!("ch{i}/")).collect();
    let many_channels = format!("GET /poll/{channels} HTTP/1.1\r\n\r\n");
    hostile(&server, "2000 channels", many_channels.as_bytes(), &[403]).await;
    assert_healthy(&server, "huge heads").await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_chunked_bodies_and_short_bodies() {
    let server = start().await;
    let head = "POST /pub?id=chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    // (name, body, whether the client then goes away mid-body)
    let bodies: &[(&str, &[u8], bool)] = &[
        ("bad hex", b"ZZZ\r\nhello\r\n0\r\n\r\n", false),
        (
            "size overflow",
            b"FFFFFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        ("negative size", b"-5\r\nhello\r\n0\r\n\r\n", false),
        ("missing CRLF after data", b"5\r\nhelloXX0\r\n\r\n", false),
        (
            "bad extension",
            b"5;ext=\xff\x00\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        ("LF only", b"5\nhello\n0\n\n", false),
        ("size u64 max", b"FFFFFFFFFFFFFFFF\r\nhello", true),
        ("truncated chunk", b"100\r\nshort", true),
        ("no last chunk", b"5\r\nhello\r\n", true),
        ("size line too long", &[b'0'; 10_000], true),
    ];
    for (name, body, truncated) in bodies {
        let request = [head.as_bytes(), body].concat();
        let allowed = [200, 400, 413];
        let answer = if *truncated {
            hostile_eof(&server, name, &request, &allowed).await
        } else {
            hostile(&server, name, &request, &allowed).await
        };
        if answer.status() == Some(200) {
            // Only a lenient but complete reading of the body may publish.
            assert!(
                answer.shown().contains("published_messages"),
                "{name}: {}",
                answer.shown()
            );
        }
    }
    // Over max_body_size in chunks: 413 at the limit.
    let mut big = head.as_bytes().to_vec();
    for _ in 0..80 {
        big.extend_from_slice(b"400\r\n");
        big.extend_from_slice(&[b'x'; 0x400]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"0\r\n\r\n");
    hostile(&server, "chunked over the limit", &big, &[413]).await;
    // Both Transfer-Encoding and Content-Length.
    hostile(
        &server,
        "chunked and Content-Length",
        b"POST /pub?id=both HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        &[200, 400],
    )
    .await;
    hostile(
        &server,
        "unknown transfer coding",
        b"POST /pub?id=te HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        &[400, 501],
    )
    .await;

    // A body shorter than its Content-Length, then the client closes: no publish, no hang.
    hostile_eof(
        &server,
        "short body",
        b"POST /pub?id=short HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly ten b",
        &[400],
    )
    .await;
    assert!(
        server.channel_info("short").await.is_none(),
        "a cut body must not be published"
    );
    // The same with the connection left open: the server waits for the rest, others are served.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /pub?id=short HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly ten b",
        )
        .await
        .unwrap();
    assert_healthy(&server, "a stalled body").await;
    drop(stalled);
    assert_healthy(&server, "chunked bodies").await;
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// WebSocket frames
// ------------------------------------------------------------------------------------------------

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// A masked client frame: `first` byte (FIN/RSV/opcode), then `payload` with a minimal length.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A frame header claiming `len` bytes (64-bit length form), masked, without the payload.
fn frame_claiming(first: u8, len: u64) -> Vec<u8> {
    let mut out = vec![first, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&MASK);
    out
}

/// Opens a WebSocket to `/ws/{channel}` by hand; returns the stream and any bytes after the head.
async fn ws_handshake(addr: SocketAddr, channel: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws/{channel} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, rest) = tokio::time::timeout(WAIT, raw::read_head(&mut stream))
        .await
        .expect("handshake answer in time")
        .unwrap_or_else(|e| panic!("closed during the handshake: {e}"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (stream, rest)
}

/// Server frames (unmasked) as (opcode, payload); stops at an incomplete frame.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, at) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 if bytes.len() >= 10 => {
                let len = u64::from_be_bytes(bytes[2..10].try_into().unwrap());
                (usize::try_from(len).unwrap_or(usize::MAX), 10)
            }
            126 | 127 => break,
            n => (usize::from(n), 2),
        };
        if bytes.len() - at < len {
            break;
        }
        frames.push((opcode, bytes[at..at + len].to_vec()));
        bytes = &bytes[at + len..];
    }
    frames
}

/// The code of the server's close frame, if it sent one.
fn close_code(bytes: &[u8]) -> Option<u16> {
    server_frames(bytes)
        .into_iter()
        .find(|(opcode, _)| *opcode == 8)
        .and_then(|(_, payload)| payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])))
}

#[tokio::test]
async fn truncated_and_malformed_websocket_frames() {
    let server = start().await;
    let mut non_minimal = vec![0x81, 0x80 | 126, 0x00, 0x02];
    non_minimal.extend_from_slice(&MASK);
    non_minimal.extend_from_slice(&[b'o' ^ MASK[0], b'k' ^ MASK[1]]);
    let mut unmasked_huge = vec![0x82, 127];
    unmasked_huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
    let mut short_payload = vec![0x81, 0x80 | 126, 0xff, 0xff];
    short_payload.extend_from_slice(&MASK);
    short_payload.extend_from_slice(b"12345");
    // (name, bytes after the handshake, expected close code; None = any or none).
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("one byte", vec![0x81], None),
        (
            "truncated 16-bit length",
            vec![0x81, 0x80 | 126, 0x00],
            None,
        ),
        (
            "truncated 64-bit length",
            vec![0x81, 0x80 | 127, 0, 0, 0],
            None,
        ),
        ("truncated mask", vec![0x81, 0x85, 0x11, 0x22], None),
        (
            "truncated payload",
            frame(0x81, &[b'p'; 100])[..16].to_vec(),
            None,
        ),
        ("16-bit length, short payload", short_payload, None),
        (
            "frame claiming 2^63 bytes",
            frame_claiming(0x81, 1 << 63),
            Some(1009),
        ),
        (
            "frame claiming u64::MAX bytes",
            frame_claiming(0x82, u64::MAX),
            Some(1009),
        ),
        (
            "unmasked frame claiming 2^63 bytes",
            unmasked_huge,
            Some(1009),
        ),
        (
            "frame just over max_body_size",
            frame_claiming(0x81, 64 * 1024 + 1),
            Some(1009),
        ),
        ("reserved bits", frame(0xf1, b"rsv"), Some(1002)),
        ("unknown data opcode", frame(0x83, b""), Some(1002)),
        ("unknown control opcode", frame(0x8b, b""), Some(1002)),
        ("ping over 125 bytes", frame(0x89, &[b'p'; 126]), Some(1002)),
        ("fragmented ping", frame(0x09, b""), Some(1002)),
        (
            "continuation without start",
            frame(0x80, b"cont"),
            Some(1002),
        ),
        (
            "new message inside a fragmented one",
            [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
            Some(1002),
        ),
        ("invalid UTF-8 text", frame(0x81, &[0xff, 0xfe]), Some(1007)),
        (
            "invalid UTF-8 across fragments",
            [frame(0x01, &[0xe2, 0x82]), frame(0x80, &[0x28])].concat(),
            Some(1007),
        ),
        ("binary frame", frame(0x82, b"\x00"), Some(1003)),
        // RFC 6455 5.1: a server must close the connection on an unmasked client frame.
        (
            "unmasked text frame",
            vec![0x81, 0x02, b'h', b'i'],
            Some(1002),
        ),
        ("unmasked ping", vec![0x89, 0x00], Some(1002)),
        (
            "fragments over max_body_size in total",
            [
                frame(0x01, &[b'f'; 30_000]),
                frame(0x00, &[b'f'; 30_000]),
                frame(0x80, &[b'f'; 30_000]),
            ]
            .concat(),
            Some(1009),
        ),
        ("close with a 1-byte payload", frame(0x88, &[0x03]), None),
        (
            "close with code 999",
            frame(0x88, &999u16.to_be_bytes()),
            None,
        ),
        (
            "close with invalid UTF-8 reason",
            frame(0x88, &[0x03, 0xe8, 0xff]),
            None,
        ),
        ("unfinished fragmented message", frame(0x01, b"part"), None),
        ("valid non-minimal length", non_minimal, None),
        (
            "many pings",
            (0..200).flat_map(|_| frame(0x89, b"ping")).collect(),
            None,
        ),
    ];
    for (index, (name, bytes, expected)) in cases.into_iter().enumerate() {
        let channel = format!("wsh-{index}");
        let (mut stream, early) = ws_handshake(server.addr, &channel).await;
        server.wait_for_subscribers(&channel, 1).await;
        let _ = stream.write_all(&bytes).await;
        if expected.is_none() {
            // Truncated input: the client goes away mid-frame.
            let _ = stream.shutdown().await;
        }
        let answer = raw::read_to_close(&mut stream, early, CLOSE_WITHIN).await;
        if let Some(code) = expected {
            assert_eq!(
                close_code(&answer.bytes),
                Some(code),
                "{name}: server frames {:?}",
                server_frames(&answer.bytes)
            );
            // Answer the close so that the server can finish at once.
            let _ = stream.write_all(&frame(0x88, &code.to_be_bytes())).await;
            let _ = stream.shutdown().await;
        }
        assert!(
            answer.closed || expected.is_some(),
            "{name}: connection still open"
        );
        drop(stream);
        server.wait_for_subscribers(&channel, 0).await;
        assert_healthy(&server, name).await;
    }
    assert_healthy(&server, "websocket frames").await;
    server.stop().await;
}

#[tokio::test]
async fn websocket_client_that_never_closes_is_not_a_leak() {
    let server = start().await;
    // A frame header promising 60 KB (under the limit) and then silence: the connection stays, the
    // server stays responsive, and the subscriber goes when the client does.
    let (mut stream, _) = ws_handshake(server.addr, "stall").await;
    server.wait_for_subscribers("stall", 1).await;
    let mut header = vec![0x81, 0x80 | 126];
    header.extend_from_slice(&60_000u16.to_be_bytes());
    header.extend_from_slice(&MASK);
    header.extend_from_slice(b"partial");
    stream.write_all(&header).await.unwrap();
    assert_healthy(&server, "a stalled websocket frame").await;
    // Messages still flow to the stalled client.
    server.publish_ok("stall", "still-here").await;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut found = false;
    while !found {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
        found = got.windows(10).any(|w| w == b"still-here");
    }
    assert!(found, "the stalled client still receives messages");
    drop(stream);
    server.wait_for_subscribers("stall", 0).await;
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// WebSocket memory attacks against the real binary (the server's RSS is read from /proc)
// ------------------------------------------------------------------------------------------------

/// The `herald` binary with `[server]` lines `server` and a WebSocket location at `/ws/` (and the
/// statistics location); the config file lives as long as the process.
async fn herald_with_websockets(name: &str, server: &str) -> (HeraldProcess, TempFile) {
    let locations = location("/ws/", "subscriber", "mode = \"websocket\"");
    let file = TempFile::new(name, &config_with_server(server, "", &locations));
    let herald = HeraldProcess::start(&["--config", file.path(), "--listen", "127.0.0.1:0"]).await;
    (herald, file)
}

/// Reads what the server sends (after `bytes`, already received) until its close frame, answers
/// that close, then reads until the server closes the connection; everything bounded by `deadline`.
async fn read_until_closed(stream: &mut TcpStream, mut bytes: Vec<u8>, deadline: Instant) -> Reply {
    let mut buf = [0u8; 16 * 1024];
    while close_code(&bytes).is_none() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return Reply {
                    bytes,
                    closed: false,
                }
            }
            Ok(Ok(0) | Err(_)) => {
                return Reply {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    if let Some(code) = close_code(&bytes) {
        let _ = stream.write_all(&frame(0x88, &code.to_be_bytes())).await;
    }
    raw::read_to_close(
        stream,
        bytes,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_websocket_messages_are_closed_with_1008_and_their_memory_is_not_kept() {
    // Issue 14.2: one 1 MB fragment (FIN = 0) and nothing more was kept forever. Three waves of
    // connections each start a message of almost `max_body_size` and never finish it, three ways: a
    // first fragment and silence, half a frame, a first fragment followed by pings and pongs. Each
    // must be closed with 1008 once `websocket_message_timeout` passes, so the server's peak RSS
    // over the three waves stays within what one wave can hold, instead of growing with every wave.
    const WAVES: usize = 3;
    const PER_WAVE: usize = 24;
    const TIMEOUT: Duration = Duration::from_secs(1);
    let (herald, _config) = herald_with_websockets(
        "unfinished-websocket.toml",
        "max_body_size = \"1m\"\nwebsocket_message_timeout = \"1s\"",
    )
    .await;
    let payload = vec![b'u'; 1_000_000];
    let baseline = herald.rss_kb();
    for wave in 0..WAVES {
        let mut held = Vec::new();
        for i in 0..PER_WAVE {
            let (mut stream, early) =
                ws_handshake(herald.addr, &format!("unfinished-{wave}-{i}")).await;
            let attack = match i % 3 {
                0 => frame(0x01, &payload),
                1 => {
                    let mut half = frame(0x81, &payload);
                    half.truncate(half.len() / 2);
                    half
                }
                _ => [
                    frame(0x01, &payload),
                    frame(0x89, b"busy"),
                    frame(0x8a, b"busy"),
                ]
                .concat(),
            };
            stream.write_all(&attack).await.unwrap();
            held.push((i, stream, early));
        }
        let sent = Instant::now();
        let deadline = sent + TIMEOUT + 2 * CLOSE_WITHIN;
        for (i, mut stream, early) in held {
            let answer = read_until_closed(&mut stream, early, deadline).await;
            assert_eq!(
                close_code(&answer.bytes),
                Some(1008),
                "wave {wave}, connection {i} (kind {}): no close 1008 {:?} after the unfinished message; server frames {:?}",
                i % 3,
                sent.elapsed(),
                server_frames(&answer.bytes)
            );
            let reason = server_frames(&answer.bytes)
                .into_iter()
                .find(|(opcode, _)| *opcode == 8)
                .map(|(_, payload)| String::from_utf8_lossy(&payload[2..]).into_owned())
                .unwrap_or_default();
            assert!(
                reason.contains("websocket_message_timeout"),
                "the close reason names the limit: {reason:?}"
            );
            assert!(
                answer.closed,
                "wave {wave}, connection {i}: still open {:?} after the close frame",
                sent.elapsed()
            );
        }
        eprintln!(
            "wave {wave}: RSS {} kB, peak {} kB (baseline {baseline} kB)",
            herald.rss_kb(),
            herald.peak_rss_kb()
        );
    }
    // One wave holds at most PER_WAVE unfinished messages of 1 MB (about 2 MB each while the last
    // fragment is copied into the message); the waves must not add up.
    let grown = herald.peak_rss_kb().saturating_sub(baseline);
    let one_wave = (PER_WAVE as u64) * 2 * 1024;
    assert!(
        grown < one_wave + 24 * 1024,
        "peak RSS grew by {grown} kB over {WAVES} waves of {PER_WAVE} unfinished 1 MB messages (one wave may hold about {one_wave} kB)"
    );
    let (status, _, body) = herald.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_websocket_messages_share_the_server_budget_with_request_bodies() {
    // Issue 14.2 with many connections: each may hold up to max_body_size for up to
    // websocket_message_timeout, so 2,000 of them could hold gigabytes within the timeout. Their
    // bytes come out of the same server-wide budget as request bodies (max_buffered_body_size):
    // past it a connection is closed at once with 1013, long before the timeout.
    const CONNECTIONS: usize = 12;
    let (herald, _config) = herald_with_websockets(
        "websocket-budget.toml",
        "max_body_size = \"1m\"\nmax_buffered_body_size = \"4m\"\nwebsocket_message_timeout = \"60s\"",
    )
    .await;
    let payload = vec![b'u'; 1_000_000];
    let baseline = herald.rss_kb();
    let mut held = Vec::new();
    for i in 0..CONNECTIONS {
        let (mut stream, early) = ws_handshake(herald.addr, &format!("budget-{i}")).await;
        stream.write_all(&frame(0x01, &payload)).await.unwrap();
        held.push((i, stream, early));
    }
    let sent = Instant::now();
    let (mut refused, mut holding) = (0, Vec::new());
    for (i, mut stream, early) in held {
        // Refusals come at once; a connection still silent after CLOSE_WITHIN holds its message.
        let answer = read_until_closed(&mut stream, early, sent + CLOSE_WITHIN).await;
        match close_code(&answer.bytes) {
            Some(1013) => {
                let reason = server_frames(&answer.bytes)
                    .into_iter()
                    .find(|(opcode, _)| *opcode == 8)
                    .map(|(_, payload)| String::from_utf8_lossy(&payload[2..]).into_owned())
                    .unwrap_or_default();
                assert!(reason.contains("max_buffered_body_size"), "{reason:?}");
                refused += 1;
            }
            None if !answer.closed => holding.push(stream),
            other => panic!(
                "connection {i}: unexpected close {other:?}: {:?}",
                server_frames(&answer.bytes)
            ),
        }
    }
    assert!(
        holding.len() <= 4 && refused >= CONNECTIONS - 4,
        "{} connections hold an unfinished 1 MB message, {refused} refused: the 4 MB budget holds at most 4",
        holding.len()
    );
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "refused long before the 60 s timeout"
    );
    // Request bodies share the budget: a 1 MB publish does not fit while the messages are held.
    let mut body = TcpStream::connect(herald.addr).await.unwrap();
    body.write_all(b"POST /pub?id=big HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut body, Vec::new(), Instant::now() + CLOSE_WITHIN).await;
    assert!(
        String::from_utf8_lossy(&answer.bytes).starts_with("HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&answer.bytes)
    );
    // A backend's small publish (under 16 KiB) is not refused while the budget is held.
    let (status, _, body) = herald
        .request(
            reqwest::Method::POST,
            "/pub?id=small",
            "x".repeat(1000),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grown = herald.peak_rss_kb().saturating_sub(baseline);
    assert!(
        grown < 40 * 1024,
        "peak RSS grew by {grown} kB for a 4 MB budget"
    );
    // Once the held messages go, the budget is free again.
    drop(holding);
    let start = Instant::now();
    loop {
        let (status, _, body) = herald
            .request(
                reqwest::Method::POST,
                "/pub?id=fits",
                "x".repeat(900_000),
                &[],
            )
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the budget was not given back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_client_that_never_reads_is_not_read_further_and_is_cut_off() {
    // Issue 14.3: every ping queued a pong for a client that never reads them, so the server's
    // memory grew at wire speed until `send_timeout`. Now a pong that cannot be written stops the
    // server from reading that client (its writes stall), and `send_timeout` then ends it.
    const LIMIT: usize = 64 << 20;
    let (herald, _config) =
        herald_with_websockets("ping-flood.toml", "send_timeout = \"3s\"").await;
    let (mut stream, _) = ws_handshake(herald.addr, "flood").await;
    herald
        .wait_subscribers("flood", WAIT, "1", |count| count == 1)
        .await;
    let baseline = herald.rss_kb();
    let batch: Vec<u8> = (0..512).flat_map(|_| frame(0x89, &[b'p'; 125])).collect();
    let started = Instant::now();
    let mut sent = 0;
    let stalled = loop {
        if sent >= LIMIT || started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&batch)).await {
            Err(_) => break true,
            Ok(Err(e)) => panic!(
                "the connection failed after {sent} bytes of pings, before the server stopped reading: {e}"
            ),
            Ok(Ok(())) => sent += batch.len(),
        }
    };
    let grown = herald.rss_kb().saturating_sub(baseline);
    eprintln!(
        "ping flood: {sent} bytes sent in {:?}, server RSS +{grown} kB",
        started.elapsed()
    );
    assert!(
        stalled,
        "the server read all {sent} bytes of pings from a client that never reads its pongs"
    );
    assert!(
        grown < 16 * 1024,
        "server RSS grew by {grown} kB during a ping flood of {sent} bytes"
    );
    // `send_timeout` (3s) ends the connection whose pongs cannot be written.
    herald
        .wait_subscribers_where(
            "flood",
            Duration::from_secs(3) + 2 * CLOSE_WITHIN,
            "0",
            |status, count| count == Some(0) || status == StatusCode::NOT_FOUND,
        )
        .await;
    let (status, _, body) = herald.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_client_that_half_closes_is_treated_as_gone_and_frees_its_slot() {
    // e.g. `printf 'GET /lp/ch HTTP/1.1\r\n\r\n' | nc -N host port`. Herald treats the end of a
    // client's input as the client leaving (that is how a dropped subscriber is noticed at once), so
    // the pending long-poll ends without an answer, its subscriber slot is freed and the server stays
    // healthy. The README says so.
    let server = start().await;
    let answer = exchange(
        server.addr,
        b"GET /lp/half HTTP/1.1\r\nHost: h\r\n\r\n",
        true,
    )
    .await;
    assert!(
        answer.status().is_none() || answer.status() == Some(304),
        "a half-closed long-poll either ends silently or times out: got {:?}",
        answer.shown()
    );
    server.wait_for_subscribers("half", 0).await;
    let answer = exchange(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(answer.status(), Some(200), "got {:?}", answer.shown());
    server.stop().await;
}
