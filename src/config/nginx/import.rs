//! Meaning: walks the `http`/`server`/`location` tree, applies every `push_stream_*` directive at
//! its level with the module's inheritance, the few other nginx directives Herald honours (`listen`,
//! `client_max_body_size`, `default_type`, `allow`/`deny`, `set $push_stream_channel_id`), and
//! records one warning for everything else. The result is a plan per served location.

use super::directives::*;
use super::syntax::Directive;
use super::values::*;
use super::{error_at, Origin, Warning};
use crate::config::units::{parse_duration, parse_size};
use crate::config::ConfigError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// A value with the directive and place it came from.
#[derive(Debug, Clone)]
pub(super) struct Setting {
    pub(super) value: Value,
    pub(super) directive: String,
    pub(super) origin: Origin,
}

/// The settings one level (http, server, location) sets itself, or the merged result for a location.
#[derive(Debug, Clone, Default)]
pub(super) struct Level {
    /// `push_stream_*` "any"-context directives by Herald key.
    pub(super) any: BTreeMap<&'static str, Setting>,
    /// `client_max_body_size` in bytes (0 = unlimited).
    pub(super) body_size: Option<Setting>,
    /// `client_body_timeout`.
    pub(super) body_timeout: Option<Setting>,
    /// `default_type`.
    pub(super) default_type: Option<Setting>,
    /// `allow`/`deny` rules in order; a level with none inherits its parent's list whole (nginx's merge).
    pub(super) access: Option<Vec<AccessRule>>,
}

/// One `allow` or `deny` rule.
#[derive(Debug, Clone)]
pub(super) struct AccessRule {
    pub(super) allow: bool,
    /// `all` or an address / CIDR range.
    pub(super) what: String,
    pub(super) origin: Origin,
}

impl Level {
    /// This level's settings on top of `parent`'s: nginx's merge, the child wins where it sets a value.
    pub(super) fn over(&self, parent: &Level) -> Level {
        let mut any = parent.any.clone();
        any.extend(self.any.iter().map(|(k, v)| (*k, v.clone())));
        Level {
            any,
            body_size: self.body_size.clone().or_else(|| parent.body_size.clone()),
            body_timeout: self
                .body_timeout
                .clone()
                .or_else(|| parent.body_timeout.clone()),
            default_type: self
                .default_type
                .clone()
                .or_else(|| parent.default_type.clone()),
            access: self.access.clone().or_else(|| parent.access.clone()),
        }
    }
}

/// The context a directive appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ctx {
    Main,
    Http,
    Server,
    Location,
}

/// What a location does, as its role directive says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoleSpec {
    Publisher { admin: bool },
    Subscriber(crate::config::SubscriberMode),
    Stats,
}

/// How a location's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathMatch {
    Prefix,
    Exact,
    Regex,
}

/// A push_stream location, ready to be written.
#[derive(Debug, Clone)]
pub(super) struct LocationPlan {
    pub(super) origin: Origin,
    /// `location ~ /sub/(.*)` as written.
    pub(super) label: String,
    pub(super) path: String,
    pub(super) matching: PathMatch,
    pub(super) role: RoleSpec,
    /// Its settings merged with those of the server, http and enclosing locations.
    pub(super) merged: Level,
    /// What the location sets itself (for warnings about directives that do not apply).
    pub(super) own: Level,
}

/// One `server` block.
#[derive(Debug, Default)]
pub(super) struct ServerPlan {
    pub(super) origin: Option<Origin>,
    pub(super) listen: Option<Setting>,
    /// Settings of the server level merged over http (for the server-wide body size).
    pub(super) level: Level,
    pub(super) locations: Vec<LocationPlan>,
    pub(super) warnings: Vec<Warning>,
}

/// Walks the directive tree, collecting `[channels]` values, the chosen server and warnings.
#[derive(Default)]
pub(super) struct Importer {
    /// http-only push_stream directives by `[channels]` key.
    pub(super) channels: BTreeMap<&'static str, Setting>,
    /// Where the `http` block starts.
    pub(super) http_origin: Option<Origin>,
    pub(super) warnings: Vec<Warning>,
}

