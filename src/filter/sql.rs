//! Reading Herald's native filter language: the `sqlparser` crate parses the text (GenericDialect:
//! case-insensitive keywords, `'strings'`, `"quoted"` and `` `quoted` `` identifiers), and this module
//! compiles the pieces it accepts into `native.rs`'s representation, refusing anything outside the
//! subset with a message and the position of the offending part.
//!
//! The subset: `SELECT * | path [AS name], …  [FROM channel]  [WHERE condition]`, where a condition is
//! `path (= | != | <> | < | <= | > | >=) literal` (either way round), `path [NOT] LIKE 'pattern'
//! [ESCAPE 'c']`, `path IS [NOT] NULL`, `true`/`false`, or conditions joined by `AND`, `OR`, `NOT` and
//! parentheses. A path is dotted names (`data.fps`; `"quoted"` or `` `quoted` `` for odd names or SQL
//! keywords); a literal is a number, a `'single-quoted string'`, `true` or `false`. Comparing two
//! fields is refused on purpose: `status = "ok"` (double quotes name a field) is then an error
//! instead of a filter that never matches. An alias needs `AS`, so `SELECT DISTINCT a` is refused
//! rather than read as `DISTINCT AS a`.

use sqlparser::ast::{BinaryOperator, Expr, Ident, ObjectNamePart, Spanned, UnaryOperator, Value};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, Tokenizer};

use super::native::{Comparison, Condition, Field, NativeQuery, Path, Projection, Scalar};
use super::number::Num;
use super::pattern::{DanglingEscape, Pattern};
use super::{FilterError, Position};

/// How deep the parser may recurse (each parenthesis or `NOT` costs one or two levels). sqlparser's
/// `recursive-protection` feature also grows the stack when needed, so a deep filter is refused
/// instead of overflowing a worker thread's stack.
const MAX_NESTING: usize = 32;

/// Parses and compiles a native filter.
pub(super) fn compile(text: &str) -> Result<NativeQuery, FilterError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| FilterError::new(e.message, position(e.location)))?;
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(MAX_NESTING)
        .with_tokens_with_locations(tokens);
    let parsed = parse_clauses(&mut parser).map_err(|e| parser_error(e, text))?;
    let projection = projection(&parsed.items)?;
    let channel = parsed.from.map(channel_name).transpose()?;
    let condition = parsed.condition.as_ref().map(condition).transpose()?;
    Ok(NativeQuery::new(channel, projection, condition))
}

struct Clauses {
    items: Vec<Item>,
    from: Option<sqlparser::ast::ObjectName>,
    condition: Option<Expr>,
}

/// One item of the SELECT list, as read by `parse_item`.
enum Item {
    Star(Span),
    Expr {
        expr: Box<Expr>,
        alias: Option<Ident>,
    },
}

fn parse_clauses(parser: &mut Parser<'_>) -> Result<Clauses, ParserError> {
    parser.expect_keyword_is(Keyword::SELECT)?;
    let items = parser.parse_comma_separated(parse_item)?;
    let from = if parser.parse_keyword(Keyword::FROM) {
        Some(parser.parse_object_name(false)?)
    } else {
        None
    };
    let condition = if parser.parse_keyword(Keyword::WHERE) {
        Some(parser.parse_expr()?)
    } else {
        None
    };
    // One trailing semicolon is allowed.
    let _ = parser.consume_token(&Token::SemiColon);
    let next = parser.peek_token();
    if next.token != Token::EOF {
        let expected = match (&from, &condition) {
            (None, None) => "',', AS, FROM, WHERE or the end of the filter",
            (Some(_), None) => "WHERE or the end of the filter",
            (_, Some(_)) => "the end of the filter",
        };
        return parser.expected(expected, next);
    }
    Ok(Clauses {
        items,
        from,
        condition,
    })
}

/// `*`, or an expression with an optional `AS alias` (an alias without `AS` is not taken).
fn parse_item(parser: &mut Parser<'_>) -> Result<Item, ParserError> {
    let star = parser.peek_token().span;
    if parser.consume_token(&Token::Mul) {
        return Ok(Item::Star(star));
    }
    let expr = Box::new(parser.parse_expr()?);
    let alias = if parser.parse_keyword(Keyword::AS) {
        Some(parser.parse_identifier()?)
    } else {
        None
    };
    Ok(Item::Expr { expr, alias })
}

fn position(location: Location) -> Option<Position> {
    (location.line > 0).then_some(Position {
        line: location.line,
        column: location.column,
    })
}

fn at(span: Span, message: impl Into<String>) -> FilterError {
    FilterError::new(message.into(), position(span.start))
}

