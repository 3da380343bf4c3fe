//! Herald's configuration: the TOML schema with its defaults, loading (embedded default or a file),
//! and validation whose errors name the key and the line. Owns nothing at run time: the broker and the
//! HTTP layer take the validated values they need from here. Units live in `units`.

mod error;
pub mod nginx;
pub mod units;

pub use error::ConfigError;
pub use units::{ConfDuration, ConfSize};

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default configuration, compiled into the binary (`config/herald.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config/herald.toml");
/// Name used for the embedded default in error messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded config/herald.toml>";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listener and process-wide HTTP settings (`[server]`).
    pub server: ServerConfig,
    /// Server-wide channel and message settings, the push-stream module's http-level directives (`[channels]`).
    pub channels: ChannelsConfig,
    /// The locations Herald serves, matched in nginx order (`[[location]]`).
    #[serde(rename = "location")]
    pub locations: Vec<LocationConfig>,
    /// Where channels live: this process's memory (default) or Redis shared by several nodes (`[engine]`).
    pub engine: EngineConfig,
}

/// Which engine holds channels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Channels live in this process only.
    #[default]
    Memory,
    /// Channels, history and counters live in Redis; every node sharing it serves the same channels.
    Redis,
}

/// `[engine]`: the channel engine and, for Redis, how nodes share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `memory` (default) or `redis`.
    pub kind: EngineKind,
    /// Redis servers (`redis://host:port/db`), one per shard; a channel lives on shard
    /// `fnv1a64(channel id) % len(redis_urls)`. Every node must list the same URLs in the same order.
    pub redis_urls: Vec<String>,
    /// `redis_urls` are seed nodes of one Redis Cluster (7.0 or later) instead of standalone shards:
    /// channels are spread over the cluster's slots and announced with sharded pub/sub. Default off.
    pub cluster: bool,
    /// Prefix of every Redis key and pub/sub channel Herald uses. Default `herald`.
    pub key_prefix: String,
    /// This node's name in statistics (`by_worker`). Default: host name and process id.
    pub node_name: Option<String>,
    /// A Redis command (publish, history read) that takes longer fails with 503. Default `2s`.
    pub command_timeout: ConfDuration,
    /// How often a node reports itself and its subscriber counts. Default `1s`.
    pub heartbeat_interval: ConfDuration,
    /// A node that has not reported for this long no longer counts in statistics and limits. Default `5s`.
    pub node_timeout: ConfDuration,
    /// How long a node keeps following a channel in Redis after its last local subscriber left, so a
    /// long-polling client's next request is served without a round trip. Default `10s`.
    pub unsubscribe_after: ConfDuration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: EngineKind::Memory,
            redis_urls: Vec::new(),
            cluster: false,
            key_prefix: "herald".into(),
            node_name: None,
            command_timeout: ConfDuration(Duration::from_secs(2)),
            heartbeat_interval: ConfDuration(Duration::from_secs(1)),
            node_timeout: ConfDuration(Duration::from_secs(5)),
            unsubscribe_after: ConfDuration(Duration::from_secs(10)),
        }
    }
}

/// `[server]`: where Herald listens and request limits that apply to every location.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on (`listen`). Default `127.0.0.1:8080`.
    pub listen: String,
    /// Largest request body accepted (nginx `client_max_body_size`); larger publishes get 413. Default `1m`.
    pub max_body_size: ConfSize,
    /// How long subscriber connections get to receive their footer and close after SIGTERM/SIGINT. Default `5s`.
    pub shutdown_timeout: ConfDuration,
    /// A write that makes no progress for this long (the client stopped reading) closes the
    /// connection and frees its subscriber slot. Default `30s`.
    pub send_timeout: ConfDuration,
    /// Idle time before TCP keepalive probes on accepted sockets. Default `60s`.
    pub tcp_keepalive: ConfDuration,
    /// Log lines as `text` (default) or `json`; levels come from `RUST_LOG`.
    pub log_format: LogFormat,
    /// One log line per request (target `herald::access`). Default off.
    pub access_log: bool,
    /// Proxies whose `X-Forwarded-For` is believed (CIDR list); the client address of a request is
    /// then the last address in that header that is not a trusted proxy. Default: none.
    pub trusted_proxies: Vec<String>,
    /// Most open connections; one more is answered 503 and closed (its `GET /healthz` is still
    /// answered 200). Lowered to the connection capacity the open-file limit leaves, which is
    /// logged at start. Default 50000.
    pub max_connections: Option<u64>,
    /// Most open connections from one client address (TCP peer). Default: unlimited.
    pub max_connections_per_address: Option<u64>,
    /// Time a client gets to send its request headers (slow-loris protection). Default `30s`.
    pub header_read_timeout: ConfDuration,
    /// Largest request head (request line and headers); larger ones get 431. Default `16k`;
    /// at least `8k` (smaller is refused).
    pub max_header_size: ConfSize,
    /// Start even when a listener other than loopback serves an admin publisher (publish and
    /// DELETE any channel; the dashboard's actions) that has neither `allow_addresses` nor
    /// `auth_bearer_tokens`. Default `false`: Herald refuses to start and says which location.
    pub allow_public_admin: bool,
    /// Time a WebSocket client gets to finish a message it started (a frame still arriving, or a
    /// fragmented message without its final frame); past it the connection is closed with 1008, so
    /// a partial message (up to `max_body_size`) is not held forever. Default `30s`.
    pub websocket_message_timeout: ConfDuration,
    /// Longest wait for the next piece of a request body (nginx `client_body_timeout`: the time
    /// between two successive reads, not for the whole body); past it the request gets 408 and the
    /// connection is closed. Default `60s`.
    pub body_read_timeout: ConfDuration,
    /// Most request-body bytes buffered at once by the whole server (bodies are read whole before they
    /// are published). A body reserves its bytes as they are read; one whose declared length does not
    /// fit in what is left, or that would grow past it, gets 503 and the connection is closed. A body
    /// larger than this can never be accepted (413). Default `64m`.
    pub max_buffered_body_size: ConfSize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_size: ConfSize(1 << 20),
            shutdown_timeout: ConfDuration(Duration::from_secs(5)),
            send_timeout: ConfDuration(Duration::from_secs(30)),
            tcp_keepalive: ConfDuration(Duration::from_secs(60)),
            log_format: LogFormat::Text,
            access_log: false,
            trusted_proxies: Vec::new(),
            max_connections: Some(50_000),
            max_connections_per_address: None,
            header_read_timeout: ConfDuration(Duration::from_secs(30)),
            max_header_size: ConfSize(16 << 10),
            allow_public_admin: false,
            websocket_message_timeout: ConfDuration(Duration::from_secs(30)),
            body_read_timeout: ConfDuration(Duration::from_secs(60)),
            max_buffered_body_size: ConfSize(64 << 20),
        }
    }
}

