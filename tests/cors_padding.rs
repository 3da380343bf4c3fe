//! CORS headers (`allowed_origins`) on publisher and subscriber locations, normal answers and
//! OPTIONS preflights; and padding by user agent (`padding_by_user_agent`) on streaming (line breaks)
//! and EventSource (an SSE comment) locations.

mod common;

use common::{config, header, sse, streaming_location, TestServer, WAIT};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

const ALLOW_ORIGIN: &str = "Access-Control-Allow-Origin";
const ALLOW_METHODS: &str = "Access-Control-Allow-Methods";
const ALLOW_HEADERS: &str = "Access-Control-Allow-Headers";
const ORIGIN: &str = "https://app.example.com";

fn cors_config() -> String {
    let locations = format!(
        r#"
[[location]]
path = "/pub-admin"
match = "exact"
role = "publisher"
admin = true
channels_path = "$arg_id"
allowed_origins = "*"

[[location]]
path = "/pub-user"
match = "exact"
role = "publisher"
channels_path = "$arg_id"
allowed_origins = "*"

[[location]]
path = "/pub-echo"
match = "exact"
role = "publisher"
channels_path = "$arg_id"
allowed_origins = "$http_origin"

[[location]]
path = "/poll/"
role = "subscriber"
mode = "polling"
allowed_origins = "*"

{star}
{echo}
{plain}
"#,
        star = streaming_location("/sub/", "~text~\n", "allowed_origins = \"*\""),
        echo = streaming_location(
            "/sub-echo/",
            "~text~\n",
            "allowed_origins = \"$http_origin\""
        ),
        plain = streaming_location("/plain/", "~text~\n", ""),
    );
    config("", &locations)
}

/// Asserts the CORS headers: `origin`, `methods`, and the request headers browsers need allowed.
fn assert_cors(headers: &HeaderMap, origin: &str, methods: &str, what: &str) {
    assert_eq!(header(headers, ALLOW_ORIGIN), origin, "{what}: {headers:?}");
    assert_eq!(
        header(headers, ALLOW_METHODS),
        methods,
        "{what}: {headers:?}"
    );
    let allowed = header(headers, ALLOW_HEADERS).to_ascii_lowercase();
    for needed in [
        "if-modified-since",
        "if-none-match",
        "event-id",
        "event-type",
        "idempotency-key",
    ] {
        assert!(
            allowed.split(',').any(|h| h.trim() == needed),
            "{what}: {ALLOW_HEADERS} lacks {needed}: {headers:?}"
        );
    }
    let exposed = header(headers, "Access-Control-Expose-Headers").to_ascii_lowercase();
    for needed in ["etag", "last-modified", "idempotent-replayed"] {
        assert!(
            exposed.split(',').any(|h| h.trim() == needed),
            "{what}: Access-Control-Expose-Headers lacks {needed}: {headers:?}"
        );
    }
}

fn assert_no_cors(headers: &HeaderMap, what: &str) {
    for name in [ALLOW_ORIGIN, ALLOW_METHODS, ALLOW_HEADERS] {
        assert!(
            headers.get(name).is_none(),
            "{what}: unexpected {name}: {headers:?}"
        );
    }
}

