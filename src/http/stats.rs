//! The channels-statistics location and the channel-info documents it shares with publishers:
//! summary, one channel, a group (`ALL`, `prefix*`, several ids), rendered as JSON (the module's
//! spacing), pretty JSON, plain text, YAML or XML, chosen by `Accept` or a `format` query argument.

use super::channels_path::{split_channels, RequestVars};
use super::error::HttpError;
use super::response::base_response;
use super::response::{Body, Finish};
use super::AppState;
use crate::broker::ChannelInfo;
use hyper::{header, HeaderMap, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::io;

/// Output format of info documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfoFormat {
    /// `application/json` (default), module spacing.
    Json,
    /// Indented JSON (`?format=pretty`).
    PrettyJson,
    /// `text/plain`.
    Plain,
    /// `application/yaml`.
    Yaml,
    /// `application/xml`.
    Xml,
}

impl InfoFormat {
    /// Picks the format: `format` query argument first, then `Accept`, else JSON.
    pub fn negotiate(headers: &HeaderMap, query: &str) -> InfoFormat {
        let arg = super::channels_path::query_arg(query, "format").map(|v| v.to_ascii_lowercase());
        match arg.as_deref() {
            Some("json") => return InfoFormat::Json,
            Some("pretty") | Some("prettyjson") => return InfoFormat::PrettyJson,
            Some("text") | Some("plain") => return InfoFormat::Plain,
            Some("yaml") => return InfoFormat::Yaml,
            Some("xml") => return InfoFormat::Xml,
            _ => {}
        }
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        for kind in accept
            .split(',')
            .map(|k| k.split(';').next().unwrap_or("").trim())
        {
            match kind {
                "application/json" | "text/x-json" => return InfoFormat::Json,
                "text/plain" => return InfoFormat::Plain,
                "application/yaml" | "text/x-yaml" => return InfoFormat::Yaml,
                "application/xml" | "text/xml" => return InfoFormat::Xml,
                _ => {}
            }
        }
        InfoFormat::Json
    }

    fn content_type(self) -> &'static str {
        match self {
            InfoFormat::Json | InfoFormat::PrettyJson => "application/json",
            InfoFormat::Plain => "text/plain; charset=utf-8",
            InfoFormat::Yaml => "application/yaml",
            InfoFormat::Xml => "application/xml",
        }
    }
}

/// A channel's info as a document.
pub fn channel_info_doc(info: &ChannelInfo) -> Value {
    json!({
        "channel": info.channel.as_str(),
        "published_messages": info.published_messages,
        "stored_messages": info.stored_messages,
        "subscribers": info.subscribers,
    })
}

/// A channel's info as a 200 response: written directly in the module's JSON spacing (the publish
/// path answers this on every publish), through the document renderer for other formats.
pub fn channel_info_response(info: &ChannelInfo, format: InfoFormat) -> Response<Body> {
    if format != InfoFormat::Json {
        return doc_response(&channel_info_doc(info), format);
    }
    let body = format!(
        "{{\"channel\": {}, \"published_messages\": {}, \"stored_messages\": {}, \"subscribers\": {}}}\r\n",
        Value::String(info.channel.as_str().to_string()),
        info.published_messages,
        info.stored_messages,
        info.subscribers
    );
    base_response(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type())
        .finish(Body::from(body))
}

/// The group document: header fields and `infos`.
pub fn group_doc(state: &AppState, infos: &[ChannelInfo], totals: (u64, u64, u64)) -> Value {
    let (channels, wildcard_channels, uptime) = totals;
    json!({
        "hostname": state.hostname,
        "time": local_time(),
        "channels": channels,
        "wildcard_channels": wildcard_channels,
        "uptime": uptime,
        "infos": infos.iter().map(channel_info_doc).collect::<Vec<_>>(),
    })
}

async fn summary_doc(state: &AppState) -> Result<Value, HttpError> {
    let (s, workers) = state.engine.summary().await?;
    let by_worker: Vec<Value> = workers
        .iter()
        .map(|w| match &w.node {
            Some(node) => json!({
                "pid": w.pid,
                "node": node,
                "subscribers": w.subscribers,
                "uptime": w.uptime,
            }),
            None => json!({
                "pid": w.pid,
                "subscribers": w.subscribers,
                "uptime": w.uptime,
            }),
        })
        .collect();
    Ok(json!({
        "hostname": state.hostname,
        "time": local_time(),
        "channels": s.channels,
        "wildcard_channels": s.wildcard_channels,
        "published_messages": s.published_messages,
        "stored_messages": s.stored_messages,
        "messages_in_trash": s.messages_in_trash,
        "channels_in_delete": 0,
        "channels_in_trash": s.channels_in_trash,
        "subscribers": s.subscribers,
        "uptime": s.uptime,
        "by_worker": by_worker,
    }))
}

