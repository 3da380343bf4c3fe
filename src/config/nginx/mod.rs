//! Reads an nginx configuration written for the push-stream module and turns it into Herald's own
//! configuration: `herald --nginx-config nginx.conf` serves it, `herald migrate nginx.conf` prints it as
//! TOML. Three stages, each in its own file:
//!
//! 1. **Syntax** (`syntax.rs`): nginx's grammar — directives `name args…;`, blocks `{ }`,
//!    `#` comments, single- and double-quoted strings with nginx's escapes, `$var`/`${var}` kept verbatim —
//!    with `include` (relative to the including file, glob patterns allowed) expanded in place.
//! 2. **Meaning** (`import.rs`, over the directive table in `directives.rs` and the argument readers
//!    in `values.rs`): the `http`/`server`/`location` tree, every `push_stream_*` directive
//!    (legacy names too) applied at its level with the module's inheritance, the few other nginx
//!    directives Herald honours (`listen`, `client_max_body_size`, `client_body_timeout`,
//!    `default_type`, `set $push_stream_channel_id`), and one warning for everything else.
//! 3. **Output** (`render.rs`): a TOML document built with `toml_edit`, with every value the module defaults
//!    differently from Herald written out, validated by [`Config::from_toml`] like any TOML file; its
//!    errors are mapped back to the nginx file and line of the directive at fault.
//!
//! This file holds the entry points and positions (`Origin`, `error_at`). Errors read like `nginx -t`: `file:line: what is wrong and what was expected`. This module owns no
//! state and does not touch the schema in `config/mod.rs`; it only produces TOML that the schema reads.

mod directives;
mod import;
mod render;
mod syntax;
#[cfg(test)]
mod tests;
mod values;

use super::{Config, ConfigError};
use import::Importer;
use render::{location_warnings, render};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syntax::parse_text;

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
    let base_dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut rendered = render(&importer, &server, &file, false)?;
    let mut config = Config::from_toml(&rendered.toml, &path.display().to_string(), base_dir)
        .map_err(|e| rendered.map_error(e, &file))?;
    // nginx served an admin publisher without allow/deny to every address; Herald would refuse
    // to. The nginx configuration is the operator's explicit choice: keep serving it, say so in
    // the TOML (a line to remove) and warn.
    if let Some(Err(problem)) = config.listen_addr().ok().map(|a| config.check_exposure(a)) {
        let origin = match &server.listen {
            Some(setting) => setting.origin.clone(),
            None => Origin {
                file: file.clone(),
                line: 1,
            },
        };
        importer.warn(
            &origin,
            format!(
                "{problem}; as nginx did, Herald serves it (allow_public_admin = true written out)"
            ),
        );
        rendered = render(&importer, &server, &file, true)?;
        config = Config::from_toml(&rendered.toml, &path.display().to_string(), base_dir)
            .map_err(|e| rendered.map_error(e, &file))?;
    }
    importer
        .warnings
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
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
    pub(super) file: Arc<Path>,
    pub(super) line: usize,
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
