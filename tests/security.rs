//! Securing Herald (issue 10), every refusal path with real clients: bearer secrets on publishers,
//! client address allow/deny lists with trusted proxies' `X-Forwarded-For`, the publish rate limit per
//! address and per token, JWT subscriber tokens (HS256 and RS256; query argument, header and cookie;
//! missing, tampered, expired, for other channels, prefix patterns) on every subscriber mode, private
//! channel prefixes, upstream authorization against a small backend started here (answers, forwarded
//! headers, timeout, cache, unreachable), and the abuse limits (connections overall and per address,
//! channels per subscription, header size, header read timeout, body size, WebSocket message size).
//! `refusals_are_counted_in_metrics` checks the refusal counters of `/metrics` before and after.
//! Two regression tests cover holes found while writing these: the upstream cache reusing an answer
//! for another `Origin`, and made-up bearer tokens buying a fresh publish rate budget.

mod common;

use common::ws::{self, Ws};
use common::{config_with_server, header, raw, TestServer, EXPLAIN, WAIT};
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
const BEARER_A: &str = "publisher-secret-aaaaaaaaaaaa";
const BEARER_B: &str = "publisher-secret-bbbbbbbbbbbb";
const JWT_SECRET: &str = "jwt-test-secret-0123456789";

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn location(path: &str, role: &str, extra: &str) -> String {
    format!("[[location]]\npath = {path:?}\nrole = {role:?}\n{extra}\n")
}

fn exact(path: &str, role: &str, extra: &str) -> String {
    location(path, role, &format!("match = \"exact\"\n{extra}"))
}

fn metrics_location() -> String {
    exact("/metrics", "metrics", "")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims: the `channels` list, an `exp` when given, and a user id.
fn claims(channels: &[&str], exp: Option<u64>) -> serde_json::Value {
    let mut claims = serde_json::json!({ "channels": channels, "sub": "42" });
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    claims
}

/// An HS256 token signed with `secret`.
fn hs256_with(secret: &str, channels: &[&str], exp: Option<u64>) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(channels, exp),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode HS256 token")
}

/// An HS256 token signed with the locations' secret, valid for an hour.
fn hs256(channels: &[&str]) -> String {
    hs256_with(JWT_SECRET, channels, Some(now() + 3600))
}

/// The token with one character of its signature changed.
fn tamper_signature(token: &str) -> String {
    let (rest, signature) = token.rsplit_once('.').expect("three parts");
    let mut sig: Vec<u8> = signature.bytes().collect();
    let middle = sig.len() / 2;
    sig[middle] = if sig[middle] == b'A' { b'B' } else { b'A' };
    format!("{rest}.{}", String::from_utf8(sig).unwrap())
}

/// The token with its payload replaced (claims `channels` = everything) and the old signature kept.
fn tamper_payload(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let forged = hs256_with("some-other-secret-0123456789", &["*"], None);
    let forged_payload = forged.split('.').nth(1).unwrap();
    format!("{}.{}.{}", parts[0], forged_payload, parts[2])
}

/// GET `path`, returning status, explanation and body.
async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let (status, response_headers, _) = server.get_with(path, headers).await;
    (status, header(&response_headers, EXPLAIN))
}

/// Opens a long-lived subscriber and returns its status (the connection is dropped).
async fn subscribe_status(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> StatusCode {
    let sub = server.subscribe_with(path, headers).await;
    sub.status
}

/// Asserts a subscribe is refused with `status`, and returns the explanation.
async fn refused(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
    status: StatusCode,
) -> String {
    let (got, explain) = get(server, path, headers).await;
    assert_eq!(got, status, "GET {path} {headers:?}: {explain}");
    assert!(
        !explain.is_empty(),
        "GET {path}: refusal without explanation"
    );
    explain
}

/// POST `body` to `path` with `headers`.
async fn post(
    server: &TestServer,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    server
        .request(Method::POST, path, body.to_string(), headers)
        .await
}

/// Sends raw bytes on a new connection and reads until the server closes (or `wait` passes):
/// the answer and whether the server closed the connection.
async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    let reply = raw::exchange(addr, request, false, wait).await;
    (reply.text(), reply.closed)
}

/// Reads until EOF (true) or `wait` (false).
async fn read_all(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let reply = raw::read_to_close(stream, Vec::new(), wait).await;
    (reply.text(), reply.closed)
}