/// `[channels]`: the module's http-level settings, shared by every location.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Age after which a stored message expires (`push_stream_message_ttl`). Default `30m`.
    pub message_ttl: ConfDuration,
    /// Keep at most this many newest messages per channel; older ones are dropped. Default: unlimited
    /// (bounded by `message_ttl`).
    pub max_messages_stored_per_channel: Option<u64>,
    /// Longest channel id accepted; longer ids get 400. Default: unlimited.
    pub max_channel_id_length: Option<u64>,
    /// Regular expression every channel id must match entirely; others get 400. Default: any characters
    /// except control characters, space and `/` (the channel separator).
    pub channel_id_pattern: String,
    /// Most channels that may exist at once; creating one more (publish or subscribe) gets 403.
    pub max_number_of_channels: Option<u64>,
    /// Most concurrent subscribers of one channel; one more gets 403.
    pub max_subscribers_per_channel: Option<u64>,
    /// Channel ids starting with this prefix are wildcard channels, counted apart in statistics.
    pub wildcard_channel_prefix: Option<String>,
    /// Text of the ping message (id -1) written to streaming subscribers. Default one space.
    pub ping_message_text: String,
    /// Text of the message (id -2) sent to subscribers of a deleted channel. Default `Channel deleted`.
    pub channel_deleted_message_text: String,
    /// A channel with no subscribers and no stored messages is removed after this long. Default `30s`.
    pub channel_inactivity_time: ConfDuration,
    /// How many recent messages a subscriber may fall behind before it is cut off as a slow consumer
    /// (Herald's bound on per-subscriber memory). Default 1024.
    pub subscriber_lag_limit: u64,
    /// A long-polling wait that times out answers 200 with a "Timed out" message instead of 304.
    pub timeout_with_body: bool,
    /// Channel that receives lifecycle events (channel created/destroyed, client subscribed/
    /// unsubscribed) as JSON. Default: none.
    pub events_channel_id: Option<String>,
    /// Most wildcard channels at once. Default: unlimited.
    pub max_number_of_wildcard_channels: Option<u64>,
    /// Budget for stored messages in bytes (text, headers and 200 bytes of bookkeeping each); a
    /// publish that would store past it gets 500 (the module's `push_stream_shared_memory_size`).
    /// Default `256m`.
    pub shared_memory_size: Option<ConfSize>,
    /// Channels whose id starts with one of these prefixes can only be joined through a location
    /// that authorizes subscribers (`jwt_secret`, `jwt_public_key_file` or `auth_request_url`).
    pub private_channel_prefixes: Vec<String>,
    /// Most channels in one subscribe request; more get 403. Default 100.
    pub max_channels_per_subscription: Option<u64>,
    /// Channels of `max_number_of_channels` that only publishers may create: a subscriber cannot
    /// create a channel once `max_number_of_channels - channels_reserved_for_publishers` exist (403),
    /// so clients subscribing to made-up names cannot fill the table that publishers need. Default:
    /// a tenth of `max_number_of_channels`, rounded up; 0 = subscribers and publishers share the
    /// whole table (the push-stream module's behaviour, which the nginx importer keeps).
    pub channels_reserved_for_publishers: Option<u64>,
    /// Most distinct channels one publisher request names (publish, channel info, delete); more get
    /// 403. A channel named twice in one request counts, and is published to, once. Default 100.
    pub max_channels_per_publish: Option<u64>,
    /// How many `Idempotency-Key`s of recent publishes each channel remembers: a publish repeating
    /// one of them is answered without publishing again. 0 refuses the header (400). Default 1000.
    pub idempotency_keys_per_channel: u64,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            message_ttl: ConfDuration(Duration::from_secs(30 * 60)),
            max_messages_stored_per_channel: None,
            max_channel_id_length: None,
            channel_id_pattern: DEFAULT_CHANNEL_ID_PATTERN.into(),
            max_number_of_channels: None,
            max_subscribers_per_channel: None,
            wildcard_channel_prefix: None,
            ping_message_text: " ".into(),
            channel_deleted_message_text: "Channel deleted".into(),
            channel_inactivity_time: ConfDuration(Duration::from_secs(30)),
            subscriber_lag_limit: 1024,
            timeout_with_body: false,
            events_channel_id: None,
            max_number_of_wildcard_channels: None,
            shared_memory_size: Some(ConfSize(256 << 20)),
            private_channel_prefixes: Vec::new(),
            max_channels_per_subscription: Some(100),
            max_channels_per_publish: Some(100),
            channels_reserved_for_publishers: None,
            idempotency_keys_per_channel: 1000,
        }
    }
}

