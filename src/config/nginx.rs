//! Reads an nginx configuration written for the push-stream module and turns it into Herald's own
//! configuration: `herald --nginx-config nginx.conf` serves it, `herald migrate nginx.conf` prints it as
//! TOML. Three stages, each in its own section below:
//!
//! 1. **Syntax** (`tokenize`, `parse_block`): nginx's grammar — directives `name args…;`, blocks `{ }`,
//!    `#` comments, single- and double-quoted strings with nginx's escapes, `$var`/`${var}` kept verbatim —
//!    with `include` (relative to the including file, glob patterns allowed) expanded in place.
//! 2. **Meaning** (`Importer`): the `http`/`server`/`location` tree, every `push_stream_*` directive
//!    (legacy names too) applied at its level with the module's inheritance, the few other nginx
//!    directives Herald honours (`listen`, `client_max_body_size`, `client_body_timeout`,
//!    `default_type`, `set $push_stream_channel_id`), and one warning for everything else.
//! 3. **Output** (`render`): a TOML document built with `toml_edit`, with every value the module defaults
//!    differently from Herald written out, validated by [`Config::from_toml`] like any TOML file; its
//!    errors are mapped back to the nginx file and line of the directive at fault.
//!
//! Errors read like `nginx -t`: `file:line: what is wrong and what was expected`. This module owns no
//! state and does not touch the schema in `config/mod.rs`; it only produces TOML that the schema reads.

use super::units::{parse_duration, parse_size};
use super::{Config, ConfigError};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

/// `include` files may include others up to this depth (a guard against include loops).
const MAX_INCLUDE_DEPTH: usize = 16;

/// nginx's `client_max_body_size` when none is set.
const NGINX_DEFAULT_BODY_SIZE: u64 = 1 << 20;

/// nginx's `client_body_timeout` when none is set (Herald's `body_read_timeout` default too).
const NGINX_DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The content type nginx gives responses when no `default_type` is set.
const NGINX_DEFAULT_TYPE: &str = "text/plain";

/// The result of reading an nginx configuration.
#[derive(Debug, Clone)]
pub struct Import {
    /// The validated configuration, exactly what `toml` parses to.
    pub config: Config,
    /// The equivalent native TOML (what `herald migrate` prints).
    pub toml: String,
    /// Everything Herald ignored or reads differently, with the file and line it comes from.
    pub warnings: Vec<Warning>,
}

/// Something in the nginx configuration Herald ignored or reads differently from nginx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The nginx file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What was ignored and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Reads, imports and validates the nginx configuration at `path` (with its includes).
pub fn import_file(path: &Path) -> Result<Import, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::plain(
            path.display().to_string(),
            format!("cannot read nginx config file: {e}"),
        )
    })?;
    import_str(&text, path)
}

/// Imports nginx configuration `text` as if read from `path`: `path` names the text in errors and
/// warnings, and relative `include` paths are resolved against its directory.
pub fn import_str(text: &str, path: &Path) -> Result<Import, ConfigError> {
    let file: Arc<Path> = Arc::from(path);
    let directives = parse_text(text, &file, 0)?;
    let mut importer = Importer::default();
    let server = importer.main_context(&directives, &file)?;
    if !importer.channels.contains_key("shared_memory_size") {
        let origin = importer.http_origin.clone().unwrap_or(Origin {
            file: file.clone(),
            line: 1,
        });
        importer.warn(
            &origin,
            "push_stream_shared_memory_size is not set (the module requires it); Herald's default budget for stored messages applies (256m)",
        );
    }
    importer.warnings.extend(location_warnings(&server));
    importer
        .warnings
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let rendered = render(&importer, &server, &file)?;
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let config = Config::from_toml(&rendered.toml, &path.display().to_string(), base_dir)
        .map_err(|e| rendered.map_error(e, &file))?;
    Ok(Import {
        config,
        toml: rendered.toml,
        warnings: importer.warnings,
    })
}

// ---------------------------------------------------------------------------------------------------
// Positions and errors
// ---------------------------------------------------------------------------------------------------

/// Where a directive was read: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    file: Arc<Path>,
    line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

fn error_at(origin: &Origin, message: impl Into<String>) -> ConfigError {
    ConfigError {
        source_name: origin.file.display().to_string(),
        line: Some(origin.line),
        key: None,
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Syntax: tokens, directives, includes
// ---------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A word or a quoted string, unescaped.
    Word(String),
    Semicolon,
    Open,
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    tok: Tok,
    line: usize,
}

/// One directive: `name args…;` or `name args… { block }`.
#[derive(Debug, Clone)]
struct Directive {
    name: String,
    args: Vec<String>,
    block: Option<Vec<Directive>>,
    origin: Origin,
}

impl Directive {
    /// A label for messages: `location ~ /sub/(.*)`, `server`, `push_stream_publisher`.
    fn label(&self) -> String {
        let mut label = self.name.clone();
        for arg in &self.args {
            label.push(' ');
            label.push_str(arg);
        }
        label
    }
}

/// Splits nginx config text into tokens. Quoted strings and words are unescaped the way nginx does:
/// `\"`, `\'`, `\\`, `\t`, `\r`, `\n`; any other backslash pair is kept as written.
fn tokenize(text: &str, file: &Arc<Path>) -> Result<Vec<Token>, ConfigError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |line| Origin {
        file: file.clone(),
        line,
    };
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while let Some(&c) = chars.get(i) {
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            ' ' | '\t' | '\r' => i += 1,
            '#' => {
                while chars.get(i).is_some_and(|&c| c != '\n') {
                    i += 1;
                }
            }
            ';' | '{' | '}' => {
                let tok = match c {
                    ';' => Tok::Semicolon,
                    '{' => Tok::Open,
                    _ => Tok::Close,
                };
                tokens.push(Token { tok, line });
                i += 1;
            }
            '"' | '\'' => {
                let start = line;
                let mut raw = String::new();
                i += 1;
                loop {
                    let Some(&ch) = chars.get(i) else {
                        return Err(error_at(
                            &at(start),
                            format!("unterminated quoted string: no closing {c} before the end of the file"),
                        ));
                    };
                    if ch == '\\' {
                        raw.push(ch);
                        if let Some(&next) = chars.get(i + 1) {
                            raw.push(next);
                            if next == '\n' {
                                line += 1;
                            }
                        }
                        i += 2;
                        continue;
                    }
                    i += 1;
                    if ch == c {
                        break;
                    }
                    if ch == '\n' {
                        line += 1;
                    }
                    raw.push(ch);
                }
                match chars.get(i) {
                    None | Some(' ' | '\t' | '\r' | '\n' | ';' | '{') => {}
                    Some(other) => {
                        return Err(error_at(
                            &at(line),
                            format!("unexpected \"{other}\" right after a quoted string; expected a space, \";\" or \"{{\""),
                        ))
                    }
                }
                tokens.push(Token {
                    tok: Tok::Word(unescape(&raw)),
                    line: start,
                });
            }
            _ => {
                let start = line;
                let mut raw = String::new();
                while let Some(&ch) = chars.get(i) {
                    match ch {
                        ' ' | '\t' | '\r' | '\n' | ';' => break,
                        // `${name}` keeps its brace; any other `{` opens a block.
                        '{' if !raw.ends_with('$') => break,
                        '\\' => {
                            raw.push(ch);
                            if let Some(&next) = chars.get(i + 1) {
                                raw.push(next);
                                if next == '\n' {
                                    line += 1;
                                }
                            }
                            i += 2;
                        }
                        _ => {
                            raw.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token {
                    tok: Tok::Word(unescape(&raw)),
                    line: start,
                });
            }
        }
    }
    Ok(tokens)
}

/// nginx's unescaping of a token.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let replacement = match chars.peek() {
                Some(&q @ ('"' | '\'' | '\\')) => Some(q),
                Some('t') => Some('\t'),
                Some('r') => Some('\r'),
                Some('n') => Some('\n'),
                _ => None,
            };
            if let Some(r) = replacement {
                out.push(r);
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Parses one file's text into directives, expanding `include`s.
fn parse_text(text: &str, file: &Arc<Path>, depth: usize) -> Result<Vec<Directive>, ConfigError> {
    let tokens = tokenize(text, file)?;
    let last_line = text.lines().count().max(1);
    let mut pos = 0;
    let mut parser = Parser {
        tokens: &tokens,
        file,
        depth,
        last_line,
    };
    parser.block(&mut pos, None)
}

struct Parser<'a> {
    tokens: &'a [Token],
    file: &'a Arc<Path>,
    depth: usize,
    last_line: usize,
}

