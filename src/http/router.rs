//! Locations: the config's `[[location]]` list compiled into handlers, and request-path matching in
//! nginx order (exact match, then regexes in config order, then the longest prefix).

use super::access::LocationAccess;
use super::channels_path::{ChannelsPathExpr, RequestVars};
use crate::broker::{FormatId, SubscribePolicy};
use crate::config::{Config, LocationConfig, MatchKind, Role, SubscriberMode};
use crate::transport::eventsource::EventSourceFramer;
use crate::transport::padding::{PaddedFramer, PaddingRules, PaddingStyle};
use crate::transport::template::TemplateFramer;
use crate::transport::Framer;
use hyper::HeaderMap;
use regex::Regex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a publisher location allows.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// DELETE allowed.
    pub admin: bool,
    /// Messages are stored.
    pub store_messages: bool,
    /// Publish answers with channel info.
    pub channel_info_on_publish: bool,
}

/// One output format of a subscriber location: unpadded, or padded for one user-agent rule.
#[derive(Debug, Clone)]
pub struct FormatVariant {
    /// Frame cache slot.
    pub format: FormatId,
    /// Framer producing that format.
    pub framer: Arc<dyn Framer>,
}

/// How a subscriber location delivers.
#[derive(Debug, Clone)]
pub struct SubscriberSettings {
    /// Delivery mode.
    pub mode: SubscriberMode,
    /// Variant 0 is unpadded; variant `1 + i` is padded for padding rule `i`.
    pub variants: Vec<FormatVariant>,
    /// Padding rules by user agent.
    pub padding: PaddingRules,
    /// Where the user agent comes from.
    pub user_agent: ChannelsPathExpr,
    /// Ping interval.
    pub ping_interval: Option<Duration>,
    /// Lifetime of long-lived connections.
    pub connection_ttl: Option<Duration>,
    /// Longest long-polling wait.
    pub longpolling_ttl: Option<Duration>,
    /// Long-poll timeouts answer with a "Timed out" message.
    pub timeout_with_body: bool,
    /// Replaces `If-Modified-Since`.
    pub last_received_message_time: Option<ChannelsPathExpr>,
    /// Replaces `If-None-Match`.
    pub last_received_message_tag: Option<ChannelsPathExpr>,
    /// Replaces `Last-Event-ID`.
    pub last_event_id: Option<ChannelsPathExpr>,
    /// WebSocket text frames are published.
    pub websocket_allow_publish: bool,
    /// Which channels subscribers of this location may join.
    pub policy: SubscribePolicy,
}

impl SubscriberSettings {
    /// The variant for a request's user agent.
    pub fn variant_for(&self, vars: &RequestVars<'_>) -> &FormatVariant {
        if self.padding.0.is_empty() {
            return &self.variants[0];
        }
        let agent = self.user_agent.eval(vars);
        match self.padding.find(&agent) {
            Some(rule) => &self.variants[1 + rule],
            None => &self.variants[0],
        }
    }
}

/// What a location does.
#[derive(Debug, Clone)]
pub enum Handler {
    /// Publisher.
    Publisher(PublisherSettings),
    /// Subscriber.
    Subscriber(Box<SubscriberSettings>),
    /// Channel statistics.
    Stats,
    /// Prometheus metrics.
    Metrics,
    /// Embedded static files.
    Static,
}

/// A compiled location.
#[derive(Debug)]
pub struct Location {
    /// For logs: path and role.
    pub description: String,
    match_kind: MatchKind,
    /// The configured path (the `location` label of request metrics).
    pub path: String,
    regex: Option<Regex>,
    /// Where channel ids come from.
    pub channels_path: ChannelsPathExpr,
    /// `Access-Control-Allow-Origin` value, when CORS is on.
    pub allowed_origins: Option<ChannelsPathExpr>,
    /// Who may use it.
    pub access: LocationAccess,
    /// Answers counted by status.
    pub requests: crate::metrics::RequestCounters,
    /// What it does.
    pub handler: Handler,
}

/// Every location, ready to match requests.
#[derive(Debug)]
pub struct Router {
    locations: Vec<Location>,
}

fn expr(source: &Option<String>) -> Result<Option<ChannelsPathExpr>, String> {
    source.as_deref().map(ChannelsPathExpr::parse).transpose()
}

impl Router {
    /// Compiles the config's locations. Each distinct framing (mode, templates, padding rule) gets an
    /// output format from `formats`, which keeps its ids across reloads so that an unchanged
    /// location keeps sharing frames with the messages already published.
    pub fn compile(config: &Config, formats: &mut FormatRegistry) -> Result<Router, String> {
        let mut locations = Vec::with_capacity(config.locations.len());
        for loc in &config.locations {
            let handler = match loc.role() {
                Role::Publisher => Handler::Publisher(PublisherSettings {
                    admin: loc.admin,
                    store_messages: loc.store_messages.unwrap_or(true),
                    channel_info_on_publish: loc.channel_info_on_publish.unwrap_or(true),
                }),
                Role::Stats => Handler::Stats,
                Role::Metrics => Handler::Metrics,
                Role::Static => Handler::Static,
                Role::Subscriber => {
                    Handler::Subscriber(Box::new(subscriber_settings(config, loc, formats)?))
                }
            };
            let regex = match loc.match_kind {
                MatchKind::Regex => Some(
                    Regex::new(&loc.path)
                        .map_err(|e| format!("location {}: invalid regex: {e}", loc.path))?,
                ),
                _ => None,
            };
            locations.push(Location {
                description: loc.describe(),
                match_kind: loc.match_kind,
                path: loc.path.clone(),
                regex,
                channels_path: ChannelsPathExpr::parse(loc.channels_path())?,
                allowed_origins: expr(&loc.allowed_origins)?,
                requests: crate::metrics::RequestCounters::new(&loc.path),
                access: LocationAccess::from_config(loc)
                    .map_err(|(key, message)| format!("location {}: {key}: {message}", loc.path))?,
                handler,
            });
        }
        Ok(Router { locations })
    }

