//! Numbers as both dialects compare them: integers and floats compared by exact value (so
//! `10 = 10.0`, and `2^53 + 1` is not equal to the double next to it), as Python and SQL do. Owns the
//! conversion of JSON numbers and literals into [`Num`], and Python's `int()` reading of a literal.

use std::cmp::Ordering;

/// A number, integer or float. JSON integers fit in `Int` (serde_json reads larger ones as floats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub(super) fn from_json(n: &serde_json::Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Num::Int(i128::from(u))
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// Exact ordering of two numbers; `None` only when a float is NaN (never from JSON).
    pub(super) fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => int_cmp_float(a, b),
            (Num::Float(a), Num::Int(b)) => int_cmp_float(b, a).map(Ordering::reverse),
        }
    }

    /// Reads a SQL numeric literal (`10`, `-3`, `1.5`, `2e3`): an integer when it has no fraction or
    /// exponent and fits in 128 bits, else the nearest double.
    pub(super) fn from_sql_literal(text: &str) -> Option<Num> {
        let integral = !text.contains(['.', 'e', 'E']);
        if integral {
            if let Ok(i) = text.parse::<i128>() {
                return Some(Num::Int(i));
            }
        }
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Num::Float)
    }

    pub(super) fn negate(self) -> Option<Num> {
        match self {
            Num::Int(i) => i.checked_neg().map(Num::Int),
            Num::Float(f) => Some(Num::Float(-f)),
        }
    }
}

/// `i` compared with `f`, exactly (no rounding of `i` to a double).
fn int_cmp_float(i: i128, f: f64) -> Option<Ordering> {
    const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_nan() {
        return None;
    }
    let floor = f.floor();
    if floor >= TWO_127 {
        return Some(Ordering::Less);
    }
    if floor < -TWO_127 {
        return Some(Ordering::Greater);
    }
    // In range and integral, so the conversion is exact.
    let whole = floor as i128;
    Some(match i.cmp(&whole) {
        Ordering::Equal if f > floor => Ordering::Less,
        other => other,
    })
}

/// Python's `int(text)` for base 10 on ASCII digits: optional `+`/`-`, digits with single `_`
/// between them (`1_000`), leading zeros allowed; surrounding whitespace must already be stripped.
/// Integers beyond 128 bits become the nearest double. (Python also reads non-ASCII decimal digits
/// such as `٣`; Herald refuses them.)
pub(super) fn parse_python_int(text: &str) -> Option<Num> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let bytes = digits.as_bytes();
    let well_formed = !bytes.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_digit)
        && bytes.last().is_some_and(u8::is_ascii_digit)
        && bytes.iter().all(|b| b.is_ascii_digit() || *b == b'_')
        && !digits.contains("__");
    if !well_formed {
        return None;
    }
    let plain: String = digits.chars().filter(|&c| c != '_').collect();
    let magnitude = match plain.parse::<i128>() {
        Ok(i) => Num::Int(i),
        Err(_) => Num::Float(plain.parse::<f64>().ok()?),
    };
    if negative {
        magnitude.negate()
    } else {
        Some(magnitude)
    }
}