impl Parser<'_> {
    fn at(&self, line: usize) -> Origin {
        Origin {
            file: self.file.clone(),
            line,
        }
    }

    /// Directives until the `}` closing `open` (name and line of the block), or the end of the file.
    fn block(
        &mut self,
        pos: &mut usize,
        open: Option<(&str, usize)>,
    ) -> Result<Vec<Directive>, ConfigError> {
        let mut out = Vec::new();
        loop {
            let Some(token) = self.tokens.get(*pos) else {
                return match open {
                    Some((name, line)) => Err(error_at(
                        &self.at(self.last_line),
                        format!("unexpected end of file, expecting \"}}\" to close \"{name}\" opened at line {line}"),
                    )),
                    None => Ok(out),
                };
            };
            *pos += 1;
            let name = match &token.tok {
                Tok::Close if open.is_some() => return Ok(out),
                Tok::Close => return Err(error_at(&self.at(token.line), "unexpected \"}\"")),
                Tok::Semicolon => return Err(error_at(&self.at(token.line), "unexpected \";\"")),
                Tok::Open => return Err(error_at(&self.at(token.line), "unexpected \"{\"")),
                Tok::Word(name) => name.clone(),
            };
            let origin = self.at(token.line);
            let mut args = Vec::new();
            let block = loop {
                let Some(next) = self.tokens.get(*pos) else {
                    return Err(error_at(
                        &self.at(self.last_line),
                        format!("unexpected end of file, expecting \";\" or \"{{\" after \"{name}\" (line {})", origin.line),
                    ));
                };
                *pos += 1;
                match &next.tok {
                    Tok::Word(word) => args.push(word.clone()),
                    Tok::Semicolon => break None,
                    Tok::Open => break Some(self.block(pos, Some((&name, next.line)))?),
                    Tok::Close => {
                        return Err(error_at(
                            &self.at(next.line),
                            format!(
                            "unexpected \"}}\": \"{name}\" (line {}) is not terminated by \";\"",
                            origin.line
                        ),
                        ))
                    }
                }
            };
            let directive = Directive {
                name,
                args,
                block,
                origin,
            };
            if directive.name == "include" && directive.block.is_none() {
                out.extend(self.include(&directive)?);
            } else {
                out.push(directive);
            }
        }
    }

    /// The directives of the files an `include` names, in sorted order for glob patterns.
    fn include(&self, directive: &Directive) -> Result<Vec<Directive>, ConfigError> {
        let origin = &directive.origin;
        let [pattern] = directive.args.as_slice() else {
            return Err(error_at(
                origin,
                "invalid number of arguments in \"include\" directive: expected one file or pattern",
            ));
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(error_at(
                origin,
                format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"),
            ));
        }
        let full = resolve_relative(pattern, &origin.file);
        let files = if has_glob_chars(pattern) {
            glob_files(&full)
        } else {
            vec![full]
        };
        let mut out = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                error_at(
                    origin,
                    format!(
                        "include \"{}\": cannot open {}: {e}",
                        pattern,
                        path.display()
                    ),
                )
            })?;
            let file: Arc<Path> = Arc::from(path.as_path());
            out.extend(parse_text(&text, &file, self.depth + 1)?);
        }
        Ok(out)
    }
}

/// `path` as written, relative to the directory of `file` (the file that names it) when relative.
fn resolve_relative(path: &str, file: &Path) -> PathBuf {
    let path = Path::new(path);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

fn has_glob_chars(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// The existing files matching a glob pattern (`*`, `?`, `[…]` in any component), sorted, as glob(3)
/// would list them for nginx: a wildcard does not match a leading dot. No match is not an error.
fn glob_files(pattern: &Path) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = match component {
            Component::Normal(part) => part.to_string_lossy().into_owned(),
            other => {
                for candidate in &mut candidates {
                    candidate.push(other.as_os_str());
                }
                continue;
            }
        };
        if !has_glob_chars(&part) {
            for candidate in &mut candidates {
                candidate.push(&part);
            }
            continue;
        }
        let wanted: Vec<char> = part.chars().collect();
        let mut next = Vec::new();
        for dir in &candidates {
            let listing = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(entries) = listing else { continue };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.') || part.starts_with('.'))
                .filter(|name| wildcard_match(&wanted, &name.chars().collect::<Vec<_>>()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| dir.join(name)));
        }
        candidates = next;
    }
    candidates.retain(|path| path.is_file());
    candidates.sort();
    candidates
}

/// Shell-style matching of one file name: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
fn wildcard_match(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|skip| wildcard_match(&pattern[1..], &name[skip..])),
        Some('?') => !name.is_empty() && wildcard_match(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some((&c, rest_name)) = name.split_first() else {
                return false;
            };
            let Some(close) = pattern
                .iter()
                .skip(2)
                .position(|&p| p == ']')
                .map(|p| p + 2)
            else {
                // No closing bracket: a literal '['.
                return c == '[' && wildcard_match(&pattern[1..], rest_name);
            };
            let class = &pattern[1..close];
            let (negated, class) = match class.first() {
                Some('!' | '^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut matched = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    matched |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    matched |= class[i] == c;
                    i += 1;
                }
            }
            matched != negated && wildcard_match(&pattern[close + 1..], rest_name)
        }
        Some(&p) => name.first() == Some(&p) && wildcard_match(&pattern[1..], &name[1..]),
    }
}

// ---------------------------------------------------------------------------------------------------
// Meaning: push_stream directives, values, inheritance
// ---------------------------------------------------------------------------------------------------

/// Where a `push_stream_*` directive may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `http` only; maps to `[channels]`.
    Http,
    /// `http`, `server` or `location`, inherited downwards; maps to a `[[location]]` key.
    Any,
}

/// How a directive's argument is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flag,
    Num,
    /// A time in whole seconds (nginx's sec slot: `ms` not allowed).
    Secs,
    /// A time with millisecond resolution (nginx's msec slot).
    Msecs,
    Size,
    Text,
    /// An nginx complex value: text with variables.
    Expr,
    /// A file whose contents are the value (`push_stream_header_template_file`).
    File,
}

/// One `push_stream_*` value directive: its name, scope, argument kind and the Herald key it sets.
struct Spec {
    name: &'static str,
    scope: Scope,
    kind: Kind,
    key: &'static str,
}

const fn spec(name: &'static str, scope: Scope, kind: Kind, key: &'static str) -> Spec {
    Spec {
        name,
        scope,
        kind,
        key,
    }
}

