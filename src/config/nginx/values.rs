//! Reading directive arguments: argument counts, set-once rules, flags, typed values, nginx
//! variables turned into Herald expressions, `listen` addresses and `allow`/`deny` rules.

use super::directives::*;
use super::import::{AccessRule, Setting};
use super::syntax::{resolve_relative, Directive};
use super::{error_at, Warning};
use crate::config::units::{parse_duration, parse_size};
use crate::config::ConfigError;
use std::collections::BTreeMap;

pub(super) fn arg_count(d: &Directive, expected: &str) -> ConfigError {
    error_at(
        &d.origin,
        format!(
            "invalid number of arguments in \"{}\" directive: expected {expected}, got {}",
            d.name,
            d.args.len()
        ),
    )
}

/// Sets a slot once per level, as nginx refuses a directive repeated in one block.
pub(super) fn set_once(
    slot: &mut Option<Setting>,
    d: &Directive,
    value: Value,
) -> Result<(), ConfigError> {
    if let Some(first) = slot {
        return Err(error_at(
            &d.origin,
            format!(
                "\"{}\" directive is duplicate (first at line {})",
                d.name, first.origin.line
            ),
        ));
    }
    *slot = Some(Setting {
        value,
        directive: d.name.clone(),
        origin: d.origin.clone(),
    });
    Ok(())
}

pub(super) fn insert_once(
    map: &mut BTreeMap<&'static str, Setting>,
    key: &'static str,
    d: &Directive,
    value: Value,
) -> Result<(), ConfigError> {
    if let Some(first) = map.get(key) {
        let what = if first.directive == d.name {
            format!(
                "\"{}\" directive is duplicate (first at line {})",
                d.name, first.origin.line
            )
        } else {
            format!(
                "\"{}\" directive is duplicate: \"{}\" at line {} already sets it",
                d.name, first.directive, first.origin.line
            )
        };
        return Err(error_at(&d.origin, what));
    }
    map.insert(
        key,
        Setting {
            value,
            directive: d.name.clone(),
            origin: d.origin.clone(),
        },
    );
    Ok(())
}

pub(super) fn parse_flag(arg: &str, d: &Directive) -> Result<bool, ConfigError> {
    match arg.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(error_at(
            &d.origin,
            format!(
                "invalid value \"{arg}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                d.name
            ),
        )),
    }
}

/// Reads a directive's argument as its spec says.
pub(super) fn read_value(spec: &Spec, arg: &str, d: &Directive) -> Result<Value, ConfigError> {
    let invalid = |m: String| {
        error_at(
            &d.origin,
            format!("invalid value \"{arg}\" in \"{}\" directive: {m}", d.name),
        )
    };
    Ok(match spec.kind {
        Kind::Flag => Value::Flag(parse_flag(arg, d)?),
        Kind::Num => {
            if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("expected a whole number".into()));
            }
            Value::Num(
                arg.parse()
                    .map_err(|_| invalid("number too large".into()))?,
            )
        }
        Kind::Secs | Kind::Msecs => {
            let compact: String = arg.chars().filter(|c| !c.is_whitespace()).collect();
            if spec.kind == Kind::Secs && compact.contains("ms") {
                return Err(invalid(
                    "this directive takes whole seconds (s, m, h, d), not ms".into(),
                ));
            }
            Value::Time(parse_duration(&compact).map_err(invalid)?)
        }
        Kind::Size => Value::Size(parse_size(arg).map_err(invalid)?),
        Kind::Text => Value::Text(arg.to_string()),
        Kind::Expr => Value::Expr(nginx_expr(arg).map_err(invalid)?),
        Kind::File => {
            let path = resolve_relative(arg, &d.origin.file);
            Value::File(
                std::path::absolute(&path)
                    .map_err(|e| invalid(format!("cannot resolve the path: {e}")))?,
            )
        }
    })
}

/// Translates an nginx complex value into a Herald expression. `$arg_NAME`, `$http_NAME`, `$cookie_NAME`
/// and `$1`..`$9` (also as `${…}`) carry over; any other variable is refused, since Herald cannot compute
/// it.
pub(super) fn nginx_expr(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, remainder) = if let Some(braced) = after.strip_prefix('{') {
            let close = braced
                .find('}')
                .ok_or_else(|| format!("the variable in {text:?} misses its closing \"}}\""))?;
            (&braced[..close], &braced[close + 1..])
        } else if after.starts_with(|c: char| c.is_ascii_digit()) {
            // nginx reads one digit after `$`: `$12` is capture 1 then "2".
            (&after[..1], &after[1..])
        } else {
            let len = after
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&after[..len], &after[len..])
        };
        if name.is_empty() {
            return Err(format!("invalid variable name in {text:?}"));
        }
        // The names Herald reads the same way: one capture digit, $arg_NAME, $http_NAME, $cookie_NAME.
        let supported = (name.len() == 1 && name.bytes().all(|b| b.is_ascii_digit()))
            || ["arg_", "http_", "cookie_"]
                .iter()
                .any(|p| name.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
        if !supported {
            return Err(format!(
                "variable ${name} is not supported; Herald understands $arg_NAME, $http_NAME, $cookie_NAME and $1..$9"
            ));
        }
        if remainder.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "${name} is directly followed by a letter, digit or \"_\" in {text:?}, which Herald would read as part of the variable name; put a separator after it"
            ));
        }
        out.push('$');
        out.push_str(name);
        rest = remainder;
    }
    out.push_str(rest);
    Ok(out)
}

