//! Herald's own filter language once compiled (by `sql.rs`), and its evaluation on a JSON message.
//! The semantics, as the README documents them:
//!
//! - A path (`data.fps`) walks objects by key. A missing key, a step into something that is not an
//!   object, and a present `null` all read as NULL.
//! - `= != <> < <= > >=` compare a field with a literal: numbers with numbers by exact value
//!   (`10 = 10.0`), strings with strings (case-sensitive, by code point), booleans with booleans
//!   (`false < true`). Any other pair (`'10'` against `10`, a boolean against `1`, an array or object
//!   against anything), or a NULL field, is UNKNOWN — so `NOT (a = 'x')` does not match `{"a": 5}`.
//! - `LIKE` matches a whole string, case-sensitively (`%` any run, `_` one character); on anything but
//!   a string it is UNKNOWN. `IS NULL` is true for a missing field or `null`.
//! - `AND`, `OR`, `NOT` use SQL's three-valued logic; a message matches when the condition is TRUE.
//! - Output: `SELECT *` is the message unchanged; a field list is an object `{name: value}` in SELECT
//!   order, `null` for a missing field.
//! - A message that is not JSON cannot be evaluated by a filter that reads a field; a filter that reads
//!   none (`SELECT *` with no `WHERE`) passes it unchanged.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::number::Num;
use super::pattern::Pattern;
use super::{Document, Output, Unevaluable, Verdict};

/// A compiled native filter.
#[derive(Debug)]
pub(super) struct NativeQuery {
    /// The `FROM` name, if any: informational (the subscription's channel comes from its URL).
    pub(super) channel: Option<Box<str>>,
    projection: Projection,
    condition: Option<Condition>,
    reads_fields: bool,
}

#[derive(Debug)]
pub(super) enum Projection {
    Whole,
    /// Output fields in SELECT order; names are distinct.
    Fields(Box<[Field]>),
}

#[derive(Debug)]
pub(super) struct Field {
    pub(super) path: Path,
    /// The output key: the alias, else the path's components joined with `.`.
    pub(super) name: Box<str>,
}

/// Object keys from the message root, split once at compile time.
#[derive(Debug)]
pub(super) struct Path(pub(super) Box<[Box<str>]>);

#[derive(Debug)]
pub(super) enum Condition {
    All(Box<[Condition]>),
    Any(Box<[Condition]>),
    Not(Box<Condition>),
    /// `path op literal`.
    Compare {
        path: Path,
        op: Comparison,
        literal: Scalar,
    },
    Like {
        path: Path,
        pattern: Pattern,
        negated: bool,
    },
    IsNull {
        path: Path,
        negated: bool,
    },
    Constant(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal. `Null` only exists between parsing and the compile error it leads to.
#[derive(Debug)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    Num(Num),
    Str(Box<str>),
}

impl Comparison {
    /// The operator that gives the same result with its operands swapped (`1 < a` is `a > 1`).
    pub(super) fn mirrored(self) -> Comparison {
        match self {
            Comparison::Lt => Comparison::Gt,
            Comparison::Le => Comparison::Ge,
            Comparison::Gt => Comparison::Lt,
            Comparison::Ge => Comparison::Le,
            same => same,
        }
    }
}

/// A value during evaluation. Arrays and objects only ever compare as UNKNOWN.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
    Composite,
}

/// SQL's three-valued truth: `None` is UNKNOWN.
type Truth = Option<bool>;

impl NativeQuery {
    pub(super) fn new(
        channel: Option<Box<str>>,
        projection: Projection,
        condition: Option<Condition>,
    ) -> Self {
        let reads_fields = matches!(projection, Projection::Fields(_))
            || condition.as_ref().is_some_and(Condition::reads_fields);
        NativeQuery {
            channel,
            projection,
            condition,
            reads_fields,
        }
    }

