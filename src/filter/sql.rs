//! Reading Herald's native filter language: the `sqlparser` crate parses the text (GenericDialect:
//! case-insensitive keywords, `'strings'`, `"quoted"` and `` `quoted` `` identifiers), and this module
//! compiles the pieces it accepts into `native.rs`'s representation, refusing anything outside the
//! subset with a message and the position of the offending part.
//!
//! The subset: `SELECT * | path [AS name], …  [FROM channel]  [WHERE condition]`, where a condition is
//! `operand (= | != | <> | < | <= | > | >=) operand`, `operand [NOT] LIKE 'pattern' [ESCAPE 'c']`,
//! `operand IS [NOT] NULL`, `true`/`false`, or conditions joined by `AND`, `OR`, `NOT` and
//! parentheses; an operand is a dotted path or a literal (number, `'string'`, `true`, `false`).

use sqlparser::ast::{
    BinaryOperator, Expr, Ident, ObjectNamePart, SelectItem, Spanned, UnaryOperator, Value,
    WildcardAdditionalOptions,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, Tokenizer};

use super::native::{Comparison, Condition, Field, NativeQuery, Operand, Path, Projection, Scalar};
use super::number::Num;
use super::pattern::{DanglingEscape, Pattern};
use super::{FilterError, Position};

/// Parses and compiles a native filter.
pub(super) fn compile(text: &str) -> Result<NativeQuery, FilterError> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| FilterError::new(e.message, position(e.location)))?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let parsed = parse_clauses(&mut parser).map_err(|e| parser_error(e, text))?;
    let projection = projection(&parsed.items)?;
    let channel = parsed.from.map(channel_name).transpose()?;
    let condition = parsed.condition.as_ref().map(condition).transpose()?;
    Ok(NativeQuery::new(channel, projection, condition))
}

struct Clauses {
    items: Vec<SelectItem>,
    from: Option<sqlparser::ast::ObjectName>,
    condition: Option<Expr>,
}

fn parse_clauses(parser: &mut Parser<'_>) -> Result<Clauses, ParserError> {
    parser.expect_keyword_is(Keyword::SELECT)?;
    let items = parser.parse_comma_separated(Parser::parse_select_item)?;
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
        return parser.expected("the end of the filter", next);
    }
    Ok(Clauses {
        items,
        from,
        condition,
    })
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

fn projection(items: &[SelectItem]) -> Result<Projection, FilterError> {
    if let [SelectItem::Wildcard(options)] = items {
        return if is_plain(options) {
            Ok(Projection::Whole)
        } else {
            Err(at(
                options.wildcard_token.0.span,
                "only a plain SELECT * is supported",
            ))
        };
    }
    let mut fields: Vec<Field> = Vec::with_capacity(items.len());
    for item in items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(expr) => (expr, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
            SelectItem::Wildcard(options) => {
                return Err(at(
                    options.wildcard_token.0.span,
                    "SELECT * must be the only item of the SELECT list",
                ));
            }
            other => {
                return Err(at(
                    other.span(),
                    format!("the SELECT list takes field paths such as data.fps (optionally AS name), found {other}"),
                ));
            }
        };
        let path = path(expr).ok_or_else(|| {
            at(
                expr.span(),
                format!("the SELECT list takes field paths such as data.fps (optionally AS name), found {expr}"),
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

fn is_plain(options: &WildcardAdditionalOptions) -> bool {
    options.opt_ilike.is_none()
        && options.opt_exclude.is_none()
        && options.opt_except.is_none()
        && options.opt_replace.is_none()
        && options.opt_rename.is_none()
        && options.opt_alias.is_none()
}

fn path(expr: &Expr) -> Option<Path> {
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

const CONDITIONS: &str =
    "a condition is a comparison (= != <> < <= > >=), LIKE, IS [NOT] NULL, true, false, \
                          or conditions joined by AND, OR, NOT and parentheses";

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
            let (left, right) = (operand(left)?, operand(right)?);
            if matches!(left, Operand::Literal(Scalar::Null))
                || matches!(right, Operand::Literal(Scalar::Null))
            {
                return Err(at(
                    expr.span(),
                    "a comparison with NULL is never true; use IS NULL or IS NOT NULL",
                ));
            }
            Condition::Compare { left, op, right }
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
                operand: operand(subject)?,
                pattern,
                negated: *negated,
            }
        }
        Expr::IsNull(inner) => Condition::IsNull {
            operand: operand(inner)?,
            negated: false,
        },
        Expr::IsNotNull(inner) => Condition::IsNull {
            operand: operand(inner)?,
            negated: true,
        },
        Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => {
            Condition::Constant(matches!(v.value, Value::Boolean(true)))
        }
        other => {
            return Err(at(
                other.span(),
                format!("unsupported condition {other}: {CONDITIONS}"),
            ))
        }
    })
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

fn operand(expr: &Expr) -> Result<Operand, FilterError> {
    if let Some(path) = path(expr) {
        return Ok(Operand::Path(path));
    }
    let invalid = || {
        at(
            expr.span(),
            format!(
                "expected a field path or a literal (number, 'string', true, false), found {expr}"
            ),
        )
    };
    let scalar = match expr {
        Expr::Nested(inner) => return operand(inner),
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
        } => match operand(inner)? {
            Operand::Literal(Scalar::Num(n)) if *sign == UnaryOperator::Plus => Scalar::Num(n),
            Operand::Literal(Scalar::Num(n)) => Scalar::Num(n.negate().ok_or_else(invalid)?),
            _ => return Err(invalid()),
        },
        _ => return Err(invalid()),
    };
    Ok(Operand::Literal(scalar))
}
