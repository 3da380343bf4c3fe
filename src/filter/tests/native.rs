//! The native dialect: each operator, three-valued logic with missing fields, type mismatches and
//! null, NOT/AND/OR precedence and parentheses, LIKE, non-JSON messages, projections, and the
//! errors (with positions) for everything outside the subset.

use bytes::Bytes;

use super::super::{
    Dialect, Document, Filter, FilterError, Outcome, Position, Unevaluable, MAX_FILTER_LEN,
};
use super::{got, json, Got};

fn sql(text: &str) -> Filter {
    Filter::parse(Dialect::Sql, text).unwrap_or_else(|e| panic!("{text:?} should compile: {e}"))
}

fn verdict(text: &str, message: &str) -> Got {
    got(&sql(text), Document::Json(json(message)))
}

/// Whether `condition` selects `message`.
fn selects(condition: &str, message: &str) -> bool {
    match verdict(&format!("SELECT * FROM c WHERE {condition}"), message) {
        Got::Deliver(_) => true,
        Got::NoMatch => false,
        other => panic!("WHERE {condition} on {message}: {other:?}"),
    }
}

fn error(text: &str) -> FilterError {
    match Filter::parse(Dialect::Sql, text) {
        Ok(filter) => panic!("{text:?} should be refused, compiled to {filter:?}"),
        Err(error) => error,
    }
}

/// Asserts the error for `text` mentions `needle` and sits at `column` of line `line`.
fn refused(text: &str, needle: &str, line: u64, column: u64) {
    let error = error(text);
    assert!(error.message().contains(needle), "{text:?}: {error}");
    assert_eq!(
        error.position(),
        Some(Position { line, column }),
        "{text:?}: {error}"
    );
    assert!(
        error
            .to_string()
            .ends_with(&format!(" at line {line}, column {column}")),
        "{text:?}: {error}"
    );
}

