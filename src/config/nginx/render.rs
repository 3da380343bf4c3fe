//! Output: the TOML document for the served server, built with `toml_edit`, with every value the
//! module defaults differently from Herald written out, and the warnings about locations Herald
//! reads differently. Errors from validating it are mapped back to the nginx file and line.

use super::directives::*;
use super::import::*;
use super::values::access_lists;
use super::{
    error_at, Origin, Warning, NGINX_DEFAULT_BODY_SIZE, NGINX_DEFAULT_BODY_TIMEOUT,
    NGINX_DEFAULT_TYPE,
};
use crate::config::ConfigError;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

/// The TOML text and, for each key written, the nginx directive it came from.
pub(super) struct Rendered {
    pub(super) toml: String,
    /// `location[2].channels_path` → (where, which directive).
    pub(super) sources: BTreeMap<String, (Origin, String)>,
}

impl Rendered {
    /// Points a validation error of the generated TOML at the nginx directive behind the key.
    pub(super) fn map_error(&self, err: ConfigError, file: &Arc<Path>) -> ConfigError {
        let mut key = err.key.clone().unwrap_or_default();
        loop {
            if let Some((origin, directive)) = self.sources.get(&key) {
                let herald_key = err.key.as_deref().unwrap_or("?");
                return error_at(
                    origin,
                    format!("\"{directive}\": {} (Herald key {herald_key})", err.message),
                );
            }
            match key.rfind(['.', '[']) {
                Some(at) => key.truncate(at),
                None => break,
            }
        }
        error_at(
            &Origin {
                file: file.clone(),
                line: 1,
            },
            format!("the imported configuration is invalid: {err}"),
        )
    }
}

/// Builds the TOML document for the chosen server.
pub(super) fn render(
    importer: &Importer,
    server: &ServerPlan,
    file: &Arc<Path>,
    public_admin: bool,
) -> Result<Rendered, ConfigError> {
    let mut sources = BTreeMap::new();
    let main_name = display_name(file, file);
    let mut doc = DocumentMut::new();

    let mut server_table = Table::new();
    server_table.decor_mut().set_prefix(format!(
        "# Herald configuration migrated from {main_name} (herald migrate).\n\
         # Values the push-stream module defaults differently from Herald are written out, so that this\n\
         # file behaves like the nginx configuration.\n\n"
    ));
    let listen = match &server.listen {
        Some(Setting {
            value: Value::Text(address),
            origin,
            ..
        }) => {
            sources.insert("server.listen".into(), (origin.clone(), "listen".into()));
            address.clone()
        }
        _ => "0.0.0.0:80".to_string(),
    };
    server_table.insert("listen", value(listen));
    let max_body = body_size(server, &mut sources);
    server_table.insert("max_body_size", size_item(max_body));
    // nginx's default client_body_timeout (60s) is Herald's: written only when set.
    if let Some(setting) = body_reader_setting(server, |level| &level.body_timeout) {
        server_table.insert("body_read_timeout", value_item(&setting.value));
        sources.insert(
            "server.body_read_timeout".into(),
            (setting.origin.clone(), setting.directive.clone()),
        );
    }
    if public_admin {
        let mut item = value(true);
        if let Some(v) = item.as_value_mut() {
            v.decor_mut().set_suffix(
                "  # the admin publisher has no allow/deny: anyone who reaches the listener can publish and delete",
            );
        }
        server_table.insert("allow_public_admin", item);
    }
    doc.insert("server", Item::Table(server_table));

    let mut channels = Table::new();
    for spec in SPECS.iter().filter(|s| s.scope == Scope::Http) {
        let Some(setting) = importer.channels.get(spec.key) else {
            continue;
        };
        if matches!(&setting.value, Value::Text(t) if t.is_empty())
            && matches!(spec.key, "wildcard_channel_prefix" | "events_channel_id")
        {
            continue;
        }
        channels.insert(spec.key, value_item(&setting.value));
        sources.insert(
            format!("channels.{}", spec.key),
            (setting.origin.clone(), setting.directive.clone()),
        );
    }
    // The module lets subscribers create channels up to the whole limit: keep that.
    if importer.channels.contains_key("max_number_of_channels") {
        channels.insert("channels_reserved_for_publishers", value(0));
    }
    doc.insert("channels", Item::Table(channels));

    let prefix_set = importer
        .channels
        .get("wildcard_channel_prefix")
        .is_some_and(|s| !matches!(&s.value, Value::Text(t) if t.is_empty()));
    let max_wildcards = importer.channels.get("max_number_of_wildcard_channels");
    let mut locations = ArrayOfTables::new();
    for (index, loc) in server.locations.iter().enumerate() {
        // The module's wildcard_channel_max_qtd defaults to max_number_of_wildcard_channels, and needs
        // a wildcard prefix on every push_stream location, whatever its role.
        let qtd = loc
            .merged
            .any
            .get("wildcard_channel_max_qtd")
            .or(max_wildcards);
        if let Some(qtd) = qtd.filter(|_| !prefix_set) {
            return Err(error_at(
                &qtd.origin,
                format!(
                    "\"{}\" sets the wildcard channel max qtd of {} but push_stream_wildcard_channel_prefix is not set or blank",
                    qtd.directive, loc.label
                ),
            ));
        }
        if !loc.merged.any.contains_key("channels_path") {
            return Err(error_at(
                &loc.origin,
                format!("push_stream_channels_path must be set for {} (in it, or in its server or http block)", loc.label),
            ));
        }
        let at = format!("location[{index}]");
        sources.insert(at.clone(), (loc.origin.clone(), loc.label.clone()));
        let mut table = location_table(loc, qtd, &at, &mut sources);
        table.decor_mut().set_prefix(format!(
            "\n# from {}:{} {}\n",
            display_name(&loc.origin.file, file),
            loc.origin.line,
            one_line(&loc.label)
        ));
        locations.push(table);
    }
    doc.insert("location", Item::ArrayOfTables(locations));
    let mut toml = doc.to_string();
    if !toml.ends_with('\n') {
        toml.push('\n');
    }
    Ok(Rendered { toml, sources })
}