    /// The locations, in config order.
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// Finds the location for `path` and the variables its expressions may use.
    pub fn route<'a>(
        &'a self,
        path: &'a str,
        query: &'a str,
        headers: &'a HeaderMap,
    ) -> Option<(&'a Location, RequestVars<'a>)> {
        let vars = |captures, suffix| RequestVars {
            query,
            captures,
            suffix,
            headers: Some(headers),
        };
        if let Some(loc) = self
            .locations
            .iter()
            .find(|l| l.match_kind == MatchKind::Exact && l.path == path)
        {
            return Some((loc, vars(Vec::new(), "")));
        }
        for loc in self
            .locations
            .iter()
            .filter(|l| l.match_kind == MatchKind::Regex)
        {
            if let Some(captures) = loc.regex.as_ref().and_then(|r| r.captures(path)) {
                let captures = captures.iter().map(|m| m.map(|m| m.as_str())).collect();
                return Some((loc, vars(captures, "")));
            }
        }
        self.locations
            .iter()
            .filter(|l| l.match_kind == MatchKind::Prefix && path.starts_with(l.path.as_str()))
            .max_by_key(|l| l.path.len())
            .map(|loc| (loc, vars(Vec::new(), &path[loc.path.len()..])))
    }
}

/// Output formats by framing, kept across reloads: the same framing always gets the same id.
#[derive(Debug, Default)]
pub struct FormatRegistry {
    ids: HashMap<String, FormatId>,
}

impl FormatRegistry {
    fn id_for(&mut self, key: String) -> FormatId {
        let next = FormatId(self.ids.len());
        *self.ids.entry(key).or_insert(next)
    }

    /// How many formats exist (the size of each message's frame cache).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no format exists yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

fn subscriber_settings(
    config: &Config,
    loc: &LocationConfig,
    formats: &mut FormatRegistry,
) -> Result<SubscriberSettings, String> {
    let content_type = loc
        .content_type
        .as_deref()
        .unwrap_or("text/plain; charset=utf-8");
    let framing = if loc.mode == SubscriberMode::EventSource {
        "eventsource"
    } else {
        "template"
    };
    let base_key = [
        framing,
        &loc.header_template,
        loc.message_template(),
        &loc.footer_template,
        &config.channels.ping_message_text,
        content_type,
    ]
    .join("\u{1}");
    let base: Arc<dyn Framer> = match loc.mode {
        SubscriberMode::EventSource => Arc::new(EventSourceFramer::new(
            &loc.header_template,
            loc.message_template(),
            &loc.footer_template,
        )),
        _ => Arc::new(TemplateFramer::new(
            &loc.header_template,
            loc.message_template(),
            &loc.footer_template,
            &config.channels.ping_message_text,
            content_type,
        )),
    };
    let padding = match &loc.padding_by_user_agent {
        Some(rules) => PaddingRules::parse(rules)?,
        None => PaddingRules::default(),
    };
    let style = match loc.mode {
        SubscriberMode::EventSource => PaddingStyle::SseComment,
        _ => PaddingStyle::LineBreaks,
    };
    let mut variants = vec![FormatVariant {
        format: formats.id_for(base_key.clone()),
        framer: base.clone(),
    }];
    for rule in &padding.0 {
        let key = format!(
            "{base_key}\u{1}{}\u{1}{}\u{1}{}",
            rule.pattern, rule.header_min, rule.message_min
        );
        variants.push(FormatVariant {
            format: formats.id_for(key),
            framer: Arc::new(PaddedFramer::new(base.clone(), rule, style)),
        });
    }
    let connection_ttl = loc.subscriber_connection_ttl.map(|d| d.0);
    Ok(SubscriberSettings {
        mode: loc.mode,
        variants,
        padding,
        user_agent: ChannelsPathExpr::parse(
            loc.user_agent.as_deref().unwrap_or("$http_user_agent"),
        )?,
        ping_interval: loc.ping_message_interval.map(|d| d.0),
        connection_ttl,
        longpolling_ttl: loc
            .longpolling_connection_ttl
            .map(|d| d.0)
            .or(connection_ttl),
        timeout_with_body: config.channels.timeout_with_body,
        last_received_message_time: expr(&loc.last_received_message_time)?,
        last_received_message_tag: expr(&loc.last_received_message_tag)?,
        last_event_id: expr(&loc.last_event_id)?,
        websocket_allow_publish: loc.websocket_allow_publish,
        policy: SubscribePolicy {
            authorized_channels_only: loc.authorized_channels_only,
            allow_events_channel: loc.allow_connections_to_events_channel,
            wildcard_channel_max_qtd: loc.wildcard_channel_max_qtd,
        },
    })
}