/// `sqlparser` puts the position at the end of its messages (" at Line: 1, Column: 5"); it leaves it
/// out when the parser ran out of input, which is then the position.
fn parser_error(error: ParserError, text: &str) -> FilterError {
    let message = match error {
        ParserError::TokenizerError(message) | ParserError::ParserError(message) => message,
        ParserError::RecursionLimitExceeded => {
            return FilterError::new("the filter nests too deeply".to_owned(), None);
        }
    };
    let located = message.rsplit_once(" at Line: ").and_then(|(head, tail)| {
        let (line, column) = tail.split_once(", Column: ")?;
        Some((
            head,
            Position {
                line: line.parse().ok()?,
                column: column.parse().ok()?,
            },
        ))
    });
    match located {
        Some((head, position)) => FilterError::new(head.to_owned(), Some(position)),
        None => FilterError::new(message, Some(end_of(text))),
    }
}

/// The position just past the last character.
fn end_of(text: &str) -> Position {
    let line = text.matches('\n').count() as u64 + 1;
    let last_line = text.rsplit('\n').next().unwrap_or(text);
    Position {
        line,
        column: last_line.chars().count() as u64 + 1,
    }
}

fn projection(items: &[Item]) -> Result<Projection, FilterError> {
    if let [Item::Star(_)] = items {
        return Ok(Projection::Whole);
    }
    let mut fields: Vec<Field> = Vec::with_capacity(items.len());
    for item in items {
        let (expr, alias) = match item {
            Item::Expr { expr, alias } => (expr, alias.as_ref()),
            Item::Star(span) => {
                return Err(at(
                    *span,
                    "SELECT * must be the only item of the SELECT list",
                ));
            }
        };
        let path = path(expr).ok_or_else(|| {
            at(
                expr.span(),
                format!(
                    "the SELECT list takes field paths such as data.fps (optionally AS name), found {expr}{}",
                    keyword_hint(expr)
                ),
            )
        })?;
        let name: Box<str> = match alias {
            Some(alias) => alias.value.as_str().into(),
            None => path.0.join(".").into(),
        };
        if fields.iter().any(|f| f.name == name) {
            let span = alias.map_or_else(|| expr.span(), |a| a.span);
            return Err(at(
                span,
                format!("the output name {name} is used twice; rename one with AS"),
            ));
        }
        fields.push(Field { path, name });
    }
    Ok(Projection::Fields(fields.into_boxed_slice()))
}

/// A bare word that did not read as a path is most likely a field named like a SQL keyword.
fn keyword_hint(expr: &Expr) -> String {
    let text = expr.to_string();
    let word = text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if word && !matches!(expr, Expr::Value(_)) {
        format!(" (a field named like a SQL keyword needs double quotes: \"{text}\")")
    } else {
        String::new()
    }
}

fn path(expr: &Expr) -> Option<Path> {
    if let Expr::Nested(inner) = expr {
        return path(inner);
    }
    let keys = |idents: &[Ident]| idents.iter().map(|i| Box::from(i.value.as_str())).collect();
    match expr {
        Expr::Identifier(ident) => Some(Path(keys(std::slice::from_ref(ident)))),
        Expr::CompoundIdentifier(idents) => Some(Path(keys(idents))),
        _ => None,
    }
}

fn channel_name(name: sqlparser::ast::ObjectName) -> Result<Box<str>, FilterError> {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(ident) => parts.push(ident.value.as_str()),
            other => {
                return Err(at(
                    other.span(),
                    format!("FROM takes a channel name, found {other}"),
                ))
            }
        }
    }
    Ok(parts.join(".").into())
}

const CONDITIONS: &str = "a condition is a comparison of a field with a literal (= != <> < <= > >=), LIKE, \
                          IS [NOT] NULL, true, false, or conditions joined by AND, OR, NOT and parentheses";

