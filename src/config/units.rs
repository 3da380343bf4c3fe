//! Durations and sizes written the way nginx writes them (`30s`, `5m`, `1h30m`, `512k`, `10m`), as used
//! by the push-stream module's directives. Parsed once when the config is loaded; nothing else parses them.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration from the config: an integer (seconds) or a string of `<number><unit>` groups with units
/// `ms`, `s`, `m`, `h`, `d`, `w` (nginx time syntax), e.g. `"30s"`, `"1h30m"`, `"250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfDuration(pub Duration);

/// A byte size from the config: an integer (bytes) or a string `<number>[k|m|g]` (nginx size syntax,
/// case-insensitive, powers of 1024), e.g. `"512k"`, `"10m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfSize(pub u64);

/// The longest duration a config may give (100 years): every deadline computed from a configured
/// duration (`Instant::now() + ttl`) then fits.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Refuses durations over `MAX_DURATION`.
fn bounded(duration: Duration) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        Err("duration too long: at most 100 years (leave the key out for no limit)".into())
    } else {
        Ok(duration)
    }
}

/// Parses nginx time syntax: one or more `<digits><unit>` groups; a bare number means seconds. At
/// most `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; expected e.g. \"30s\", \"5m\", \"1h\"".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return bounded(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}; expected groups like \"1h30m\", \"250ms\""
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number too large in duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" | "" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86_400)),
            "w" => Duration::from_secs(value.saturating_mul(604_800)),
            other => {
                return Err(format!(
                    "unknown time unit {other:?} in {text:?}; expected ms, s, m, h, d or w"
                ))
            }
        };
        total = total.saturating_add(part);
    }
    bounded(total)
}

/// Parses nginx size syntax: `<digits>` bytes, or with a `k`/`m`/`g` suffix (any case).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1u64 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1u64 << 30),
        Some(_) => (text, 1),
        None => return Err("empty size; expected e.g. \"512k\", \"10m\"".into()),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}; expected <number>[k|m|g], e.g. \"512k\""))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = ConfDuration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration: seconds as an integer or a string like \"30s\", \"5m\", \"1h\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let secs = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
        self.visit_u64(secs)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        bounded(Duration::from_secs(v))
            .map(ConfDuration)
            .map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map(ConfDuration).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ConfSize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size: bytes as an integer or a string like \"512k\", \"10m\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        u64::try_from(v)
            .map(ConfSize)
            .map_err(|_| E::custom("a size cannot be negative"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ConfSize(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_size(v).map(ConfSize).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_nginx_syntax() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10x")
            .unwrap_err()
            .contains("unknown time unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn durations_are_at_most_100_years() {
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        for too_long in [
            "36501d",
            "9223372036854775807",
            "9999999999999999999s",
            "99999999w",
        ] {
            assert!(
                parse_duration(too_long)
                    .unwrap_err()
                    .contains("at most 100 years"),
                "{too_long}"
            );
        }
        let config: Result<ConfDuration, _> =
            toml::from_str::<toml::Value>("d = 9223372036854775807")
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    v["d"]
                        .clone()
                        .try_into()
                        .map_err(|e: toml::de::Error| e.to_string())
                });
        assert!(config.unwrap_err().contains("at most 100 years"));
    }

    #[test]
    fn sizes_follow_nginx_syntax() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("10M"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("").is_err());
    }
}