/// Smallest `max_header_size`: hyper's HTTP/1 parser needs a read buffer of at least 8 KiB.
pub const MIN_HEADER_SIZE: u64 = 8192;

/// Largest `idempotency_keys_per_channel` (each remembered key costs a channel about 50 bytes in
/// memory, or about 70 bytes plus the key in Redis).
pub const MAX_IDEMPOTENCY_KEYS_PER_CHANNEL: u64 = 100_000;

/// Default `channel_id_pattern`: no control characters, no space, no `/`.
pub const DEFAULT_CHANNEL_ID_PATTERN: &str = r"[^\x00-\x20\x7f/]+";

/// How a location's `path` is matched against the request path (nginx `location`, `location =`,
/// `location ~`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// The request path starts with `path` (the longest such prefix wins).
    #[default]
    Prefix,
    /// The request path equals `path`.
    Exact,
    /// `path` is a regular expression; its captures are `$1`, `$2`, … in `channels_path`.
    Regex,
}

/// What a location does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Publishes messages (POST/PUT), answers channel info (GET), deletes channels (DELETE, admin only).
    Publisher,
    /// Holds subscriber connections in the location's `mode`.
    Subscriber,
    /// Channel statistics (`/channels-stats`).
    Stats,
    /// Prometheus metrics (`/metrics`).
    Metrics,
    /// Files compiled in from `static/` (browser client, demo page, dashboard).
    Static,
}

/// Subscriber delivery mode of a location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SubscriberMode {
    /// Chunked HTTP response carrying formatted messages.
    #[default]
    #[serde(rename = "streaming")]
    Streaming,
    /// Server-sent events (`text/event-stream`).
    #[serde(rename = "eventsource")]
    EventSource,
    /// One request per batch of messages: waits for the next message, or returns at once what is newer
    /// than the client's point.
    #[serde(rename = "long-polling")]
    LongPolling,
    /// Like long-polling but never waits: 304 when there is nothing newer.
    #[serde(rename = "polling")]
    Polling,
    /// WebSocket: one text frame per message.
    #[serde(rename = "websocket")]
    WebSocket,
}

impl SubscriberMode {
    /// The name used in the config and in logs.
    pub fn name(self) -> &'static str {
        match self {
            SubscriberMode::Streaming => "streaming",
            SubscriberMode::EventSource => "eventsource",
            SubscriberMode::LongPolling => "long-polling",
            SubscriberMode::Polling => "polling",
            SubscriberMode::WebSocket => "websocket",
        }
    }
}

