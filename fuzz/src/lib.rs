//! Shared by the server-level fuzz targets (`http_request`, `recovery_headers`): one Herald server per
//! fuzzing process, on 127.0.0.1 and a free port, run by a background runtime, and `exchange`, which
//! sends raw bytes on a new connection and reads the whole answer (bounded: a server that keeps the
//! connection open 10 s after the client finished is a hang, reported as a crash).
//!
//! Every subscriber location ends its connections after a few milliseconds
//! (`subscriber_connection_ttl`, `longpolling_connection_ttl`) so that every exchange finishes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A JWT secret of the `/jwt/` and `/cookie/` locations.
pub const JWT_SECRET: &str = "fuzzing-secret-0123456789";
/// The bearer token of `/pubauth`.
pub const BEARER: &str = "fuzzing-bearer-0123456789";

/// The fuzzing server's configuration: every kind of location, short lifetimes, small limits.
pub const CONFIG: &str = r#"
[server]
shutdown_timeout = "1s"
header_read_timeout = "2s"
max_body_size = "64k"
send_timeout = "2s"
trusted_proxies = ["127.0.0.1"]
max_connections_per_address = 64

[channels]
message_ttl = "10s"
max_messages_stored_per_channel = 8
channel_inactivity_time = "2s"
private_channel_prefixes = ["private-"]
max_channels_per_subscription = 10
max_number_of_channels = 10000
wildcard_channel_prefix = "bc-"
events_channel_id = "events"

[[location]]
path = "/pub"
match = "exact"
role = "publisher"
admin = true
channels_path = "$arg_id"

[[location]]
path = "/pubauth"
match = "exact"
role = "publisher"
auth_bearer_tokens = ["fuzzing-bearer-0123456789"]
allow_addresses = ["127.0.0.0/8"]
deny_addresses = ["10.66.0.0/16"]
publish_rate_limit = "100000/s"
channels_path = "$arg_id"

[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
header_template = "H"
footer_template = "F"
message_template = "~id~:~channel~:~text~:~time~:~tag~:~event-id~:~event-type~:~size~\n"
padding_by_user_agent = "[Ff]uzz,64,16"
subscriber_connection_ttl = "5ms"
allowed_origins = "$http_origin"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
header_template = "H\nH2"
message_template = '{"t": "~text-json~", "c": "~channel-json~", "e": "~event-id-json~", "y": "~event-type-json~"}'
subscriber_connection_ttl = "5ms"

[[location]]
path = "/lp/"
role = "subscriber"
mode = "long-polling"
longpolling_connection_ttl = "5ms"

[[location]]
path = "/lpb/"
role = "subscriber"
mode = "long-polling"
longpolling_connection_ttl = "5ms"
authorized_channels_only = true
wildcard_channel_max_qtd = 2

[[location]]
path = "/poll/"
role = "subscriber"
mode = "polling"
message_template = "~text~,"

[[location]]
path = "/pollq/"
role = "subscriber"
mode = "polling"
last_received_message_time = "$arg_time"
last_received_message_tag = "$arg_tag"
last_event_id = "$arg_last_event_id"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
websocket_allow_publish = true
subscriber_connection_ttl = "5ms"
header_template = "H"
footer_template = "F"

[[location]]
path = "/jwt/"
role = "subscriber"
mode = "streaming"
jwt_secret = "fuzzing-secret-0123456789"
subscriber_connection_ttl = "5ms"

[[location]]
path = "/cookie/"
role = "subscriber"
mode = "eventsource"
jwt_secret = "fuzzing-secret-0123456789"
token = "$cookie_herald"
subscriber_connection_ttl = "5ms"
allow_connections_to_events_channel = true

[[location]]
path = "/up/"
role = "subscriber"
mode = "polling"
auth_request_url = "http://127.0.0.1:9/authorize"
auth_request_timeout = "200ms"

[[location]]
path = '^/re/(\w+)/(.*)$'
match = "regex"
role = "subscriber"
mode = "streaming"
channels_path = "$1/$2"
subscriber_connection_ttl = "5ms"

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"

[[location]]
path = "/metrics"
match = "exact"
role = "metrics"

[[location]]
path = "/"
role = "static"
"#;

/// The running server's address (started on first use).
pub fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config =
                    herald::Config::from_toml(CONFIG, "fuzz.toml", None).expect("fuzz config");
                let server = herald::Server::bind(&config, Some("127.0.0.1:0".parse().unwrap()))
                    .await
                    .expect("bind");
                tx.send(server.local_addr().expect("address")).unwrap();
                server.run(std::future::pending()).await;
            });
        });
        let addr = rx.recv().expect("server address");
        seed(addr);
        addr
    })
}

/// Stored messages for recovery to find (Event-Ids `e1`…`e5`).
fn seed(addr: SocketAddr) {
    for i in 1..=5 {
        let body = format!("message {i}");
        let request = format!(
            "POST /pub?id=rec/other HTTP/1.1\r\nHost: f\r\nEvent-Id: e{i}\r\nEvent-Type: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange(addr, request.as_bytes(), End::ServerCloses);
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "seed publish failed: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// How the client side of an exchange ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The request carries `Connection: close`: wait for the server to close after answering.
    ServerCloses,
    /// Arbitrary bytes: once the server has been silent for a moment, half-close (the client is done)
    /// and wait for the server to close. hyper closes at once on end-of-input before an answer is
    /// written (`half_close(false)`), so the answer may then be empty.
    HalfCloseWhenIdle,
}

/// Sends `request` on a new connection and reads until the server closes it. Panics (a fuzzing crash)
/// when the server has not closed 10 s after the client was done.
pub fn exchange(addr: SocketAddr, request: &[u8], end: End) -> Vec<u8> {
    let stream = TcpStream::connect(addr).expect("connect to the fuzzing server");
    // No TIME_WAIT on close: tens of thousands of connections per run would exhaust ports.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    stream
        .set_read_timeout(Some(Duration::from_millis(25)))
        .expect("read timeout");
    let mut stream = stream;
    let _ = stream.write_all(request);
    let mut half_closed = false;
    let mut deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if end == End::HalfCloseWhenIdle && !half_closed {
                    let _ = stream.shutdown(Shutdown::Write);
                    half_closed = true;
                    deadline = Instant::now() + Duration::from_secs(10);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reset by the server after an error: the exchange is over.
            Err(_) => return answer,
        }
        if Instant::now() > deadline {
            panic!(
                "server kept the connection open 10s after the client was done; request {:?}, answer so far {:?}",
                String::from_utf8_lossy(request),
                String::from_utf8_lossy(&answer[..answer.len().min(2000)])
            );
        }
    }
}

/// The status code of the first response in `answer`, if it starts with one.
pub fn status(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.1 ")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}