/// Whether a location reads request bodies: publishers, and WebSocket locations that publish.
pub(super) fn reads_bodies(loc: &LocationPlan) -> bool {
    match loc.role {
        RoleSpec::Publisher { .. } => true,
        RoleSpec::Subscriber(crate::config::SubscriberMode::WebSocket) => matches!(
            loc.merged.any.get("websocket_allow_publish"),
            Some(Setting {
                value: Value::Flag(true),
                ..
            })
        ),
        _ => false,
    }
}

/// A body directive (`client_max_body_size`, `client_body_timeout`) for Herald's one server-wide
/// value: what the locations that read bodies agree on, else the server's (`None`: nginx's default).
pub(super) fn body_reader_setting(
    server: &ServerPlan,
    pick: fn(&Level) -> &Option<Setting>,
) -> Option<&Setting> {
    let mut readers = server
        .locations
        .iter()
        .filter(|l| reads_bodies(l))
        .map(|l| pick(&l.merged).as_ref());
    match readers.next() {
        Some(first) if readers.all(|r| r.map(|s| &s.value) == first.map(|s| &s.value)) => first,
        _ => pick(&server.level).as_ref(),
    }
}

/// The `[server] max_body_size` (see `body_reader_setting`).
pub(super) fn body_size(
    server: &ServerPlan,
    sources: &mut BTreeMap<String, (Origin, String)>,
) -> u64 {
    let chosen = body_reader_setting(server, |level| &level.body_size);
    if let Some(setting) = chosen {
        sources.insert(
            "server.max_body_size".into(),
            (setting.origin.clone(), setting.directive.clone()),
        );
    }
    match chosen.map(|s| &s.value) {
        Some(Value::Size(size)) => *size,
        _ => NGINX_DEFAULT_BODY_SIZE,
    }
}