/// One `[[location]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocationConfig {
    /// Path (or regular expression with `match = "regex"`) this location serves.
    pub path: String,
    /// How `path` is matched: `prefix` (default), `exact` or `regex`.
    #[serde(rename = "match")]
    pub match_kind: MatchKind,
    /// `publisher`, `subscriber`, `stats`, `metrics` or `static`. Required.
    pub role: Option<Role>,
    /// Publisher only: also accept DELETE to delete channels (the module's `push_stream_publisher admin`).
    pub admin: bool,
    /// Subscriber only: `streaming` (default) or `eventsource`.
    pub mode: SubscriberMode,
    /// Where the channel ids come from: `$arg_NAME` (query argument), `$1`… (regex captures), `$suffix`
    /// (the request path after a prefix location's `path`), mixed with literal text. Default: `$suffix`
    /// for subscribers, `$arg_id` for publishers and stats.
    pub channels_path: Option<String>,
    /// Publisher only: keep published messages in the channel buffer (for backtrack and recovery).
    /// Default `true` (the module's default is off; `herald migrate` writes it explicitly).
    pub store_messages: Option<bool>,
    /// Publisher only: answer a publish with the channel info (default) or an empty 200.
    pub channel_info_on_publish: Option<bool>,
    /// Subscriber only: text sent when a subscriber connects.
    pub header_template: String,
    /// Subscriber only: file whose contents are the header template (exclusive with `header_template`).
    pub header_template_file: Option<PathBuf>,
    /// Subscriber only: format of each message. Default `~text~`.
    pub message_template: Option<String>,
    /// Subscriber only: text sent just before the server ends a subscriber connection.
    pub footer_template: String,
    /// Subscriber only: interval of keepalive pings. Default: no pings.
    pub ping_message_interval: Option<ConfDuration>,
    /// Subscriber only: maximum lifetime of a subscriber connection. Default: unlimited.
    pub subscriber_connection_ttl: Option<ConfDuration>,
    /// Subscriber only: `Content-Type` of streaming responses (nginx `default_type`). Default `text/plain`.
    pub content_type: Option<String>,
    /// Long-polling only: longest wait before answering 304. Default: `subscriber_connection_ttl`, else
    /// unlimited.
    pub longpolling_connection_ttl: Option<ConfDuration>,
    /// Subscriber only: expression read instead of the `If-Modified-Since` header (e.g. `$arg_time`).
    pub last_received_message_time: Option<String>,
    /// Subscriber only: expression read instead of the `If-None-Match` header (e.g. `$arg_tag`).
    pub last_received_message_tag: Option<String>,
    /// Subscriber only: expression read instead of the `Last-Event-ID` header (e.g. `$arg_last_event_id`).
    pub last_event_id: Option<String>,
    /// WebSocket only: text frames from the client are published to the subscribed channels.
    pub websocket_allow_publish: bool,
    /// Publisher and subscriber: value of `Access-Control-Allow-Origin` (an expression such as `*`,
    /// `https://example.com` or `$http_origin`); CORS headers are sent only when set.
    pub allowed_origins: Option<String>,
    /// Subscriber only: `regex,header_min_size,message_min_size` rules separated by `:`; clients whose
    /// user agent matches get the header and each message padded to at least those sizes.
    pub padding_by_user_agent: Option<String>,
    /// Subscriber only: expression giving the user agent matched by `padding_by_user_agent`. Default
    /// `$http_user_agent`.
    pub user_agent: Option<String>,
    /// Subscriber only: only channels that exist and hold a stored message may be joined; wildcard
    /// channels are exempt but need a normal channel beside them.
    pub authorized_channels_only: bool,
    /// Subscriber only: the events channel may be joined.
    pub allow_connections_to_events_channel: bool,
    /// Subscriber only: most wildcard channels in one request; when set, a request of wildcard
    /// channels only is refused too.
    pub wildcard_channel_max_qtd: Option<u64>,
    /// Any location: requests must carry `Authorization: Bearer <one of these>` (401 otherwise).
    pub auth_bearer_tokens: Vec<String>,
    /// Any location: client addresses (CIDR or single address) allowed; empty = everyone.
    pub allow_addresses: Vec<String>,
    /// Any location: client addresses (CIDR or single address) refused (403), checked first.
    pub deny_addresses: Vec<String>,
    /// Publisher only: most publish requests per second per client (per bearer token when one is
    /// used), e.g. `"50/s"` or `"600/m"`; more get 429.
    pub publish_rate_limit: Option<String>,
    /// Subscriber only: HS256 secret of the JWTs subscribers must present.
    pub jwt_secret: Option<String>,
    /// Subscriber only: PEM file with the RSA public key of RS256 JWTs subscribers must present.
    pub jwt_public_key_file: Option<PathBuf>,
    /// Subscriber only: where the JWT comes from (expression). Default `$arg_token`, then the
    /// `Authorization: Bearer` header.
    pub token: Option<String>,
    /// Subscriber only: clock difference allowed when checking a JWT's `exp` and `nbf`. Default
    /// `5s`.
    pub jwt_leeway: Option<ConfDuration>,
    /// Subscriber only: URL that authorizes each subscribe request (its headers and cookies are
    /// forwarded; 2xx admits).
    pub auth_request_url: Option<String>,
    /// Subscriber only: how long the authorization request may take (503 after). Default `2s`.
    pub auth_request_timeout: Option<ConfDuration>,
    /// Subscriber only: how long an authorization answer is reused for the same credentials and
    /// channels. Default `5s`; `0` = no cache.
    pub auth_request_cache: Option<ConfDuration>,
}

impl LocationConfig {
    /// The role; validation guarantees it is present.
    pub fn role(&self) -> Role {
        self.role.unwrap_or(Role::Subscriber)
    }

    /// The channels path expression, with the role's default filled in.
    pub fn channels_path(&self) -> &str {
        match (&self.channels_path, self.role()) {
            (Some(expr), _) => expr,
            (None, Role::Subscriber | Role::Static) => "$suffix",
            (None, _) => "$arg_id",
        }
    }