async fn preflight(
    server: &TestServer,
    path: &str,
    method: &str,
) -> (StatusCode, HeaderMap, String) {
    server
        .request(
            Method::OPTIONS,
            path,
            "",
            &[
                ("Origin", ORIGIN),
                ("Access-Control-Request-Method", method),
                (
                    "Access-Control-Request-Headers",
                    "If-Modified-Since, Event-Id",
                ),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_locations_send_cors_headers_on_answers_and_preflights() {
    let server = TestServer::start(&cors_config()).await;
    let origin = [("Origin", ORIGIN)];

    let (status, headers, body) = server
        .request(Method::POST, "/pub-admin?id=news", "hello", &origin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_cors(&headers, "*", "GET, POST, PUT, DELETE", "admin publish");
    let (status, headers, body) = server.get_with("/pub-admin?id=news", &origin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_cors(
        &headers,
        "*",
        "GET, POST, PUT, DELETE",
        "admin channel info",
    );
    // Error answers carry them too, so that browsers can read them.
    let (status, headers, body) = server.get_with("/pub-admin?id=missing", &origin).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_cors(&headers, "*", "GET, POST, PUT, DELETE", "admin 404");

    let (status, headers, body) = server
        .request(Method::POST, "/pub-user?id=news", "hello", &origin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_cors(&headers, "*", "GET, POST, PUT", "publish");

    for (path, methods) in [
        ("/pub-admin?id=news", "GET, POST, PUT, DELETE"),
        ("/pub-user?id=news", "GET, POST, PUT"),
    ] {
        let (status, headers, body) = preflight(&server, path, "POST").await;
        assert_eq!(
            status,
            StatusCode::OK,
            "preflight {path}: {headers:?} {body:?}"
        );
        assert_eq!(body, "", "preflight {path}");
        assert_cors(&headers, "*", methods, &format!("preflight {path}"));
    }
    let (_, headers, body) = preflight(&server, "/pub-admin?id=news", "DELETE").await;
    assert_eq!(body, "");
    assert_cors(&headers, "*", "GET, POST, PUT, DELETE", "DELETE preflight");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_locations_send_cors_headers_with_get_only() {
    let server = TestServer::start(&cors_config()).await;
    let mut sub = server
        .subscribe_with("/sub/news", &[("Origin", ORIGIN)])
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    assert_cors(&sub.headers, "*", "GET", "streaming subscriber");
    server.wait_for_subscribers("news", 1).await;
    server.publish_ok("news", "hi").await;
    assert_eq!(sub.read_until("hi\n", WAIT).await, "hi\n");

    let (status, headers, body) = preflight(&server, "/sub/news", "GET").await;
    assert_eq!(status, StatusCode::OK, "{headers:?} {body:?}");
    assert_eq!(body, "");
    assert_cors(&headers, "*", "GET", "subscriber preflight");

    // A polling 304 has them as well.
    let (status, headers, _) = server.get_with("/poll/news", &[("Origin", ORIGIN)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_cors(&headers, "*", "GET", "polling 304");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_origin_expression_echoes_the_request_origin() {
    let server = TestServer::start(&cors_config()).await;
    let other = "http://localhost:3000";
    for origin in [ORIGIN, other] {
        let (status, headers, body) = server
            .request(
                Method::POST,
                "/pub-echo?id=news",
                "hello",
                &[("Origin", origin)],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_cors(&headers, origin, "GET, POST, PUT", "echo publisher");

        let sub = server
            .subscribe_with("/sub-echo/news", &[("Origin", origin)])
            .await;
        assert_eq!(sub.status, StatusCode::OK);
        assert_cors(&sub.headers, origin, "GET", "echo subscriber");
    }
    let (_, headers, body) = server
        .request(
            Method::OPTIONS,
            "/pub-echo?id=news",
            "",
            &[("Origin", other)],
        )
        .await;
    assert_eq!(body, "");
    assert_cors(&headers, other, "GET, POST, PUT", "echo preflight");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cors_headers_without_allowed_origins() {
    let server = TestServer::start(&cors_config()).await;
    let origin = [("Origin", ORIGIN)];
    let (status, headers, body) = server
        .request(Method::POST, "/pub?id=news", "hello", &origin)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_cors(&headers, "publish on /pub");
    let (status, headers, _) = server
        .request(Method::OPTIONS, "/pub?id=news", "", &origin)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_no_cors(&headers, "OPTIONS on /pub");
    let sub = server.subscribe_with("/plain/news", &origin).await;
    assert_eq!(sub.status, StatusCode::OK);
    assert_no_cors(&sub.headers, "subscriber on /plain/");
    server.stop().await;
}

const MOZILLA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
const CURL: &str = "curl/8.5.0";

fn padding_config() -> String {
    let locations = format!(
        r#"
{pad}
{pad_ua}

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
padding_by_user_agent = "Mozilla,1024,512"
"#,
        pad = streaming_location(
            "/pad/",
            "~text~\n",
            "header_template = \"HEAD\\n\"\npadding_by_user_agent = \"MSIE [6-8],2048,1024:Mozilla,1024,512\"",
        ),
        pad_ua = streaming_location(
            "/pad-ua/",
            "~text~\n",
            "header_template = \"HEAD\\n\"\npadding_by_user_agent = \"Mozilla,1024,512\"\nuser_agent = \"$arg_ua\"",
        ),
    );
    config("", &locations)
}

/// Subscribes to `path` (following only `channel`) as `agent`, publishes one, two, three to
/// `channel` and returns everything received up to the end of "three\n".
async fn streaming_capture(server: &TestServer, path: &str, channel: &str, agent: &str) -> String {
    let mut sub = server.subscribe_with(path, &[("User-Agent", agent)]).await;
    assert_eq!(sub.status, StatusCode::OK, "{path}");
    server.wait_for_subscribers(channel, 1).await;
    for text in ["one", "two", "three"] {
        server.publish_ok(channel, text).await;
    }
    sub.read_until("three\n", WAIT).await;
    sub.received()
}

/// Splits a padded streaming capture into header and message chunks (each chunk runs up to the next
/// message) and checks that every chunk is its text followed by line breaks only.
fn padded_chunks(received: &str) -> Vec<String> {
    let at = |needle: &str| {
        received
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {received:?}"))
    };
    let (one, two, three) = (at("one\n"), at("two\n"), at("three\n"));
    let chunks = [
        (&received[..one], "HEAD\n"),
        (&received[one..two], "one\n"),
        (&received[two..three], "two\n"),
    ];
    for (chunk, text) in chunks {
        let padding = chunk
            .strip_prefix(text)
            .unwrap_or_else(|| panic!("chunk {chunk:?} does not start with {text:?}"));
        assert!(
            padding.chars().all(|c| c == '\r' || c == '\n'),
            "padding of {text:?} is not line breaks: {padding:?}"
        );
    }
    chunks.iter().map(|(c, _)| c.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_user_agents_get_padded_header_and_messages_on_streaming() {
    let server = TestServer::start(&padding_config()).await;
    let received = streaming_capture(&server, "/pad/news", "news", MOZILLA).await;
    let chunks = padded_chunks(&received);
    assert!(
        chunks[0].len() >= 1024,
        "header chunk is {} bytes: {:?}",
        chunks[0].len(),
        chunks[0]
    );
    for chunk in &chunks[1..] {
        assert!(
            chunk.len() >= 512,
            "message chunk is {} bytes: {chunk:?}",
            chunk.len()
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_padding_rule_wins() {
    let server = TestServer::start(&padding_config()).await;
    let msie = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 6.0)";
    let received = streaming_capture(&server, "/pad/news", "news", msie).await;
    let chunks = padded_chunks(&received);
    assert!(
        chunks[0].len() >= 2048,
        "header chunk {} bytes",
        chunks[0].len()
    );
    assert!(
        chunks[1].len() >= 1024,
        "message chunk {} bytes",
        chunks[1].len()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_user_agents_get_no_padding() {
    let server = TestServer::start(&padding_config()).await;
    let received = streaming_capture(&server, "/pad/news", "news", CURL).await;
    assert_eq!(received, "HEAD\none\ntwo\nthree\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agent_expression_chooses_what_padding_matches() {
    let server = TestServer::start(&padding_config()).await;
    // The location reads the agent from ?ua=, not from the header.
    let received = streaming_capture(&server, "/pad-ua/a?ua=Mozilla", "a", CURL).await;
    let chunks = padded_chunks(&received);
    assert!(
        chunks[0].len() >= 1024,
        "header chunk {} bytes",
        chunks[0].len()
    );
    assert!(
        chunks[1].len() >= 512,
        "message chunk {} bytes",
        chunks[1].len()
    );
    let received = streaming_capture(&server, "/pad-ua/b", "b", MOZILLA).await;
    assert_eq!(received, "HEAD\none\ntwo\nthree\n");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventsource_padding_is_an_sse_comment() {
    let server = TestServer::start(&padding_config()).await;
    let mut sub = server
        .subscribe_with("/ev/news", &[("User-Agent", MOZILLA)])
        .await;
    assert_eq!(sub.status, StatusCode::OK);
    server.wait_for_subscribers("news", 1).await;
    for text in ["one", "two", "three"] {
        server.publish_ok("news", text).await;
    }
    sub.read_until("data: three\n\n", WAIT).await;
    let received = sub.received();
    let data: Vec<String> = sse::events(&received)
        .into_iter()
        .map(|event| event.data)
        .collect();
    assert_eq!(data, ["one", "two", "three"], "{received:?}");
    // Data lines are unchanged: the padding only adds comment and blank lines.
    let data_lines: Vec<&str> = received
        .split('\n')
        .filter(|l| !l.is_empty() && !l.starts_with(':'))
        .collect();
    assert_eq!(data_lines, ["data: one", "data: two", "data: three"]);
    let at = |needle: &str| {
        received
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {received:?}"))
    };
    let (one, two, three) = (at("data: one\n"), at("data: two\n"), at("data: three\n"));
    assert!(
        one >= 1024,
        "header chunk is {one} bytes: {:?}",
        &received[..one]
    );
    assert!(two - one >= 512, "message chunk is {} bytes", two - one);
    assert!(three - two >= 512, "message chunk is {} bytes", three - two);
    assert!(
        received[..one].contains("\n:") || received.starts_with(':'),
        "{received:?}"
    );

    // Without a matching agent: no padding comments beyond the opening one.
    let mut plain = server
        .subscribe_with("/ev/news", &[("User-Agent", CURL)])
        .await;
    server.wait_for_subscribers("news", 2).await;
    server.publish_ok("news", "four").await;
    let text = plain.read_until("data: four\n\n", WAIT).await;
    assert_eq!(text, ": \n\ndata: four\n\n");
    server.stop().await;
}
