//! Configuration errors that point at the file, line and key at fault, like `nginx -t` does.

use super::{KeyPath, KeySeg};
use std::fmt;

/// Why a configuration was refused: where (file, line, key) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded …>`) the text came from.
    pub source_name: String,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted key path, when the error concerns one key.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about the file as a whole (unreadable, …).
    pub fn plain(source_name: String, message: String) -> ConfigError {
        ConfigError {
            source_name,
            line: None,
            key: None,
            message,
        }
    }

    /// Converts a TOML syntax or type error, keeping its position.
    pub fn from_toml(source_name: &str, text: &str, err: &toml::de::Error) -> ConfigError {
        let line = err.span().map(|span| line_of_offset(text, span.start));
        ConfigError {
            source_name: source_name.to_string(),
            line,
            key: None,
            message: err.message().trim().to_string(),
        }
    }

    /// An error about one key found by validation; the line is looked up in the source text.
    pub fn at_key(source_name: &str, text: &str, key: &KeyPath, message: String) -> ConfigError {
        ConfigError {
            source_name: source_name.to_string(),
            line: locate_key(text, key),
            key: Some(key.to_string()),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds the line of `key` in `text`: the key itself when present, else the closest enclosing table.
fn locate_key(text: &str, key: &KeyPath) -> Option<usize> {
    enum Node<'a> {
        Item(&'a toml_edit::Item),
        Table(&'a toml_edit::Table),
    }
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut node = Node::Table(doc.as_table());
    let mut best = None;
    for seg in &key.0 {
        match seg {
            KeySeg::Name(name) => {
                let table: &dyn toml_edit::TableLike = match node {
                    Node::Item(item) => item.as_table_like()?,
                    Node::Table(table) => table,
                };
                let Some((k, value)) = table.get_key_value(name) else {
                    break;
                };
                if let Some(span) = k.span() {
                    best = Some(span.start);
                }
                node = Node::Item(value);
            }
            KeySeg::Index(index) => {
                let Node::Item(item) = node else { break };
                let Some(table) = item.as_array_of_tables().and_then(|a| a.get(*index)) else {
                    break;
                };
                if let Some(span) = table.span() {
                    best = Some(span.start);
                }
                node = Node::Table(table);
            }
        }
    }
    best.map(|offset| line_of_offset(text, offset))
}
