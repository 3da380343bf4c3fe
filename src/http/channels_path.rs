//! Where a location finds its channel ids and other per-request values: expressions over request
//! variables (`$arg_NAME`, `$http_NAME`, `$1`, `$suffix`, literal text, as nginx variables in the
//! module's directives) and the subscriber path grammar `ch1/ch2.b5/ch3` (a trailing `.b<digits>` asks
//! for that many stored messages first).

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Arg(String),
    Header(String),
    Cookie(String),
    Capture(usize),
    Suffix,
}

/// A compiled `channels_path` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelsPathExpr(Vec<Piece>);

/// The request values an expression can refer to.
#[derive(Debug, Default)]
pub struct RequestVars<'a> {
    /// The raw query string (without `?`).
    pub query: &'a str,
    /// Regex captures of the location (index 0 = whole match).
    pub captures: Vec<Option<&'a str>>,
    /// The request path after a prefix location's path.
    pub suffix: &'a str,
    /// The request headers.
    pub headers: Option<&'a hyper::HeaderMap>,
}

/// The first value of query argument `name`, form-decoded (`None` when absent; bytes that are not
/// UTF-8 once decoded become U+FFFD).
pub fn query_arg(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The first value of query argument `name`, form-decoded, as the bytes it decodes to.
fn query_arg_bytes(query: &str, name: &str) -> Option<Vec<u8>> {
    let plus_as_space = |text: &str| -> Vec<u8> {
        let bytes: Vec<u8> = text
            .bytes()
            .map(|b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&bytes).collect()
    };
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| plus_as_space(key) == name.as_bytes())
        .map(|(_, value)| plus_as_space(value))
}

/// A value an expression read is not text: its decoded bytes are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUtf8 {
    /// The variable the bytes came from, as written in the expression (`$arg_id`, `$1`, …).
    pub variable: String,
}

impl std::fmt::Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not valid UTF-8 once percent-decoded; channel ids are UTF-8 text.",
            self.variable
        )
    }
}

impl RequestVars<'_> {
    /// The first value of query argument `name`, form-decoded.
    pub fn arg(&self, name: &str) -> Option<String> {
        query_arg(self.query, name)
    }
}

impl ChannelsPathExpr {
    /// Parses `$arg_NAME`, `$http_NAME`, `$N`, `$suffix` and literal text.
    pub fn parse(source: &str) -> Result<ChannelsPathExpr, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let name_len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let name = &after[..name_len];
            let piece = if let Some(arg) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                Piece::Arg(arg.to_string())
            } else if let Some(cookie) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                Piece::Cookie(cookie.to_string())
            } else if let Some(header) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
                Piece::Header(header.replace('_', "-").to_ascii_lowercase())
            } else if name == "suffix" {
                Piece::Suffix
            } else if let Ok(index) = name.parse::<usize>() {
                Piece::Capture(index)
            } else {
                return Err(format!(
                    "unknown variable ${name} in {source:?}; expected $arg_NAME, $http_NAME, $cookie_NAME, $1..$9 or $suffix"
                ));
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &after[name_len..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(ChannelsPathExpr(pieces))
    }

    /// Evaluates the expression; values from the path are percent-decoded, query args form-decoded;
    /// bytes that are not UTF-8 become U+FFFD (for values that are only matched or echoed: user
    /// agents, origins).
    pub fn eval(&self, vars: &RequestVars<'_>) -> String {
        self.render(vars, false).unwrap_or_default()
    }

    /// Evaluates the expression for values that name things (channel ids): a variable whose
    /// decoded bytes are not UTF-8 is an error, never replaced, so that different ids cannot
    /// become one channel.
    pub fn eval_exact(&self, vars: &RequestVars<'_>) -> Result<String, NotUtf8> {
        self.render(vars, true)
    }

    fn render(&self, vars: &RequestVars<'_>, exact: bool) -> Result<String, NotUtf8> {
        let mut out = String::new();
        let push = |out: &mut String, bytes: &[u8], variable: &dyn Fn() -> String| {
            match std::str::from_utf8(bytes) {
                Ok(text) => out.push_str(text),
                Err(_) if exact => {
                    return Err(NotUtf8 {
                        variable: variable(),
                    })
                }
                Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
            }
            Ok(())
        };
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Arg(name) => {
                    if let Some(value) = query_arg_bytes(vars.query, name) {
                        push(&mut out, &value, &|| format!("$arg_{name}"))?;
                    }
                }
                Piece::Header(name) => {
                    if let Some(value) = vars.headers.and_then(|h| h.get(name.as_str())) {
                        push(&mut out, value.as_bytes(), &|| {
                            format!("$http_{}", name.replace('-', "_"))
                        })?;
                    }
                }
                Piece::Cookie(name) => {
                    let cookies = vars
                        .headers
                        .into_iter()
                        .flat_map(|h| h.get_all(hyper::header::COOKIE))
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(';'));
                    if let Some(value) = cookies
                        .filter_map(|pair| pair.trim().split_once('='))
                        .find(|(key, _)| *key == name)
                        .map(|(_, value)| value)
                    {
                        push(&mut out, &percent_decode(value), &|| {
                            format!("$cookie_{name}")
                        })?;
                    }
                }
                Piece::Capture(index) => {
                    if let Some(Some(value)) = vars.captures.get(*index) {
                        push(&mut out, &percent_decode(value), &|| format!("${index}"))?;
                    }
                }
                Piece::Suffix => push(&mut out, &percent_decode(vars.suffix), &|| {
                    "the request path".to_string()
                })?,
            }
        }
        Ok(out)
    }
}

