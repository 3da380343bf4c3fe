//! Locations: the config's `[[location]]` list compiled into handlers, and request-path matching in
//! nginx order (exact match, then regexes in config order, then the longest prefix).

use super::channels_path::{ChannelsPathExpr, RequestVars};
use crate::broker::FormatId;
use crate::config::{Config, LocationConfig, MatchKind, Role, SubscriberMode};
use crate::transport::eventsource::EventSourceFramer;
use crate::transport::live::LiveOptions;
use crate::transport::stream::StreamFramer;
use crate::transport::Framer;
use regex::Regex;
use std::sync::Arc;

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

/// How a subscriber location delivers.
#[derive(Debug, Clone)]
pub struct SubscriberSettings {
    /// Delivery mode.
    pub mode: SubscriberMode,
    /// Options of the live loop.
    pub live: LiveOptions,
}

/// What a location does.
#[derive(Debug, Clone)]
pub enum Handler {
    /// Publisher.
    Publisher(PublisherSettings),
    /// Subscriber.
    Subscriber(SubscriberSettings),
    /// Channel statistics.
    Stats,
}

/// A compiled location.
#[derive(Debug)]
pub struct Location {
    /// For logs: path and role.
    pub description: String,
    match_kind: MatchKind,
    path: String,
    regex: Option<Regex>,
    /// Where channel ids come from.
    pub channels_path: ChannelsPathExpr,
    /// What it does.
    pub handler: Handler,
}

/// Every location, ready to match requests.
#[derive(Debug)]
pub struct Router {
    locations: Vec<Location>,
}

impl Router {
    /// Compiles the config's locations; each subscriber location gets its own output format.
    /// Returns the router and the number of formats (for the broker's frame caches).
    pub fn compile(config: &Config) -> Result<(Router, usize), String> {
        let mut locations = Vec::with_capacity(config.locations.len());
        let mut formats = 0;
        for loc in &config.locations {
            let handler = match loc.role() {
                Role::Publisher => Handler::Publisher(PublisherSettings {
                    admin: loc.admin,
                    store_messages: loc.store_messages.unwrap_or(true),
                    channel_info_on_publish: loc.channel_info_on_publish.unwrap_or(true),
                }),
                Role::Stats => Handler::Stats,
                Role::Subscriber => {
                    let format = FormatId(formats);
                    formats += 1;
                    Handler::Subscriber(SubscriberSettings {
                        mode: loc.mode,
                        live: LiveOptions {
                            format,
                            framer: framer_for(loc, &config.channels.ping_message_text),
                            ping_interval: loc.ping_message_interval.map(|d| d.0),
                            connection_ttl: loc.subscriber_connection_ttl.map(|d| d.0),
                        },
                    })
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
                handler,
            });
        }
        Ok((Router { locations }, formats))
    }

    /// The locations, in config order.
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// Finds the location for `path` and the variables its channels path may use.
    pub fn route<'a>(
        &'a self,
        path: &'a str,
        query: &'a str,
    ) -> Option<(&'a Location, RequestVars<'a>)> {
        if let Some(loc) = self
            .locations
            .iter()
            .find(|l| l.match_kind == MatchKind::Exact && l.path == path)
        {
            return Some((
                loc,
                RequestVars {
                    query,
                    ..RequestVars::default()
                },
            ));
        }
        for loc in self
            .locations
            .iter()
            .filter(|l| l.match_kind == MatchKind::Regex)
        {
            if let Some(captures) = loc.regex.as_ref().and_then(|r| r.captures(path)) {
                let captures = captures.iter().map(|m| m.map(|m| m.as_str())).collect();
                return Some((
                    loc,
                    RequestVars {
                        query,
                        captures,
                        suffix: "",
                    },
                ));
            }
        }
        self.locations
            .iter()
            .filter(|l| l.match_kind == MatchKind::Prefix && path.starts_with(l.path.as_str()))
            .max_by_key(|l| l.path.len())
            .map(|loc| {
                let suffix = &path[loc.path.len()..];
                (
                    loc,
                    RequestVars {
                        query,
                        captures: Vec::new(),
                        suffix,
                    },
                )
            })
    }
}

fn framer_for(loc: &LocationConfig, ping_text: &str) -> Arc<dyn Framer> {
    match loc.mode {
        SubscriberMode::Streaming => Arc::new(StreamFramer::new(
            &loc.header_template,
            loc.message_template(),
            &loc.footer_template,
            ping_text,
            loc.content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8"),
        )),
        SubscriberMode::EventSource => Arc::new(EventSourceFramer::new(
            &loc.header_template,
            loc.message_template(),
            &loc.footer_template,
        )),
    }
}
