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
        let key = err.span().and_then(|span| key_at_offset(text, span.start));
        ConfigError {
            source_name: source_name.to_string(),
            line,
            key,
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

/// The dotted path of the innermost key whose key or value spans `offset` (e.g. `location[1].mode`).
fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
        span.is_some_and(|s| s.start <= offset && offset < s.end.max(s.start + 1))
    }
    fn walk(table: &dyn toml_edit::TableLike, offset: usize, path: &mut String) -> bool {
        for (key, item) in table.iter() {
            let Some((k, _)) = table.get_key_value(key) else {
                continue;
            };
            let start_len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            if let Some(aot) = item.as_array_of_tables() {
                for (index, sub) in aot.iter().enumerate() {
                    let before = path.len();
                    path.push_str(&format!("[{index}]"));
                    if walk(sub, offset, path) {
                        return true;
                    }
                    path.truncate(before);
                }
            } else if let Some(sub) = item.as_table_like() {
                if walk(sub, offset, path) {
                    return true;
                }
            }
            if contains(k.span(), offset) || contains(item.span(), offset) {
                return true;
            }
            path.truncate(start_len);
        }
        false
    }
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = String::new();
    walk(doc.as_table(), offset, &mut path).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_name_the_key() {
        let text = "[channels]\nmessage_ttl = \"soon\"\n[[location]]\npath = \"/a\"\n[[location]]\nmode = \"x\"\n";
        let value_offset = text.find("\"soon").unwrap();
        assert_eq!(
            key_at_offset(text, value_offset).as_deref(),
            Some("channels.message_ttl")
        );
        let mode_offset = text.find("\"x\"").unwrap();
        assert_eq!(
            key_at_offset(text, mode_offset).as_deref(),
            Some("location[1].mode")
        );
    }
}