#[test]
fn filter_native_each_comparison_operator_on_numbers() {
    // (operator, [result for a = 0, 1, 2] against the literal 1)
    let table = [
        ("=", [false, true, false]),
        ("!=", [true, false, true]),
        ("<>", [true, false, true]),
        ("<", [true, false, false]),
        ("<=", [true, true, false]),
        (">", [false, false, true]),
        (">=", [false, true, true]),
    ];
    for (op, expected) in table {
        for (value, want) in [0, 1, 2].into_iter().zip(expected) {
            let message = format!(r#"{{"a":{value}}}"#);
            assert_eq!(
                selects(&format!("a {op} 1"), &message),
                want,
                "{value} {op} 1"
            );
            // The same with the literal first.
            let mirrored = match op {
                "<" => ">",
                "<=" => ">=",
                ">" => "<",
                ">=" => "<=",
                same => same,
            };
            assert_eq!(
                selects(&format!("1 {mirrored} a"), &message),
                want,
                "1 {mirrored} {value}"
            );
        }
    }
}

#[test]
fn filter_native_numbers_compare_by_exact_value() {
    assert!(selects("a = 10", r#"{"a":10.0}"#));
    assert!(selects("a = 10.0", r#"{"a":10}"#));
    assert!(selects("a = 1e3", r#"{"a":1000}"#));
    assert!(selects("a > -1.5", r#"{"a":-1}"#));
    assert!(selects("a = -0", r#"{"a":0.0}"#));
    assert!(selects("a = 9007199254740993", r#"{"a":9007199254740993}"#));
    assert!(!selects(
        "a = 9007199254740993",
        r#"{"a":9007199254740992.0}"#
    ));
    assert!(selects("a > 18446744073709551615", r#"{"a":1e20}"#));
    assert!(selects("a < 0", r#"{"a":-9223372036854775808}"#));
}

#[test]
fn filter_native_strings_and_booleans() {
    assert!(selects("s = 'abc'", r#"{"s":"abc"}"#));
    assert!(!selects("s = 'ABC'", r#"{"s":"abc"}"#));
    assert!(selects("s = 'it''s'", r#"{"s":"it's"}"#));
    assert!(selects("s < 'b'", r#"{"s":"abc"}"#));
    assert!(selects("s > 'z'", r#"{"s":"é"}"#));
    assert!(selects("s >= ''", r#"{"s":""}"#));
    assert!(selects("flag = true", r#"{"flag":true}"#));
    assert!(selects("flag = FALSE", r#"{"flag":false}"#));
    assert!(selects("flag != false", r#"{"flag":true}"#));
    assert!(selects("flag > false", r#"{"flag":true}"#));
}

#[test]
fn filter_native_type_mismatches_are_unknown() {
    for (condition, message) in [
        ("a = '10'", r#"{"a":10}"#),
        ("a = 10", r#"{"a":"10"}"#),
        ("a = 1", r#"{"a":true}"#),
        ("a = true", r#"{"a":1}"#),
        ("a > 1", r#"{"a":"x"}"#),
        ("a = 1", r#"{"a":[1]}"#),
        ("a = 1", r#"{"a":{"b":1}}"#),
        ("a LIKE '%'", r#"{"a":5}"#),
    ] {
        assert!(!selects(condition, message), "{condition} on {message}");
        // UNKNOWN stays UNKNOWN under NOT: neither the condition nor its negation selects.
        assert!(
            !selects(&format!("NOT ({condition})"), message),
            "NOT ({condition}) on {message}"
        );
    }
    assert!(!selects("a != '10'", r#"{"a":10}"#));
    assert!(!selects("a NOT LIKE 'x'", r#"{"a":5}"#));
}

#[test]
fn filter_native_missing_fields_and_null_are_null() {
    for message in ["{}", r#"{"a":null}"#, r#"{"b":1}"#] {
        assert!(!selects("a = 1", message), "{message}");
        assert!(!selects("a != 1", message), "{message}");
        assert!(!selects("NOT a = 1", message), "{message}");
        assert!(!selects("a LIKE '%'", message), "{message}");
        assert!(selects("a IS NULL", message), "{message}");
        assert!(!selects("a IS NOT NULL", message), "{message}");
    }
    assert!(selects("a IS NOT NULL", r#"{"a":0}"#));
    assert!(selects("a IS NOT NULL", r#"{"a":""}"#));
    // A path through something that is not an object is NULL too.
    assert!(selects("a.b IS NULL", r#"{"a":5}"#));
    assert!(selects("a.b.c IS NULL", r#"{"a":{"b":[1]}}"#));
    assert!(selects("a.b.c = 1", r#"{"a":{"b":{"c":1}}}"#));
}

#[test]
fn filter_native_three_valued_logic() {
    // UNKNOWN OR TRUE = TRUE; UNKNOWN AND TRUE = UNKNOWN; UNKNOWN AND FALSE = FALSE.
    assert!(selects("a = 1 OR b IS NULL", "{}"));
    assert!(!selects("a = 1 AND b IS NULL", "{}"));
    assert!(!selects("NOT (a = 1 AND b = 2)", r#"{"a":1}"#));
    assert!(selects("NOT (a = 2 AND b = 2)", r#"{"a":1}"#));
    assert!(!selects("a = 1 OR b = 1", r#"{"a":2}"#));
    assert!(selects("true", "{}"));
    assert!(!selects("false", "{}"));
    assert!(selects("NOT false AND a = 1", r#"{"a":1}"#));
}

#[test]
fn filter_native_not_and_or_precedence_and_parentheses() {
    // AND binds tighter than OR.
    let sloppy = "a = 1 OR b = 1 AND c = 1";
    assert!(selects(sloppy, r#"{"a":1}"#));
    assert!(!selects(sloppy, r#"{"b":1}"#));
    let grouped = "(a = 1 OR b = 1) AND c = 1";
    assert!(!selects(grouped, r#"{"a":1}"#));
    assert!(selects(grouped, r#"{"b":1,"c":1}"#));
    // NOT binds tighter than AND, looser than comparisons.
    assert!(selects("NOT a = 1 AND b = 1", r#"{"a":2,"b":1}"#));
    assert!(!selects("NOT a = 1 AND b = 1", r#"{"a":2,"b":2}"#));
    assert!(selects("NOT (a = 1 AND b = 1)", r#"{"a":1,"b":2}"#));
    assert!(selects("NOT NOT a = 1", r#"{"a":1}"#));
    assert!(selects("((a = 1)) AND (((b = 2)))", r#"{"a":1,"b":2}"#));
    // Long runs of one operator (a flat list, not a deep tree).
    let many = (0..500).map(|i| format!("k{i} = {i}")).collect::<Vec<_>>();
    let all = serde_json::Value::Object((0..500).map(|i| (format!("k{i}"), i.into())).collect());
    assert!(selects(&many.join(" AND "), &all.to_string()));
    assert!(selects(&many.join(" OR "), r#"{"k499":499}"#));
}

#[test]
fn filter_native_like() {
    let like = |pattern: &str, value: &str| {
        selects(
            &format!("s LIKE '{pattern}'"),
            &serde_json::json!({ "s": value }).to_string(),
        )
    };
    assert!(like("abc", "abc"));
    assert!(!like("abc", "xabcx"), "whole string, not a substring");
    assert!(like("%png", "a.png"));
    assert!(!like("%PNG", "a.png"), "case-sensitive");
    assert!(like("a_c", "abc"));
    assert!(!like("a_c", "ac"));
    assert!(like("_", "é"), "one character, not one byte");
    assert!(like("%", ""));
    assert!(like("%a%b%", "xxaxxbxx"));
    assert!(!like("%a%b%", "xxbxxaxx"));
    assert!(like("a%", "a\nb"), "% crosses newlines");
    // `*`, `?` and brackets are literal in SQL.
    assert!(like("[ab]*?", "[ab]*?"));
    assert!(!like("[ab]", "a"));
    assert!(selects("s NOT LIKE 'a%'", r#"{"s":"b"}"#));
    assert!(!selects("s NOT LIKE 'a%'", r#"{"s":"a"}"#));
    // ESCAPE makes the next character literal.
    assert!(selects(r"s LIKE '100\%' ESCAPE '\'", r#"{"s":"100%"}"#));
    assert!(!selects(r"s LIKE '100\%' ESCAPE '\'", r#"{"s":"1000"}"#));
    assert!(selects("s LIKE 'a!_c' ESCAPE '!'", r#"{"s":"a_c"}"#));
    assert!(!selects("s LIKE 'a!_c' ESCAPE '!'", r#"{"s":"abc"}"#));
}

#[test]
fn filter_native_like_on_long_strings() {
    // 1 MiB of `a` against a literal run that almost matches everywhere: comparing the run at each
    // position would take 4 billion steps; the run is searched as a substring instead.
    let message = serde_json::json!({ "s": "a".repeat(1 << 20) }).to_string();
    let run = "a".repeat(4000);
    assert!(!selects(&format!("s LIKE '%{run}b%'"), &message));
    assert!(selects(&format!("s LIKE '%{run}%'"), &message));
    assert!(selects(&format!("s LIKE 'a%{run}'"), &message));
    assert!(!selects(&format!("s LIKE '_%{run}b'"), &message));
}

#[test]
fn filter_native_non_json_messages() {
    let payload = Bytes::from_static(b"not { json");
    let document = Document::parse(&payload);
    assert_eq!(document, Document::NotJson);
    // A filter that reads no field passes it unchanged…
    assert_eq!(
        sql("SELECT *").apply(&document, &payload),
        Outcome::Deliver(payload.clone())
    );
    assert_eq!(
        sql("SELECT * FROM c WHERE true").apply(&document, &payload),
        Outcome::Deliver(payload.clone())
    );
    // …one that reads a field cannot be applied to it.
    for text in [
        "SELECT * WHERE a = 1",
        "SELECT * WHERE a IS NULL",
        "SELECT a",
        "SELECT * WHERE false OR a = 1",
    ] {
        assert_eq!(
            sql(text).apply(&document, &payload),
            Outcome::Unevaluable(Unevaluable::NotJson),
            "{text}"
        );
    }
    // JSON that is not an object has no fields: every path is NULL.
    assert_eq!(
        verdict("SELECT * WHERE a IS NULL", r#""plain""#),
        Got::Deliver(json(r#""plain""#))
    );
    assert_eq!(
        verdict("SELECT a", "5"),
        Got::Deliver(json(r#"{"a":null}"#))
    );
    assert_eq!(verdict("SELECT * WHERE a = 1", "[1]"), Got::NoMatch);
}

#[test]
fn filter_native_projection() {
    let message = r#"{"data":{"fps":30,"url":"a.png"},"n":2,"odd key":1,"dot.key":2,"select":3}"#;
    assert_eq!(
        verdict("SELECT * FROM c", message),
        Got::Deliver(json(message))
    );
    assert_eq!(
        verdict("SELECT data.fps AS fps, n, data.url FROM c", message),
        Got::Deliver(json(r#"{"fps":30,"n":2,"data.url":"a.png"}"#))
    );
    // Output keys follow SELECT order, not the message's.
    assert_eq!(
        verdict("SELECT n, data FROM c", message),
        Got::Deliver(json(r#"{"n":2,"data":{"fps":30,"url":"a.png"}}"#))
    );
    // Missing fields come out as null; falsy values are kept (no Cobra-style drop).
    assert_eq!(
        verdict(
            "SELECT missing, data.missing, n.deeper AS d FROM c",
            message
        ),
        Got::Deliver(json(r#"{"missing":null,"data.missing":null,"d":null}"#))
    );
    assert_eq!(
        verdict("SELECT a FROM c", r#"{"a":0}"#),
        Got::Deliver(json(r#"{"a":0}"#))
    );
    // Quoted names: spaces, a dot inside one key, SQL keywords.
    assert_eq!(
        verdict(
            r#"SELECT `odd key`, "dot.key", "select" AS s FROM c"#,
            message
        ),
        Got::Deliver(json(r#"{"odd key":1,"dot.key":2,"s":3}"#))
    );
    // Keywords are case-insensitive; names are not.
    assert_eq!(
        verdict("select N, n as Big from c where n >= 2", message),
        Got::Deliver(json(r#"{"N":null,"Big":2}"#))
    );
    // Rendered once, as compact JSON.
    let payload = Bytes::from_static(br#"{ "a" : 1, "b" : [ 1, 2 ] }"#);
    assert_eq!(
        sql("SELECT b, a AS x").apply(&Document::parse(&payload), &payload),
        Outcome::Deliver(Bytes::from_static(br#"{"b":[1,2],"x":1}"#))
    );
}

#[test]
fn filter_native_from_names_the_channel() {
    assert_eq!(sql("SELECT * FROM news").channel(), Some("news"));
    assert_eq!(sql("SELECT * FROM `my-chan`").channel(), Some("my-chan"));
    assert_eq!(
        sql("SELECT * FROM app.events").channel(),
        Some("app.events")
    );
    assert_eq!(sql("SELECT * WHERE a = 1").channel(), None);
    assert_eq!(sql("SELECT *;").channel(), None);
}

#[test]
fn filter_native_syntax_errors_carry_their_position() {
    refused(
        "SELECT a FROM c WHERE a = ",
        "Expected: an expression, found: EOF",
        1,
        27,
    );
    refused(
        "SELECT a FROM c WHERE a = 'x",
        "Unterminated string literal",
        1,
        27,
    );
    refused(
        "SELECT a FROM c WHERE (a = 1",
        "Expected: ), found: EOF",
        1,
        29,
    );
    refused(
        "SELECT a\nFROM c\nWHERE a = = 1",
        "Expected: an expression, found: =",
        3,
        11,
    );
    refused("DELETE FROM c", "Expected: SELECT, found: DELETE", 1, 1);
    refused("", "Expected: SELECT, found: EOF", 1, 1);
    refused(
        "SELECT a FROM c WHERE a = 1 GROUP BY a",
        "Expected: the end of the filter, found: GROUP",
        1,
        29,
    );
    refused("SELECT a FROM c; SELECT b", "found: SELECT", 1, 18);
    refused(
        "SELECT a b FROM c",
        "Expected: ',', AS, FROM, WHERE or the end of the filter, found: b",
        1,
        10,
    );
    refused("SELECT DISTINCT a FROM c", "found: a", 1, 17);
    refused(
        "SELECT a FROM c d",
        "Expected: WHERE or the end of the filter, found: d",
        1,
        17,
    );
    refused(
        "SELECT a FROM c WHERE a = 'x' 'y'",
        "Expected: the end of the filter, found: 'y'",
        1,
        31,
    );
}

#[test]
fn filter_native_constructs_outside_the_subset_are_refused_where_they_are() {
    refused("SELECT *, a FROM c", "SELECT * must be the only item", 1, 8);
    refused(
        "SELECT a, * FROM c",
        "SELECT * must be the only item",
        1,
        11,
    );
    refused(
        "SELECT count(a) FROM c",
        "the SELECT list takes field paths",
        1,
        8,
    );
    refused("SELECT 1 FROM c", "the SELECT list takes field paths", 1, 8);
    refused(
        "SELECT a AS x, b AS x FROM c",
        "the output name x is used twice",
        1,
        21,
    );
    refused(
        "SELECT a.b, a.b FROM c",
        "the output name a.b is used twice",
        1,
        13,
    );
    refused(
        "SELECT a FROM c WHERE a IN (1, 2)",
        "unsupported condition a IN (1, 2)",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE a BETWEEN 1 AND 2",
        "unsupported condition",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE a ILIKE 'x'",
        "unsupported condition",
        1,
        23,
    );
    refused("SELECT a FROM c WHERE a", "unsupported condition a", 1, 23);
    refused(
        "SELECT a FROM c WHERE x = 1 AND a IS TRUE",
        "unsupported condition a IS TRUE",
        1,
        33,
    );
    refused(
        "SELECT a FROM c WHERE a = NULL",
        "a comparison with NULL is never true",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE a + 1 > 2",
        "compares no field",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE 1 = 1",
        "1 = 1 compares no field: a condition is",
        1,
        23,
    );
    refused(
        r#"SELECT a FROM c WHERE a = "x""#,
        "compares two fields",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE a = b",
        "strings take single quotes",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE a LIKE b",
        "LIKE takes a pattern in single quotes",
        1,
        30,
    );
    refused(
        "SELECT a FROM c WHERE 'x' LIKE 'x'",
        "LIKE applies to a field path",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE 1 IS NULL",
        "IS NULL applies to a field path",
        1,
        23,
    );
    refused(
        "SELECT a FROM c WHERE a LIKE 'x' ESCAPE 'ab'",
        "ESCAPE takes one character",
        1,
        41,
    );
    refused(
        "SELECT a FROM c WHERE a LIKE 'ab!' ESCAPE '!'",
        "ends with its escape character",
        1,
        30,
    );
    refused(
        "SELECT a FROM c WHERE a = 0x10",
        "expected a literal",
        1,
        27,
    );
    refused("SELECT a FROM c WHERE a = $1", "expected a literal", 1, 27);
    refused("SELECT a FROM c WHERE a[0] = 1", "compares no field", 1, 23);
    refused(
        "SELECT a FROM c WHERE a::int = 1",
        "compares no field",
        1,
        23,
    );
    // A field named like a SQL keyword gets a hint.
    refused(
        "SELECT a FROM c WHERE user = 1",
        "needs double quotes: \"user\"",
        1,
        23,
    );
    assert!(selects(r#""user" = 1"#, r#"{"user":1}"#));
}

#[test]
fn filter_native_size_and_depth_are_bounded() {
    let long = format!("SELECT * WHERE s = '{}'", "x".repeat(MAX_FILTER_LEN));
    let error = error(&long);
    assert!(error.message().contains("at most 8192"), "{error}");
    assert_eq!(error.position(), None);
    // Deep nesting is refused, not a stack overflow (run on a small stack to prove it).
    let deep = [
        format!("SELECT * WHERE {}a = 1{}", "(".repeat(200), ")".repeat(200)),
        format!(
            "SELECT * WHERE {}a = 1{}",
            "NOT (".repeat(200),
            ")".repeat(200)
        ),
        format!("SELECT * WHERE {}a = 1", "NOT ".repeat(200)),
        format!("SELECT * WHERE a = {}1", "- ".repeat(200)),
        format!("SELECT {}a{}", "(".repeat(200), ")".repeat(200)),
    ];
    let refused = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            deep.iter()
                .map(|text| Filter::parse(Dialect::Sql, text).is_err())
                .collect::<Vec<_>>()
        })
        .map(|handle| handle.join());
    assert!(
        matches!(refused, Ok(Ok(ref all)) if all.iter().all(|r| *r)),
        "{refused:?}"
    );
    // Ten levels of parentheses are fine.
    assert!(selects(
        &format!("{}a = 1{}", "(".repeat(10), ")".repeat(10)),
        r#"{"a":1}"#
    ));
}
