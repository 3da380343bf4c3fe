//! Server-side filters: a subscriber gives a SQL-like text, and only the messages it selects — shaped
//! by its SELECT list — reach that subscriber. This module owns parsing a filter in one of two
//! dialects ([`Dialect::Cobra`]: Cobra's stream SQL with its quirks, `cobra.rs`; [`Dialect::Sql`]:
//! Herald's own well-defined SQL subset, `sql.rs` + `native.rs`), evaluating it on a message parsed
//! once ([`Document`]), rendering the output once ([`Outcome`]), and sharing one compiled filter among
//! all subscribers that sent the same text ([`FilterRegistry`]).
//!
//! It knows nothing of channels, transports or HTTP: callers parse a message's payload into a
//! [`Document`] once, keep one [`Outcome`] per (message, [`FilterId`]), and map a [`FilterError`] to
//! their own error reply (400 with the position for the native dialect; Cobra's
//! `Invalid SQL expression …` for Cobra).

mod cobra;
mod native;
mod number;
mod pattern;
mod registry;
mod sql;
#[cfg(test)]
mod tests;

use std::fmt;

use bytes::Bytes;
use serde_json::Value;

pub use registry::{FilterId, FilterRegistry, SharedFilter};

/// The longest filter text accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 8192;

/// Which language a filter text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// Cobra's stream SQL, read exactly as Cobra reads it (shared/protocols/cobra.md A12).
    Cobra,
    /// Herald's SQL subset over JSON messages (see `native.rs` for its semantics).
    Sql,
}

/// A compiled filter.
#[derive(Debug)]
pub struct Filter {
    dialect: Dialect,
    text: Box<str>,
    query: Query,
}

#[derive(Debug)]
enum Query {
    Cobra(cobra::CobraQuery),
    Sql(native::NativeQuery),
}

/// Why a filter text was refused: a message for the subscriber and, for the native dialect, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    message: String,
    position: Option<Position>,
}

/// A place in the filter text: 1-based line and column, counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// A message's payload as filters read it: parsed once per message, shared by every filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Json(Value),
    /// The payload is not JSON: no filter can read a field of it.
    NotJson,
}

/// What a filter makes of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<'m> {
    /// Deliver this output.
    Match(Output<'m>),
    /// The message is not for this subscriber.
    NoMatch,
    /// The filter cannot be applied to this message (so it is not delivered); counted apart from
    /// [`Verdict::NoMatch`] so that operators can see filters that do not fit their messages.
    Unevaluable(Unevaluable),
}

/// What a matching message becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<'m> {
    /// The message unchanged: send its payload as it is.
    Whole,
    /// A part of the message, unchanged (Cobra: the `messages` field, a list's first element).
    Part(&'m Value),
    /// An object built by the SELECT list.
    Projected(Value),
}

/// Why a filter could not be applied to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unevaluable {
    /// The payload is not JSON and the filter reads a field.
    NotJson,
    /// Cobra: the message (or what the SELECT list reads from) is not an object.
    NotAnObject,
    /// Cobra: a path goes through a value that is not an object.
    PathThroughNonObject,
    /// Cobra: `>`/`<` between values Python cannot order (a missing field, a string and a number…).
    TypeMismatch,
    /// Cobra: `LIKE` on a value (or with a pattern) that is not a string.
    NotAString,
    /// Cobra: a `LIKE` pattern Python's `re` refuses (a reversed range such as `[z-a]`).
    BadPattern,
}

/// A [`Verdict`] rendered to bytes, owned: what a caller caches per (message, filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes (the original payload for [`Output::Whole`], else compact JSON).
    Deliver(Bytes),
    NoMatch,
    Unevaluable(Unevaluable),
}