/// nginx `listen` address forms → a socket address: `80`, `127.0.0.1:8080`, `*:80`, `[::]:80`,
/// `localhost:8080` (a missing port is 80).
pub(super) fn listen_address(text: &str) -> Result<String, String> {
    if text.starts_with("unix:") {
        return Err("unix sockets are not supported; use an IP address and port".into());
    }
    let port_of = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"));
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("0.0.0.0:{}", port_of(text)?));
    }
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let close = bracketed
            .find(']')
            .ok_or_else(|| "missing \"]\" in an IPv6 address".to_string())?;
        let port = match &bracketed[close + 1..] {
            "" => 80,
            rest => port_of(
                rest.strip_prefix(':')
                    .ok_or("expected \":port\" after \"]\"")?,
            )?,
        };
        let host: std::net::Ipv6Addr = bracketed[..close]
            .parse()
            .map_err(|_| format!("invalid IPv6 address {:?}", &bracketed[..close]))?;
        return Ok(std::net::SocketAddr::from((host, port)).to_string());
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, port_of(port)?),
            None => (text, 80),
        }
    };
    let ip: std::net::IpAddr = match host {
        "*" => std::net::Ipv4Addr::UNSPECIFIED.into(),
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other.parse().map_err(|_| {
            format!("{other:?} is not an IP address (Herald does not resolve host names)")
        })?,
    };
    Ok(std::net::SocketAddr::new(ip, port).to_string())
}

/// Herald's address lists for nginx's ordered `allow`/`deny` rules (first match wins, no match allows):
/// `(allow_addresses, deny_addresses, warnings)`. Herald checks the deny list first, then admits only the
/// allow list when it is not empty; this is exact unless an `allow` precedes an overlapping `deny`.
pub(super) fn access_lists(rules: &[AccessRule]) -> (Vec<String>, Vec<String>, Vec<Warning>) {
    let mut allow: Vec<(String, Option<ipnet::IpNet>)> = Vec::new();
    let mut deny = Vec::new();
    let mut warnings = Vec::new();
    let mut terminal: Option<&AccessRule> = None;
    let warn = |warnings: &mut Vec<Warning>, rule: &AccessRule, message: String| {
        warnings.push(Warning {
            file: rule.origin.file.to_path_buf(),
            line: rule.origin.line,
            message,
        })
    };
    for rule in rules {
        let verb = if rule.allow { "allow" } else { "deny" };
        if let Some(all) = terminal {
            let all_verb = if all.allow { "allow" } else { "deny" };
            warn(
                &mut warnings,
                rule,
                format!(
                    "\"{verb} {}\" is never reached: \"{all_verb} all\" at line {} comes first",
                    rule.what, all.origin.line
                ),
            );
            continue;
        }
        if rule.what == "all" {
            terminal = Some(rule);
            continue;
        }
        let net = crate::http::access::parse_net(&rule.what).ok();
        if rule.allow {
            allow.push((rule.what.clone(), net));
            continue;
        }
        let overlaps = |a: &Option<ipnet::IpNet>| match (a, &net) {
            (Some(a), Some(b)) => a.contains(b) || b.contains(a),
            _ => false,
        };
        if let Some((earlier, _)) = allow.iter().find(|(_, a)| overlaps(a)) {
            warn(
                &mut warnings,
                rule,
                format!("\"deny {}\" overlaps the earlier \"allow {earlier}\": Herald checks deny rules first, so those addresses are refused", rule.what),
            );
        }
        deny.push(rule.what.clone());
    }
    match terminal {
        Some(all) if !all.allow => {
            if allow.is_empty() {
                (
                    Vec::new(),
                    vec!["0.0.0.0/0".into(), "::/0".into()],
                    warnings,
                )
            } else {
                (allow.into_iter().map(|(a, _)| a).collect(), deny, warnings)
            }
        }
        // Anyone not denied is allowed: the allow rules change nothing.
        _ => (Vec::new(), deny, warnings),
    }
}
