//! Cobra's stream SQL, exactly as the `cobras` 2.9.137 server reads and applies it
//! (shared/protocols/cobra.md A12): what a Cobra client sends as a subscription `filter`.
//!
//! This is deliberately a hand-written reading and not a SQL grammar: Cobra splits the text on
//! whitespace and looks for keywords and operators by substring, and clients send their SQL verbatim,
//! so parity with those quirks matters more than SQL sense (`a=1` and `a >= 1` are invalid, `a = 1
//! and b = 2` is invalid, an ` OR ` after an ` AND ` ends up inside a literal, `LIKE` is a whole-string
//! `fnmatch` glob). Every step below names the A12 step it reproduces.
//!
//! Evaluation follows Cobra's Python semantics (`1 == true`, `10 == 10.0`, missing deep fields read as
//! `{}`, a falsy output is not delivered). One deliberate difference: where Cobra raises (which silently
//! ends the subscription's reader), Herald answers [`Verdict::Unevaluable`] and the subscription goes on.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::number::{parse_python_int, Num};
use super::pattern::{BadRange, Pattern};
use super::{Output, Unevaluable, Verdict};

/// A Cobra filter, compiled.
#[derive(Debug)]
pub(super) struct CobraQuery {
    /// The `FROM` token with its backticks removed: the channel the subscription reads.
    pub(super) channel: Box<str>,
    projection: Projection,
    /// `None`: no `WHERE` (Cobra's "empty filter").
    condition: Option<Condition>,
}

/// A dotted path split at every `.`, as Cobra splits it.
type Components = Box<[Box<str>]>;

#[derive(Debug)]
enum Projection {
    Whole,
    /// `(path components, output key)` in SELECT order.
    Fields(Box<[(Components, Box<str>)]>),
}

#[derive(Debug)]
struct Condition {
    /// Terms joined by ` AND ` (all) or ` OR ` (any).
    all: bool,
    terms: Box<[Term]>,
}

#[derive(Debug)]
struct Term {
    path: Components,
    test: Test,
}

#[derive(Debug)]
enum Test {
    Eq(Literal),
    Ne(Literal),
    Gt(Literal),
    Lt(Literal),
    /// The glob (`%`→`*`, `_`→`?` already applied), or why every match with it raises.
    Like(Result<Pattern, Unevaluable>),
}

#[derive(Debug)]
enum Literal {
    Str(Box<str>),
    Bool(bool),
    Int(Num),
}

/// A field as Cobra's lookups see it: a JSON value, Python's `None` (a missing shallow field), or
/// the `{}` that `.get(key, {})` returns for a missing deep field.
#[derive(Debug, Clone, Copy)]
enum Looked<'m> {
    Value(&'m Value),
    Missing,
    EmptyDict,
}

/// The invalid filter. Cobra answers `Invalid SQL expression <filter>` whatever the fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Invalid;

/// Python's `str.isspace()`: Unicode whitespace plus the four information separators U+001C–U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn python_strip(s: &str) -> &str {
    s.trim_matches(is_python_space)
}

/// Index of the first token equal to `upper`, else of the first equal to `lower` (Cobra's
/// `tokens.index('SELECT')` then `tokens.index('select')`).
fn keyword(tokens: &[&str], upper: &str, lower: &str) -> Option<usize> {
    let find = |word: &str| tokens.iter().position(|t| *t == word);
    find(upper).or_else(|| find(lower))
}

