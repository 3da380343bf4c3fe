//! Recovery headers through the public server (the parsers, `parse_tag` and `parse_time` in
//! `src/http/subscriber.rs`, are private): `If-Modified-Since`, `If-None-Match` and `Last-Event-ID`
//! built from the fuzzed fields are sent to every subscriber mode of an in-process server (streaming,
//! EventSource, long-polling, polling, WebSocket handshake) on a channel holding stored messages with
//! Event-Ids `e1`…`e5`, and as `$arg_time` / `$arg_tag` / `$arg_last_event_id` query arguments to a
//! polling location that reads them from there. Herald must answer a normal status (200, 101, 304, or
//! 400 for a header HTTP does not allow), never panic or hang.
//!
//! Input: newline-separated `If-Modified-Since \n If-None-Match \n Last-Event-ID \n selector…`; the
//! first byte of the selector picks the location (and whether `Last-Event-ID` is sent at all).

#![no_main]

use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &[
    "/poll/rec",
    "/lp/rec",
    "/ev/rec",
    "/sub/rec/other",
    "/ws/rec",
    "/pollq/rec",
    "/poll/rec.b2/other",
];

/// A header value on one line (HTTP would end the header at CR or LF).
fn one_line(field: &[u8]) -> Vec<u8> {
    field
        .iter()
        .map(|b| {
            if matches!(*b, b'\r' | b'\n') {
                b' '
            } else {
                *b
            }
        })
        .collect()
}

fn percent_encode(field: &[u8]) -> String {
    field.iter().map(|b| format!("%{b:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.splitn(4, |b| *b == b'\n').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(&[]);
    let selector = field(3).first().copied().unwrap_or(0);
    let path = PATHS[usize::from(selector) % PATHS.len()];
    let send_event_id = selector & 0x80 != 0;
    let addr = herald_fuzz::server();

    let mut request = Vec::new();
    if path == "/pollq/rec" {
        request.extend_from_slice(
            format!(
                "GET {path}?time={}&tag={}&last_event_id={} HTTP/1.1\r\n",
                percent_encode(field(0)),
                percent_encode(field(1)),
                if send_event_id {
                    percent_encode(field(2))
                } else {
                    String::new()
                }
            )
            .as_bytes(),
        );
    } else {
        request.extend_from_slice(format!("GET {path} HTTP/1.1\r\n").as_bytes());
        for (name, value) in [("If-Modified-Since", field(0)), ("If-None-Match", field(1))] {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(&one_line(value));
            request.extend_from_slice(b"\r\n");
        }
        if send_event_id {
            request.extend_from_slice(b"Last-Event-ID: ");
            request.extend_from_slice(&one_line(field(2)));
            request.extend_from_slice(b"\r\n");
        }
    }
    if path == "/ws/rec" {
        request.extend_from_slice(
            b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
    }
    request.extend_from_slice(b"Host: fuzz\r\nConnection: close\r\n\r\n");

    let answer = herald_fuzz::exchange(
        addr,
        &request,
        if path == "/ws/rec" {
            // After its close frame the server waits for the client's; going away ends it at once.
            herald_fuzz::End::HalfCloseWhenIdle
        } else {
            herald_fuzz::End::ServerCloses
        },
    );
    let status = herald_fuzz::status(&answer);
    assert!(
        matches!(status, Some(200 | 101 | 304 | 400)),
        "unexpected answer to {:?}: {:?}",
        String::from_utf8_lossy(&request),
        String::from_utf8_lossy(&answer[..answer.len().min(500)])
    );
});