/// Every value directive of the module, in the order `[channels]` keys are written.
#[rustfmt::skip]
const SPECS: &[Spec] = &[
    spec("push_stream_shared_memory_size",                  Scope::Http, Kind::Size,  "shared_memory_size"),
    spec("push_stream_message_ttl",                         Scope::Http, Kind::Secs,  "message_ttl"),
    spec("push_stream_max_messages_stored_per_channel",     Scope::Http, Kind::Num,   "max_messages_stored_per_channel"),
    spec("push_stream_max_channel_id_length",               Scope::Http, Kind::Num,   "max_channel_id_length"),
    spec("push_stream_max_number_of_channels",              Scope::Http, Kind::Num,   "max_number_of_channels"),
    spec("push_stream_max_number_of_wildcard_channels",     Scope::Http, Kind::Num,   "max_number_of_wildcard_channels"),
    spec("push_stream_max_subscribers_per_channel",         Scope::Http, Kind::Num,   "max_subscribers_per_channel"),
    spec("push_stream_wildcard_channel_prefix",             Scope::Http, Kind::Text,  "wildcard_channel_prefix"),
    spec("push_stream_events_channel_id",                   Scope::Http, Kind::Text,  "events_channel_id"),
    spec("push_stream_ping_message_text",                   Scope::Http, Kind::Text,  "ping_message_text"),
    spec("push_stream_channel_deleted_message_text",        Scope::Http, Kind::Text,  "channel_deleted_message_text"),
    spec("push_stream_channel_inactivity_time",             Scope::Http, Kind::Secs,  "channel_inactivity_time"),
    spec("push_stream_timeout_with_body",                   Scope::Http, Kind::Flag,  "timeout_with_body"),
    spec("push_stream_channels_path",                       Scope::Any,  Kind::Expr,  "channels_path"),
    spec("push_stream_store_messages",                      Scope::Any,  Kind::Flag,  "store_messages"),
    spec("push_stream_channel_info_on_publish",             Scope::Any,  Kind::Flag,  "channel_info_on_publish"),
    spec("push_stream_authorized_channels_only",            Scope::Any,  Kind::Flag,  "authorized_channels_only"),
    spec("push_stream_header_template_file",                Scope::Any,  Kind::File,  "header_template"),
    spec("push_stream_header_template",                     Scope::Any,  Kind::Text,  "header_template"),
    spec("push_stream_message_template",                    Scope::Any,  Kind::Text,  "message_template"),
    spec("push_stream_footer_template",                     Scope::Any,  Kind::Text,  "footer_template"),
    spec("push_stream_wildcard_channel_max_qtd",            Scope::Any,  Kind::Num,   "wildcard_channel_max_qtd"),
    spec("push_stream_ping_message_interval",               Scope::Any,  Kind::Msecs, "ping_message_interval"),
    spec("push_stream_subscriber_connection_ttl",           Scope::Any,  Kind::Msecs, "subscriber_connection_ttl"),
    spec("push_stream_longpolling_connection_ttl",          Scope::Any,  Kind::Msecs, "longpolling_connection_ttl"),
    spec("push_stream_websocket_allow_publish",             Scope::Any,  Kind::Flag,  "websocket_allow_publish"),
    spec("push_stream_last_received_message_time",          Scope::Any,  Kind::Expr,  "last_received_message_time"),
    spec("push_stream_last_received_message_tag",           Scope::Any,  Kind::Expr,  "last_received_message_tag"),
    spec("push_stream_last_event_id",                       Scope::Any,  Kind::Expr,  "last_event_id"),
    spec("push_stream_user_agent",                          Scope::Any,  Kind::Expr,  "user_agent"),
    spec("push_stream_padding_by_user_agent",               Scope::Any,  Kind::Text,  "padding_by_user_agent"),
    spec("push_stream_allowed_origins",                     Scope::Any,  Kind::Expr,  "allowed_origins"),
    spec("push_stream_allow_connections_to_events_channel", Scope::Any,  Kind::Flag,  "allow_connections_to_events_channel"),
];

/// Old directive names (the module's CHANGELOG) and the directive each became.
#[rustfmt::skip]
const RENAMED: &[(&str, &str)] = &[
    ("push_stream_max_reserved_memory",              "push_stream_shared_memory_size"),
    ("push_stream_min_message_buffer_timeout",       "push_stream_message_ttl"),
    ("push_stream_max_message_buffer_length",        "push_stream_max_messages_stored_per_channel"),
    ("push_stream_subscriber_connection_timeout",    "push_stream_subscriber_connection_ttl"),
    ("push_stream_broadcast_channel_prefix",         "push_stream_wildcard_channel_prefix"),
    ("push_stream_max_number_of_broadcast_channels", "push_stream_max_number_of_wildcard_channels"),
    ("push_stream_broadcast_channel_max_qtd",        "push_stream_wildcard_channel_max_qtd"),
];

/// Directives the module removed, with what replaced them; ignored with a warning.
#[rustfmt::skip]
const REMOVED: &[(&str, &str)] = &[
    ("push_stream_content_type",                      "use nginx's default_type in the location"),
    ("push_stream_keepalive",                         "keep-alive is always on"),
    ("push_stream_memory_cleanup_timeout",            "cleanup is automatic"),
    ("push_stream_shared_memory_cleanup_objects_ttl", "cleanup is automatic"),
    ("push_stream_subscriber_disconnect_interval",    "use push_stream_subscriber_connection_ttl"),
    ("push_stream_min_message_buffer_length",         "no longer has an equivalent"),
];

/// A value read from a directive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Flag(bool),
    Num(u64),
    Time(Duration),
    Size(u64),
    Text(String),
    /// A Herald expression (`$arg_id`, `$1`, …), already translated from nginx variables.
    Expr(String),
    /// An absolute file path.
    File(PathBuf),
}

/// A value with the directive and place it came from.
#[derive(Debug, Clone)]
struct Setting {
    value: Value,
    directive: String,
    origin: Origin,
}

/// The settings one level (http, server, location) sets itself, or the merged result for a location.
#[derive(Debug, Clone, Default)]
struct Level {
    /// `push_stream_*` "any"-context directives by Herald key.
    any: BTreeMap<&'static str, Setting>,
    /// `client_max_body_size` in bytes (0 = unlimited).
    body_size: Option<Setting>,
    /// `client_body_timeout`.
    body_timeout: Option<Setting>,
    /// `default_type`.
    default_type: Option<Setting>,
    /// `allow`/`deny` rules in order; a level with none inherits its parent's list whole (nginx's merge).
    access: Option<Vec<AccessRule>>,
}

/// One `allow` or `deny` rule.
#[derive(Debug, Clone)]
struct AccessRule {
    allow: bool,
    /// `all` or an address / CIDR range.
    what: String,
    origin: Origin,
}

impl Level {
    /// This level's settings on top of `parent`'s: nginx's merge, the child wins where it sets a value.
    fn over(&self, parent: &Level) -> Level {
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
enum Ctx {
    Main,
    Http,
    Server,
    Location,
}

/// What a location does, as its role directive says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleSpec {
    Publisher { admin: bool },
    Subscriber(super::SubscriberMode),
    Stats,
}

/// How a location's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathMatch {
    Prefix,
    Exact,
    Regex,
}

/// A push_stream location, ready to be written.
#[derive(Debug, Clone)]
struct LocationPlan {
    origin: Origin,
    /// `location ~ /sub/(.*)` as written.
    label: String,
    path: String,
    matching: PathMatch,
    role: RoleSpec,
    /// Its settings merged with those of the server, http and enclosing locations.
    merged: Level,
    /// What the location sets itself (for warnings about directives that do not apply).
    own: Level,
}

/// One `server` block.
#[derive(Debug, Default)]
struct ServerPlan {
    origin: Option<Origin>,
    listen: Option<Setting>,
    /// Settings of the server level merged over http (for the server-wide body size).
    level: Level,
    locations: Vec<LocationPlan>,
    warnings: Vec<Warning>,
}