impl Importer {
    pub(super) fn warn(&mut self, origin: &Origin, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: origin.file.to_path_buf(),
            line: origin.line,
            message: message.into(),
        });
    }

    /// The whole file: finds `http` (or reads a file without one as the contents of `http`, like a
    /// conf.d file) and returns the server Herald serves.
    pub(super) fn main_context(
        &mut self,
        directives: &[Directive],
        file: &Arc<Path>,
    ) -> Result<ServerPlan, ConfigError> {
        let has_http = directives.iter().any(|d| d.name == "http");
        if !has_http && directives.iter().any(|d| d.name == "server") {
            self.warn(
                &Origin {
                    file: file.clone(),
                    line: 1,
                },
                "no http block: reading the file as the contents of one",
            );
            return self.http_context(directives, file);
        }
        let mut http: Option<&[Directive]> = None;
        for d in directives {
            if d.name == "http" {
                let Some(block) = &d.block else {
                    return Err(error_at(
                        &d.origin,
                        "directive \"http\" has no opening \"{\"",
                    ));
                };
                if let Some(first) = &self.http_origin {
                    return Err(error_at(
                        &d.origin,
                        format!(
                            "\"http\" directive is duplicate (first at line {})",
                            first.line
                        ),
                    ));
                }
                if !d.args.is_empty() {
                    return Err(error_at(
                        &d.origin,
                        "invalid number of arguments in \"http\" directive",
                    ));
                }
                self.http_origin = Some(d.origin.clone());
                http = Some(block);
                continue;
            }
            self.directive(d, Ctx::Main, &mut Level::default(), &mut None)?;
        }
        let Some(http) = http else {
            return Err(error_at(
                &Origin {
                    file: file.clone(),
                    line: 1,
                },
                "no http block with push_stream locations found",
            ));
        };
        self.http_context(http, file)
    }

    pub(super) fn http_context(
        &mut self,
        directives: &[Directive],
        file: &Arc<Path>,
    ) -> Result<ServerPlan, ConfigError> {
        let mut level = Level::default();
        let mut servers = Vec::new();
        for d in directives {
            match d.name.as_str() {
                "server" => servers.push(d),
                _ => self.directive(d, Ctx::Http, &mut level, &mut None)?,
            }
        }
        // Every server is read (so that nginx -t errors anywhere stop start-up); the first with push_stream
        // locations is served, and its warnings kept.
        let mut chosen: Option<ServerPlan> = None;
        let mut skipped = Vec::new();
        for d in servers {
            let plan = self.server_context(d, &level)?;
            if chosen.is_none() && !plan.locations.is_empty() {
                chosen = Some(plan);
            } else {
                skipped.push((d, plan.locations.len()));
            }
        }
        let Some(mut chosen) = chosen else {
            return Err(error_at(
                &Origin {
                    file: file.clone(),
                    line: 1,
                },
                "no server block has a location with push_stream_publisher, push_stream_subscriber or push_stream_channels_statistics",
            ));
        };
        for (d, count) in skipped {
            let served = chosen
                .origin
                .as_ref()
                .map_or(String::new(), |o| o.to_string());
            if count > 0 {
                self.warn(
                    &d.origin,
                    format!("server block ignored: it has {count} push_stream location(s), but Herald serves one server, the first ({served})"),
                );
            } else {
                self.warn(
                    &d.origin,
                    "server block ignored: it has no push_stream location",
                );
            }
        }
        self.warnings.append(&mut chosen.warnings);
        Ok(chosen)
    }

    pub(super) fn server_context(
        &mut self,
        server: &Directive,
        http: &Level,
    ) -> Result<ServerPlan, ConfigError> {
        let Some(block) = &server.block else {
            return Err(error_at(
                &server.origin,
                "directive \"server\" has no opening \"{\"",
            ));
        };
        // Collect this server's warnings apart: they are dropped when another server is served.
        let outer = std::mem::take(&mut self.warnings);
        let result = self.server_block(server, block, http);
        let warnings = std::mem::replace(&mut self.warnings, outer);
        let mut plan = result?;
        plan.warnings = warnings;
        Ok(plan)
    }

    pub(super) fn server_block(
        &mut self,
        server: &Directive,
        block: &[Directive],
        http: &Level,
    ) -> Result<ServerPlan, ConfigError> {
        let mut own = Level::default();
        let mut listens: Vec<&Directive> = Vec::new();
        let mut locations = Vec::new();
        for d in block {
            match d.name.as_str() {
                "listen" => listens.push(d),
                "location" => locations.push(d),
                _ => self.directive(d, Ctx::Server, &mut own, &mut None)?,
            }
        }
        let level = own.over(http);
        let mut plan = ServerPlan {
            origin: Some(server.origin.clone()),
            listen: None,
            level: level.clone(),
            locations: Vec::new(),
            warnings: Vec::new(),
        };
        for (i, d) in listens.iter().enumerate() {
            let address = self.listen(d)?;
            if i == 0 {
                plan.listen = Some(Setting {
                    value: Value::Text(address),
                    directive: "listen".into(),
                    origin: d.origin.clone(),
                });
            } else {
                self.warn(
                    &d.origin,
                    format!(
                        "\"{}\" ignored: Herald listens on one address, the first listen ({})",
                        d.label(),
                        listens[0].origin
                    ),
                );
            }
        }
        for d in locations {
            self.location(d, &level, None, &mut plan.locations)?;
        }
        // Duplicate locations are refused by `Config::validate`, for TOML and imports alike.
        Ok(plan)
    }

    /// `listen ADDR [params…]` → the socket address Herald binds.
    pub(super) fn listen(&mut self, d: &Directive) -> Result<String, ConfigError> {
        let Some((address, params)) = d.args.split_first() else {
            return Err(error_at(
                &d.origin,
                "invalid number of arguments in \"listen\" directive: expected an address or port",
            ));
        };
        let address = listen_address(address).map_err(|m| {
            error_at(
                &d.origin,
                format!("invalid value \"{address}\" in \"listen\" directive: {m}"),
            )
        })?;
        if !params.is_empty() {
            let plain = params
                .iter()
                .any(|p| matches!(p.as_str(), "ssl" | "http2" | "quic" | "proxy_protocol"));
            let note = if plain {
                "; Herald serves plain HTTP/1.1 (put TLS in front of it)"
            } else {
                ""
            };
            self.warn(
                &d.origin,
                format!("listen parameters ignored: {}{note}", params.join(" ")),
            );
        }
        Ok(address)
    }

    /// A `location` block: its role, settings, and nested locations (pushed after it).
    pub(super) fn location(
        &mut self,
        d: &Directive,
        parent: &Level,
        enclosing: Option<&str>,
        out: &mut Vec<LocationPlan>,
    ) -> Result<(), ConfigError> {
        let Some(block) = &d.block else {
            return Err(error_at(
                &d.origin,
                "directive \"location\" has no opening \"{\"",
            ));
        };
        let (matching, path) = match d.args.as_slice() {
            [single] => match single.as_str() {
                s if s.starts_with("^~") => (Some(PathMatch::Prefix), s[2..].to_string()),
                s if s.starts_with("~*") => (Some(PathMatch::Regex), format!("(?i){}", &s[2..])),
                s if s.starts_with('~') => (Some(PathMatch::Regex), s[1..].to_string()),
                s if s.starts_with('=') => (Some(PathMatch::Exact), s[1..].to_string()),
                s if s.starts_with('@') => (None, s.to_string()),
                s => (Some(PathMatch::Prefix), s.to_string()),
            },
            [modifier, path] => match modifier.as_str() {
                "=" => (Some(PathMatch::Exact), path.clone()),
                "~" => (Some(PathMatch::Regex), path.clone()),
                "~*" => (Some(PathMatch::Regex), format!("(?i){path}")),
                "^~" => (Some(PathMatch::Prefix), path.clone()),
                other => {
                    return Err(error_at(
                        &d.origin,
                        format!("invalid location modifier \"{other}\"; expected =, ~, ~* or ^~"),
                    ))
                }
            },
            _ => return Err(error_at(
                &d.origin,
                "invalid number of arguments in \"location\" directive: expected [modifier] path",
            )),
        };
        let label = d.label();
        let Some(matching) = matching else {
            self.warn(
                &d.origin,
                format!("named {label} ignored: Herald has no internal redirects"),
            );
            return Ok(());
        };
        if path.is_empty() || path == "(?i)" {
            return Err(error_at(&d.origin, format!("{label}: empty location path")));
        }
        if d.args.first().is_some_and(|a| a.starts_with("^~")) {
            self.warn(
                &d.origin,
                format!("{label}: served as a plain prefix location; Herald tries regex locations before prefixes, so a regex that also matches wins (nginx's ^~ would win)"),
            );
        }
        if let Some(outer) = enclosing {
            self.warn(
                &d.origin,
                format!("{label} is nested in {outer}; Herald serves it as a location of its own, matched among all the others"),
            );
        }
        let mut own = Level::default();
        let mut role: Option<(RoleSpec, Origin)> = None;
        let mut nested = Vec::new();
        for child in block {
            if child.name == "location" {
                nested.push(child);
            } else {
                self.directive(child, Ctx::Location, &mut own, &mut role)?;
            }
        }
        let merged = own.over(parent);
        match role {
            Some((role, _)) => out.push(LocationPlan {
                origin: d.origin.clone(),
                label: label.clone(),
                path,
                matching,
                role,
                merged: merged.clone(),
                own,
            }),
            None => self.warn(
                &d.origin,
                format!("{label} has no push_stream_publisher, push_stream_subscriber or push_stream_channels_statistics; Herald does not serve it"),
            ),
        }
        for child in nested {
            self.location(child, &merged, Some(&label), out)?;
        }
        Ok(())
    }

    /// Any directive other than `http`, `server`, `location` and `listen`.
    pub(super) fn directive(
        &mut self,
        d: &Directive,
        ctx: Ctx,
        level: &mut Level,
        role: &mut Option<(RoleSpec, Origin)>,
    ) -> Result<(), ConfigError> {
        if d.name.starts_with("push_stream_") {
            return self.push_stream(d, ctx, level, role);
        }
        self.other_directive(d, ctx, level)
    }

    /// nginx's own directives: the few Herald honours, a warning for the rest.
    pub(super) fn other_directive(
        &mut self,
        d: &Directive,
        ctx: Ctx,
        level: &mut Level,
    ) -> Result<(), ConfigError> {
        let in_http = matches!(ctx, Ctx::Http | Ctx::Server | Ctx::Location);
        match d.name.as_str() {
            "http" | "server" | "location" | "listen" => {
                return Err(error_at(&d.origin, format!("\"{}\" directive is not allowed here", d.name)));
            }
            "client_max_body_size" if in_http && d.block.is_none() => {
                let [arg] = d.args.as_slice() else {
                    return Err(arg_count(d, "one size"));
                };
                let size = parse_size(arg)
                    .map_err(|m| error_at(&d.origin, format!("invalid value \"{arg}\" in \"client_max_body_size\" directive: {m}")))?;
                set_once(&mut level.body_size, d, Value::Size(size))?;
            }
            "client_body_timeout" if in_http && d.block.is_none() => {
                let [arg] = d.args.as_slice() else {
                    return Err(arg_count(d, "one time"));
                };
                let time = parse_duration(arg)
                    .map_err(|m| error_at(&d.origin, format!("invalid value \"{arg}\" in \"client_body_timeout\" directive: {m}")))?;
                set_once(&mut level.body_timeout, d, Value::Time(time))?;
            }
            "default_type" if in_http && d.block.is_none() => {
                let [arg] = d.args.as_slice() else {
                    return Err(arg_count(d, "one MIME type"));
                };
                set_once(&mut level.default_type, d, Value::Text(arg.clone()))?;
            }
            "set" if matches!(ctx, Ctx::Server | Ctx::Location) && d.block.is_none() => {
                match d.args.as_slice() {
                    [var, expr]
                        if var == "$push_stream_channel_id" || var == "$push_stream_channels_path" =>
                    {
                        let value = nginx_expr(expr).map_err(|m| {
                            error_at(&d.origin, format!("\"set {var}\" (the legacy push_stream_channels_path): {m}"))
                        })?;
                        insert_once(&mut level.any, "channels_path", d, Value::Expr(value))?;
                    }
                    _ => self.warn(
                        &d.origin,
                        format!("\"{}\" ignored: the only variables Herald reads from set are the legacy $push_stream_channel_id and $push_stream_channels_path", d.label()),
                    ),
                }
            }
            "allow" | "deny" if in_http && d.block.is_none() => {
                let [what] = d.args.as_slice() else {
                    return Err(arg_count(d, "one address, CIDR range or \"all\""));
                };
                if what.starts_with("unix:") {
                    self.warn(&d.origin, format!("\"{}\" ignored: Herald does not listen on unix sockets", d.label()));
                    return Ok(());
                }
                if what != "all" {
                    crate::http::access::parse_net(what).map_err(|m| {
                        error_at(&d.origin, format!("invalid parameter \"{what}\" in \"{}\" directive: {m}", d.name))
                    })?;
                }
                level.access.get_or_insert_with(Vec::new).push(AccessRule {
                    allow: d.name == "allow",
                    what: what.clone(),
                    origin: d.origin.clone(),
                });
            }
            "if" => self.warn(
                &d.origin,
                format!("\"{}\" block ignored with everything in it: Herald has no conditional configuration", d.label()),
            ),
            name if d.block.is_some() => {
                self.warn(&d.origin, format!("\"{name}\" block ignored (Herald does not use it)"));
            }
            name => self.warn(&d.origin, format!("\"{name}\" ignored (Herald does not use it)")),
        }
        Ok(())
    }

    /// A `push_stream_*` directive.
    pub(super) fn push_stream(
        &mut self,
        d: &Directive,
        ctx: Ctx,
        level: &mut Level,
        role: &mut Option<(RoleSpec, Origin)>,
    ) -> Result<(), ConfigError> {
        if let Some((_, hint)) = REMOVED.iter().find(|(name, _)| *name == d.name) {
            self.warn(
                &d.origin,
                format!("\"{}\" ignored: the module removed it ({hint})", d.name),
            );
            return Ok(());
        }
        let mut name = d.name.as_str();
        if let Some((old, new)) = RENAMED.iter().find(|(old, _)| *old == name) {
            self.warn(
                &d.origin,
                format!("\"{old}\" is the old name of \"{new}\"; read as that"),
            );
            name = new;
        }
        if d.block.is_some() {
            return Err(error_at(
                &d.origin,
                format!("\"{}\" directive is not terminated by \";\"", d.name),
            ));
        }
        let is_role = matches!(
            name,
            "push_stream_publisher"
                | "push_stream_subscriber"
                | "push_stream_channels_statistics"
                | "push_stream_websocket"
                | "push_stream_eventsource_support"
        );
        if is_role {
            if ctx != Ctx::Location {
                return Err(error_at(
                    &d.origin,
                    format!("\"{}\" directive is not allowed here", d.name),
                ));
            }
            return self.role(d, role);
        }
        let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
            return Err(error_at(
                &d.origin,
                format!("unknown directive \"{}\"", d.name),
            ));
        };
        let allowed = match spec.scope {
            Scope::Http => ctx == Ctx::Http,
            Scope::Any => ctx != Ctx::Main,
        };
        if !allowed {
            let only = if spec.scope == Scope::Http {
                " (only in the http block)"
            } else {
                " (only in http, server or location blocks)"
            };
            return Err(error_at(
                &d.origin,
                format!("\"{}\" directive is not allowed here{only}", d.name),
            ));
        }
        let arg = match (d.args.as_slice(), spec.kind) {
            ([arg], _) => arg,
            ([arg, zone], Kind::Size) if spec.key == "shared_memory_size" => {
                self.warn(&d.origin, format!("shared memory zone name \"{zone}\" ignored: Herald keeps channels in its own memory"));
                arg
            }
            _ => {
                let expected = if spec.key == "shared_memory_size" {
                    "a size and an optional zone name"
                } else {
                    "one value"
                };
                return Err(arg_count(d, expected));
            }
        };
        let value = read_value(spec, arg, d)?;
        match spec.scope {
            Scope::Http => insert_once(&mut self.channels, spec.key, d, value),
            Scope::Any => insert_once(&mut level.any, spec.key, d, value),
        }
    }

    /// `push_stream_publisher [normal|admin]`, `push_stream_subscriber [mode]`,
    /// `push_stream_channels_statistics` and the legacy `push_stream_websocket` /
    /// `push_stream_eventsource_support on`.
    pub(super) fn role(
        &mut self,
        d: &Directive,
        role: &mut Option<(RoleSpec, Origin)>,
    ) -> Result<(), ConfigError> {
        use crate::config::SubscriberMode as Mode;
        let arg = match d.args.as_slice() {
            [] if d.name != "push_stream_eventsource_support" => None,
            [arg]
                if d.name != "push_stream_channels_statistics"
                    && d.name != "push_stream_websocket" =>
            {
                Some(arg.to_ascii_lowercase())
            }
            _ => {
                let expected = match d.name.as_str() {
                    "push_stream_publisher" => "none or one of normal, admin",
                    "push_stream_subscriber" => {
                        "none or one of streaming, polling, long-polling, eventsource, websocket"
                    }
                    "push_stream_eventsource_support" => "on or off",
                    _ => "none",
                };
                return Err(arg_count(d, expected));
            }
        };
        let new = match (d.name.as_str(), arg.as_deref()) {
            ("push_stream_publisher", None | Some("normal")) => RoleSpec::Publisher { admin: false },
            ("push_stream_publisher", Some("admin")) => RoleSpec::Publisher { admin: true },
            ("push_stream_publisher", Some(other)) => {
                return Err(error_at(&d.origin, format!("invalid push_stream_publisher mode value: {other}, accepted values (normal, admin)")))
            }
            ("push_stream_subscriber", mode) => RoleSpec::Subscriber(match mode {
                None | Some("streaming") => Mode::Streaming,
                Some("polling") => Mode::Polling,
                Some("long-polling") => Mode::LongPolling,
                Some("eventsource") => Mode::EventSource,
                Some("websocket") => Mode::WebSocket,
                Some(other) => {
                    return Err(error_at(
                        &d.origin,
                        format!("invalid push_stream_subscriber mode value: {other}, accepted values (streaming, polling, long-polling, eventsource, websocket)"),
                    ))
                }
            }),
            ("push_stream_channels_statistics", _) => RoleSpec::Stats,
            ("push_stream_websocket", _) => {
                self.warn(&d.origin, "\"push_stream_websocket\" is the old form of \"push_stream_subscriber websocket\"; read as that");
                RoleSpec::Subscriber(Mode::WebSocket)
            }
            // push_stream_eventsource_support on|off: turns a streaming subscriber into EventSource.
            (_, flag) => {
                let on = parse_flag(flag.unwrap_or_default(), d)?;
                self.warn(&d.origin, "\"push_stream_eventsource_support\" is the old form of \"push_stream_subscriber eventsource\"; read as that");
                if !on {
                    return Ok(());
                }
                return match role {
                    Some((RoleSpec::Subscriber(mode), _)) if *mode == Mode::Streaming => {
                        *mode = Mode::EventSource;
                        Ok(())
                    }
                    None => {
                        *role = Some((RoleSpec::Subscriber(Mode::EventSource), d.origin.clone()));
                        Ok(())
                    }
                    Some((_, first)) => Err(error_at(
                        &d.origin,
                        format!("\"push_stream_eventsource_support on\" needs a streaming subscriber location; the role was set at line {}", first.line),
                    )),
                };
            }
        };
        if let Some((_, first)) = role {
            return Err(error_at(
                &d.origin,
                format!("\"{}\" directive is duplicate (the location's role was already set at line {})", d.name, first.line),
            ));
        }
        *role = Some((new, d.origin.clone()));
        Ok(())
    }
}