impl CobraQuery {
    pub(super) fn parse(sql: &str) -> Result<CobraQuery, Invalid> {
        // Tokens: Python's `sql.split()`.
        let tokens: Vec<&str> = sql
            .split(is_python_space)
            .filter(|t| !t.is_empty())
            .collect();
        // Step 1: `SELECT` or `select`, and it must come first.
        if keyword(&tokens, "SELECT", "select") != Some(0) {
            return Err(Invalid);
        }
        // Step 2: the first `FROM`, else the first `from`.
        let from = keyword(&tokens, "FROM", "from").ok_or(Invalid)?;
        // Step 3: projection.
        let projection = if tokens.get(1) == Some(&"*") {
            Projection::Whole
        } else {
            let items = tokens[1..from].join(" ");
            let fields = items
                .split(',')
                .map(|item| {
                    let item = python_strip(item);
                    // Python's `partition(' AS ')`; an empty alias falls back to the path text.
                    let (path, alias) = match item.split_once(" AS ") {
                        Some((path, alias)) if !alias.is_empty() => (path, alias),
                        Some((path, _)) => (path, path),
                        None => (item, item),
                    };
                    (split_path(path), Box::from(alias))
                })
                .collect();
            Projection::Fields(fields)
        };
        // Step 4: the channel, every backtick removed.
        let channel = tokens
            .get(from + 1)
            .ok_or(Invalid)?
            .replace('`', "")
            .into_boxed_str();
        // Step 5: `WHERE` or `where`; the condition is the rest, re-joined with single spaces.
        let Some(where_at) = keyword(&tokens, "WHERE", "where") else {
            return Ok(CobraQuery {
                channel,
                projection,
                condition: None,
            });
        };
        let text = tokens[where_at + 1..].join(" ");
        // Step 6: ` AND ` splits (all), else ` OR ` (any); quotes mean nothing here.
        let (all, terms): (bool, Vec<&str>) = if text.contains(" AND ") {
            (true, text.split(" AND ").collect())
        } else if text.contains(" OR ") {
            (false, text.split(" OR ").collect())
        } else {
            (true, vec![text.as_str()])
        };
        let terms = terms
            .into_iter()
            .map(|term| Term::parse(python_strip(term)))
            .collect::<Result<_, _>>()?;
        Ok(CobraQuery {
            channel,
            projection,
            condition: Some(Condition { all, terms }),
        })
    }

    /// What a Cobra subscriber with this filter receives for a published message (the server's
    /// `handleMsg`): the filter applies to a truthy `messages` field instead of the message, a falsy
    /// output is not delivered, and a message that is not an object cannot be evaluated.
    pub(super) fn evaluate<'m>(&self, message: &'m Value) -> Verdict<'m> {
        let Value::Object(object) = message else {
            return Verdict::Unevaluable(Unevaluable::NotAnObject);
        };
        let subject = match object.get("messages") {
            Some(inner) if truthy(inner) => inner,
            _ => message,
        };
        match self.apply(subject) {
            Ok(Some(Output::Part(part))) if !truthy(part) => Verdict::NoMatch,
            Ok(Some(Output::Part(part))) if std::ptr::eq(part, message) => {
                Verdict::Match(Output::Whole)
            }
            // A projection is a non-empty object, so always truthy.
            Ok(Some(output)) => Verdict::Match(output),
            Ok(None) => Verdict::NoMatch,
            Err(why) => Verdict::Unevaluable(why),
        }
    }

    /// Cobra's `StreamSqlFilter.match` on `subject`: `Ok(None)` for no match, the output (falsy or
    /// not) for a match, `Err` where Cobra raises. Without a `WHERE` the subject goes to the
    /// projection as it is; with one, a list is replaced by its first element and a non-object does
    /// not match.
    pub(super) fn apply<'m>(&self, subject: &'m Value) -> Result<Option<Output<'m>>, Unevaluable> {
        let Some(condition) = &self.condition else {
            return self.project(subject).map(Some);
        };
        let subject = match subject {
            Value::Array(items) => match items.first() {
                Some(first) => first,
                None => return Ok(None),
            },
            other => other,
        };
        let Value::Object(object) = subject else {
            return Ok(None);
        };
        let mut verdicts = condition.terms.iter().map(|term| term.holds(object));
        let matched = if condition.all {
            try_all(&mut verdicts)?
        } else {
            try_any(&mut verdicts)?
        };
        if matched {
            self.project(subject).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Cobra's `transform`: `SELECT *` gives the subject itself; a field list gives a flat object
    /// `{alias: value}` read from `dict(subject)`.
    fn project<'m>(&self, subject: &'m Value) -> Result<Output<'m>, Unevaluable> {
        let Projection::Fields(fields) = &self.projection else {
            return Ok(Output::Part(subject));
        };
        let dict = python_dict(subject)?;
        let mut out = Map::with_capacity(fields.len());
        for (path, alias) in fields.iter() {
            out.insert(alias.to_string(), extract(&dict, path)?);
        }
        Ok(Output::Projected(Value::Object(out)))
    }
}