fn condition(expr: &Expr) -> Result<Condition, FilterError> {
    Ok(match expr {
        Expr::Nested(inner) => condition(inner)?,
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Condition::Not(Box::new(condition(expr)?)),
        Expr::BinaryOp {
            op: op @ (BinaryOperator::And | BinaryOperator::Or),
            ..
        } => {
            let terms = chain(expr, op)
                .iter()
                .map(|term| condition(term))
                .collect::<Result<_, _>>()?;
            if *op == BinaryOperator::And {
                Condition::All(terms)
            } else {
                Condition::Any(terms)
            }
        }
        Expr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Eq => Comparison::Eq,
                BinaryOperator::NotEq => Comparison::Ne,
                BinaryOperator::Lt => Comparison::Lt,
                BinaryOperator::LtEq => Comparison::Le,
                BinaryOperator::Gt => Comparison::Gt,
                BinaryOperator::GtEq => Comparison::Ge,
                _ => {
                    return Err(at(
                        expr.span(),
                        format!("unsupported operator {op}: {CONDITIONS}"),
                    ))
                }
            };
            comparison(expr, left, op, right)?
        }
        Expr::Like {
            negated,
            any: false,
            expr: subject,
            pattern,
            escape_char,
        } => {
            let Some(text) = string_literal(pattern) else {
                return Err(at(pattern.span(), "LIKE takes a pattern in single quotes"));
            };
            let escape = match escape_char.as_deref() {
                None => None,
                Some(e) => {
                    let mut chars = string_literal(e).unwrap_or_default().chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => Some(c),
                        _ => {
                            return Err(at(e.span(), "ESCAPE takes one character in single quotes"))
                        }
                    }
                }
            };
            let pattern = Pattern::from_sql_like(text, escape).map_err(|DanglingEscape| {
                at(
                    pattern.span(),
                    "the LIKE pattern ends with its escape character",
                )
            })?;
            Condition::Like {
                path: field(subject, "LIKE")?,
                pattern,
                negated: *negated,
            }
        }
        Expr::IsNull(inner) => Condition::IsNull {
            path: field(inner, "IS NULL")?,
            negated: false,
        },
        Expr::IsNotNull(inner) => Condition::IsNull {
            path: field(inner, "IS NOT NULL")?,
            negated: true,
        },
        Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => {
            Condition::Constant(matches!(v.value, Value::Boolean(true)))
        }
        other => {
            return Err(at(
                other.span(),
                format!(
                    "unsupported condition {other}{}: {CONDITIONS}",
                    keyword_hint(other)
                ),
            ));
        }
    })
}

/// `path op literal`, or `literal op path` turned round.
fn comparison(
    expr: &Expr,
    left: &Expr,
    op: Comparison,
    right: &Expr,
) -> Result<Condition, FilterError> {
    let (path, literal, op) = match (path(left), path(right)) {
        (Some(_), Some(_)) => {
            return Err(at(
                expr.span(),
                format!(
                    "{expr} compares two fields; compare a field with a literal (strings take single quotes: \
                     'text'; double quotes name a field)"
                ),
            ));
        }
        (Some(path), None) => (path, literal(right)?, op),
        (None, Some(path)) => (path, literal(left)?, op.mirrored()),
        (None, None) => {
            let hint = [left, right].map(keyword_hint).concat();
            return Err(at(
                expr.span(),
                format!("{expr} compares no field{hint}: {CONDITIONS}"),
            ));
        }
    };
    if matches!(literal, Scalar::Null) {
        return Err(at(
            expr.span(),
            "a comparison with NULL is never true; use IS NULL or IS NOT NULL",
        ));
    }
    Ok(Condition::Compare { path, op, literal })
}

/// The operands of a run of one operator (`a AND b AND c`), left to right, without recursing down
/// the left-deep tree the parser builds for it.
fn chain<'e>(expr: &'e Expr, op: &BinaryOperator) -> Box<[&'e Expr]> {
    let mut terms = Vec::new();
    let mut pending = vec![expr];
    while let Some(next) = pending.pop() {
        match next {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                pending.push(right);
                pending.push(left);
            }
            term => terms.push(term),
        }
    }
    terms.into_boxed_slice()
}

fn string_literal(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// The field that `what` (LIKE, IS NULL) applies to.
fn field(expr: &Expr, what: &str) -> Result<Path, FilterError> {
    match expr {
        Expr::Nested(inner) => field(inner, what),
        expr => path(expr).ok_or_else(|| {
            at(
                expr.span(),
                format!(
                    "{what} applies to a field path such as data.url, found {expr}{}",
                    keyword_hint(expr)
                ),
            )
        }),
    }
}

fn literal(expr: &Expr) -> Result<Scalar, FilterError> {
    let invalid = || {
        at(
            expr.span(),
            format!(
                "expected a literal (number, 'string', true, false), found {expr}{}",
                keyword_hint(expr)
            ),
        )
    };
    Ok(match expr {
        Expr::Nested(inner) => return literal(inner),
        Expr::Value(v) => match &v.value {
            Value::Null => Scalar::Null,
            Value::Boolean(b) => Scalar::Bool(*b),
            Value::SingleQuotedString(s) => Scalar::Str(s.as_str().into()),
            Value::Number(n, _) => Scalar::Num(Num::from_sql_literal(n).ok_or_else(invalid)?),
            _ => return Err(invalid()),
        },
        Expr::UnaryOp {
            op: sign @ (UnaryOperator::Minus | UnaryOperator::Plus),
            expr: inner,
        } => match literal(inner)? {
            Scalar::Num(n) if *sign == UnaryOperator::Plus => Scalar::Num(n),
            Scalar::Num(n) => Scalar::Num(n.negate().ok_or_else(invalid)?),
            _ => return Err(invalid()),
        },
        _ => return Err(invalid()),
    })
}