    pub(super) fn evaluate<'m>(&self, document: &'m Document) -> Verdict<'m> {
        let message = match document {
            Document::Json(value) => Some(value),
            Document::NotJson if self.reads_fields => {
                return Verdict::Unevaluable(Unevaluable::NotJson)
            }
            Document::NotJson => None,
        };
        if let Some(condition) = &self.condition {
            if condition.eval(message) != Some(true) {
                return Verdict::NoMatch;
            }
        }
        match &self.projection {
            Projection::Whole => Verdict::Match(Output::Whole),
            Projection::Fields(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for field in fields.iter() {
                    let value = message
                        .and_then(|m| field.path.lookup(m))
                        .cloned()
                        .unwrap_or(Value::Null);
                    out.insert(field.name.to_string(), value);
                }
                Verdict::Match(Output::Projected(Value::Object(out)))
            }
        }
    }
}

impl Path {
    fn lookup<'m>(&self, message: &'m Value) -> Option<&'m Value> {
        self.0
            .iter()
            .try_fold(message, |at, key| at.as_object()?.get(&**key))
    }
}

impl Condition {
    fn reads_fields(&self) -> bool {
        match self {
            Condition::All(terms) | Condition::Any(terms) => {
                terms.iter().any(Condition::reads_fields)
            }
            Condition::Not(inner) => inner.reads_fields(),
            Condition::Compare { .. } | Condition::Like { .. } | Condition::IsNull { .. } => true,
            Condition::Constant(_) => false,
        }
    }

    /// `message` is `None` only for a non-JSON message, which a condition that reads no field never
    /// looks at.
    fn eval(&self, message: Option<&Value>) -> Truth {
        match self {
            Condition::All(terms) => decide(terms, message, false),
            Condition::Any(terms) => decide(terms, message, true),
            Condition::Not(inner) => inner.eval(message).map(|b| !b),
            Condition::Compare { path, op, literal } => {
                let ordering = compare(path.eval(message), literal.eval())?;
                Some(match op {
                    Comparison::Eq => ordering == Ordering::Equal,
                    Comparison::Ne => ordering != Ordering::Equal,
                    Comparison::Lt => ordering == Ordering::Less,
                    Comparison::Le => ordering != Ordering::Greater,
                    Comparison::Gt => ordering == Ordering::Greater,
                    Comparison::Ge => ordering != Ordering::Less,
                })
            }
            Condition::Like {
                path,
                pattern,
                negated,
            } => match path.eval(message) {
                Val::Str(s) => Some(pattern.matches(s) != *negated),
                _ => None,
            },
            Condition::IsNull { path, negated } => {
                Some(matches!(path.eval(message), Val::Null) != *negated)
            }
            Condition::Constant(b) => Some(*b),
        }
    }
}

/// Kleene's AND (`decisive` false) or OR (`decisive` true): the decisive value wins outright, else
/// any UNKNOWN makes the result UNKNOWN.
fn decide(terms: &[Condition], message: Option<&Value>, decisive: bool) -> Truth {
    let mut result = Some(!decisive);
    for term in terms {
        match term.eval(message) {
            Some(b) if b == decisive => return Some(decisive),
            None => result = None,
            Some(_) => {}
        }
    }
    result
}

/// The ordering of two values of one kind; `None` (UNKNOWN) for NULL or mismatched kinds.
fn compare(left: Val<'_>, right: Val<'_>) -> Option<Ordering> {
    match (left, right) {
        (Val::Num(a), Val::Num(b)) => a.compare(b),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(&b)),
        _ => None,
    }
}

impl Path {
    fn eval<'m>(&self, message: Option<&'m Value>) -> Val<'m> {
        match message.and_then(|m| self.lookup(m)) {
            None | Some(Value::Null) => Val::Null,
            Some(Value::Bool(b)) => Val::Bool(*b),
            Some(Value::Number(n)) => Val::Num(Num::from_json(n)),
            Some(Value::String(s)) => Val::Str(s),
            Some(Value::Array(_) | Value::Object(_)) => Val::Composite,
        }
    }
}

impl Scalar {
    fn eval(&self) -> Val<'_> {
        match self {
            Scalar::Null => Val::Null,
            Scalar::Bool(b) => Val::Bool(*b),
            Scalar::Num(n) => Val::Num(*n),
            Scalar::Str(s) => Val::Str(s),
        }
    }
}