impl Filter {
    /// Parses and compiles `text` (at most [`MAX_FILTER_LEN`] bytes). Cobra's dialect refuses with
    /// Cobra's own message (`Invalid SQL expression <text>`, no position; an empty text too, which a
    /// Cobra endpoint treats as "no filter" before calling this); the native dialect says what is
    /// wrong and where.
    pub fn parse(dialect: Dialect, text: &str) -> Result<Filter, FilterError> {
        let too_long = text.len() > MAX_FILTER_LEN;
        let query = match dialect {
            Dialect::Cobra => Query::Cobra(
                (!too_long)
                    .then(|| cobra::CobraQuery::parse(text).ok())
                    .flatten()
                    .ok_or_else(|| {
                        FilterError::new(format!("Invalid SQL expression {text}"), None)
                    })?,
            ),
            Dialect::Sql if too_long => {
                return Err(FilterError::new(
                    format!(
                        "the filter is {} bytes long; at most {MAX_FILTER_LEN} are accepted",
                        text.len()
                    ),
                    None,
                ));
            }
            Dialect::Sql => Query::Sql(sql::compile(text)?),
        };
        Ok(Filter {
            dialect,
            text: text.into(),
            query,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The text the filter was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `FROM` channel: for Cobra, the channel the subscription reads (it overrides the request's
    /// `channel`); for the native dialect, informational and optional.
    pub fn channel(&self) -> Option<&str> {
        match &self.query {
            Query::Cobra(query) => Some(&query.channel),
            Query::Sql(query) => query.channel.as_deref(),
        }
    }

    /// Applies the filter to one message.
    pub fn evaluate<'m>(&self, document: &'m Document) -> Verdict<'m> {
        match &self.query {
            Query::Cobra(query) => match document {
                Document::Json(message) => query.evaluate(message),
                Document::NotJson => Verdict::Unevaluable(Unevaluable::NotJson),
            },
            Query::Sql(query) => query.evaluate(document),
        }
    }

    /// Applies the filter and renders what is to be delivered; `payload` is the message's original
    /// bytes (delivered as they are when the whole message is selected).
    pub fn apply(&self, document: &Document, payload: &Bytes) -> Outcome {
        match self.evaluate(document) {
            Verdict::Match(output) => Outcome::Deliver(output.render(payload)),
            Verdict::NoMatch => Outcome::NoMatch,
            Verdict::Unevaluable(why) => Outcome::Unevaluable(why),
        }
    }
}

impl Output<'_> {
    /// The bytes to deliver: `payload` (shared) for the whole message, else compact JSON.
    pub fn render(&self, payload: &Bytes) -> Bytes {
        match self {
            Output::Whole => payload.clone(),
            Output::Part(value) => json_bytes(value),
            Output::Projected(value) => json_bytes(value),
        }
    }
}

fn json_bytes(value: &Value) -> Bytes {
    // A `Value` always serializes: its map keys are strings and its numbers finite.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

impl Document {
    /// Parses a payload once for every filter that will read it.
    pub fn parse(payload: &[u8]) -> Document {
        serde_json::from_slice(payload).map_or(Document::NotJson, Document::Json)
    }

    pub fn json(&self) -> Option<&Value> {
        match self {
            Document::Json(value) => Some(value),
            Document::NotJson => None,
        }
    }
}

impl From<Value> for Document {
    fn from(value: Value) -> Document {
        Document::Json(value)
    }
}

impl FilterError {
    fn new(message: String, position: Option<Position>) -> FilterError {
        FilterError { message, position }
    }

    /// What is wrong, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn position(&self) -> Option<Position> {
        self.position
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => {
                write!(f, "{} at line {line}, column {column}", self.message)
            }
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FilterError {}

impl Unevaluable {
    /// A short stable name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Unevaluable::NotJson => "not_json",
            Unevaluable::NotAnObject => "not_an_object",
            Unevaluable::PathThroughNonObject => "path_through_non_object",
            Unevaluable::TypeMismatch => "type_mismatch",
            Unevaluable::NotAString => "not_a_string",
            Unevaluable::BadPattern => "bad_pattern",
        }
    }
}

impl fmt::Display for Unevaluable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