    /// The message template, `~text~` unless set.
    pub fn message_template(&self) -> &str {
        self.message_template.as_deref().unwrap_or("~text~")
    }

    /// A short description for logs: `/sub/ (subscriber streaming)`.
    pub fn describe(&self) -> String {
        let kind = match self.match_kind {
            MatchKind::Prefix => "",
            MatchKind::Exact => "= ",
            MatchKind::Regex => "~ ",
        };
        let role = match self.role() {
            Role::Publisher if self.admin => "publisher admin".to_string(),
            Role::Publisher => "publisher".to_string(),
            Role::Subscriber => format!("subscriber {}", self.mode.name()),
            Role::Stats => "channels statistics".to_string(),
            Role::Metrics => "prometheus metrics".to_string(),
            Role::Static => "static files".to_string(),
        };
        format!("{kind}{} ({role})", self.path)
    }
}

impl Config {
    /// Loads and validates the embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::from_toml(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME, None)
    }

    /// Loads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::plain(
                path.display().to_string(),
                format!("cannot read config file: {e}"),
            )
        })?;
        Config::from_toml(&text, &path.display().to_string(), path.parent())
    }

    /// Parses and validates TOML text. `source_name` names the text in errors; `base_dir` resolves
    /// relative template file paths (the current directory when `None`).
    pub fn from_toml(
        text: &str,
        source_name: &str,
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(source_name, text, &e))?;
        config
            .validate(base_dir)
            .map_err(|(key, message)| ConfigError::at_key(source_name, text, &key, message))?;
        Ok(config)
    }

    /// The listen address, already validated.
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.server
            .listen
            .parse()
            .map_err(|e| format!("invalid listen address {:?}: {e}", self.server.listen))
    }

    /// What a listener on `addr` would expose without any authentication. On a loopback address,
    /// nothing. Elsewhere, `Err` names the admin publishers open to anyone (publish and delete any
    /// channel, the dashboard's actions) unless `server.allow_public_admin` is set; `Ok` lists
    /// warnings for statistics and metrics locations anyone can read.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<Vec<String>, String> {
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() {
            return Ok(Vec::new());
        }
        let open = |loc: &&LocationConfig| {
            loc.allow_addresses.is_empty() && loc.auth_bearer_tokens.is_empty()
        };
        let open_admins: Vec<&str> = self
            .locations
            .iter()
            .filter(|loc| loc.role() == Role::Publisher && loc.admin)
            .filter(open)
            .map(|loc| loc.path.as_str())
            .collect();
        let mut warnings = Vec::new();
        if !open_admins.is_empty() {
            let message = format!(
                "{addr} is reachable from other hosts, and the admin publisher location{} {} (publish to and DELETE any channel; the dashboard's actions) {} no access rule: give {} allow_addresses or auth_bearer_tokens, listen on 127.0.0.1, or set [server] allow_public_admin = true to serve {} to anyone",
                if open_admins.len() > 1 { "s" } else { "" },
                open_admins.join(", "),
                if open_admins.len() > 1 { "have" } else { "has" },
                if open_admins.len() > 1 { "them" } else { "it" },
                if open_admins.len() > 1 { "them" } else { "it" },
            );
            if !self.server.allow_public_admin {
                return Err(message);
            }
            warnings.push(format!("{message} (allow_public_admin is set: serving it)"));
        }
        for loc in self
            .locations
            .iter()
            .filter(|loc| matches!(loc.role(), Role::Stats | Role::Metrics))
            .filter(open)
        {
            warnings.push(format!(
                "{addr} is reachable from other hosts and {} ({}) has no access rule: anyone can read {}",
                loc.path,
                if loc.role() == Role::Stats { "statistics" } else { "metrics" },
                if loc.role() == Role::Stats {
                    "every channel's name and counts"
                } else {
                    "the server's metrics"
                }
            ));
        }
        Ok(warnings)
    }

    /// Checks values serde cannot, returning the offending key path (`location[1].mode`) and why.
    /// Also reads `header_template_file` into `header_template`.
    fn validate(&mut self, base_dir: Option<&Path>) -> Result<(), (KeyPath, String)> {
        let key = |parts: &[KeySeg]| KeyPath(parts.to_vec());
        self.listen_addr()
            .map_err(|m| (key(&[KeySeg::Name("server"), KeySeg::Name("listen")]), m))?;
        validate_engine(&self.engine).map_err(|(name, message)| {
            (key(&[KeySeg::Name("engine"), KeySeg::Name(name)]), message)
        })?;
        let ch = &self.channels;
        let positive = [
            (
                "max_messages_stored_per_channel",
                ch.max_messages_stored_per_channel,
            ),
            ("max_channel_id_length", ch.max_channel_id_length),
            ("max_number_of_channels", ch.max_number_of_channels),
            (
                "max_subscribers_per_channel",
                ch.max_subscribers_per_channel,
            ),
            ("subscriber_lag_limit", Some(ch.subscriber_lag_limit)),
            (
                "max_number_of_wildcard_channels",
                ch.max_number_of_wildcard_channels,
            ),
            ("shared_memory_size", ch.shared_memory_size.map(|s| s.0)),
            ("max_channels_per_publish", ch.max_channels_per_publish),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err((
                    key(&[KeySeg::Name("channels"), KeySeg::Name(name)]),
                    "must be at least 1 (leave the key out for no limit)".into(),
                ));
            }
        }
        if let (Some(reserve), Some(max)) = (
            ch.channels_reserved_for_publishers,
            ch.max_number_of_channels,
        ) {
            if reserve >= max {
                return Err((
                    key(&[
                        KeySeg::Name("channels"),
                        KeySeg::Name("channels_reserved_for_publishers"),
                    ]),
                    format!("must be less than max_number_of_channels = {max}, or subscribers could create no channel"),
                ));
            }
        }
        if ch.idempotency_keys_per_channel > MAX_IDEMPOTENCY_KEYS_PER_CHANNEL {
            return Err((
                key(&[
                    KeySeg::Name("channels"),
                    KeySeg::Name("idempotency_keys_per_channel"),
                ]),
                format!("must be at most {MAX_IDEMPOTENCY_KEYS_PER_CHANNEL} (0 turns keys off)"),
            ));
        }
        for proxy in &self.server.trusted_proxies {
            crate::http::access::parse_net(proxy).map_err(|m| {
                (
                    key(&[KeySeg::Name("server"), KeySeg::Name("trusted_proxies")]),
                    m,
                )
            })?;
        }
        for (name, value) in [
            ("max_connections", self.server.max_connections),
            (
                "max_connections_per_address",
                self.server.max_connections_per_address,
            ),
        ] {
            if value == Some(0) {
                return Err((
                    key(&[KeySeg::Name("server"), KeySeg::Name(name)]),
                    "must be at least 1 (leave the key out for no limit)".into(),
                ));
            }
        }
        if self.server.max_buffered_body_size.0 == 0 {
            return Err((
                key(&[
                    KeySeg::Name("server"),
                    KeySeg::Name("max_buffered_body_size"),
                ]),
                "must be at least 1 byte".into(),
            ));
        }
        for (name, value) in [
            ("send_timeout", self.server.send_timeout),
            ("tcp_keepalive", self.server.tcp_keepalive),
            ("header_read_timeout", self.server.header_read_timeout),
            (
                "websocket_message_timeout",
                self.server.websocket_message_timeout,
            ),
            ("body_read_timeout", self.server.body_read_timeout),
        ] {
            if value.0.is_zero() {
                return Err((
                    key(&[KeySeg::Name("server"), KeySeg::Name(name)]),
                    "must be longer than zero".into(),
                ));
            }
        }
        if self.server.max_header_size.0 < MIN_HEADER_SIZE {
            return Err((
                key(&[KeySeg::Name("server"), KeySeg::Name("max_header_size")]),
                format!("must be at least 8k ({MIN_HEADER_SIZE} bytes: the smallest request-head buffer the HTTP/1 parser takes)"),
            ));
        }
        if ch.message_ttl.0.is_zero() {
            return Err((
                key(&[KeySeg::Name("channels"), KeySeg::Name("message_ttl")]),
                "must be longer than zero".into(),
            ));
        }
        if let Err(e) = regex::Regex::new(&ch.channel_id_pattern) {
            return Err((
                key(&[KeySeg::Name("channels"), KeySeg::Name("channel_id_pattern")]),
                format!("invalid regular expression: {e}"),
            ));
        }
        if self.locations.is_empty() {
            return Err((
                key(&[KeySeg::Name("location")]),
                "at least one [[location]] is required".into(),
            ));
        }
        for (index, loc) in self.locations.iter_mut().enumerate() {
            let at = |name: &'static str| {
                KeyPath(vec![
                    KeySeg::Name("location"),
                    KeySeg::Index(index),
                    KeySeg::Name(name),
                ])
            };
            validate_location(loc, &self.channels, base_dir)
                .map_err(|(name, message)| (at(name), message))?;
        }
        for (index, loc) in self.locations.iter().enumerate() {
            if let Some(first) = self.locations[..index]
                .iter()
                .position(|other| other.path == loc.path && other.match_kind == loc.match_kind)
            {
                return Err((
                    KeyPath(vec![
                        KeySeg::Name("location"),
                        KeySeg::Index(index),
                        KeySeg::Name("path"),
                    ]),
                    format!(
                        "duplicate location {:?}: location[{first}] has the same path and match, so \
                         this one would never be reached",
                        loc.path
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Checks `[engine]`: Redis needs at least one `redis://` URL; intervals must be positive and the
/// node timeout longer than the heartbeat.
fn validate_engine(engine: &EngineConfig) -> Result<(), (&'static str, String)> {
    if engine.kind == EngineKind::Redis && engine.redis_urls.is_empty() {
        return Err((
            "redis_urls",
            "kind = \"redis\" needs at least one Redis URL, e.g. [\"redis://127.0.0.1:6379/0\"]"
                .into(),
        ));
    }
    if engine.cluster && engine.kind != EngineKind::Redis {
        return Err(("cluster", "needs kind = \"redis\"".into()));
    }
    for url in &engine.redis_urls {
        if !(url.starts_with("redis://") || url.starts_with("unix://")) {
            return Err((
                "redis_urls",
                format!("{url:?} is not a Redis URL (redis://host:port/db or unix:///path)"),
            ));
        }
    }
    if engine.key_prefix.is_empty() || engine.key_prefix.contains(['{', '}', ' ']) {
        return Err((
            "key_prefix",
            "must be non-empty, without braces or spaces".into(),
        ));
    }
    for (name, value) in [
        ("command_timeout", engine.command_timeout.0),
        ("heartbeat_interval", engine.heartbeat_interval.0),
        ("node_timeout", engine.node_timeout.0),
    ] {
        if value.is_zero() {
            return Err((name, "must be longer than 0".into()));
        }
    }
    if engine.node_timeout.0 <= engine.heartbeat_interval.0 {
        return Err((
            "node_timeout",
            "must be longer than heartbeat_interval (a live node would look dead)".into(),
        ));
    }
    Ok(())
}

fn validate_location(
    loc: &mut LocationConfig,
    channels: &ChannelsConfig,
    base_dir: Option<&Path>,
) -> Result<(), (&'static str, String)> {
    if let Some(qtd) = loc.wildcard_channel_max_qtd {
        if channels
            .wildcard_channel_prefix
            .as_deref()
            .unwrap_or("")
            .is_empty()
        {
            return Err((
                "wildcard_channel_max_qtd",
                "needs [channels] wildcard_channel_prefix".into(),
            ));
        }
        if qtd == 0 {
            return Err(("wildcard_channel_max_qtd", "must be at least 1".into()));
        }
        if let Some(max) = channels
            .max_number_of_wildcard_channels
            .filter(|max| qtd > *max)
        {
            return Err((
                "wildcard_channel_max_qtd",
                format!("{qtd} is more than [channels] max_number_of_wildcard_channels = {max}"),
            ));
        }
    }
    let Some(role) = loc.role else {
        return Err((
            "role",
            "missing; expected \"publisher\", \"subscriber\", \"stats\", \"metrics\" or \"static\""
                .into(),
        ));
    };
    if loc.path.is_empty() {
        return Err(("path", "missing; every location needs a path".into()));
    }
    match loc.match_kind {
        MatchKind::Regex => {
            regex::Regex::new(&loc.path)
                .map_err(|e| ("path", format!("invalid regular expression: {e}")))?;
        }
        MatchKind::Prefix | MatchKind::Exact => {
            if !loc.path.starts_with('/') {
                return Err(("path", format!("{:?} must start with '/'", loc.path)));
            }
        }
    }
    crate::http::channels_path::ChannelsPathExpr::parse(loc.channels_path())
        .map_err(|m| ("channels_path", m))?;
    if loc.channels_path().contains("$suffix") && loc.match_kind != MatchKind::Prefix {
        return Err((
            "channels_path",
            "$suffix is only available on prefix locations".into(),
        ));
    }
    let subscriber_only = [
        ("mode", loc.mode != SubscriberMode::default()),
        ("header_template", !loc.header_template.is_empty()),
        ("header_template_file", loc.header_template_file.is_some()),
        ("message_template", loc.message_template.is_some()),
        ("footer_template", !loc.footer_template.is_empty()),
        ("ping_message_interval", loc.ping_message_interval.is_some()),
        (
            "subscriber_connection_ttl",
            loc.subscriber_connection_ttl.is_some(),
        ),
        ("content_type", loc.content_type.is_some()),
        (
            "longpolling_connection_ttl",
            loc.longpolling_connection_ttl.is_some(),
        ),
        (
            "last_received_message_time",
            loc.last_received_message_time.is_some(),
        ),
        (
            "last_received_message_tag",
            loc.last_received_message_tag.is_some(),
        ),
        ("last_event_id", loc.last_event_id.is_some()),
        ("websocket_allow_publish", loc.websocket_allow_publish),
        ("padding_by_user_agent", loc.padding_by_user_agent.is_some()),
        ("user_agent", loc.user_agent.is_some()),
        ("authorized_channels_only", loc.authorized_channels_only),
        (
            "allow_connections_to_events_channel",
            loc.allow_connections_to_events_channel,
        ),
        (
            "wildcard_channel_max_qtd",
            loc.wildcard_channel_max_qtd.is_some(),
        ),
    ];
    let publisher_only = [
        ("admin", loc.admin),
        ("store_messages", loc.store_messages.is_some()),
        (
            "channel_info_on_publish",
            loc.channel_info_on_publish.is_some(),
        ),
    ];
    if role != Role::Subscriber {
        if let Some((name, _)) = subscriber_only.iter().find(|(_, set)| *set) {
            return Err((name, "only applies to subscriber locations".into()));
        }
    }
    if role != Role::Publisher {
        if let Some((name, _)) = publisher_only.iter().find(|(_, set)| *set) {
            return Err((name, "only applies to publisher locations".into()));
        }
    }
    if loc.message_template().trim().is_empty() {
        return Err(("message_template", "must not be blank".into()));
    }
    if matches!(role, Role::Stats | Role::Metrics | Role::Static) && loc.allowed_origins.is_some() {
        return Err((
            "allowed_origins",
            "only applies to publisher and subscriber locations".into(),
        ));
    }
    if loc.websocket_allow_publish && loc.mode != SubscriberMode::WebSocket {
        return Err((
            "websocket_allow_publish",
            "only applies to mode = \"websocket\"".into(),
        ));
    }
    if loc.longpolling_connection_ttl.is_some() && loc.mode != SubscriberMode::LongPolling {
        return Err((
            "longpolling_connection_ttl",
            "only applies to mode = \"long-polling\"".into(),
        ));
    }
    for (name, expr) in [
        (
            "last_received_message_time",
            &loc.last_received_message_time,
        ),
        ("last_received_message_tag", &loc.last_received_message_tag),
        ("last_event_id", &loc.last_event_id),
        ("allowed_origins", &loc.allowed_origins),
        ("user_agent", &loc.user_agent),
    ] {
        if let Some(expr) = expr {
            crate::http::channels_path::ChannelsPathExpr::parse(expr).map_err(|m| (name, m))?;
        }
    }
    if let (Some(file), Some(dir)) = (&loc.jwt_public_key_file, base_dir) {
        if file.is_relative() {
            loc.jwt_public_key_file = Some(dir.join(file));
        }
    }
    crate::http::access::LocationAccess::from_config(loc)?;
    if let Some(rules) = &loc.padding_by_user_agent {
        crate::transport::padding::PaddingRules::parse(rules)
            .map_err(|m| ("padding_by_user_agent", m))?;
    }
    for (name, value) in [
        ("ping_message_interval", loc.ping_message_interval),
        ("subscriber_connection_ttl", loc.subscriber_connection_ttl),
        ("longpolling_connection_ttl", loc.longpolling_connection_ttl),
    ] {
        if value.is_some_and(|d| d.0.is_zero()) {
            return Err((
                name,
                "must be longer than zero (leave the key out to disable)".into(),
            ));
        }
    }
    if let Some(file) = &loc.header_template_file {
        if !loc.header_template.is_empty() {
            return Err((
                "header_template_file",
                "cannot be used together with header_template".into(),
            ));
        }
        let full = match base_dir {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.clone(),
        };
        loc.header_template = std::fs::read_to_string(&full).map_err(|e| {
            (
                "header_template_file",
                format!("cannot read {}: {e}", full.display()),
            )
        })?;
    }
    Ok(())
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySeg {
    /// A table key.
    Name(&'static str),
    /// An index into an array of tables.
    Index(usize),
}

/// A dotted path to a config key, e.g. `location[1].mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPath(pub Vec<KeySeg>);

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                KeySeg::Name(name) if i == 0 => write!(f, "{name}")?,
                KeySeg::Name(name) => write!(f, ".{name}")?,
                KeySeg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let config = Config::embedded_default().expect("the embedded default must validate");
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert!(config
            .locations
            .iter()
            .any(|l| l.role() == Role::Publisher && l.admin));
        assert!(config
            .locations
            .iter()
            .any(|l| l.mode == SubscriberMode::EventSource));
    }

    #[test]
    fn duplicate_location_is_refused_at_its_line() {
        let err = Config::from_toml(
            "[[location]]\npath = \"/pub\"\nrole = \"publisher\"\n\n[[location]]\npath = \"/pub\"\nrole = \"stats\"\n",
            "dup.toml",
            None,
        )
        .expect_err("two locations with one path and match");
        let text = err.to_string();
        assert!(text.contains("dup.toml:6"), "{text}");
        assert!(text.contains("duplicate location \"/pub\""), "{text}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::from_toml(
            "[channels]\nmessage_ttl = \"1m\"\nbogus = 1\n",
            "t.toml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.toml:3"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn validation_error_names_key_and_line() {
        let text = "[[location]]\npath = \"/pub\"\nrole = \"publisher\"\n\n[[location]]\npath = \"/sub/\"\nrole = \"subscriber\"\nmessage_template = \" \"\n";
        let err = Config::from_toml(text, "t.toml", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.toml:8"), "{err}");
        assert!(err.contains("location[1].message_template"), "{err}");
    }

    #[test]
    fn zero_limits_are_refused() {
        let text = "[channels]\nmax_number_of_channels = 0\n[[location]]\npath = \"/p\"\nrole = \"stats\"\n";
        let err = Config::from_toml(text, "t.toml", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.toml:2") && err.contains("channels.max_number_of_channels"),
            "{err}"
        );
    }
}