fn local_time() -> String {
    chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Renders a document as a 200 response in `format`.
pub fn doc_response(doc: &Value, format: InfoFormat) -> Response<Body> {
    let body = match format {
        InfoFormat::Json => module_json(doc) + "\r\n",
        InfoFormat::PrettyJson => serde_json::to_string_pretty(doc).unwrap_or_default() + "\n",
        InfoFormat::Plain => {
            let mut out = String::new();
            write_lines(doc, 0, &mut out, false);
            out
        }
        InfoFormat::Yaml => {
            let mut out = String::new();
            write_lines(doc, 0, &mut out, true);
            out
        }
        InfoFormat::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<root>\r\n");
            write_xml(doc, 1, &mut out);
            out.push_str("</root>\r\n");
            out
        }
    };
    base_response(StatusCode::OK)
        .header(header::CONTENT_TYPE, format.content_type())
        .finish(Body::from(body))
}

/// JSON with the module's `": "` and `", "` spacing.
fn module_json(doc: &Value) -> String {
    struct ModuleFormatter;
    fn separator<W: ?Sized + io::Write>(w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    impl serde_json::ser::Formatter for ModuleFormatter {
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            separator(w, first)
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            separator(w, first)
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, ModuleFormatter);
    if serde::Serialize::serialize(doc, &mut ser).is_err() {
        return "{}".into();
    }
    String::from_utf8(out).unwrap_or_default()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `key: value` lines (CRLF), lists as indented `-` items; YAML quoting of strings when `yaml`.
fn write_lines(doc: &Value, indent: usize, out: &mut String, yaml: bool) {
    let Some(map) = doc.as_object() else { return };
    let pad = " ".repeat(indent);
    for (key, value) in map {
        match value {
            Value::Array(items) => {
                out.push_str(&format!("{pad}{key}:\r\n"));
                for item in items {
                    out.push_str(&format!("{pad}  -\r\n"));
                    write_lines(item, indent + 4, out, yaml);
                }
            }
            Value::String(s) if yaml => {
                out.push_str(&format!("{pad}{key}: {}\r\n", Value::String(s.clone())))
            }
            other => out.push_str(&format!("{pad}{key}: {}\r\n", scalar(other))),
        }
    }
}

fn write_xml(doc: &Value, indent: usize, out: &mut String) {
    let Some(map) = doc.as_object() else { return };
    let pad = "  ".repeat(indent);
    for (key, value) in map {
        match value {
            Value::Array(items) => {
                out.push_str(&format!("{pad}<{key}>\r\n"));
                let item_tag = if key == "infos" { "channel" } else { "worker" };
                for item in items {
                    out.push_str(&format!("{pad}  <{item_tag}>\r\n"));
                    write_xml(item, indent + 2, out);
                    out.push_str(&format!("{pad}  </{item_tag}>\r\n"));
                }
                out.push_str(&format!("{pad}</{key}>\r\n"));
            }
            other => out.push_str(&format!(
                "{pad}<{key}>{}</{key}>\r\n",
                xml_escape(&scalar(other))
            )),
        }
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Answers channel info for `ids`: one existing channel → its info, several → the group document,
/// none → 404.
pub async fn infos_response(
    state: &AppState,
    ids: &[&str],
    format: InfoFormat,
) -> Result<Response<Body>, HttpError> {
    let mut infos: Vec<ChannelInfo> = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(info) = state.engine.channel_info(id).await? {
            infos.push(info);
        }
    }
    match infos.len() {
        0 => Err(HttpError::new(StatusCode::NOT_FOUND, "Channel not found.")),
        1 => Ok(channel_info_response(&infos[0], format)),
        _ => Ok(doc_response(
            &group_doc(state, &infos, fresh_totals(state).await?),
            format,
        )),
    }
}

/// (channels, wildcard channels, uptime) as the statistics summary gives them now.
async fn fresh_totals(state: &AppState) -> Result<(u64, u64, u64), HttpError> {
    let (summary, _) = state.engine.summary().await?;
    Ok((summary.channels, summary.wildcard_channels, summary.uptime))
}

/// The statistics location.
pub async fn handle(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    vars: &RequestVars<'_>,
    channels_path: &str,
) -> Result<Response<Body>, HttpError> {
    if method != Method::GET {
        return Err(HttpError::method_not_allowed("GET"));
    }
    let format = InfoFormat::negotiate(headers, vars.query);
    let ids = split_channels(channels_path);
    if ids.is_empty() {
        return Ok(doc_response(&summary_doc(state).await?, format));
    }
    if let Some(pattern) = ids.iter().find(|id| **id == "ALL" || id.contains('*')) {
        let prefix = if *pattern == "ALL" {
            ""
        } else {
            pattern.split('*').next().unwrap_or("")
        };
        let infos = state.engine.channels_with_prefix(prefix).await?;
        let totals = fresh_totals(state).await?;
        return Ok(doc_response(&group_doc(state, &infos, totals), format));
    }
    for id in &ids {
        state.routes().rules.check_shape(id)?;
    }
    infos_response(state, &ids, format).await
}