fn percent_decode(text: &str) -> Cow<'_, [u8]> {
    percent_encoding::percent_decode_str(text).into()
}

/// One channel of a subscriber path, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathChannel<'a> {
    /// The channel id as written.
    pub id: &'a str,
    /// The `.bN` backtrack, 0 when absent.
    pub backtrack: u64,
}

/// Splits a subscriber channels path on `/` (empty segments are skipped) and takes a trailing
/// `.b<digits>` off each segment as its backtrack.
pub fn parse_subscriber_path(path: &str) -> Vec<PathChannel<'_>> {
    path.split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.rfind(".b") {
            Some(at)
                if at > 0
                    && segment.len() > at + 2
                    && segment[at + 2..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                PathChannel {
                    id: &segment[..at],
                    backtrack: segment[at + 2..].parse().unwrap_or(u64::MAX),
                }
            }
            _ => PathChannel {
                id: segment,
                backtrack: 0,
            },
        })
        .collect()
}

/// Splits a publisher or statistics channels path on `/`, skipping empty segments.
pub fn split_channels(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_read_args_captures_and_suffix() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "user-agent",
            hyper::header::HeaderValue::from_static("Agent/1"),
        );
        headers.insert(
            "cookie",
            hyper::header::HeaderValue::from_static("a=1; herald=t%20k"),
        );
        let vars = RequestVars {
            query: "x=1&id=a%2Fb+c",
            captures: vec![Some("/sub/z"), Some("z%20y")],
            suffix: "s%2A",
            headers: Some(&headers),
        };
        assert_eq!(
            ChannelsPathExpr::parse("ua=$http_user_agent")
                .unwrap()
                .eval(&vars),
            "ua=Agent/1"
        );
        assert_eq!(
            ChannelsPathExpr::parse("$cookie_herald")
                .unwrap()
                .eval(&vars),
            "t k"
        );
        assert_eq!(
            ChannelsPathExpr::parse("$cookie_none").unwrap().eval(&vars),
            ""
        );
        assert_eq!(
            ChannelsPathExpr::parse("$arg_id").unwrap().eval(&vars),
            "a/b c"
        );
        assert_eq!(
            ChannelsPathExpr::parse("pre-$1").unwrap().eval(&vars),
            "pre-z y"
        );
        assert_eq!(
            ChannelsPathExpr::parse("$suffix").unwrap().eval(&vars),
            "s*"
        );
        assert_eq!(
            ChannelsPathExpr::parse("$arg_missing").unwrap().eval(&vars),
            ""
        );
        assert!(ChannelsPathExpr::parse("$host").is_err());
    }

    #[test]
    fn subscriber_path_grammar_matches_the_module() {
        let parsed = parse_subscriber_path("room.b18.beautiful.b3/ch.b/plain//x.b0");
        assert_eq!(
            parsed,
            vec![
                PathChannel {
                    id: "room.b18.beautiful",
                    backtrack: 3
                },
                PathChannel {
                    id: "ch.b",
                    backtrack: 0
                },
                PathChannel {
                    id: "plain",
                    backtrack: 0
                },
                PathChannel {
                    id: "x",
                    backtrack: 0
                },
            ]
        );
    }
}