/// Warnings about a location's own directives that do not apply to it, computed before rendering.
pub(super) fn location_warnings(server: &ServerPlan) -> Vec<Warning> {
    use crate::config::SubscriberMode as Mode;
    let mut warnings = Vec::new();
    let body = body_size(server, &mut BTreeMap::new());
    let body_timeout = body_reader_setting(server, |level| &level.body_timeout)
        .map_or(Value::Time(NGINX_DEFAULT_BODY_TIMEOUT), |s| s.value.clone());
    let body_timeout_text = match &body_timeout {
        Value::Time(time) => format_duration(*time),
        _ => String::new(),
    };
    for loc in &server.locations {
        let applies = |key: &str| -> bool {
            match loc.role {
                RoleSpec::Publisher { .. } => matches!(
                    key,
                    "channels_path"
                        | "store_messages"
                        | "channel_info_on_publish"
                        | "allowed_origins"
                ),
                RoleSpec::Stats => key == "channels_path",
                RoleSpec::Subscriber(mode) => match key {
                    "store_messages" => mode == Mode::WebSocket,
                    "channel_info_on_publish" => false,
                    "longpolling_connection_ttl" => mode == Mode::LongPolling,
                    "websocket_allow_publish" => mode == Mode::WebSocket,
                    _ => true,
                },
            }
        };
        let role_name = match loc.role {
            RoleSpec::Publisher { .. } => "publisher".to_string(),
            RoleSpec::Stats => "statistics".to_string(),
            RoleSpec::Subscriber(mode) => format!("{} subscriber", mode.name()),
        };
        for setting in loc
            .own
            .any
            .iter()
            .filter(|(k, _)| !applies(k))
            .map(|(_, s)| s)
        {
            warnings.push(Warning {
                file: setting.origin.file.to_path_buf(),
                line: setting.origin.line,
                message: format!(
                    "\"{}\" has no effect on a {role_name} location ({}); ignored",
                    setting.directive, loc.label
                ),
            });
        }
        let server_wide = [
            (
                &loc.own.body_size,
                Value::Size(body),
                format!("{body} bytes"),
            ),
            (
                &loc.own.body_timeout,
                body_timeout.clone(),
                body_timeout_text.clone(),
            ),
        ];
        for (own, chosen, shown) in server_wide {
            if let Some(setting) = own.as_ref().filter(|_| reads_bodies(loc)) {
                if setting.value != chosen {
                    warnings.push(Warning {
                        file: setting.origin.file.to_path_buf(),
                        line: setting.origin.line,
                        message: format!(
                            "{} differs between locations; Herald has one value for the server and uses the server's ({shown})",
                            setting.directive
                        ),
                    });
                }
            }
        }
        if let Some(rules) = &loc.merged.access {
            // Rules inherited by several locations are reported once.
            let (_, _, access_warnings) = access_lists(rules);
            for w in access_warnings {
                if !warnings.contains(&w) {
                    warnings.push(w);
                }
            }
        }
        if loc.role == RoleSpec::Subscriber(Mode::WebSocket) {
            let publishes = matches!(
                loc.merged.any.get("websocket_allow_publish"),
                Some(Setting {
                    value: Value::Flag(true),
                    ..
                })
            );
            let stores = matches!(
                loc.merged.any.get("store_messages"),
                Some(Setting {
                    value: Value::Flag(true),
                    ..
                })
            );
            if publishes && !stores {
                warnings.push(Warning {
                    file: loc.origin.file.to_path_buf(),
                    line: loc.origin.line,
                    message: format!("{}: Herald stores the messages WebSocket clients publish; the module stores them only with push_stream_store_messages on", loc.label),
                });
            }
        }
    }
    if server.listen.is_none() {
        if let Some(origin) = &server.origin {
            warnings.push(Warning {
                file: origin.file.to_path_buf(),
                line: origin.line,
                message: "server block has no listen directive: using nginx's default, 0.0.0.0:80"
                    .into(),
            });
        }
    }
    warnings
}