fn try_all(
    results: &mut dyn Iterator<Item = Result<bool, Unevaluable>>,
) -> Result<bool, Unevaluable> {
    for result in results {
        if !result? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn try_any(
    results: &mut dyn Iterator<Item = Result<bool, Unevaluable>>,
) -> Result<bool, Unevaluable> {
    for result in results {
        if result? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn split_path(path: &str) -> Components {
    path.split('.').map(Box::from).collect()
}

impl Term {
    /// Step 7 (operator, first match wins) and step 8 (literal).
    fn parse(text: &str) -> Result<Term, Invalid> {
        enum Op {
            Like,
            Ne,
            Eq,
            Gt,
            Lt,
        }
        // ` = `, ` > `, ` < ` must appear with spaces, but the split is at the first bare character.
        let (op, (path, literal)) = if let Some(parts) = text.split_once(" LIKE ") {
            (Op::Like, parts)
        } else if let Some(parts) = text.split_once(" != ") {
            (Op::Ne, parts)
        } else if text.contains(" = ") {
            (Op::Eq, text.split_once('=').ok_or(Invalid)?)
        } else if text.contains(" > ") {
            (Op::Gt, text.split_once('>').ok_or(Invalid)?)
        } else if text.contains(" < ") {
            (Op::Lt, text.split_once('<').ok_or(Invalid)?)
        } else {
            return Err(Invalid);
        };
        let literal = python_strip(literal);
        let literal = if literal.starts_with('\'') && literal.ends_with('\'') {
            let unquoted = literal.replace('\'', "");
            if matches!(op, Op::Like) {
                Literal::Str(
                    unquoted
                        .replace('%', "*")
                        .replace('_', "?")
                        .into_boxed_str(),
                )
            } else {
                Literal::Str(unquoted.into_boxed_str())
            }
        } else if literal == "true" || literal == "false" {
            Literal::Bool(literal == "true")
        } else {
            Literal::Int(parse_python_int(literal).ok_or(Invalid)?)
        };
        let test = match op {
            Op::Eq => Test::Eq(literal),
            Op::Ne => Test::Ne(literal),
            Op::Gt => Test::Gt(literal),
            Op::Lt => Test::Lt(literal),
            Op::Like => Test::Like(match literal {
                Literal::Str(glob) => {
                    Pattern::from_fnmatch(&glob).map_err(|BadRange| Unevaluable::BadPattern)
                }
                // `fnmatch` of a non-string pattern raises on every message.
                Literal::Bool(_) | Literal::Int(_) => Err(Unevaluable::NotAString),
            }),
        };
        Ok(Term {
            path: split_path(python_strip(path)),
            test,
        })
    }

    /// Cobra's `matchExpression` + `matchOperand` on one object.
    fn holds(&self, object: &Map<String, Value>) -> Result<bool, Unevaluable> {
        let value = self.lookup(object)?;
        match &self.test {
            Test::Eq(literal) => Ok(python_eq(literal, value)),
            Test::Ne(literal) => Ok(!python_eq(literal, value)),
            Test::Gt(literal) => python_cmp(value, literal).map(|o| o == Some(Ordering::Greater)),
            Test::Lt(literal) => python_cmp(value, literal).map(|o| o == Some(Ordering::Less)),
            Test::Like(pattern) => {
                let pattern = pattern.as_ref().map_err(|why| *why)?;
                match value {
                    Looked::Value(Value::String(s)) => Ok(pattern.matches(s)),
                    _ => Err(Unevaluable::NotAString),
                }
            }
        }
    }

    /// One component: `m.get(a)`; two: `m.get(a, {}).get(b)`; more: `.get(x, {})` all the way down.
    /// A present non-object on the way raises (`null` included).
    fn lookup<'m>(&self, object: &'m Map<String, Value>) -> Result<Looked<'m>, Unevaluable> {
        let found = |map: &'m Map<String, Value>, key: &str, missing: Looked<'m>| {
            map.get(key).map_or(missing, Looked::Value)
        };
        match &self.path[..] {
            [only] => Ok(found(object, only, Looked::Missing)),
            [first, second] => match found(object, first, Looked::EmptyDict) {
                Looked::Value(Value::Object(inner)) => Ok(found(inner, second, Looked::Missing)),
                Looked::EmptyDict => Ok(Looked::Missing),
                _ => Err(Unevaluable::PathThroughNonObject),
            },
            components => {
                let mut at = Looked::Value(&Value::Null);
                let mut map = Some(object);
                for key in components {
                    at = match map {
                        Some(map) => found(map, key, Looked::EmptyDict),
                        None => match at {
                            Looked::EmptyDict => Looked::EmptyDict,
                            _ => return Err(Unevaluable::PathThroughNonObject),
                        },
                    };
                    map = match at {
                        Looked::Value(Value::Object(inner)) => Some(inner),
                        _ => None,
                    };
                }
                Ok(at)
            }
        }
    }
}

/// Python's `literal == value`: numbers and booleans by numeric value, strings exactly, nothing else
/// equal.
fn python_eq(literal: &Literal, value: Looked<'_>) -> bool {
    let Looked::Value(value) = value else {
        return false;
    };
    match (literal, value) {
        (Literal::Str(l), Value::String(v)) => **l == **v,
        (Literal::Str(_), _) => false,
        (literal, value) => match (literal_number(literal), python_number(value)) {
            (Some(l), Some(v)) => l.compare(v) == Some(Ordering::Equal),
            _ => false,
        },
    }
}

/// Python's ordering of `value` against `literal`: numbers (booleans included) with numbers, strings
/// with strings by code point; any other pair raises. `Ok(None)` for an unordered pair of floats.
fn python_cmp(value: Looked<'_>, literal: &Literal) -> Result<Option<Ordering>, Unevaluable> {
    let Looked::Value(value) = value else {
        return Err(Unevaluable::TypeMismatch);
    };
    match (value, literal) {
        (Value::String(v), Literal::Str(l)) => Ok(Some(v.as_str().cmp(&**l))),
        (value, literal) => match (python_number(value), literal_number(literal)) {
            (Some(v), Some(l)) => Ok(v.compare(l)),
            _ => Err(Unevaluable::TypeMismatch),
        },
    }
}

fn literal_number(literal: &Literal) -> Option<Num> {
    match literal {
        Literal::Int(n) => Some(*n),
        Literal::Bool(b) => Some(Num::Int(i128::from(*b))),
        Literal::Str(_) => None,
    }
}

/// A JSON value as a Python number (`bool` is an `int` in Python).
fn python_number(value: &Value) -> Option<Num> {
    match value {
        Value::Number(n) => Some(Num::from_json(n)),
        Value::Bool(b) => Some(Num::Int(i128::from(*b))),
        _ => None,
    }
}

/// Python's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => Num::from_json(n).compare(Num::Int(0)) != Some(Ordering::Equal),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// Python's `dict(subject)`: an object as it is; a list of pairs (two-element lists, two-character
/// strings, two-key objects) as the mapping they spell; anything else raises. Only string keys are
/// kept: the lookups that follow use string keys, which never equal a number, boolean or `None`.
fn python_dict(subject: &Value) -> Result<Cow<'_, Map<String, Value>>, Unevaluable> {
    let items = match subject {
        Value::Object(map) => return Ok(Cow::Borrowed(map)),
        Value::Array(items) => items,
        _ => return Err(Unevaluable::NotAnObject),
    };
    let mut dict = Map::new();
    for item in items {
        let (key, value) = match item {
            Value::Array(pair) => match &pair[..] {
                [Value::Array(_) | Value::Object(_), _] => return Err(Unevaluable::NotAnObject),
                [key, value] => (key.as_str().map(str::to_owned), value.clone()),
                _ => return Err(Unevaluable::NotAnObject),
            },
            Value::String(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next(), chars.next()) {
                    (Some(k), Some(v), None) => (Some(k.to_string()), Value::String(v.to_string())),
                    _ => return Err(Unevaluable::NotAnObject),
                }
            }
            Value::Object(map) if map.len() == 2 => {
                let mut keys = map.keys();
                match (keys.next(), keys.next()) {
                    (Some(k), Some(v)) => (Some(k.clone()), Value::String(v.clone())),
                    _ => return Err(Unevaluable::NotAnObject),
                }
            }
            _ => return Err(Unevaluable::NotAnObject),
        };
        if let Some(key) = key {
            dict.insert(key, value);
        }
    }
    Ok(Cow::Owned(dict))
}

/// Cobra's `extractAttributeFromDict`: `.get(component, {})` per component, a present `null` ends
/// the walk as `null`, a present non-object with components left raises.
fn extract(dict: &Map<String, Value>, path: &[Box<str>]) -> Result<Value, Unevaluable> {
    let mut at = Looked::Value(&Value::Null);
    let mut map = Some(dict);
    for key in path {
        at = match map {
            Some(map) => map.get(&**key).map_or(Looked::EmptyDict, Looked::Value),
            None => match at {
                Looked::EmptyDict => Looked::EmptyDict,
                _ => return Err(Unevaluable::PathThroughNonObject),
            },
        };
        map = match at {
            Looked::Value(Value::Null) => return Ok(Value::Null),
            Looked::Value(Value::Object(inner)) => Some(inner),
            _ => None,
        };
    }
    Ok(match at {
        Looked::Value(value) => value.clone(),
        Looked::EmptyDict | Looked::Missing => Value::Object(Map::new()),
    })
}