/// A connection from `local` (a loopback address) to the server.
async fn connect_from(local: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// `GET /healthz` on a new raw connection; the answer's first line.
async fn healthz_line(addr: SocketAddr) -> String {
    get_line(addr, "/healthz").await
}

/// `GET path` on a new raw connection; the answer's first line.
async fn get_line(addr: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (answer, _) = raw_exchange(addr, request.as_bytes(), WAIT).await;
    answer.lines().next().unwrap_or("").to_string()
}

async fn ws_connect(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, WsError> {
    ws::handshake(server.addr, path, headers)
        .await
        .map(|(ws, _)| ws)
}

// ------------------------------------------------------------------------------------------------
// Publishers: bearer secrets, address lists, trusted proxies, rate limit
// ------------------------------------------------------------------------------------------------

fn publisher_locations() -> String {
    [
        exact(
            "/secure",
            "publisher",
            &format!("admin = true\nauth_bearer_tokens = [{BEARER_A:?}, {BEARER_B:?}]"),
        ),
        exact("/deny-me", "publisher", "deny_addresses = [\"127.0.0.1\"]"),
        exact("/only-10", "publisher", "allow_addresses = [\"10.0.0.0/8\"]"),
        exact(
            "/lists",
            "publisher",
            "allow_addresses = [\"10.0.0.0/8\", \"127.0.0.1\"]\ndeny_addresses = [\"10.66.0.0/16\", \"203.0.113.0/24\"]",
        ),
        exact(
            "/limited",
            "publisher",
            &format!("publish_rate_limit = \"3/m\"\nauth_bearer_tokens = [{BEARER_A:?}, {BEARER_B:?}]"),
        ),
        exact("/limited-open", "publisher", "publish_rate_limit = \"3/m\""),
    ]
    .concat()
}

#[tokio::test]
async fn bearer_token_missing_wrong_and_right() {
    let server = TestServer::start(&config_with_server("", "", &publisher_locations())).await;
    let (status, headers, body) = post(&server, "/secure?id=b", "hi", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(header(&headers, "www-authenticate"), "Bearer");
    assert!(header(&headers, EXPLAIN).contains("Missing bearer token"));

    let wrong = format!("Bearer {BEARER_A}x");
    let (status, headers, _) =
        post(&server, "/secure?id=b", "hi", &[("Authorization", &wrong)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&headers, "www-authenticate"), "Bearer");
    assert!(header(&headers, EXPLAIN).contains("Wrong bearer token"));
    // A prefix of the secret, another scheme, or the secret without a scheme are all wrong.
    let prefix = format!("Bearer {}", &BEARER_A[..10]);
    let basic = format!("Basic {BEARER_A}");
    for value in [prefix.as_str(), basic.as_str(), BEARER_A, "Bearer "] {
        let (status, _, _) = post(&server, "/secure?id=b", "hi", &[("Authorization", value)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "Authorization: {value}");
    }

    for token in [BEARER_A, BEARER_B] {
        let right = format!("Bearer {token}");
        let (status, _, body) =
            post(&server, "/secure?id=b", "hi", &[("Authorization", &right)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // GET (channel info) and DELETE need it too.
    let (status, _, _) = server.get("/secure?id=b").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = server
        .request(Method::DELETE, "/secure?id=b", "", &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let right = format!("Bearer {BEARER_A}");
    let (status, _, text) = server
        .get_with("/secure?id=b", &[("Authorization", &right)])
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(common::parse_json(&text)["published_messages"], 2);
    server.stop().await;
}

#[tokio::test]
async fn address_lists_refuse_the_client() {
    let server = TestServer::start(&config_with_server("", "", &publisher_locations())).await;
    let (status, headers, _) = post(&server, "/deny-me?id=a", "hi", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        header(&headers, EXPLAIN).contains("127.0.0.1"),
        "{headers:?}"
    );
    let (status, headers, _) = post(&server, "/only-10?id=a", "hi", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(header(&headers, EXPLAIN).contains("not allowed"));
    let (status, _, body) = post(&server, "/lists?id=a", "hi", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without trusted proxies, X-Forwarded-For is not believed.
    let (status, _, _) = post(
        &server,
        "/only-10?id=a",
        "hi",
        &[("X-Forwarded-For", "10.1.2.3")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post(
        &server,
        "/lists?id=a",
        "hi",
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_what_the_lists_see() {
    let server = TestServer::start(&config_with_server(
        "trusted_proxies = [\"127.0.0.1\"]",
        "",
        &publisher_locations(),
    ))
    .await;
    let cases: &[(&str, &str, StatusCode)] = &[
        ("/only-10", "10.1.2.3", StatusCode::OK),
        ("/only-10", "192.0.2.7", StatusCode::FORBIDDEN),
        // The last address that is not a trusted proxy counts.
        ("/only-10", "192.0.2.7, 10.1.2.3", StatusCode::OK),
        ("/only-10", "10.1.2.3, 192.0.2.7", StatusCode::FORBIDDEN),
        ("/only-10", "10.1.2.3, 127.0.0.1", StatusCode::OK),
        ("/only-10", "not-an-address", StatusCode::FORBIDDEN),
        ("/deny-me", "10.1.2.3", StatusCode::OK),
        ("/deny-me", "127.0.0.1", StatusCode::FORBIDDEN),
        ("/lists", "10.1.2.3", StatusCode::OK),
        ("/lists", "10.66.1.1", StatusCode::FORBIDDEN),
        ("/lists", "203.0.113.9", StatusCode::FORBIDDEN),
        ("/lists", "198.51.100.1", StatusCode::FORBIDDEN),
    ];
    for (path, forwarded, expected) in cases {
        let (status, headers, _) = post(
            &server,
            &format!("{path}?id=p"),
            "hi",
            &[("X-Forwarded-For", forwarded)],
        )
        .await;
        assert_eq!(
            status,
            *expected,
            "{path} X-Forwarded-For: {forwarded}: {}",
            header(&headers, EXPLAIN)
        );
    }
    // Without the header, the proxy itself is the client.
    let (status, _, _) = post(&server, "/only-10?id=p", "hi", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = post(&server, "/deny-me?id=p", "hi", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.stop().await;
}

/// Publishes to `path` with `headers` within the budget of `publish_rate_limit = "3/m"` (3 times,
/// each 200), then once more: 429. Returns the refusal's headers.
async fn spend_publish_budget(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::header::HeaderMap {
    for i in 0..3 {
        let (status, _, body) = post(server, path, "m", headers).await;
        assert_eq!(status, StatusCode::OK, "publish {i}: {body}");
    }
    let (status, refusal, _) = post(server, path, "m", headers).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    refusal
}

#[tokio::test]
async fn publish_rate_limit_per_token_and_per_address() {
    let server = TestServer::start(&config_with_server(
        "trusted_proxies = [\"127.0.0.1\"]",
        "",
        &publisher_locations(),
    ))
    .await;
    let token_a = format!("Bearer {BEARER_A}");
    let token_b = format!("Bearer {BEARER_B}");
    let headers =
        spend_publish_budget(&server, "/limited?id=r", &[("Authorization", &token_a)]).await;
    let retry: u64 = header(&headers, "retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After must be seconds: {headers:?}"));
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert!(
        header(&headers, EXPLAIN).contains("publish_rate_limit = 3/m"),
        "{headers:?}"
    );
    // Another token has its own budget.
    spend_publish_budget(&server, "/limited?id=r", &[("Authorization", &token_b)]).await;
    // Only publishes are limited: channel info still answers.
    let (status, _, _) = server
        .get_with("/limited?id=r", &[("Authorization", &token_a)])
        .await;
    assert_eq!(status, StatusCode::OK);

    // Without tokens, the (forwarded) client address is the key.
    let headers = spend_publish_budget(
        &server,
        "/limited-open?id=r",
        &[("X-Forwarded-For", "10.0.0.1")],
    )
    .await;
    assert!(!header(&headers, "retry-after").is_empty());
    let (status, _, _) = post(
        &server,
        "/limited-open?id=r",
        "m",
        &[("X-Forwarded-For", "10.0.0.2")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "another address has its own budget");
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// Subscribers: JWT tokens
// ------------------------------------------------------------------------------------------------

fn jwt_locations() -> String {
    let secret = format!("jwt_secret = {JWT_SECRET:?}");
    [
        location("/sub/", "subscriber", "mode = \"streaming\""),
        location(
            "/jwt/",
            "subscriber",
            &format!("mode = \"streaming\"\n{secret}"),
        ),
        location(
            "/jwtev/",
            "subscriber",
            &format!("mode = \"eventsource\"\n{secret}"),
        ),
        location(
            "/jwtlp/",
            "subscriber",
            &format!("mode = \"long-polling\"\nlongpolling_connection_ttl = \"3s\"\n{secret}"),
        ),
        location(
            "/jwtpoll/",
            "subscriber",
            &format!("mode = \"polling\"\n{secret}"),
        ),
        location(
            "/jwtws/",
            "subscriber",
            &format!("mode = \"websocket\"\n{secret}"),
        ),
        location(
            "/jwtcookie/",
            "subscriber",
            &format!("mode = \"streaming\"\ntoken = \"$cookie_herald\"\n{secret}"),
        ),
        location(
            "/jwthdr/",
            "subscriber",
            &format!("mode = \"streaming\"\ntoken = \"$http_x_herald_token\"\n{secret}"),
        ),
    ]
    .concat()
}

async fn start_jwt() -> TestServer {
    TestServer::start(&config_with_server(
        "",
        "private_channel_prefixes = [\"private-\"]",
        &jwt_locations(),
    ))
    .await
}

#[tokio::test]
async fn jwt_valid_token_admits_every_mode() {
    let server = start_jwt().await;
    server.publish_ok("news", "stored-1").await;
    let token = hs256(&["news", "sport", "wsch"]);
    let bearer = format!("Bearer {token}");

    // Streaming, as ?token= and as Authorization header.
    let mut sub = server
        .subscribe_with(&format!("/jwt/news/sport?token={token}"), &[])
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "live-1").await;
    sub.read_until("live-1", WAIT).await;
    drop(sub);
    assert_eq!(
        subscribe_status(&server, "/jwt/news", &[("Authorization", &bearer)]).await,
        StatusCode::OK
    );

    // EventSource.
    let sub = server
        .subscribe_with(&format!("/jwtev/news?token={token}"), &[])
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    assert!(sub.content_type().starts_with("text/event-stream"));
    drop(sub);

    // Long-polling (stored message at once) and polling.
    let (status, _, body) = server.get(&format!("/jwtlp/news.b2?token={token}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("stored-1") && body.contains("live-1"),
        "{body}"
    );
    let (status, _, body) = server
        .get_with("/jwtpoll/news.b1", &[("Authorization", &bearer)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // WebSocket: ?token= (browsers) and Authorization header (other clients).
    let mut ws = ws_connect(&server, &format!("/jwtws/wsch?token={token}"), &[])
        .await
        .expect("websocket with ?token=");
    let mut ws2 = ws_connect(&server, "/jwtws/wsch", &[("Authorization", &bearer)])
        .await
        .expect("websocket with Authorization");
    server.wait_for_subscribers("wsch", 2).await;
    server.publish_ok("wsch", "ws-live").await;
    assert_eq!(ws::next_text(&mut ws).await, "ws-live");
    assert_eq!(ws::next_text(&mut ws2).await, "ws-live");
    let _ = ws.close(None).await;
    let _ = ws2.close(None).await;

    // A token from an expression reading another header.
    assert_eq!(
        subscribe_status(&server, "/jwthdr/news", &[("X-Herald-Token", &token)]).await,
        StatusCode::OK
    );
    server.stop().await;
}

#[tokio::test]
async fn jwt_missing_tampered_expired_or_foreign_tokens_are_refused() {
    let server = start_jwt().await;
    let token = hs256(&["news"]);

    for path in ["/jwt/news", "/jwtev/news", "/jwtlp/news", "/jwtpoll/news"] {
        let explain = refused(&server, path, &[], StatusCode::UNAUTHORIZED).await;
        assert!(
            explain.contains("Missing subscriber token"),
            "{path}: {explain}"
        );
    }
    let bad_tokens = [
        ("tampered signature", tamper_signature(&token)),
        ("tampered payload", tamper_payload(&token)),
        (
            "other secret",
            hs256_with("not-the-right-secret-012345", &["news"], None),
        ),
        ("garbage", "not.a.token".to_string()),
        ("empty parts", "..".to_string()),
        // alg "none" with no signature.
        (
            "alg none",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJjaGFubmVscyI6WyJuZXdzIl19.".to_string(),
        ),
    ];
    for (what, bad) in &bad_tokens {
        for path in ["/jwt/news", "/jwtev/news", "/jwtpoll/news"] {
            let explain = refused(
                &server,
                &format!("{path}?token={bad}"),
                &[],
                StatusCode::UNAUTHORIZED,
            )
            .await;
            assert!(
                explain.contains("Invalid subscriber token"),
                "{what}: {explain}"
            );
        }
    }
    let expired = hs256_with(JWT_SECRET, &["news"], Some(now() - 3600));
    let explain = refused(
        &server,
        &format!("/jwt/news?token={expired}"),
        &[],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(explain.contains("expired"), "{explain}");
    let bearer = format!("Bearer {expired}");
    let explain = refused(
        &server,
        "/jwtev/news",
        &[("Authorization", &bearer)],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(explain.contains("expired"), "{explain}");

    // A valid token for other channels: 403, also when only one of several channels is foreign.
    for path in [
        "/jwt/sport",
        "/jwt/news/sport",
        "/jwtev/sport",
        "/jwtlp/sport",
        "/jwtpoll/news/sport.b1",
    ] {
        let explain = refused(
            &server,
            &format!("{path}?token={token}"),
            &[],
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(
            explain.contains("does not allow channel sport"),
            "{path}: {explain}"
        );
    }

    // Prefix patterns.
    let user = hs256(&["user-42-*"]);
    assert_eq!(
        subscribe_status(&server, &format!("/jwt/user-42-inbox?token={user}"), &[]).await,
        StatusCode::OK
    );
    assert_eq!(
        subscribe_status(
            &server,
            &format!("/jwt/user-42-inbox/user-42-alerts?token={user}"),
            &[]
        )
        .await,
        StatusCode::OK
    );
    for other in ["user-43-x", "user-4", "user-42"] {
        refused(
            &server,
            &format!("/jwt/{other}?token={user}"),
            &[],
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    // No channels claim at all: nothing is allowed.
    let nothing = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "sub": "42" }),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    refused(
        &server,
        &format!("/jwt/news?token={nothing}"),
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;

    // WebSocket refusals are HTTP answers to the handshake.
    for (path, status) in [
        ("/jwtws/news".to_string(), StatusCode::UNAUTHORIZED),
        (
            format!("/jwtws/news?token={}", tamper_signature(&token)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            format!("/jwtws/news?token={expired}"),
            StatusCode::UNAUTHORIZED,
        ),
        (format!("/jwtws/sport?token={token}"), StatusCode::FORBIDDEN),
    ] {
        match ws_connect(&server, &path, &[]).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), status, "{path}"),
            Err(other) => panic!("{path}: expected HTTP {status}, got {other}"),
            Ok(_) => panic!("{path}: expected HTTP {status}, got a WebSocket"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn jwt_token_from_a_cookie() {
    let server = start_jwt().await;
    let token = hs256(&["news"]);
    let cookie = format!("theme=dark; herald={token}; other=1");
    assert_eq!(
        subscribe_status(&server, "/jwtcookie/news", &[("Cookie", &cookie)]).await,
        StatusCode::OK
    );
    // The location reads only the cookie: the query argument is not looked at.
    let by_query = format!("/jwtcookie/news?token={token}");
    let tampered = format!("herald={}", tamper_signature(&token));
    // (path, cookie, status)
    let refusals = [
        (by_query.as_str(), None, StatusCode::UNAUTHORIZED),
        ("/jwtcookie/news", Some("herald="), StatusCode::UNAUTHORIZED),
        (
            "/jwtcookie/news",
            Some(tampered.as_str()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "/jwtcookie/sport",
            Some(cookie.as_str()),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (path, cookie, status) in refusals {
        let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        refused(&server, path, &headers, status).await;
    }
    server.stop().await;
}

/// An HS256 token with the locations' secret and exactly these claims.
fn hs256_claims(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("encode HS256 token")
}

#[tokio::test]
async fn jwt_malformed_registered_claims_and_nbf_are_refused() {
    let server = TestServer::start(&config_with_server(
        "",
        "",
        &[
            jwt_locations(),
            location(
                "/jwtlee/",
                "subscriber",
                &format!("mode = \"streaming\"\njwt_secret = {JWT_SECRET:?}\njwt_leeway = \"2m\""),
            ),
        ]
        .concat(),
    ))
    .await;
    let now = now();
    // Correctly signed, but a registered claim of the wrong type: 401 naming the claim, on every
    // mode (the JWT library alone ignored an `exp` it could not read).
    let malformed = [
        ("exp", serde_json::json!("0")),
        ("exp", serde_json::json!(-1)),
        ("exp", serde_json::json!(null)),
        ("exp", serde_json::json!(format!("{}", now + 3600))),
        ("nbf", serde_json::json!("0")),
        ("nbf", serde_json::json!(-5)),
        ("iat", serde_json::json!("yesterday")),
        ("sub", serde_json::json!(42)),
        ("aud", serde_json::json!({"a": 1})),
    ];
    for (claim, value) in malformed {
        let mut claims = serde_json::json!({ "channels": ["news"] });
        claims[claim] = value.clone();
        let token = hs256_claims(claims);
        for path in ["/jwt/news", "/jwtev/news", "/jwtpoll/news"] {
            let explain = refused(
                &server,
                &format!("{path}?token={token}"),
                &[],
                StatusCode::UNAUTHORIZED,
            )
            .await;
            assert!(
                explain.contains("Invalid subscriber token") && explain.contains(claim),
                "{path} with {claim} = {value}: {explain}"
            );
        }
        match ws_connect(&server, &format!("/jwtws/news?token={token}"), &[]).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{claim}")
            }
            Err(other) => panic!("{claim} = {value}: expected 401, got {other}"),
            Ok(_) => panic!("{claim} = {value}: expected 401, got a WebSocket"),
        }
    }
    // `nbf` is honoured: a token valid only from in an hour is refused now, one valid since a
    // minute ago is accepted; fractional NumericDates are accepted.
    let later = hs256_claims(serde_json::json!({ "channels": ["news"], "nbf": now + 3600 }));
    let explain = refused(
        &server,
        &format!("/jwt/news?token={later}"),
        &[],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(explain.contains("not valid yet"), "{explain}");
    let since = hs256_claims(serde_json::json!({
        "channels": ["news"], "nbf": now - 60, "iat": now as f64 - 60.5, "exp": now as f64 + 600.25
    }));
    assert_eq!(
        subscribe_status(&server, &format!("/jwt/news?token={since}"), &[]).await,
        StatusCode::OK
    );
    // The leeway is configurable: expired 60 s ago or valid in 60 s passes a 2-minute leeway, not
    // the default 5 s one.
    for claims in [
        serde_json::json!({ "channels": ["news"], "exp": now - 60 }),
        serde_json::json!({ "channels": ["news"], "nbf": now + 60 }),
    ] {
        let token = hs256_claims(claims.clone());
        assert_eq!(
            subscribe_status(&server, &format!("/jwtlee/news?token={token}"), &[]).await,
            StatusCode::OK,
            "{claims}"
        );
        refused(
            &server,
            &format!("/jwt/news?token={token}"),
            &[],
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    server.stop().await;
}

#[tokio::test]
async fn jwt_an_empty_token_argument_does_not_hide_the_bearer_header() {
    let server = start_jwt().await;
    let bearer = format!("Bearer {}", hs256(&["news"]));
    for path in ["/jwt/news?token=", "/jwtev/news?token="] {
        assert_eq!(
            subscribe_status(&server, path, &[("Authorization", &bearer)]).await,
            StatusCode::OK,
            "{path}"
        );
    }
    let (status, explain) = get(
        &server,
        "/jwtpoll/news?token=",
        &[("Authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED, "{explain}");
    // Without the header, an empty argument is a missing token.
    let explain = refused(&server, "/jwt/news?token=", &[], StatusCode::UNAUTHORIZED).await;
    assert!(explain.contains("Missing subscriber token"), "{explain}");
    server.stop().await;
}

/// A PEM RSA key pair: generated with `openssl` when it is installed, else the committed test pair
/// under `tests/fixtures/`. Returns (private key PEM, public key file, directory to remove).
fn rsa_key_pair() -> (Vec<u8>, PathBuf, Option<PathBuf>) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "herald-security-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let generated = (|| {
        std::fs::create_dir_all(&dir).ok()?;
        let private = dir.join("private.pem");
        let public = dir.join("public.pem");
        let ok = |cmd: &mut std::process::Command| {
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = ok(std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&private)
            .arg("2048"))
            && ok(std::process::Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public));
        made.then(|| (std::fs::read(&private).ok(), public))
    })();
    match generated {
        Some((Some(private), public)) => (private, public, Some(dir)),
        _ => {
            let _ = std::fs::remove_dir_all(&dir);
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
            (
                std::fs::read(fixtures.join("jwt-rs256-private.pem")).expect("fixture key"),
                fixtures.join("jwt-rs256-public.pem"),
                None,
            )
        }
    }
}

#[tokio::test]
async fn jwt_rs256_with_a_generated_key_pair() {
    let (private, public_file, dir) = rsa_key_pair();
    let locations = [
        location(
            "/rs/",
            "subscriber",
            &format!(
                "mode = \"streaming\"\njwt_public_key_file = {:?}",
                public_file.display().to_string()
            ),
        ),
        location(
            "/rsws/",
            "subscriber",
            &format!(
                "mode = \"websocket\"\njwt_public_key_file = {:?}",
                public_file.display().to_string()
            ),
        ),
    ]
    .concat();
    let server = TestServer::start(&config_with_server("", "", &locations)).await;
    let key = EncodingKey::from_rsa_pem(&private).expect("RSA private key");
    let rs256 = |channels: &[&str], exp: u64| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims(channels, Some(exp)),
            &key,
        )
        .expect("encode RS256")
    };
    let token = rs256(&["news", "room-*"], now() + 600);
    assert_eq!(
        subscribe_status(&server, &format!("/rs/news/room-1?token={token}"), &[]).await,
        StatusCode::OK
    );
    let bearer = format!("Bearer {token}");
    assert_eq!(
        subscribe_status(&server, "/rs/news", &[("Authorization", &bearer)]).await,
        StatusCode::OK
    );
    let mut ws = ws_connect(&server, &format!("/rsws/news?token={token}"), &[])
        .await
        .expect("RS256 websocket");
    let _ = ws.close(None).await;

    // No token, a tampered one, one for other channels, an HS256 one (e.g. signed with the public
    // key as HMAC secret).
    let public_pem = std::fs::read_to_string(&public_file).unwrap();
    let confused = hs256_with(&public_pem, &["news"], None);
    let refusals = [
        ("/rs/news".to_string(), StatusCode::UNAUTHORIZED),
        (
            format!("/rs/news?token={}", tamper_signature(&token)),
            StatusCode::UNAUTHORIZED,
        ),
        (format!("/rs/other?token={token}"), StatusCode::FORBIDDEN),
        (
            format!("/rs/news?token={confused}"),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (path, status) in &refusals {
        refused(&server, path, &[], *status).await;
    }
    let expired = rs256(&["news"], now() - 600);
    let explain = refused(
        &server,
        &format!("/rs/news?token={expired}"),
        &[],
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(explain.contains("expired"), "{explain}");
    server.stop().await;
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test]
async fn private_channels_need_an_authorizing_location() {
    let server = start_jwt().await;
    let explain = refused(&server, "/sub/private-x", &[], StatusCode::FORBIDDEN).await;
    assert!(explain.contains("private"), "{explain}");
    refused(&server, "/sub/news/private-x", &[], StatusCode::FORBIDDEN).await;
    assert_eq!(
        subscribe_status(&server, "/sub/public-x", &[]).await,
        StatusCode::OK
    );
    let token = hs256(&["private-*"]);
    assert_eq!(
        subscribe_status(&server, &format!("/jwt/private-x?token={token}"), &[]).await,
        StatusCode::OK
    );
    let news_only = hs256(&["news"]);
    refused(
        &server,
        &format!("/jwt/private-x?token={news_only}"),
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;
    // Publishers are not subscribers: a backend may publish to private channels.
    server.publish_ok("private-x", "for the owner").await;
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// Subscribers: upstream authorization
// ------------------------------------------------------------------------------------------------

/// A tiny authorization backend: `Origin: https://evil.example` → 403, else `Cookie: auth=ok` → 200,
/// `auth=login` → 401, `auth=slow` → 200 after 3 s, anything else → 403. Counts requests and keeps the headers of each.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_upstream() -> Upstream {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (task_hits, task_seen) = (hits.clone(), seen.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (hits, seen) = (task_hits.clone(), task_seen.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (hits, seen) = (hits.clone(), seen.clone());
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let mut headers: HashMap<String, String> = request
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            headers.insert(":method".into(), request.method().to_string());
                            headers.insert(":path".into(), request.uri().path().to_string());
                            let cookie = headers.get("cookie").cloned().unwrap_or_default();
                            let origin = headers.get("origin").cloned().unwrap_or_default();
                            seen.lock().unwrap().push(headers);
                            let status = if origin == "https://evil.example" {
                                403
                            } else if cookie.contains("auth=ok") {
                                200
                            } else if cookie.contains("auth=login") {
                                401
                            } else if cookie.contains("auth=slow") {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                200
                            } else {
                                403
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"")))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        hits,
        seen,
        task,
    }
}

/// A port on 127.0.0.1 nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn upstream_locations(upstream: SocketAddr, dead_port: u16) -> String {
    let url = format!("auth_request_url = \"http://{upstream}/authorize\"");
    [
        location("/up/", "subscriber", &format!("mode = \"streaming\"\n{url}\nauth_request_cache = \"0s\"\nauth_request_timeout = \"500ms\"")),
        location("/upc/", "subscriber", &format!("mode = \"streaming\"\n{url}\nauth_request_cache = \"30s\"")),
        location("/upws/", "subscriber", &format!("mode = \"websocket\"\n{url}\nauth_request_cache = \"0s\"")),
        location(
            "/updead/",
            "subscriber",
            &format!("mode = \"streaming\"\nauth_request_url = \"http://127.0.0.1:{dead_port}/authorize\""),
        ),
    ]
    .concat()
}

#[tokio::test]
async fn upstream_authorization_answers_headers_timeout_cache_and_unreachable() {
    let upstream = start_upstream().await;
    let dead = closed_port().await;
    let server = TestServer::start(&config_with_server(
        "",
        "private_channel_prefixes = [\"private-\"]",
        &upstream_locations(upstream.addr, dead),
    ))
    .await;

    // 2xx admits, with the subscriber's headers forwarded.
    let status = subscribe_status(
        &server,
        "/up/news/private-room.b2",
        &[
            ("Cookie", "auth=ok; session=s1"),
            ("Authorization", "Bearer user-token"),
            ("User-Agent", "security-test/1"),
            ("Origin", "https://app.example"),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "private channels are allowed through upstream auth"
    );
    let seen = upstream
        .seen
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("one request");
    assert_eq!(seen[":method"], "GET");
    assert_eq!(seen[":path"], "/authorize");
    assert_eq!(seen["cookie"], "auth=ok; session=s1");
    assert_eq!(seen["authorization"], "Bearer user-token");
    assert_eq!(seen["user-agent"], "security-test/1");
    assert_eq!(seen["origin"], "https://app.example");
    assert_eq!(seen["x-herald-channels"], "news/private-room");

    let explain = refused(
        &server,
        "/up/news",
        &[("Cookie", "auth=deny")],
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(explain.contains("refused"), "{explain}");
    refused(&server, "/up/news", &[], StatusCode::FORBIDDEN).await;
    refused(
        &server,
        "/up/news",
        &[("Cookie", "auth=login")],
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // WebSocket: allowed → 101; refused → HTTP status on the handshake.
    let mut ws = ws_connect(&server, "/upws/news", &[("Cookie", "auth=ok")])
        .await
        .expect("upstream-authorized websocket");
    let _ = ws.close(None).await;
    match ws_connect(&server, "/upws/news", &[("Cookie", "auth=deny")]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!(
            "expected a 403 handshake answer, got {:?}",
            other.map(|_| ())
        ),
    }

    // No answer within auth_request_timeout (500ms): 503, well before the backend's 3s.
    let started = Instant::now();
    let explain = refused(
        &server,
        "/up/news",
        &[("Cookie", "auth=slow")],
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(explain.contains("did not answer in time"), "{explain}");

    // Nothing listening: 503.
    let explain = refused(
        &server,
        "/updead/news",
        &[("Cookie", "auth=ok")],
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(explain.contains("unreachable"), "{explain}");

    // Cache: the same credentials and channels within auth_request_cache ask once, refusals too;
    // other credentials or channels ask again. Without a cache (/up/), every subscribe asks.
    let before = upstream.hits.load(Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(
            subscribe_status(&server, "/upc/cached", &[("Cookie", "auth=ok; n=1")]).await,
            StatusCode::OK
        );
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), before + 1);
    for _ in 0..2 {
        refused(
            &server,
            "/upc/cached",
            &[("Cookie", "auth=deny; n=1")],
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), before + 2);
    assert_eq!(
        subscribe_status(&server, "/upc/cached/other", &[("Cookie", "auth=ok; n=1")]).await,
        StatusCode::OK
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), before + 3);
    for _ in 0..2 {
        assert_eq!(
            subscribe_status(&server, "/up/uncached", &[("Cookie", "auth=ok")]).await,
            StatusCode::OK
        );
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), before + 5);
    server.stop().await;
}

#[tokio::test]
async fn upstream_cache_does_not_reuse_an_answer_for_another_origin() {
    // The backend sees Origin and may refuse cross-site WebSocket/EventSource requests that carry
    // the user's cookies; a cached answer must not skip that decision for another origin.
    let upstream = start_upstream().await;
    let dead = closed_port().await;
    let server = TestServer::start(&config_with_server(
        "",
        "",
        &upstream_locations(upstream.addr, dead),
    ))
    .await;
    let good = [("Cookie", "auth=ok"), ("Origin", "https://app.example")];
    assert_eq!(
        subscribe_status(&server, "/upc/origin-room", &good).await,
        StatusCode::OK
    );
    let evil = [("Cookie", "auth=ok"), ("Origin", "https://evil.example")];
    assert_eq!(
        subscribe_status(&server, "/upc/origin-room", &evil).await,
        StatusCode::FORBIDDEN,
        "the cached answer for another origin was reused"
    );
    server.stop().await;
}

#[tokio::test]
async fn publish_rate_limit_cannot_be_bypassed_with_made_up_bearer_tokens() {
    // /limited-open checks no bearer token, so a made-up one must not buy a fresh budget.
    let server = TestServer::start(&config_with_server("", "", &publisher_locations())).await;
    for _ in 0..3 {
        let (status, _, _) = post(&server, "/limited-open?id=r", "m", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    for i in 0..3 {
        let made_up = format!("Bearer made-up-token-{i}");
        let (status, _, _) = post(
            &server,
            "/limited-open?id=r",
            "m",
            &[("Authorization", &made_up)],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "a made-up bearer token got past the limit"
        );
    }
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// Abuse limits
// ------------------------------------------------------------------------------------------------

#[tokio::test]
async fn max_connections_refuses_the_sixth_with_503() {
    let server = TestServer::start(&config_with_server("max_connections = 5", "", "")).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The five are accepted first (the accept loop takes connections in order).
    let (answer, closed) = raw_exchange(
        server.addr,
        b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(closed, "the refused connection must be closed: {answer:?}");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("Limit: max_connections."), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 5"),
        "{answer:?}"
    );
    // Liveness probes still get their answer at the limit.
    assert_eq!(healthz_line(server.addr).await, "HTTP/1.1 200 OK");
    // One leaves: a new connection is served again.
    held.pop();
    let served = common::poll_until(WAIT, Duration::from_millis(50), || async {
        get_line(server.addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served, "a freed slot must admit a new connection");
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn max_connections_per_address_counts_each_peer_address() {
    let server = TestServer::start(&config_with_server(
        "max_connections_per_address = 2",
        "",
        "",
    ))
    .await;
    let held = [
        TcpStream::connect(server.addr).await.unwrap(),
        TcpStream::connect(server.addr).await.unwrap(),
    ];
    let (answer, closed) = raw_exchange(
        server.addr,
        b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n",
        WAIT,
    )
    .await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("max_connections_per_address"), "{answer:?}");
    // Another loopback address has its own count (Linux routes all of 127.0.0.0/8 to lo).
    if let Ok(mut other) = connect_from("127.0.0.2", server.addr).await {
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = read_all(&mut other, WAIT).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    }
    drop(held);
    let served = common::poll_until(WAIT, Duration::from_millis(50), || async {
        get_line(server.addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served);
    server.stop().await;
}

#[tokio::test]
async fn max_channels_per_subscription() {
    let locations = [
        location("/sub/", "subscriber", "mode = \"streaming\""),
        location("/ws/", "subscriber", "mode = \"websocket\""),
    ]
    .concat();
    let server = TestServer::start(&config_with_server(
        "",
        "max_channels_per_subscription = 2",
        &locations,
    ))
    .await;
    assert_eq!(
        subscribe_status(&server, "/sub/a/b", &[]).await,
        StatusCode::OK
    );
    let explain = refused(&server, "/sub/a/b/c", &[], StatusCode::FORBIDDEN).await;
    assert!(
        explain.contains("max_channels_per_subscription = 2"),
        "{explain}"
    );
    // WebSocket refusals after the handshake are a close frame 1008 carrying the status.
    let mut ws = ws_connect(&server, "/ws/a/b/c", &[])
        .await
        .expect("handshake");
    let reason = ws::expect_close(&mut ws, CloseCode::Policy).await;
    assert!(
        reason.contains("403") && reason.contains("max_channels_per_subscription"),
        "{reason}"
    );
    server.stop().await;
}

#[tokio::test]
async fn one_publish_names_each_channel_once_and_at_most_max_channels_per_publish() {
    let server = TestServer::start(&config_with_server(
        "",
        "max_channels_per_publish = 3",
        &[
            location("/sub/", "subscriber", "mode = \"streaming\""),
            exact("/limited", "publisher", "publish_rate_limit = \"2/m\""),
            metrics_location(),
        ]
        .concat(),
    ))
    .await;
    // The same id 3,000 times is one channel, published to once.
    let mut sub = server.subscribe_ok("/sub/rep").await;
    server.wait_for_subscribers("rep", 1).await;
    let repeated = vec!["rep"; 3000].join("/");
    let (status, _, body) = post(&server, &format!("/pub?id={repeated}"), "once", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.publish_ok("rep", "after").await;
    let got = sub.read_until("after", WAIT).await;
    assert_eq!(got.matches("once").count(), 1, "{got:?}");
    let info = server.channel_info("rep").await.expect("channel rep");
    assert_eq!(info["published_messages"], 2, "{info}");
    // Repeats count once against the cap too; distinct channels past it are refused, nothing
    // published.
    let (status, _, body) = post(&server, "/pub?id=a/b/a/c/b/c", "three", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, headers, _) = post(&server, "/pub?id=a/b/c/d", "four", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        header(&headers, EXPLAIN).contains("max_channels_per_publish = 3"),
        "{headers:?}"
    );
    let (status, _, _) = server.get("/pub?id=d").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "d was not created");
    // The cap holds for channel info and delete requests as well.
    let (status, _, _) = server.get("/pub?id=a/b/c/rep").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = server
        .request(Method::DELETE, "/pub?id=a/b/c/rep", String::new(), &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let metrics = server.get("/metrics").await.2;
    assert!(
        metrics.contains("limit=\"max_channels_per_publish\""),
        "{metrics}"
    );
    // A rate-limited location: one request naming a channel thousands of times is one publish
    // of one message.
    let (status, _, body) = post(&server, &format!("/limited?id={repeated}"), "x", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let info = server.channel_info("rep").await.expect("channel rep");
    assert_eq!(info["published_messages"], 3, "{info}");
    server.stop().await;
}

#[tokio::test]
async fn max_header_size_answers_431() {
    let server = TestServer::start(&config_with_server("max_header_size = \"8k\"", "", "")).await;
    let big = "x".repeat(20 * 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    let (answer, closed) = raw_exchange(server.addr, request.as_bytes(), WAIT).await;
    assert!(closed);
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{:?}",
        &answer[..answer.len().min(200)]
    );
    // The same through a normal client.
    let (status, _, _) = server.get_with("/channels-stats", &[("X-Big", &big)]).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Under the limit is fine.
    let small = "x".repeat(4 * 1024);
    let (status, _, _) = server
        .get_with("/channels-stats", &[("X-Small", &small)])
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn header_read_timeout_closes_slow_clients() {
    let server =
        TestServer::start(&config_with_server("header_read_timeout = \"1s\"", "", "")).await;
    // Half a request line, then nothing.
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /healthz HT").await.unwrap();
    let (answer, closed) = read_all(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "still open after 5s: {answer:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too early ({took:?}): {answer:?}"
    );
    // hyper answers a 400 (no explanation) before closing.
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 400")
            || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );

    // Trickling one byte every 200ms does not extend the deadline.
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling client must be cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    // Others are served meanwhile and after.
    assert!(healthz_line(server.addr).await.starts_with("HTTP/1.1 200"));
    server.stop().await;
}

#[tokio::test]
async fn max_body_size_answers_413_and_closes_oversized_websocket_messages_with_1009() {
    let locations = location(
        "/ws/",
        "subscriber",
        "mode = \"websocket\"\nwebsocket_allow_publish = true",
    );
    let server = TestServer::start(&config_with_server(
        "max_body_size = \"1k\"",
        "",
        &locations,
    ))
    .await;
    let big = "y".repeat(2048);
    let (status, headers, _) = post(&server, "/pub?id=big", &big, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        header(&headers, EXPLAIN).contains("max_body_size = 1024"),
        "{headers:?}"
    );
    // Chunked, without Content-Length: the body is cut at the limit.
    let stream = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 512]))),
    );
    let (status, _, _) = server
        .request(
            Method::POST,
            "/pub?id=big",
            reqwest::Body::wrap_stream(stream),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        server.channel_info("big").await.is_none(),
        "nothing was published"
    );
    let (status, _, _) = post(&server, "/pub?id=big", &"y".repeat(1024), &[]).await;
    assert_eq!(status, StatusCode::OK, "exactly the limit is fine");

    let mut ws = ws_connect(&server, "/ws/big", &[])
        .await
        .expect("handshake");
    ws.send(Message::text("small")).await.unwrap();
    assert_eq!(ws::next_text(&mut ws).await, "small");
    ws.send(Message::text(big.clone())).await.unwrap();
    ws::expect_close(&mut ws, CloseCode::Size).await;
    server.wait_for_subscribers("big", 0).await;
    server.stop().await;
}

// ------------------------------------------------------------------------------------------------
// Metrics
// ------------------------------------------------------------------------------------------------

/// `name{label="value"}` from a Prometheus text exposition (0 when absent).
fn counter(metrics: &str, name: &str, label: &str, value: &str) -> f64 {
    let key = format!("{name}{{{label}=\"{value}\"}}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&key))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(server: &TestServer) -> String {
    let (status, _, text) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    text
}

#[tokio::test]
async fn refusals_are_counted_in_metrics() {
    let upstream = start_upstream().await;
    let locations = [
        metrics_location(),
        exact("/secure", "publisher", &format!("auth_bearer_tokens = [{BEARER_A:?}]")),
        exact("/deny-me", "publisher", "deny_addresses = [\"127.0.0.1\"]"),
        exact("/limited", "publisher", "publish_rate_limit = \"1/h\""),
        location("/sub/", "subscriber", "mode = \"streaming\""),
        location("/jwt/", "subscriber", &format!("mode = \"streaming\"\njwt_secret = {JWT_SECRET:?}")),
        location(
            "/up/",
            "subscriber",
            &format!("mode = \"streaming\"\nauth_request_url = \"http://{}/a\"\nauth_request_cache = \"0s\"", upstream.addr),
        ),
    ]
    .concat();
    let server = TestServer::start(&config_with_server(
        "max_body_size = \"1k\"\nmax_connections_per_address = 2",
        "private_channel_prefixes = [\"private-\"]\nmax_channels_per_subscription = 2",
        &locations,
    ))
    .await;
    let before = scrape(&server).await;

    post(&server, "/secure?id=m", "x", &[]).await;
    post(&server, "/deny-me?id=m", "x", &[]).await;
    post(&server, "/limited?id=m", "x", &[]).await;
    let (status, _, _) = post(&server, "/limited?id=m", "x", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    post(&server, "/pub?id=m", &"b".repeat(2000), &[]).await;
    refused(&server, "/sub/private-x", &[], StatusCode::FORBIDDEN).await;
    refused(&server, "/sub/a/b/c", &[], StatusCode::FORBIDDEN).await;
    refused(&server, "/jwt/m", &[], StatusCode::UNAUTHORIZED).await;
    refused(&server, "/jwt/m?token=x.y.z", &[], StatusCode::UNAUTHORIZED).await;
    let token = hs256(&["other"]);
    refused(
        &server,
        &format!("/jwt/m?token={token}"),
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;
    refused(
        &server,
        "/up/m",
        &[("Cookie", "auth=deny")],
        StatusCode::FORBIDDEN,
    )
    .await;
    // Connections from 127.0.0.2, so that the scrape from 127.0.0.1 still gets in.
    let mut held = Vec::new();
    let mut refused_connections = 0;
    for _ in 0..3 {
        match connect_from("127.0.0.2", server.addr).await {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    if held.len() == 3 {
        let (answer, _) = read_all(&mut held[2], WAIT).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        refused_connections = 1;
    }

    let after = scrape(&server).await;
    let delta = |name: &str, label: &str, value: &str| {
        counter(&after, name, label, value) - counter(&before, name, label, value)
    };
    for reason in [
        "bearer",
        "address",
        "private_channel",
        "token_missing",
        "token_invalid",
        "token_channel",
        "upstream",
    ] {
        assert!(
            delta("herald_auth_refusals_total", "reason", reason) >= 1.0,
            "herald_auth_refusals_total{{reason=\"{reason}\"}} did not grow:\n{after}"
        );
    }
    for limit in [
        "publish_rate_limit",
        "max_body_size",
        "max_channels_per_subscription",
    ] {
        assert!(
            delta("herald_limit_refusals_total", "limit", limit) >= 1.0,
            "herald_limit_refusals_total{{limit=\"{limit}\"}} did not grow:\n{after}"
        );
    }
    if refused_connections > 0 {
        assert!(
            delta(
                "herald_connection_refusals_total",
                "limit",
                "max_connections_per_address"
            ) >= 1.0,
            "herald_connection_refusals_total did not grow:\n{after}"
        );
    }
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn publish_rate_limit_holds_for_websocket_publishes() {
    let locations = location(
        "/ws/",
        "subscriber",
        "mode = \"websocket\"\nwebsocket_allow_publish = true\npublish_rate_limit = \"2/m\"",
    );
    let server = TestServer::start(&config_with_server("", "", &locations)).await;
    let mut ws = ws_connect(&server, "/ws/chatty", &[])
        .await
        .expect("handshake");
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.expect("send");
        assert_eq!(ws::next_text(&mut ws).await, text, "within the budget");
    }
    ws.send(Message::text("three")).await.expect("send");
    let reason = ws::expect_close(&mut ws, CloseCode::Policy).await;
    assert!(
        reason.contains("publish_rate_limit = 2/m"),
        "the close names the limit: {reason:?}"
    );
    let info = server.channel_info("chatty").await.expect("chatty");
    assert_eq!(
        info["published_messages"], 2,
        "the third was not published: {info}"
    );
    server.stop().await;
}