/// Walks the directive tree, collecting `[channels]` values, the chosen server and warnings.
#[derive(Default)]
struct Importer {
    /// http-only push_stream directives by `[channels]` key.
    channels: BTreeMap<&'static str, Setting>,
    /// Where the `http` block starts.
    http_origin: Option<Origin>,
    warnings: Vec<Warning>,
}

impl Importer {
    fn warn(&mut self, origin: &Origin, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: origin.file.to_path_buf(),
            line: origin.line,
            message: message.into(),
        });
    }

    /// The whole file: finds `http` (or reads a file without one as the contents of `http`, like a
    /// conf.d file) and returns the server Herald serves.
    fn main_context(
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

    fn http_context(
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

    fn server_context(
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

    fn server_block(
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
    fn listen(&mut self, d: &Directive) -> Result<String, ConfigError> {
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
    fn location(
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
    fn directive(
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
    fn other_directive(
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
    fn push_stream(
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
    fn role(
        &mut self,
        d: &Directive,
        role: &mut Option<(RoleSpec, Origin)>,
    ) -> Result<(), ConfigError> {
        use super::SubscriberMode as Mode;
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

fn arg_count(d: &Directive, expected: &str) -> ConfigError {
    error_at(
        &d.origin,
        format!(
            "invalid number of arguments in \"{}\" directive: expected {expected}, got {}",
            d.name,
            d.args.len()
        ),
    )
}

/// Sets a slot once per level, as nginx refuses a directive repeated in one block.
fn set_once(slot: &mut Option<Setting>, d: &Directive, value: Value) -> Result<(), ConfigError> {
    if let Some(first) = slot {
        return Err(error_at(
            &d.origin,
            format!(
                "\"{}\" directive is duplicate (first at line {})",
                d.name, first.origin.line
            ),
        ));
    }
    *slot = Some(Setting {
        value,
        directive: d.name.clone(),
        origin: d.origin.clone(),
    });
    Ok(())
}

fn insert_once(
    map: &mut BTreeMap<&'static str, Setting>,
    key: &'static str,
    d: &Directive,
    value: Value,
) -> Result<(), ConfigError> {
    if let Some(first) = map.get(key) {
        let what = if first.directive == d.name {
            format!(
                "\"{}\" directive is duplicate (first at line {})",
                d.name, first.origin.line
            )
        } else {
            format!(
                "\"{}\" directive is duplicate: \"{}\" at line {} already sets it",
                d.name, first.directive, first.origin.line
            )
        };
        return Err(error_at(&d.origin, what));
    }
    map.insert(
        key,
        Setting {
            value,
            directive: d.name.clone(),
            origin: d.origin.clone(),
        },
    );
    Ok(())
}

fn parse_flag(arg: &str, d: &Directive) -> Result<bool, ConfigError> {
    match arg.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(error_at(
            &d.origin,
            format!(
                "invalid value \"{arg}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                d.name
            ),
        )),
    }
}

/// Reads a directive's argument as its spec says.
fn read_value(spec: &Spec, arg: &str, d: &Directive) -> Result<Value, ConfigError> {
    let invalid = |m: String| {
        error_at(
            &d.origin,
            format!("invalid value \"{arg}\" in \"{}\" directive: {m}", d.name),
        )
    };
    Ok(match spec.kind {
        Kind::Flag => Value::Flag(parse_flag(arg, d)?),
        Kind::Num => {
            if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("expected a whole number".into()));
            }
            Value::Num(
                arg.parse()
                    .map_err(|_| invalid("number too large".into()))?,
            )
        }
        Kind::Secs | Kind::Msecs => {
            let compact: String = arg.chars().filter(|c| !c.is_whitespace()).collect();
            if spec.kind == Kind::Secs && compact.contains("ms") {
                return Err(invalid(
                    "this directive takes whole seconds (s, m, h, d), not ms".into(),
                ));
            }
            Value::Time(parse_duration(&compact).map_err(invalid)?)
        }
        Kind::Size => Value::Size(parse_size(arg).map_err(invalid)?),
        Kind::Text => Value::Text(arg.to_string()),
        Kind::Expr => Value::Expr(nginx_expr(arg).map_err(invalid)?),
        Kind::File => {
            let path = resolve_relative(arg, &d.origin.file);
            Value::File(
                std::path::absolute(&path)
                    .map_err(|e| invalid(format!("cannot resolve the path: {e}")))?,
            )
        }
    })
}

/// Translates an nginx complex value into a Herald expression. `$arg_NAME`, `$http_NAME`, `$cookie_NAME`
/// and `$1`..`$9` (also as `${…}`) carry over; any other variable is refused, since Herald cannot compute
/// it.
fn nginx_expr(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, remainder) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced
                .find('}')
                .ok_or_else(|| format!("the variable in {text:?} misses its closing \"}}\""))?;
            (&braced[..close], &braced[close + 1..])
        } else if after.starts_with(|c: char| c.is_ascii_digit()) {
            // nginx reads one digit after `$`: `$12` is capture 1 then "2".
            (&after[..1], &after[1..])
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..len], &after[len..])
        };
        if name.is_empty() {
            return Err(format!("invalid variable name in {text:?}"));
        }
        // The names Herald reads the same way: one capture digit, $arg_NAME, $http_NAME, $cookie_NAME.
        let supported = (name.len() == 1 && name.bytes().all(|b| b.is_ascii_digit()))
            || ["arg_", "http_", "cookie_"]
                .iter()
                .any(|p| name.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if !supported {
            return Err(format!(
                "variable ${name} is not supported; Herald understands $arg_NAME, $http_NAME, $cookie_NAME and $1..$9"
            ));
        }
        if remainder.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "${name} is directly followed by a letter, digit or \"_\" in {text:?}, which Herald would read as part of the variable name; put a separator after it"
            ));
        }
        out.push('$');
        out.push_str(name);
        rest = remainder;
    }
    out.push_str(rest);
    Ok(out)
}

