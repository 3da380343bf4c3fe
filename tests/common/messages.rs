//! What subscribers and the statistics location send, parsed: `eN|mN|time|tag` lines (the recovery
//! tests' template), events-channel JSON events, JSON lines and JSONP answers, statistics `infos`.
//! Also publishing such numbered messages, and refusals with their explanation.

#![allow(dead_code)]

use super::http::Http;
use super::{header, parse_json, Subscriber, EXPLAIN};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// Publishes `m{n}` with Event-Id `e{n}` to `channel`, asserting 200.
pub async fn publish_event(server: &Http, channel: &str, n: usize) {
    let (status, _, body) = server
        .publish(channel, &format!("m{n}"), &[("Event-Id", &format!("e{n}"))])
        .await;
    assert_eq!(status, StatusCode::OK, "publish m{n} to {channel}: {body}");
}

/// One message formatted with the template `~event-id~|~text~|~time~|~tag~`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    /// The message number (its text is `m{n}`, its Event-Id `e{n}`).
    pub n: usize,
    pub event_id: String,
    pub time: String,
    pub tag: String,
}

impl Rec {
    /// The message's (time, tag) as recovery headers.
    pub fn time_tag(&self) -> [(&str, &str); 2] {
        [
            ("If-Modified-Since", self.time.as_str()),
            ("If-None-Match", self.tag.as_str()),
        ]
    }
}

/// Parses one formatted message `eN|mN|time|tag` (a trailing line break is ignored).
pub fn parse_rec(line: &str) -> Rec {
    let line = line.trim_end_matches('\n');
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields.len(), 4, "not a formatted message: {line:?}");
    let n: usize = fields[1]
        .strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad text in {line:?}"));
    assert_eq!(
        fields[0],
        format!("e{n}"),
        "event id and text disagree: {line:?}"
    );
    assert!(
        httpdate::parse_http_date(fields[2]).is_ok(),
        "bad ~time~ in {line:?}"
    );
    assert!(fields[3].parse::<u64>().is_ok(), "bad ~tag~ in {line:?}");
    Rec {
        n,
        event_id: fields[0].to_string(),
        time: fields[2].to_string(),
        tag: fields[3].to_string(),
    }
}

/// The numbers of the messages.
pub fn numbers(seen: &[Rec]) -> Vec<usize> {
    seen.iter().map(|s| s.n).collect()
}

/// An events-channel event as the server formats it.
pub fn event(kind: &str, channel: &str) -> String {
    format!("{{\"type\": \"{kind}\", \"channel\": \"{channel}\"}}")
}

/// Reads the next event line, checks it is valid JSON of the documented shape `{type, channel}`,
/// returns it without its line break.
pub async fn next_event(sub: &mut Subscriber, wait: Duration) -> String {
    let line = sub.read_until("\n", wait).await;
    let line = line.trim_end_matches('\n').to_string();
    let doc = parse_json(&line);
    assert!(
        doc["type"].is_string()
            && doc["channel"].is_string()
            && doc.as_object().unwrap().len() == 2,
        "event is not {{type, channel}}: {line}"
    );
    line
}

/// The JSON lines of a body (blank lines skipped).
pub fn json_lines(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_json)
        .collect()
}

/// Strips `{callback}(` and `);\r\n` off a JSONP body and parses the array.
pub fn jsonp_array(body: &str, callback: &str) -> Vec<Value> {
    assert!(body.ends_with("]);\r\n"), "JSONP body {body:?}");
    let inner = body
        .strip_prefix(&format!("{callback}("))
        .and_then(|b| b.strip_suffix(");\r\n"))
        .unwrap_or_else(|| panic!("JSONP body {body:?} is not {callback}(...);"));
    match serde_json::from_str::<Value>(inner) {
        Ok(Value::Array(items)) => items,
        other => panic!("JSONP payload is not a JSON array ({other:?}): {body:?}"),
    }
}

/// The `infos` of a group document as (channel, published_messages, stored_messages, subscribers).
pub fn channel_infos(doc: &Value) -> Vec<(String, u64, u64, u64)> {
    doc["infos"]
        .as_array()
        .unwrap_or_else(|| panic!("no infos in {doc}"))
        .iter()
        .map(|i| {
            (
                i["channel"].as_str().unwrap().to_string(),
                i["published_messages"].as_u64().unwrap(),
                i["stored_messages"].as_u64().unwrap(),
                i["subscribers"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The channel ids of a group document's `infos`.
pub fn channel_names(doc: &Value) -> Vec<String> {
    doc["infos"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .iter()
        .map(|i| i["channel"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts a refusal: `status`, a body and an explain header both starting with `explain`.
pub fn assert_refused(
    what: &str,
    got: (StatusCode, HeaderMap, String),
    status: StatusCode,
    explain: &str,
) {
    let (header_text, body) = refusal(what, got, status);
    assert!(body.starts_with(explain), "{what}: body {body:?}");
    assert!(
        header_text.starts_with(explain),
        "{what}: {EXPLAIN} {header_text:?}"
    );
}

/// Asserts a refusal: `status`, the body exactly `explain` + "\n" and the explain header exactly
/// `explain`.
pub fn assert_refused_exactly(
    what: &str,
    got: (StatusCode, HeaderMap, String),
    status: StatusCode,
    explain: &str,
) {
    let (header_text, body) = refusal(what, got, status);
    assert_eq!(body, format!("{explain}\n"), "{what}: body");
    assert_eq!(header_text, explain, "{what}: {EXPLAIN}");
}

/// Asserts the status of an answer; returns its explain header and body.
fn refusal(
    what: &str,
    (got_status, headers, body): (StatusCode, HeaderMap, String),
    status: StatusCode,
) -> (String, String) {
    assert_eq!(got_status, status, "{what}: body {body:?}");
    (header(&headers, EXPLAIN), body)
}
