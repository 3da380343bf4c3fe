//! The channel-path grammar and expressions: `ChannelsPathExpr::parse` + `eval` over fuzzed request
//! values, and `parse_subscriber_path` / `split_channels` on fuzzed paths (and on what an expression
//! evaluates to, as a request does).
//!
//! Input: newline-separated fields `expression \n query \n suffix \n header value \n cookie header \n
//! capture1 \n capture2 …` (missing fields are empty; header fields keep their raw bytes).

#![no_main]

use herald::http::channels_path::{
    parse_subscriber_path, split_channels, ChannelsPathExpr, RequestVars,
};
use hyper::header::{HeaderMap, HeaderValue, COOKIE, USER_AGENT};
use libfuzzer_sys::fuzz_target;

/// Expressions a config commonly uses, evaluated on every input.
const FIXED: &[&str] = &[
    "$suffix",
    "$arg_id",
    "$http_x_fuzz",
    "$cookie_herald",
    "$1/$2.b$3",
    "pre-$arg_a-$http_user_agent-$cookie_x/$suffix",
];

fn check_grammar(path: &str) {
    for channel in parse_subscriber_path(path) {
        assert!(!channel.id.is_empty(), "empty channel id from {path:?}");
        assert!(!channel.id.contains('/'), "'/' in channel id from {path:?}");
        assert!(
            path.contains(channel.id),
            "channel id {:?} is not part of {path:?}",
            channel.id
        );
    }
    for part in split_channels(path) {
        assert!(!part.is_empty() && !part.contains('/'));
    }
}

fuzz_target!(|data: &[u8]| {
    let fields: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(&[]);
    let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
    let expression = text(0);
    let query = text(1);
    let suffix = text(2);
    let captures_owned: Vec<String> = (5..fields.len()).map(text).collect();
    let captures: Vec<Option<&str>> = captures_owned
        .iter()
        .map(|c| (!c.is_empty()).then_some(c.as_str()))
        .collect();

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(field(3)) {
        headers.insert("x-fuzz", value.clone());
        headers.insert(USER_AGENT, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(field(4)) {
        headers.insert(COOKIE, value);
    }
    let vars = RequestVars {
        query: &query,
        captures,
        suffix: &suffix,
        headers: Some(&headers),
    };

    check_grammar(&suffix);
    check_grammar(&query);
    if let Ok(expr) = ChannelsPathExpr::parse(&expression) {
        check_grammar(&expr.eval(&vars));
        // Parsing is deterministic.
        assert_eq!(ChannelsPathExpr::parse(&expression), Ok(expr));
    }
    for source in FIXED {
        let expr = ChannelsPathExpr::parse(source).expect("fixed expressions parse");
        check_grammar(&expr.eval(&vars));
    }
    // Without headers at all (as for stats and static locations built without them).
    let bare = RequestVars {
        query: &query,
        captures: Vec::new(),
        suffix: &suffix,
        headers: None,
    };
    for source in FIXED {
        let _ = ChannelsPathExpr::parse(source).map(|e| e.eval(&bare));
    }
});