/// nginx `listen` address forms → a socket address: `80`, `127.0.0.1:8080`, `*:80`, `[::]:80`,
/// `localhost:8080` (a missing port is 80).
fn listen_address(text: &str) -> Result<String, String> {
    if text.starts_with("unix:") {
        return Err("unix sockets are not supported; use an IP address and port".into());
    }
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"));
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("0.0.0.0:{}", port_of(text)?));
    }
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let close = bracketed
            .find(']')
            .ok_or_else(|| "missing \"]\" in an IPv6 address".to_string())?;
        let port = match &bracketed[close + 1..] {
            "" => 80,
            rest => port_of(
                rest.strip_prefix(':')
                    .ok_or("expected \":port\" after \"]\"")?,
            )?,
        };
        let host: std::net::Ipv6Addr = bracketed[..close]
            .parse()
            .map_err(|_| format!("invalid IPv6 address {:?}", &bracketed[..close]))?;
        return Ok(std::net::SocketAddr::from((host, port)).to_string());
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, port_of(port)?),
            None => (text, 80),
        }
    };
    let ip: std::net::IpAddr = match host {
        "*" => std::net::Ipv4Addr::UNSPECIFIED.into(),
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other.parse().map_err(|_| {
            format!("{other:?} is not an IP address (Herald does not resolve host names)")
        })?,
    };
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// Herald's address lists for nginx's ordered `allow`/`deny` rules (first match wins, no match allows):
/// `(allow_addresses, deny_addresses, warnings)`. Herald checks the deny list first, then admits only the
/// allow list when it is not empty; this is exact unless an `allow` precedes an overlapping `deny`.
fn access_lists(rules: &[AccessRule]) -> (Vec<String>, Vec<String>, Vec<Warning>) {
    let mut allow: Vec<(String, Option<ipnet::IpNet>)> = Vec::new();
    let mut deny = Vec::new();
    let mut warnings = Vec::new();
    let mut terminal: Option<&AccessRule> = None;
    let warn = |warnings: &mut Vec<Warning>, rule: &AccessRule, message: String| {
        warnings.push(Warning {
            file: rule.origin.file.to_path_buf(),
            line: rule.origin.line,
            message,
        })
    };
    for rule in rules {
        let verb = if rule.allow { "allow" } else { "deny" };
        if let Some(all) = terminal {
            let all_verb = if all.allow { "allow" } else { "deny" };
            warn(
                &mut warnings,
                rule,
                format!(
                    "\"{verb} {}\" is never reached: \"{all_verb} all\" at line {} comes first",
                    rule.what, all.origin.line
                ),
            );
            continue;
        }
        if rule.what == "all" {
            terminal = Some(rule);
            continue;
        }
        let net = crate::http::access::parse_net(&rule.what).ok();
        if rule.allow {
            allow.push((rule.what.clone(), net));
            continue;
        }
        let overlaps = |a: &Option<ipnet::IpNet>| match (a, &net) {
            (Some(a), Some(b)) => a.contains(b) || b.contains(a),
            _ => false,
        };
        if let Some((earlier, _)) = allow.iter().find(|(_, a)| overlaps(a)) {
            warn(
                &mut warnings,
                rule,
                format!("\"deny {}\" overlaps the earlier \"allow {earlier}\": Herald checks deny rules first, so those addresses are refused", rule.what),
            );
        }
        deny.push(rule.what.clone());
    }
    match terminal {
        Some(all) if !all.allow => {
            if allow.is_empty() {
                (
                    Vec::new(),
                    vec!["0.0.0.0/0".into(), "::/0".into()],
                    warnings,
                )
            } else {
                (allow.into_iter().map(|(a, _)| a).collect(), deny, warnings)
            }
        }
        // Anyone not denied is allowed: the allow rules change nothing.
        _ => (Vec::new(), deny, warnings),
    }
}

// ---------------------------------------------------------------------------------------------------
// Output: the TOML document
// ---------------------------------------------------------------------------------------------------

/// The TOML text and, for each key written, the nginx directive it came from.
struct Rendered {
    toml: String,
    /// `location[2].channels_path` → (where, which directive).
    sources: BTreeMap<String, (Origin, String)>,
}

