//! Targets and connections: URL templates (`http://127.0.0.1:8080/ev/{ch}`), transports, channel
//! names, and TCP connects from a chosen loopback source address.
//!
//! Every target must be on the loopback network 127.0.0.0/8 (or `localhost`): the tool refuses to
//! send load anywhere else. Past `per_source` connections, subscribers connect from 127.0.0.2,
//! 127.0.0.3 … (bound before connect with `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the port
//! at connect time per destination), which lifts the ~28k ephemeral-port limit of one address.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use tokio::net::{TcpSocket, TcpStream};

/// How a subscriber receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// EventSource (`text/event-stream`).
    Sse,
    /// Chunked (or raw) HTTP streaming.
    Streaming,
    /// WebSocket text frames.
    Websocket,
    /// Long-polling chained with `If-Modified-Since` / `If-None-Match`.
    LongPolling,
}

impl Transport {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Streaming => "streaming",
            Transport::Websocket => "websocket",
            Transport::LongPolling => "long-polling",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sse" | "eventsource" | "ev" => Ok(Transport::Sse),
            "streaming" | "stream" | "sub" => Ok(Transport::Streaming),
            "websocket" | "ws" => Ok(Transport::Websocket),
            "long-polling" | "longpolling" | "lp" => Ok(Transport::LongPolling),
            other => Err(format!(
                "unknown transport {other:?} (sse, streaming, websocket, long-polling)"
            )),
        }
    }
}

/// A URL with a `{ch}` placeholder, on a loopback address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlTemplate {
    /// The template as given.
    pub raw: String,
    /// `ws://` scheme.
    pub websocket_scheme: bool,
    /// Value of the `Host` header.
    pub host: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Path and query with `{ch}`.
    pub path: String,
}

impl UrlTemplate {
    /// Parses `http://HOST[:PORT]/path…` or `ws://…`; HOST must be `localhost` or in 127.0.0.0/8.
    pub fn parse(raw: &str) -> Result<UrlTemplate, String> {
        let (websocket_scheme, rest, default_port) = if let Some(rest) = raw.strip_prefix("http://")
        {
            (false, rest, 80)
        } else if let Some(rest) = raw.strip_prefix("ws://") {
            (true, rest, 80)
        } else {
            return Err(format!(
                "{raw:?}: only http:// and ws:// URLs are supported (no TLS)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("{raw:?}: bad port {port:?}"))?,
            ),
            None => (authority, default_port),
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse::<Ipv4Addr>().map_err(|_| {
                format!("{raw:?}: the host must be localhost or an IPv4 address in 127.0.0.0/8")
            })?
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{raw:?}: refusing a target outside 127.0.0.0/8 (load goes to this machine only)"
            ));
        }
        Ok(UrlTemplate {
            raw: raw.to_string(),
            websocket_scheme,
            host: authority.to_string(),
            addr: SocketAddr::V4(SocketAddrV4::new(ip, port)),
            path: path.to_string(),
        })
    }

    /// The path for `channel` (every `{ch}` replaced).
    pub fn path_for(&self, channel: &str) -> String {
        self.path.replace("{ch}", channel)
    }
}

/// A subscriber target: transport, URL template and the server node it connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubTarget {
    /// The transport.
    pub transport: Transport,
    /// The URL template.
    pub url: UrlTemplate,
    /// Index of the server node (see [`assign_nodes`]); 0 with a single server.
    #[serde(default)]
    pub node: usize,
}

/// Splits an optional `TRANSPORT=` prefix off a subscriber template.
pub fn split_transport(raw: &str) -> (Option<&str>, &str) {
    match raw.split_once('=') {
        Some((prefix, rest)) if !prefix.contains('/') && !prefix.contains(':') => {
            (Some(prefix), rest)
        }
        _ => (None, raw),
    }
}

impl SubTarget {
    /// Parses `[TRANSPORT=]URL`; without a prefix the transport is `default`, or WebSocket for
    /// `ws://` URLs.
    pub fn parse(raw: &str, default: Transport) -> Result<SubTarget, String> {
        let (transport, url) = split_transport(raw);
        let transport = transport.map(str::parse::<Transport>).transpose()?;
        let url = UrlTemplate::parse(url)?;
        let transport = transport.unwrap_or(if url.websocket_scheme {
            Transport::Websocket
        } else {
            default
        });
        Ok(SubTarget {
            transport,
            url,
            node: 0,
        })
    }
}

/// A server node given with `--nodes`: its base URL (`http://127.0.0.1:18101`, no path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `http://HOST:PORT`.
    pub base: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Node {
    /// Parses `http://HOST:PORT`, `HOST:PORT` or `http://HOST:PORT/` (loopback only, no path).
    pub fn parse(raw: &str) -> Result<Node, String> {
        let raw = raw.trim().trim_end_matches('/');
        let url = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let parsed = UrlTemplate::parse(&url)?;
        if parsed.websocket_scheme || parsed.path != "/" {
            return Err(format!(
                "--nodes {raw:?}: give a base URL http://HOST:PORT without a path"
            ));
        }
        Ok(Node {
            base: format!("http://{}", parsed.host),
            addr: parsed.addr,
        })
    }

    /// This node's URL for `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// Whether a template is a path to be joined to `--nodes` (`/ev/{ch}`, `sse=/ev/{ch}`) rather
/// than a full URL.
pub fn is_path(raw: &str) -> bool {
    split_transport(raw).1.starts_with('/')
}

/// Expands subscriber templates over `nodes`: a path (`[TRANSPORT=]/ev/{ch}`) becomes one template
/// per node; a full URL stays as it is. The order (template-major, node-minor) makes subscriber
/// `i` of a one-channel run land on node `i % nodes`.
pub fn expand_subs(raw: &[String], nodes: &[Node]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for template in raw {
        if !is_path(template) {
            out.push(template.clone());
            continue;
        }
        if nodes.is_empty() {
            return Err(format!(
                "--sub {template:?} is a path: give --nodes too, or a full URL"
            ));
        }
        let (transport, path) = split_transport(template);
        for node in nodes {
            out.push(match transport {
                Some(t) => format!("{t}={}", node.join(path)),
                None => node.join(path),
            });
        }
    }
    Ok(out)
}

/// Numbers the server nodes of `targets`: the `--nodes` first (in their order), then every other
/// address in order of first appearance. Sets each target's `node` and returns the node addresses.
pub fn assign_nodes(targets: &mut [SubTarget], nodes: &[Node]) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for target in targets.iter_mut() {
        target.node = match addrs.iter().position(|a| *a == target.url.addr) {
            Some(i) => i,
            None => {
                addrs.push(target.url.addr);
                addrs.len() - 1
            }
        };
    }
    if addrs.is_empty() {
        if let Some(first) = targets.first() {
            addrs.push(first.url.addr);
        }
    }
    addrs
}