/// One `[[location]]` table.
pub(super) fn location_table(
    loc: &LocationPlan,
    qtd: Option<&Setting>,
    at: &str,
    sources: &mut BTreeMap<String, (Origin, String)>,
) -> Table {
    use crate::config::SubscriberMode as Mode;
    let mut table = Table::new();
    table.insert("path", value(loc.path.clone()));
    table.insert(
        "match",
        value(match loc.matching {
            PathMatch::Prefix => "prefix",
            PathMatch::Exact => "exact",
            PathMatch::Regex => "regex",
        }),
    );
    let any = &loc.merged.any;
    let mut put = |table: &mut Table, key: &'static str, item: Item, source: Option<&Setting>| {
        table.insert(key, item);
        if let Some(s) = source {
            sources.insert(
                format!("{at}.{key}"),
                (s.origin.clone(), s.directive.clone()),
            );
        }
    };
    let flag = |key: &str, default: bool| match any.get(key) {
        Some(Setting {
            value: Value::Flag(on),
            ..
        }) => *on,
        _ => default,
    };
    // `render` refuses a location without push_stream_channels_path, as the module does.
    let channels_path = any.get("channels_path");
    let channels_path_item = channels_path.map_or_else(|| value(""), |s| value_item(&s.value));
    match loc.role {
        RoleSpec::Publisher { admin } => {
            put(&mut table, "role", value("publisher"), None);
            put(&mut table, "admin", value(admin), None);
            put(
                &mut table,
                "channels_path",
                channels_path_item,
                channels_path,
            );
            put(
                &mut table,
                "store_messages",
                value(flag("store_messages", false)),
                any.get("store_messages"),
            );
            put(
                &mut table,
                "channel_info_on_publish",
                value(flag("channel_info_on_publish", true)),
                any.get("channel_info_on_publish"),
            );
            if let Some(s) = any.get("allowed_origins").filter(|s| !is_empty(s)) {
                put(&mut table, "allowed_origins", value_item(&s.value), Some(s));
            }
        }
        RoleSpec::Stats => {
            put(&mut table, "role", value("stats"), None);
            put(
                &mut table,
                "channels_path",
                channels_path_item,
                channels_path,
            );
        }
        RoleSpec::Subscriber(mode) => {
            put(&mut table, "role", value("subscriber"), None);
            put(&mut table, "mode", value(mode.name()), None);
            put(
                &mut table,
                "channels_path",
                channels_path_item,
                channels_path,
            );
            for key in [
                "header_template",
                "message_template",
                "footer_template",
                "ping_message_interval",
                "subscriber_connection_ttl",
                "longpolling_connection_ttl",
                "last_received_message_time",
                "last_received_message_tag",
                "last_event_id",
                "allowed_origins",
                "padding_by_user_agent",
                "user_agent",
            ] {
                if key == "longpolling_connection_ttl" && mode != Mode::LongPolling {
                    continue;
                }
                let Some(s) = any.get(key) else { continue };
                if key != "message_template" && is_empty(s) {
                    continue;
                }
                let herald_key = match s.value {
                    Value::File(_) => "header_template_file",
                    _ => key,
                };
                put(&mut table, herald_key, value_item(&s.value), Some(s));
            }
            for key in [
                "authorized_channels_only",
                "allow_connections_to_events_channel",
            ] {
                if flag(key, false) {
                    put(&mut table, key, value(true), any.get(key));
                }
            }
            if mode == Mode::WebSocket && flag("websocket_allow_publish", false) {
                put(
                    &mut table,
                    "websocket_allow_publish",
                    value(true),
                    any.get("websocket_allow_publish"),
                );
            }
            if let Some(s) = qtd {
                put(
                    &mut table,
                    "wildcard_channel_max_qtd",
                    value_item(&s.value),
                    Some(s),
                );
            }
            if matches!(mode, Mode::Streaming | Mode::LongPolling | Mode::Polling) {
                let content_type = match &loc.merged.default_type {
                    Some(Setting {
                        value: Value::Text(t),
                        ..
                    }) => t.clone(),
                    _ => NGINX_DEFAULT_TYPE.to_string(),
                };
                put(
                    &mut table,
                    "content_type",
                    value(content_type),
                    loc.merged.default_type.as_ref(),
                );
            }
        }
    }
    if let Some(rules) = loc.merged.access.as_deref().filter(|r| !r.is_empty()) {
        let (allow, deny, _) = access_lists(rules);
        for (key, list) in [("allow_addresses", allow), ("deny_addresses", deny)] {
            if !list.is_empty() {
                table.insert(key, value(list.into_iter().collect::<toml_edit::Array>()));
                sources.insert(
                    format!("{at}.{key}"),
                    (rules[0].origin.clone(), "allow/deny".into()),
                );
            }
        }
    }
    table
}

pub(super) fn is_empty(setting: &Setting) -> bool {
    matches!(&setting.value, Value::Text(t) | Value::Expr(t) if t.is_empty())
}

pub(super) fn value_item(v: &Value) -> Item {
    match v {
        Value::Flag(on) => value(*on),
        Value::Num(n) => value(i64::try_from(*n).unwrap_or(i64::MAX)),
        Value::Time(d) => value(format_duration(*d)),
        Value::Size(s) => size_item(*s),
        Value::Text(t) | Value::Expr(t) => value(t.clone()),
        Value::File(p) => value(p.display().to_string()),
    }
}

/// A size as `"10m"`/`"512k"` when it divides evenly, else bytes; 0 (nginx: unlimited) as the largest
/// size TOML can hold.
pub(super) fn size_item(bytes: u64) -> Item {
    if bytes == 0 {
        return value(i64::MAX);
    }
    for (unit, factor) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes.is_multiple_of(factor) {
            return value(format!("{}{unit}", bytes / factor));
        }
    }
    value(i64::try_from(bytes).unwrap_or(i64::MAX))
}

/// A duration in nginx syntax: `"1h30m"`, `"45s"`, `"1500ms"`.
pub(super) fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// The name of `file` in comments: relative to the main file's directory when inside it.
pub(super) fn display_name(file: &Path, main: &Path) -> String {
    if file == main {
        return file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
    }
    match main.parent().and_then(|dir| file.strip_prefix(dir).ok()) {
        Some(relative) if !relative.as_os_str().is_empty() => relative.display().to_string(),
        _ => file.display().to_string(),
    }
}

pub(super) fn one_line(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r")
}