impl Rendered {
    /// Points a validation error of the generated TOML at the nginx directive behind the key.
    fn map_error(&self, err: ConfigError, file: &Arc<Path>) -> ConfigError {
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
fn render(
    importer: &Importer,
    server: &ServerPlan,
    file: &Arc<Path>,
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
fn reads_bodies(loc: &LocationPlan) -> bool {
    match loc.role {
        RoleSpec::Publisher { .. } => true,
        RoleSpec::Subscriber(super::SubscriberMode::WebSocket) => matches!(
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
fn body_reader_setting(
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
fn body_size(server: &ServerPlan, sources: &mut BTreeMap<String, (Origin, String)>) -> u64 {
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
fn location_warnings(server: &ServerPlan) -> Vec<Warning> {
    use super::SubscriberMode as Mode;
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
fn location_table(
    loc: &LocationPlan,
    qtd: Option<&Setting>,
    at: &str,
    sources: &mut BTreeMap<String, (Origin, String)>,
) -> Table {
    use super::SubscriberMode as Mode;
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

fn is_empty(setting: &Setting) -> bool {
    matches!(&setting.value, Value::Text(t) | Value::Expr(t) if t.is_empty())
}

fn value_item(v: &Value) -> Item {
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
fn size_item(bytes: u64) -> Item {
    if bytes == 0 {
        return value(i64::MAX);
    }
    for (unit, factor) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes % factor == 0 {
            return value(format!("{}{unit}", bytes / factor));
        }
    }
    value(i64::try_from(bytes).unwrap_or(i64::MAX))
}

/// A duration in nginx syntax: `"1h30m"`, `"45s"`, `"1500ms"`.
fn format_duration(d: Duration) -> String {
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
fn display_name(file: &Path, main: &Path) -> String {
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

fn one_line(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MatchKind, Role, SubscriberMode};

    fn words(text: &str) -> Vec<(String, usize)> {
        tokenize(text, &Arc::from(Path::new("t.conf")))
            .unwrap()
            .into_iter()
            .filter_map(|t| match t.tok {
                Tok::Word(w) => Some((w, t.line)),
                _ => None,
            })
            .collect()
    }

    fn parse_err(text: &str) -> String {
        parse_text(text, &Arc::from(Path::new("t.conf")), 0)
            .unwrap_err()
            .to_string()
    }

    fn import(text: &str) -> Import {
        import_str(text, Path::new("/nonexistent/t.conf"))
            .unwrap_or_else(|e| panic!("import failed: {e}\n{text}"))
    }

    fn import_err(text: &str) -> String {
        match import_str(text, Path::new("/nonexistent/t.conf")) {
            Ok(import) => panic!("expected an error, got:\n{}", import.toml),
            Err(e) => e.to_string(),
        }
    }

    /// A config with `http` lines (from line 3), and one server holding `server` lines.
    fn conf(http: &str, server: &str) -> String {
        format!("http {{\npush_stream_shared_memory_size 1m;\n{http}\nserver {{\nlisten 127.0.0.1:9080;\n{server}\n}}\n}}\n")
    }

    const PUB: &str =
        "location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; }";

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("herald-nginx-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn quoted_strings_unescape_like_nginx() {
        let w = words(
            r#"a "x \"y\" \\n \t z" 'it\'s' "$arg_id" w\;x "multi
line" ${arg_id}tail"#,
        );
        let texts: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            texts,
            [
                "a",
                "x \"y\" \\n \t z",
                "it's",
                "$arg_id",
                "w\\;x",
                "multi\nline",
                "${arg_id}tail"
            ]
        );
        assert_eq!(w[5].1, 1, "a token's line is where it starts");
        assert_eq!(w[6].1, 2);
    }

    #[test]
    fn comments_end_at_the_line_and_hash_inside_words_is_text() {
        let w = words("a b#c # comment ; { }\n  d; # another\n");
        let texts: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["a", "b#c", "d"]);
        assert_eq!(w[2].1, 2);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let missing_semicolon = parse_err("http {\n  server {\n    listen 80\n  }\n}\n");
        assert!(
            missing_semicolon.starts_with("t.conf:4: unexpected \"}\"")
                && missing_semicolon.contains("\"listen\" (line 3) is not terminated by \";\""),
            "{missing_semicolon}"
        );
        let unclosed = parse_err("http {\n  server {\n  }\n");
        assert!(
            unclosed.starts_with("t.conf:3: unexpected end of file, expecting \"}\""),
            "{unclosed}"
        );
        assert!(parse_err("a;\n}\n").starts_with("t.conf:2: unexpected \"}\""));
        assert!(parse_err("\n;\n").starts_with("t.conf:2: unexpected \";\""));
        let quote = parse_err("a;\nb \"open;\nc;\n");
        assert!(
            quote.starts_with("t.conf:2: unterminated quoted string"),
            "{quote}"
        );
        let glued = parse_err("a \"x\"y;\n");
        assert!(glued.starts_with("t.conf:1: unexpected \"y\""), "{glued}");
        let eof = parse_err("http {\n listen 80\n");
        assert!(eof.contains("expecting \";\" or \"{\""), "{eof}");
    }

    #[test]
    fn includes_are_relative_to_the_including_file_and_globs_are_sorted() {
        let dir = TempDir::new("includes");
        dir.write(
            "conf.d/b.conf",
            "server { listen 9081; location /pub { push_stream_publisher; include ../snippets/path.conf; } }\n",
        );
        dir.write("conf.d/a.conf", "push_stream_message_ttl 7m;\n");
        dir.write("conf.d/.hidden.conf", "push_stream_bogus 1;\n");
        dir.write("conf.d/skip.txt", "push_stream_bogus 1;\n");
        dir.write("snippets/path.conf", "push_stream_channels_path $arg_id;\n");
        let main = dir.write("nginx.conf", "http {\n  include conf.d/*.conf;\n}\n");
        let import = import_file(&main).unwrap();
        assert_eq!(import.config.server.listen, "0.0.0.0:9081");
        assert_eq!(
            import.config.channels.message_ttl.0,
            Duration::from_secs(420)
        );
        assert_eq!(import.config.locations[0].channels_path(), "$arg_id");
        assert!(
            import.toml.contains("# from conf.d/b.conf:1 location /pub"),
            "{}",
            import.toml
        );
    }

    #[test]
    fn include_errors_name_the_include_line_and_errors_inside_name_the_included_file() {
        let dir = TempDir::new("include-errors");
        let main = dir.write("nginx.conf", "http {\n\n  include missing.conf;\n}\n");
        let err = import_file(&main).unwrap_err().to_string();
        assert!(
            err.contains("nginx.conf:3: include \"missing.conf\": cannot open"),
            "{err}"
        );
        dir.write("bad.conf", "# first\npush_stream_message_ttl 5m\n}\n");
        let main = dir.write("nginx.conf", "http {\n  include bad.conf;\n}\n");
        let err = import_file(&main).unwrap_err().to_string();
        assert!(err.contains("bad.conf:3: unexpected \"}\""), "{err}");
        // A glob that matches nothing is fine, as in nginx.
        let main = dir.write(
            "nginx.conf",
            &format!("http {{ include none/*.conf; server {{ {PUB} }} }}\n"),
        );
        assert!(import_file(&main).is_ok());
    }

    #[test]
    fn include_loops_are_refused() {
        let dir = TempDir::new("include-loop");
        dir.write("loop.conf", "include loop.conf;\n");
        let main = dir.write("nginx.conf", "include loop.conf;\n");
        let err = import_file(&main).unwrap_err().to_string();
        assert!(
            err.contains("loop.conf:1: includes nested more than"),
            "{err}"
        );
    }

    #[test]
    fn wildcards_match_like_glob() {
        let m = |p: &str, n: &str| {
            wildcard_match(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.conf", "a.conf"));
        assert!(!m("*.conf", "a.conf.bak"));
        assert!(m("site-?.conf", "site-1.conf"));
        assert!(m("[ab]*", "beta"));
        assert!(!m("[!ab]*", "beta"));
        assert!(m("[0-9].conf", "7.conf"));
        assert!(m("*", ""));
    }

    #[test]
    fn variables_map_to_herald_expressions() {
        assert_eq!(nginx_expr("$arg_id").unwrap(), "$arg_id");
        assert_eq!(nginx_expr("${arg_id}").unwrap(), "$arg_id");
        assert_eq!(nginx_expr("$1").unwrap(), "$1");
        assert_eq!(
            nginx_expr("room-$1/$http_x_channel").unwrap(),
            "room-$1/$http_x_channel"
        );
        assert_eq!(nginx_expr("${1}.b5").unwrap(), "$1.b5");
        assert_eq!(nginx_expr("*").unwrap(), "*");
        assert_eq!(nginx_expr("$cookie_session").unwrap(), "$cookie_session");
        assert!(nginx_expr("$remote_addr").is_err());
        assert!(nginx_expr("${arg_id}x")
            .unwrap_err()
            .contains("directly followed"));
        assert!(nginx_expr("$12").unwrap_err().contains("directly followed"));
        assert!(nginx_expr("a$")
            .unwrap_err()
            .contains("invalid variable name"));
        assert!(nginx_expr("${arg_id").unwrap_err().contains("closing"));
    }

    #[test]
    fn listen_forms() {
        assert_eq!(listen_address("80").unwrap(), "0.0.0.0:80");
        assert_eq!(listen_address("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(listen_address("127.0.0.1").unwrap(), "127.0.0.1:80");
        assert_eq!(listen_address("*:9080").unwrap(), "0.0.0.0:9080");
        assert_eq!(listen_address("localhost:9080").unwrap(), "127.0.0.1:9080");
        assert_eq!(listen_address("[::]:9080").unwrap(), "[::]:9080");
        assert_eq!(listen_address("[::1]").unwrap(), "[::1]:80");
        assert!(listen_address("unix:/tmp/x.sock").is_err());
        assert!(listen_address("example.com:80").is_err());
        assert!(listen_address("99999").is_err());
    }

    #[test]
    fn durations_and_sizes_are_written_in_nginx_syntax() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(size_item(32 << 20).to_string(), "\"32m\"");
        assert_eq!(size_item(1000).to_string(), "1000");
        assert_eq!(size_item(0).to_string(), i64::MAX.to_string());
    }

    #[test]
    fn directives_inherit_http_then_server_then_location() {
        let import = import(&conf(
            "push_stream_message_template \"http:~text~\";\npush_stream_ping_message_interval 5s;\npush_stream_channels_path $arg_id;",
            "push_stream_message_template \"server:~text~\";\n\
             location /a { push_stream_subscriber; }\n\
             location /b { push_stream_subscriber; push_stream_message_template \"loc:~text~\"; push_stream_channels_path $arg_b; }\n\
             location /pub { push_stream_publisher; }",
        ));
        let locs = &import.config.locations;
        assert_eq!(locs[0].message_template(), "server:~text~");
        assert_eq!(locs[0].channels_path(), "$arg_id");
        assert_eq!(
            locs[0].ping_message_interval.unwrap().0,
            Duration::from_secs(5)
        );
        assert_eq!(locs[1].message_template(), "loc:~text~");
        assert_eq!(locs[1].channels_path(), "$arg_b");
        assert_eq!(locs[2].role(), Role::Publisher);
        assert_eq!(
            locs[2].message_template, None,
            "templates are not written on publishers"
        );
        assert_eq!(
            import.config.channels.shared_memory_size.unwrap().0,
            1 << 20
        );
    }

    #[test]
    fn module_defaults_are_written_out() {
        let import = import(&conf(
            "",
            "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; }\n\
             location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }\n\
             location /ev/ { push_stream_subscriber eventsource; push_stream_channels_path $arg_id; }\n\
             location = /stats { push_stream_channels_statistics; push_stream_channels_path $arg_id; }",
        ));
        let locs = &import.config.locations;
        assert_eq!(locs[0].store_messages, Some(false));
        assert_eq!(locs[0].channel_info_on_publish, Some(true));
        assert!(!locs[0].admin);
        assert_eq!(locs[1].match_kind, MatchKind::Regex);
        assert_eq!(locs[1].content_type.as_deref(), Some("text/plain"));
        assert_eq!(locs[2].mode, SubscriberMode::EventSource);
        assert_eq!(locs[2].content_type, None);
        assert_eq!(
            (locs[3].match_kind, locs[3].role()),
            (MatchKind::Exact, Role::Stats)
        );
        assert_eq!(import.config.server.max_body_size.0, 1 << 20);
        assert_eq!(import.config.server.listen, "127.0.0.1:9080");
    }

    #[test]
    fn location_modifiers() {
        let import = import(&conf(
            "",
            "location = /pub { push_stream_publisher; push_stream_channels_path $arg_id; }\n\
             location ~* ^/SUB/(.*)$ { push_stream_subscriber; push_stream_channels_path $1; }\n\
             location ^~ /lp/ { push_stream_subscriber long-polling; push_stream_channels_path $arg_id; }\n\
             location ~/ev/(.*) { push_stream_subscriber eventsource; push_stream_channels_path $1; }\n\
             location @named { push_stream_publisher; }",
        ));
        let locs = &import.config.locations;
        assert_eq!(
            (locs[0].match_kind, locs[0].path.as_str()),
            (MatchKind::Exact, "/pub")
        );
        assert_eq!(
            (locs[1].match_kind, locs[1].path.as_str()),
            (MatchKind::Regex, "(?i)^/SUB/(.*)$")
        );
        assert_eq!(
            (locs[2].match_kind, locs[2].path.as_str()),
            (MatchKind::Prefix, "/lp/")
        );
        assert_eq!(
            (locs[3].match_kind, locs[3].path.as_str()),
            (MatchKind::Regex, "/ev/(.*)")
        );
        assert_eq!(locs.len(), 4);
        let text: Vec<String> = import.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            text.iter()
                .any(|w| w.contains("t.conf:8:") && w.contains("^~")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|w| w.contains("t.conf:10:") && w.contains("named")),
            "{text:#?}"
        );
    }

    #[test]
    fn every_ignored_directive_gets_one_warning_with_its_line() {
        let import = import(
            "user nginx;\nworker_processes 2;\nevents {\n  worker_connections 10;\n}\nhttp {\n  sendfile on;\n  push_stream_shared_memory_size 1m;\n  server {\n    listen 9080;\n    server_name x;\n    location /pub {\n      push_stream_publisher;\n      push_stream_channels_path $arg_id;\n      add_header X-A b;\n      if ($arg_x) {\n        push_stream_store_messages on;\n        return 403;\n      }\n    }\n  }\n}\n",
        );
        let text: Vec<String> = import.warnings.iter().map(|w| w.to_string()).collect();
        let expected = [
            (1, "\"user\" ignored"),
            (2, "\"worker_processes\" ignored"),
            (3, "\"events\" block ignored"),
            (7, "\"sendfile\" ignored"),
            (11, "\"server_name\" ignored"),
            (15, "\"add_header\" ignored"),
            (16, "block ignored with everything in it"),
        ];
        assert_eq!(text.len(), expected.len(), "{text:#?}");
        for ((line, what), warning) in expected.iter().zip(&text) {
            assert!(
                warning.starts_with(&format!("/nonexistent/t.conf:{line}: "))
                    && warning.contains(what),
                "{warning} should be line {line}: {what}"
            );
        }
    }

    #[test]
    fn legacy_names_are_read_and_removed_ones_warned() {
        let import = import(&conf(
            "push_stream_min_message_buffer_timeout 1m;\npush_stream_max_message_buffer_length 5;\npush_stream_broadcast_channel_prefix \"b_\";\npush_stream_content_type text/html;",
            "location /ws { push_stream_websocket; set $push_stream_channel_id $arg_id; push_stream_broadcast_channel_max_qtd 2; }\n\
             location /ev { push_stream_subscriber; push_stream_eventsource_support on; set $push_stream_channels_path $arg_id; push_stream_subscriber_connection_timeout 1m; }\n\
             location /pub { push_stream_publisher; push_stream_channels_path $arg_id; push_stream_keepalive on; }",
        ));
        let ch = &import.config.channels;
        assert_eq!(ch.message_ttl.0, Duration::from_secs(60));
        assert_eq!(ch.message_ttl.0, Duration::from_secs(60));
        assert_eq!(ch.max_messages_stored_per_channel, Some(5));
        assert_eq!(ch.wildcard_channel_prefix.as_deref(), Some("b_"));
        let locs = &import.config.locations;
        assert_eq!(locs[0].mode, SubscriberMode::WebSocket);
        assert_eq!(locs[0].channels_path(), "$arg_id");
        assert_eq!(locs[0].wildcard_channel_max_qtd, Some(2));
        assert_eq!(locs[1].mode, SubscriberMode::EventSource);
        assert_eq!(
            locs[1].subscriber_connection_ttl.unwrap().0,
            Duration::from_secs(60)
        );
        let text = import
            .warnings
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        for needle in [
            "\"push_stream_min_message_buffer_timeout\" is the old name of \"push_stream_message_ttl\"",
            "\"push_stream_content_type\" ignored: the module removed it",
            "\"push_stream_keepalive\" ignored",
            "old form of \"push_stream_subscriber websocket\"",
            "old form of \"push_stream_subscriber eventsource\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn directive_errors_are_like_nginx_t() {
        let cases = [
            ("push_stream_bogus on;", "", "t.conf:4: unknown directive \"push_stream_bogus\""),
            ("push_stream_message_ttl;", "", "invalid number of arguments in \"push_stream_message_ttl\""),
            ("push_stream_message_ttl 500ms;", "", "whole seconds"),
            ("push_stream_message_ttl soon;", "", "invalid value \"soon\""),
            ("push_stream_shared_memory_size lots;", "", "invalid value \"lots\""),
            ("push_stream_max_number_of_channels -1;", "", "whole number"),
            ("push_stream_timeout_with_body yes;", "", "it must be \"on\" or \"off\""),
            ("", "push_stream_message_ttl 5m;", "t.conf:7: \"push_stream_message_ttl\" directive is not allowed here"),
            ("", "push_stream_publisher;", "t.conf:7: \"push_stream_publisher\" directive is not allowed here"),
            ("", "location /x { push_stream_publisher sometimes; }", "invalid push_stream_publisher mode value: sometimes"),
            ("", "location /x { push_stream_publisher; push_stream_subscriber; }", "\"push_stream_subscriber\" directive is duplicate"),
            ("", "location /x { push_stream_publisher; push_stream_channels_path $uri; }", "variable $uri is not supported"),
            ("", "location /x { push_stream_publisher; }", "push_stream_channels_path must be set for location /x"),
            ("push_stream_header_template a;\npush_stream_header_template_file /etc/hosts;", "", "t.conf:5: \"push_stream_header_template_file\" directive is duplicate: \"push_stream_header_template\" at line 4"),
            ("", "location /x { push_stream_channels_path $arg_id; push_stream_store_messages on { } }", "is not terminated by \";\""),
            ("", "location /x /y /z { }", "invalid number of arguments in \"location\""),
            ("", "location ! /x { }", "invalid location modifier \"!\""),
            ("", "client_max_body_size huge;", "invalid value \"huge\" in \"client_max_body_size\""),
            ("", "allow everyone;", "invalid parameter \"everyone\""),
        ];
        for (http, server, expected) in cases {
            let text = conf(&format!("\n{http}"), &format!("{server}\n{PUB}"));
            let err = import_err(&text);
            assert!(
                err.contains(expected),
                "{http} / {server}: {err} should contain {expected:?}"
            );
            assert!(err.starts_with("/nonexistent/t.conf:"), "{err}");
        }
    }

    #[test]
    fn validation_errors_point_at_the_nginx_directive() {
        let err = import_err(&conf(
            "push_stream_max_number_of_wildcard_channels 2;\npush_stream_wildcard_channel_prefix w_;",
            "location /s { push_stream_subscriber; push_stream_channels_path $arg_id;\npush_stream_wildcard_channel_max_qtd 5; }",
        ));
        assert!(
            err.starts_with("/nonexistent/t.conf:8: \"push_stream_wildcard_channel_max_qtd\""),
            "{err}"
        );
        let err = import_err(&conf("push_stream_max_channel_id_length 0;", PUB));
        assert!(
            err.starts_with("/nonexistent/t.conf:3: \"push_stream_max_channel_id_length\""),
            "{err}"
        );
        let err = import_err(&conf(
            "",
            "location ~ /sub/( { push_stream_subscriber; push_stream_channels_path $1; }",
        ));
        assert!(
            err.starts_with("/nonexistent/t.conf:6: \"location ~ /sub/(\""),
            "{err}"
        );
        let err = import_err(&conf("push_stream_max_number_of_wildcard_channels 2;", PUB));
        assert!(
            err.contains("push_stream_wildcard_channel_prefix is not set"),
            "{err}"
        );
    }

    #[test]
    fn wildcard_max_qtd_defaults_to_the_wildcard_channel_limit() {
        let import = import(&conf(
            "push_stream_max_number_of_wildcard_channels 4;\npush_stream_wildcard_channel_prefix w_;",
            "location /s { push_stream_subscriber; push_stream_channels_path $arg_id; }",
        ));
        assert_eq!(import.config.locations[0].wildcard_channel_max_qtd, Some(4));
    }

    #[test]
    fn body_size_comes_from_the_locations_that_read_bodies() {
        let one = import(&conf(
            "client_max_body_size 2m;",
            "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; client_max_body_size 10m; }\n\
             location /sub { push_stream_subscriber; push_stream_channels_path $arg_id; }",
        ));
        assert_eq!(one.config.server.max_body_size.0, 10 << 20);
        assert!(one.warnings.is_empty(), "{:?}", one.warnings);
        let two = import(&conf(
            "client_max_body_size 2m;",
            "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; client_max_body_size 10m; }\n\
             location /pub2 { push_stream_publisher; push_stream_channels_path $arg_id; client_max_body_size 5m; }",
        ));
        assert_eq!(two.config.server.max_body_size.0, 2 << 20);
        assert_eq!(two.warnings.len(), 2, "{:?}", two.warnings);
        let unlimited = import(&conf("client_max_body_size 0;", PUB));
        assert_eq!(unlimited.config.server.max_body_size.0, i64::MAX as u64);
    }

    #[test]
    fn client_body_timeout_becomes_body_read_timeout() {
        let none = import(&conf("", PUB));
        assert_eq!(
            none.config.server.body_read_timeout.0,
            Duration::from_secs(60)
        );
        assert!(!none.toml.contains("body_read_timeout"), "{}", none.toml);
        let set = import(&conf("client_body_timeout 15s;", PUB));
        assert_eq!(
            set.config.server.body_read_timeout.0,
            Duration::from_secs(15)
        );
        assert!(set.warnings.is_empty(), "{:?}", set.warnings);
        let differ = import(&conf(
            "client_body_timeout 15s;",
            "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; client_body_timeout 5s; }\n\
             location /pub2 { push_stream_publisher; push_stream_channels_path $arg_id; }",
        ));
        assert_eq!(
            differ.config.server.body_read_timeout.0,
            Duration::from_secs(15)
        );
        assert!(
            differ
                .warnings
                .iter()
                .any(|w| w.message.contains("client_body_timeout differs")),
            "{:?}",
            differ.warnings
        );
        let zero = import_err(&conf("client_body_timeout 0;", PUB));
        assert!(
            zero.contains("body_read_timeout") || zero.contains("client_body_timeout"),
            "{zero}"
        );
    }

    #[test]
    fn allow_and_deny_become_address_lists() {
        let lists = |rules: &str| {
            let import = import(&conf("", &format!("location /pub {{ push_stream_publisher; push_stream_channels_path $arg_id; {rules} }}")));
            let loc = &import.config.locations[0];
            (
                loc.allow_addresses.clone(),
                loc.deny_addresses.clone(),
                import.warnings.len(),
            )
        };
        let none: Vec<String> = Vec::new();
        assert_eq!(
            lists("allow 127.0.0.1; allow ::1; deny all;"),
            (vec!["127.0.0.1".into(), "::1".into()], none.clone(), 0)
        );
        assert_eq!(
            lists("deny 10.0.0.0/8; allow all;"),
            (none.clone(), vec!["10.0.0.0/8".into()], 0)
        );
        assert_eq!(
            lists("deny all;"),
            (none.clone(), vec!["0.0.0.0/0".into(), "::/0".into()], 0)
        );
        assert_eq!(
            lists("deny 10.1.0.0/16; allow 10.0.0.0/8; deny all;"),
            (vec!["10.0.0.0/8".into()], vec!["10.1.0.0/16".into()], 0)
        );
        // An allow before an overlapping deny cannot be expressed exactly: warned.
        assert_eq!(
            lists("allow 10.1.2.3; deny 10.0.0.0/8;"),
            (none.clone(), vec!["10.0.0.0/8".into()], 1)
        );
        assert_eq!(lists("deny all; allow 127.0.0.1;").2, 1);
        // Inherited whole from the server when the location has none.
        let import = import(&conf("", &format!("allow 127.0.0.1; deny all;\n{PUB}")));
        assert_eq!(import.config.locations[0].allow_addresses, ["127.0.0.1"]);
    }

    #[test]
    fn only_the_first_server_with_push_stream_locations_is_served() {
        let import = import(&format!(
            "http {{\n push_stream_shared_memory_size 1m;\n server {{ listen 1; location / {{ root /x; }} }}\n server {{ listen 2; {PUB} }}\n server {{ listen 3; {PUB} }}\n}}\n"
        ));
        assert_eq!(import.config.server.listen, "0.0.0.0:2");
        let text: Vec<String> = import.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(text[0].contains(":3: server block ignored: it has no push_stream location"));
        assert!(text[1].contains(":5: server block ignored: it has 1 push_stream location(s)"));
    }

    #[test]
    fn header_template_file_is_resolved_against_the_nginx_file() {
        let dir = TempDir::new("header-file");
        dir.write("templates/header.html", "<h1>hello</h1>");
        let main = dir.write(
            "nginx.conf",
            "http { server { location /s { push_stream_subscriber; push_stream_channels_path $arg_id; push_stream_header_template_file templates/header.html; } } }\n",
        );
        let import = import_file(&main).unwrap();
        assert_eq!(import.config.locations[0].header_template, "<h1>hello</h1>");
        let missing = dir.write(
            "nginx.conf",
            "http { server { location /s { push_stream_subscriber; push_stream_channels_path $arg_id;\npush_stream_header_template_file nope.html; } } }\n",
        );
        let err = import_file(&missing).unwrap_err().to_string();
        assert!(
            err.contains("nginx.conf:2: \"push_stream_header_template_file\""),
            "{err}"
        );
    }

    #[test]
    fn the_migrated_toml_loads_to_the_same_config() {
        let import = import(&conf(
            "push_stream_message_template \"{\\\"t\\\":\\\"~text~\\\"}\\n\";\npush_stream_ping_message_text 'p \"q\"';",
            "location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; allow 127.0.0.1; deny all; }\n\
             location ~ /lp/(.*) { push_stream_subscriber long-polling; push_stream_channels_path $1; push_stream_longpolling_connection_ttl 1500ms; default_type application/json; }",
        ));
        let reloaded = Config::from_toml(&import.toml, "migrated.toml", None).unwrap();
        assert_eq!(format!("{:?}", reloaded), format!("{:?}", import.config));
        assert_eq!(import.config.channels.ping_message_text, "p \"q\"");
        assert_eq!(import.config.locations[0].message_template, None);
        assert_eq!(
            import.config.locations[1].message_template(),
            "{\"t\":\"~text~\"}\n"
        );
    }

    #[test]
    fn a_file_without_http_is_read_as_its_contents() {
        let import = import(&format!(
            "push_stream_shared_memory_size 1m;\nserver {{ {PUB} }}\n"
        ));
        assert_eq!(import.config.locations.len(), 1);
        assert!(import.warnings[0].message.contains("no http block"));
    }
}