/// Name of channel `index` for a run with `prefix`.
pub fn channel_name(prefix: &str, index: u64) -> String {
    format!("{prefix}{index}")
}

/// Source address of subscriber `index`: none (the kernel's choice) for the first `per_source`,
/// then 127.0.0.2, 127.0.0.3 …
pub fn source_for(index: u64, per_source: u64) -> Result<Option<Ipv4Addr>, String> {
    let slot = index / per_source.max(1);
    if slot == 0 {
        return Ok(None);
    }
    let host = 1 + slot;
    if host > 254 {
        return Err(format!(
            "subscriber {index} would need source address number {host}: too many connections for --per-source {per_source}"
        ));
    }
    Ok(Some(Ipv4Addr::new(127, 0, 0, host as u8)))
}

/// Connects to `dst`, from `src` when given; sets `TCP_NODELAY`.
pub async fn connect(dst: SocketAddr, src: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        bind_no_port(&socket);
        socket.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
    }
    let stream = socket.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Asks the kernel to choose the source port at connect time (4-tuple unique) rather than at bind.
fn bind_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a valid socket fd with a pointer to a c_int and its size. A failure
    // only means ports are reserved at bind time, which still works for moderate counts.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        let t = SubTarget::parse("http://127.0.0.1:8080/ev/{ch}", Transport::Sse).expect("valid");
        assert_eq!(t.transport, Transport::Sse);
        assert_eq!(t.url.path_for("a1"), "/ev/a1");
        assert_eq!(t.url.host, "127.0.0.1:8080");
        let t = SubTarget::parse("ws://localhost:9/ws/{ch}", Transport::Sse).expect("valid");
        assert_eq!(t.transport, Transport::Websocket);
        let t = SubTarget::parse("lp=http://127.0.0.5/lp/{ch}?x=1", Transport::Sse).expect("valid");
        assert_eq!(t.transport, Transport::LongPolling);
        assert_eq!(t.url.addr.port(), 80);
        let p = UrlTemplate::parse("http://127.0.0.1:8080/pub?id={ch}").expect("valid");
        assert_eq!(p.path_for("c"), "/pub?id=c");
    }

    #[test]
    fn expands_paths_over_nodes() {
        let nodes: Vec<Node> = ["127.0.0.1:9001", "http://127.0.0.1:9002/"]
            .iter()
            .map(|n| Node::parse(n).expect("valid node"))
            .collect();
        assert_eq!(nodes[1].base, "http://127.0.0.1:9002");
        assert!(Node::parse("http://127.0.0.1:9/ev").is_err());
        assert!(Node::parse("10.1.1.1:80").is_err());
        let raw = vec![
            "/ev/{ch}".to_string(),
            "ws=/ws/{ch}".to_string(),
            "http://127.0.0.1:9003/sub/{ch}".to_string(),
        ];
        let expanded = expand_subs(&raw, &nodes).expect("paths and URLs");
        assert_eq!(
            expanded,
            [
                "http://127.0.0.1:9001/ev/{ch}",
                "http://127.0.0.1:9002/ev/{ch}",
                "ws=http://127.0.0.1:9001/ws/{ch}",
                "ws=http://127.0.0.1:9002/ws/{ch}",
                "http://127.0.0.1:9003/sub/{ch}",
            ]
        );
        assert!(expand_subs(&raw, &[]).is_err());
        let mut targets: Vec<SubTarget> = expanded
            .iter()
            .map(|t| SubTarget::parse(t, Transport::Sse).expect("valid"))
            .collect();
        assert_eq!(targets[2].transport, Transport::Websocket);
        let addrs = assign_nodes(&mut targets, &nodes);
        assert_eq!(addrs.len(), 3);
        let assigned: Vec<usize> = targets.iter().map(|t| t.node).collect();
        assert_eq!(assigned, [0, 1, 0, 1, 2]);
    }

    #[test]
    fn refuses_non_loopback() {
        assert!(UrlTemplate::parse("http://10.0.0.1/x").is_err());
        assert!(UrlTemplate::parse("http://example.com/x").is_err());
        assert!(UrlTemplate::parse("https://127.0.0.1/x").is_err());
    }

    #[test]
    fn source_addresses() {
        assert_eq!(source_for(0, 10), Ok(None));
        assert_eq!(source_for(9, 10), Ok(None));
        assert_eq!(source_for(10, 10), Ok(Some(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(source_for(25, 10), Ok(Some(Ipv4Addr::new(127, 0, 0, 3))));
        assert!(source_for(10_000, 10).is_err());
    }
}
