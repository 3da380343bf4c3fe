//! Limits from `[server]` and `[channels]`: channel id length and characters, request body size,
//! slow bodies (`body_read_timeout`) and the bytes of all bodies being read (`max_buffered_body_size`),
//! also as a wave of 150 slow bodies against the `herald` binary whose resident memory must stay
//! bounded during the wave and come back near its baseline after it. Every refusal names the limit
//! and its configured value. Stored messages per channel, message
//! TTL, number of channels and subscribers per channel are covered on both engines in `engines.rs`.

mod common;

use common::process::{HeraldProcess, TempFile};
use common::{config_with_server, header, raw, streaming_location, TestServer, EXPLAIN, WAIT};
use reqwest::{Method, StatusCode};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

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

// ------------------------------------------------------------------------------------------------
// Request bodies: body_read_timeout and max_buffered_body_size (issue 14)
// ------------------------------------------------------------------------------------------------

/// A publish whose head declares `Content-Length: declared`, with `first` bytes of body sent at once.
async fn start_body(
    addr: std::net::SocketAddr,
    channel: &str,
    declared: usize,
    first: usize,
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("POST /pub?id={channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream
        .write_all(&vec![b'b'; first])
        .await
        .expect("send body");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408_and_is_closed_within_body_read_timeout() {
    let timeout = Duration::from_secs(1);
    let server = TestServer::start(&limits_config("body_read_timeout = \"1s\"", "")).await;
    // Content-Length 100, then one byte every 400 ms: each read comes within the timeout (the
    // timeout is between two reads, not for the whole body), so the body lives past 1 s...
    let mut stream = start_body(server.addr, "slow", 100, 10).await;
    let started = Instant::now();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(b"x").await.expect("trickle");
    }
    let early = raw::read_to_close(&mut stream, Vec::new(), Duration::from_millis(100)).await;
    assert!(
        early.bytes.is_empty() && !early.closed,
        "a body still arriving must not be cut off (after {:?}): {:?}",
        started.elapsed(),
        early.shown()
    );
    // ... and then stops: 408 and the connection closed, one timeout later (bounded generously).
    let stopped = Instant::now();
    let reply = raw::read_to_close(&mut stream, Vec::new(), timeout + WAIT).await;
    let waited = stopped.elapsed();
    assert!(
        reply.closed,
        "still open {waited:?} after the body stopped: {:?}",
        reply.shown()
    );
    assert_eq!(reply.status(), Some(408), "{:?}", reply.shown());
    assert!(
        reply.text().contains("body_read_timeout"),
        "{:?}",
        reply.shown()
    );
    assert!(
        waited >= timeout - Duration::from_millis(200),
        "closed after only {waited:?}"
    );
    assert!(
        server.channel_info("slow").await.is_none(),
        "nothing may be published"
    );

    // A chunked body that stops after its first chunk: the same.
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"POST /pub?id=slow HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .expect("send");
    let reply = raw::read_to_close(&mut stream, Vec::new(), timeout + WAIT).await;
    assert!(reply.closed, "chunked: still open: {:?}", reply.shown());
    assert_eq!(reply.status(), Some(408), "chunked: {:?}", reply.shown());
    server.publish_ok("slow", "after").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_max_buffered_body_size_get_503_while_the_server_keeps_serving() {
    const BODY: usize = 250_000;
    let server = TestServer::start(&limits_config(
        "max_body_size = \"256k\"\nmax_buffered_body_size = \"1m\"\nbody_read_timeout = \"20s\"",
        "",
    ))
    .await;
    let mut sub = server.subscribe_ok("/sub/small").await;
    // Four bodies of 250,000 bytes held one byte short of their end: 1,000,000 of the 1,048,576
    // bytes the server may buffer.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(start_body(server.addr, &format!("held{i}"), BODY, BODY - 1).await);
    }
    // Once the server has read them, a fifth 250,000-byte body does not fit: 503 at once.
    let big = "z".repeat(BODY);
    let deadline = Instant::now() + WAIT;
    let last = loop {
        let (status, _, body) = server.publish("probe", &big, &[]).await;
        if status == StatusCode::SERVICE_UNAVAILABLE || Instant::now() >= deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        last.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "a body past max_buffered_body_size was not refused: {}",
        last.1
    );
    assert!(
        last.1.contains("max_buffered_body_size = 1048576"),
        "{}",
        last.1
    );
    // Many at once: every one refused, quickly.
    let refusals: Vec<_> = (0..8)
        .map(|i| {
            let http = server.http.clone();
            let big = big.clone();
            tokio::spawn(async move { http.publish(&format!("many{i}"), &big, &[]).await })
        })
        .collect();
    for refusal in refusals {
        let (status, headers, body) = tokio::time::timeout(WAIT, refusal)
            .await
            .expect("a refusal took too long")
            .expect("task");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(header(&headers, "retry-after"), "5");
    }
    // A chunked body (no declared length) is refused when it grows past what is left.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..10)
        .map(|_| Ok(bytes::Bytes::from(vec![b'c'; 20_000])))
        .collect();
    let (status, _, body) = server
        .request(
            Method::POST,
            "/pub?id=chunked",
            reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "chunked: {body}");
    // Small publishes still fit, and subscribers get them.
    server.publish_ok("small", "still serving").await;
    assert_eq!(sub.read_until("|", WAIT).await, "1:still serving|");
    // The held bodies complete: they were reserved, so they are published.
    for (i, mut stream) in held.into_iter().enumerate() {
        stream.write_all(b"!").await.expect("last byte");
        let (head, _) = tokio::time::timeout(WAIT, raw::read_head(&mut stream))
            .await
            .expect("no answer to a completed body")
            .expect("answer");
        assert!(head.starts_with("HTTP/1.1 200"), "held{i}: {head}");
    }
    // Their reservations are given back: a large body fits again.
    let (status, _, body) = server.publish("probe", &big, &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "after the held bodies completed: {body}"
    );
    server.stop().await;
}

/// One hostile client of the wave: declares `body` bytes, sends all but the last in 64 KiB pieces
/// (stops sending when the server refuses), then waits for the answer. Returns the status seen (if
/// the answer was not lost to a reset) and whether the server closed the connection in time.
async fn slow_body_client(
    addr: std::net::SocketAddr,
    i: usize,
    body: usize,
    wait: Duration,
) -> (Option<u16>, bool) {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => panic!("client {i}: connect: {e}"),
    };
    let head =
        format!("POST /pub?id=wave{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {body}\r\n\r\n");
    let piece = vec![b'w'; 64 << 10];
    let mut sent = 0;
    if stream.write_all(head.as_bytes()).await.is_ok() {
        while sent < body - 1 {
            let n = piece.len().min(body - 1 - sent);
            if stream.write_all(&piece[..n]).await.is_err() {
                break; // refused and closed
            }
            sent += n;
        }
    }
    let reply = raw::read_to_close(&mut stream, Vec::new(), wait).await;
    (reply.status(), reply.closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_slow_bodies_holds_at_most_the_buffer_cap_and_memory_comes_back() {
    const CLIENTS: usize = 150;
    const BODY: usize = 1 << 20;
    const CAP_MB: u64 = 24;
    let timeout = Duration::from_secs(2);
    let config = TempFile::new(
        "body-wave.toml",
        &limits_config(
            &format!("max_buffered_body_size = \"{CAP_MB}m\"\nbody_read_timeout = \"2s\""),
            "",
        ),
    );
    let herald =
        HeraldProcess::start(&["--config", config.path(), "--listen", "127.0.0.1:0"]).await;
    herald.publish_ok("warm", "up").await;
    let baseline = herald.rss_kb();

    // 150 clients each declare 1 MiB and send all of it but the last byte, then stop: at most
    // 24 MiB of bodies are buffered, the rest are refused (503) and those held time out (408).
    let started = Instant::now();
    let mut wave = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        wave.spawn(slow_body_client(herald.addr, i, BODY, timeout + WAIT));
    }
    let mut peak = baseline;
    let mut outcomes = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_millis(20));
    while !wave.is_empty() {
        tokio::select! {
            _ = sample.tick() => peak = peak.max(herald.rss_kb()),
            done = wave.join_next() => outcomes.push(done.expect("set not empty").expect("client task")),
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the wave did not end in 25 s"
        );
    }
    let timed_out = outcomes.iter().filter(|o| o.0 == Some(408)).count();
    let refused = outcomes.iter().filter(|o| o.0 == Some(503)).count();
    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(status, closed)| !closed || !matches!(status, None | Some(408) | Some(503)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "clients not closed, or other answers: {unexpected:?}"
    );
    assert!(
        (1..=CAP_MB as usize).contains(&timed_out) && refused >= CLIENTS - CAP_MB as usize - 1,
        "{timed_out} bodies held to their timeout (at most {CAP_MB} fit), {refused} refused"
    );
    let grew_mb = peak.saturating_sub(baseline) / 1024;
    assert!(
        grew_mb < CAP_MB + 40,
        "RSS grew by {grew_mb} MB during the wave (baseline {baseline} kB, peak {peak} kB)"
    );

    // After the wave, the memory is given back.
    let near_baseline = baseline + baseline / 10 + 4096;
    let mut last = 0;
    let back = common::poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        last = herald.rss_kb();
        std::future::ready(last <= near_baseline)
    })
    .await;
    eprintln!(
        "slow-body wave: {timed_out} held to 408, {refused} refused 503; RSS baseline {baseline} kB, peak {peak} kB, after {last} kB"
    );
    assert!(
        back,
        "RSS {last} kB 10 s after the wave (baseline {baseline} kB, peak {peak} kB, bound {near_baseline} kB)"
    );
    herald.publish_ok("warm", "still serving").await;
}
