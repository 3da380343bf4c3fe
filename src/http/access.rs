//! Who may use a location: client address allow/deny lists (with trusted proxies'
//! `X-Forwarded-For`), bearer secrets, publish rate limits, and for subscribers signed tokens (JWT
//! HS256/RS256 naming the channels they may join), an upstream authorization request, and private
//! channel prefixes. Every refusal is a status, a clear explanation and a metric.

use super::channels_path::{ChannelsPathExpr, RequestVars};
use super::error::HttpError;
use super::response::Body;
use crate::config::LocationConfig;
use hyper::{header, HeaderMap, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parses `10.0.0.0/8` or a single address.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR range (e.g. 10.0.0.0/8, ::1)"))
}

fn parse_nets(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter().map(|n| parse_net(n)).collect()
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the last address in
/// `X-Forwarded-For` that is not one.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// A publish rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    count: f64,
    per: Duration,
    text_count: u64,
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    let (count, unit) = text
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("{text:?} must look like \"50/s\", \"600/m\" or \"10000/h\""))?;
    let count: u64 = count
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {count:?} is not a whole number"))?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => return Err(format!("{text:?}: unit {other:?} must be s, m or h")),
    };
    if count == 0 {
        return Err(format!("{text:?}: the count must be at least 1"));
    }
    Ok(Rate {
        count: count as f64,
        per,
        text_count: count,
    })
}

pub use crate::transport::websocket::PublishGate;

/// Keeps a map of timestamped entries under `max`: when it is full, entries older than `fresh_for`
/// go, and if it is still over half full (a flood of distinct keys), the oldest half of what is left
/// goes too — never everything at once, so the entries of clients in use survive a flood.
fn make_room<K: Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    fresh_for: Duration,
    stamp: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| stamp(v).elapsed() < fresh_for);
    if map.len() >= max / 2 {
        let mut stamps: Vec<Instant> = map.values().map(&stamp).collect();
        let middle = stamps.len() / 2;
        let (_, cutoff, _) = stamps.select_nth_unstable(middle);
        let cutoff = *cutoff;
        map.retain(|_, v| stamp(v) > cutoff);
    }
}

/// Token buckets per client key; stale keys are dropped so the map stays bounded by active clients.
#[derive(Debug)]
struct RateLimiter {
    rate: Rate,
    text: String,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

const RATE_LIMITER_MAX_KEYS: usize = 100_000;

impl RateLimiter {
    /// What a refused publish is told.
    fn refusal(&self) -> String {
        format!(
            "Publish rate limit exceeded. Limit: publish_rate_limit = {} per client.",
            self.text
        )
    }

    /// Takes one request from `key`'s bucket; `Err(wait)` when it is empty.
    fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let per_second = self.rate.count / self.rate.per.as_secs_f64();
        let mut buckets = self.buckets.lock();
        // Buckets of clients idle for a whole period are full again: nothing worth keeping.
        make_room(
            &mut buckets,
            RATE_LIMITER_MAX_KEYS,
            self.rate.per,
            |(_, at)| *at,
        );
        let (tokens, at) = buckets
            .entry(key.to_string())
            .or_insert((self.rate.count, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(self.rate.count);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / per_second))
        }
    }
}

/// How subscriber tokens are verified.
struct TokenAuth {
    key: jsonwebtoken::DecodingKey,
    /// Signature and algorithm only: the registered claims are checked by `check_registered_claims`.
    validation: jsonwebtoken::Validation,
    /// Clock difference allowed for `exp` and `nbf`, in seconds.
    leeway: f64,
    source: Option<ChannelsPathExpr>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("algorithms", &self.validation.algorithms)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Clock difference allowed for a subscriber token's `exp` and `nbf` unless `jwt_leeway` says.
const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(5);

/// The claims Herald reads from a subscriber token.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Channels allowed: exact ids, or prefixes ending with `*`.
    #[serde(default)]
    channels: Vec<String>,
    /// Optional user id (logged).
    #[serde(default)]
    sub: Option<String>,
}

/// Upstream authorization (the way nchan's authorize request works).
#[derive(Debug)]
struct UpstreamAuth {
    url: hyper::Uri,
    timeout: Duration,
    cache_for: Duration,
    /// Answers by a 128-bit digest of what was forwarded (bounded size per entry, whatever the
    /// headers' length).
    cache: Mutex<HashMap<u128, CachedAnswer>>,
    digest: crate::digest::Digest128,
    /// One client for every authorization request, so connections to the backend are reused.
    client: std::sync::OnceLock<UpstreamClient>,
}

type UpstreamClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

const UPSTREAM_CACHE_MAX: usize = 10_000;

/// An authorization answer and when it was given.
type CachedAnswer = (Instant, Result<(), HttpError>);

/// The access rules of one location.
#[derive(Debug)]
pub struct LocationAccess {
    bearer_tokens: Vec<String>,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    rate: Option<Arc<RateLimiter>>,
    token: Option<TokenAuth>,
    upstream: Option<UpstreamAuth>,
}

impl LocationAccess {
    /// Builds the rules from a location's config; errors name the key.
    pub fn from_config(loc: &LocationConfig) -> Result<LocationAccess, (&'static str, String)> {
        let token = match (&loc.jwt_secret, &loc.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err((
                    "jwt_public_key_file",
                    "use either jwt_secret (HS256) or jwt_public_key_file (RS256)".into(),
                ))
            }
            (Some(secret), None) => {
                if secret.len() < 16 {
                    return Err(("jwt_secret", "must be at least 16 bytes".into()));
                }
                Some((
                    jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
                    jsonwebtoken::Algorithm::HS256,
                ))
            }
            (None, Some(file)) => {
                let pem = std::fs::read(file).map_err(|e| {
                    (
                        "jwt_public_key_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    (
                        "jwt_public_key_file",
                        format!("{} is not an RSA public key in PEM: {e}", file.display()),
                    )
                })?;
                Some((key, jsonwebtoken::Algorithm::RS256))
            }
            (None, None) => None,
        };
        let token = match token {
            Some((key, algorithm)) => {
                let mut validation = jsonwebtoken::Validation::new(algorithm);
                validation.required_spec_claims.clear();
                // The library ignores an `exp` or `nbf` it cannot read as a whole number
                // (`"0"`, `-1`): Herald checks both itself, refusing malformed ones.
                validation.validate_exp = false;
                validation.validate_nbf = false;
                let source = loc
                    .token
                    .as_deref()
                    .map(ChannelsPathExpr::parse)
                    .transpose()
                    .map_err(|m| ("token", m))?;
                Some(TokenAuth {
                    key,
                    validation,
                    leeway: loc
                        .jwt_leeway
                        .map_or(DEFAULT_JWT_LEEWAY, |d| d.0)
                        .as_secs_f64(),
                    source,
                })
            }
            None if loc.token.is_some() => {
                return Err(("token", "needs jwt_secret or jwt_public_key_file".into()));
            }
            None if loc.jwt_leeway.is_some() => {
                return Err((
                    "jwt_leeway",
                    "needs jwt_secret or jwt_public_key_file".into(),
                ));
            }
            None => None,
        };
        let upstream = match &loc.auth_request_url {
            Some(url) => {
                let uri: hyper::Uri = url
                    .parse()
                    .map_err(|e| ("auth_request_url", format!("invalid URL {url:?}: {e}")))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(("auth_request_url", format!("{url:?} must be an http:// URL (put TLS in front of the backend's proxy)")));
                }
                Some(UpstreamAuth {
                    url: uri,
                    timeout: loc
                        .auth_request_timeout
                        .map_or(Duration::from_secs(2), |d| d.0),
                    cache_for: loc
                        .auth_request_cache
                        .map_or(Duration::from_secs(5), |d| d.0),
                    cache: Mutex::new(HashMap::new()),
                    digest: Default::default(),
                    client: std::sync::OnceLock::new(),
                })
            }
            None => None,
        };
        let rate = match &loc.publish_rate_limit {
            Some(text) => Some(Arc::new(RateLimiter {
                rate: parse_rate(text).map_err(|m| ("publish_rate_limit", m))?,
                text: text.clone(),
                buckets: Mutex::new(HashMap::new()),
            })),
            None => None,
        };
        if loc.auth_bearer_tokens.iter().any(|t| t.trim().len() < 16) {
            return Err((
                "auth_bearer_tokens",
                "each token must be at least 16 characters".into(),
            ));
        }
        Ok(LocationAccess {
            // Compared with the trimmed token of a request: stored trimmed too.
            bearer_tokens: loc
                .auth_bearer_tokens
                .iter()
                .map(|t| t.trim().to_string())
                .collect(),
            allow: parse_nets(&loc.allow_addresses).map_err(|m| ("allow_addresses", m))?,
            deny: parse_nets(&loc.deny_addresses).map_err(|m| ("deny_addresses", m))?,
            rate,
            token,
            upstream,
        })
    }

    /// True when subscribers of this location are authorized (so private channels may be joined).
    pub fn authorizes_subscribers(&self) -> bool {
        self.token.is_some() || self.upstream.is_some()
    }

    /// Request-level checks: address lists, then the bearer secret.
    pub fn check_request(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), HttpError> {
        if self.deny.iter().any(|net| net.contains(&client))
            || (!self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&client)))
        {
            crate::metrics::count_auth_refusal("address");
            return Err(HttpError::new(
                StatusCode::FORBIDDEN,
                format!("Client address {client} is not allowed here."),
            ));
        }
        if !self.bearer_tokens.is_empty() {
            let given = bearer(headers);
            // Compare every token in full so the time taken does not tell which prefix matched.
            let matched = self.bearer_tokens.iter().fold(false, |found, token| {
                found | given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
            });
            if !matched {
                crate::metrics::count_auth_refusal("bearer");
                let explain = if given.is_some() {
                    "Wrong bearer token."
                } else {
                    "Missing bearer token: send Authorization: Bearer <token>."
                };
                let mut err = HttpError::new(StatusCode::UNAUTHORIZED, explain);
                err.headers
                    .push((header::WWW_AUTHENTICATE, "Bearer".into()));
                return Err(err);
            }
        }
        Ok(())
    }

    /// The key of the client's publish budget: its bearer token where tokens are checked (elsewhere
    /// anyone could make one up to get a fresh budget), else its address.
    fn rate_key(&self, client: IpAddr, headers: &HeaderMap) -> String {
        match bearer(headers) {
            Some(token) if !self.bearer_tokens.is_empty() => format!("token:{token}"),
            // One IPv6 client holds a whole /64: one budget for all of it.
            _ => match client {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                    let [a, b, c, d, ..] = v6.segments();
                    format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
                }
                _ => client.to_string(),
            },
        }
    }

    /// The publish budget of this client for the publishes of a long-lived connection (WebSocket
    /// text frames), `None` when the location has no `publish_rate_limit`.
    pub fn publish_gate(&self, client: IpAddr, headers: &HeaderMap) -> Option<PublishGate> {
        let limiter = self.rate.clone()?;
        let key = self.rate_key(client, headers);
        Some(Arc::new(move || {
            limiter.take(&key).map_err(|_| {
                crate::metrics::count_limit_refusal("publish_rate_limit");
                limiter.refusal()
            })
        }))
    }

    /// Takes one publish from the client's (or bearer token's) rate budget.
    pub fn check_publish_rate(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), HttpError> {
        let Some(limiter) = &self.rate else {
            return Ok(());
        };
        limiter
            .take(&self.rate_key(client, headers))
            .map_err(|wait| {
                crate::metrics::count_limit_refusal("publish_rate_limit");
                let mut err = HttpError::new(StatusCode::TOO_MANY_REQUESTS, limiter.refusal());
                err.headers
                    .push((header::RETRY_AFTER, wait.as_secs().max(1).to_string()));
                err
            })
    }

    /// Subscriber checks for the channels asked for: token, private prefixes, upstream request.
    pub async fn check_subscriber(
        &self,
        vars: &RequestVars<'_>,
        headers: &HeaderMap,
        channels: &[&str],
        private_prefixes: &[String],
    ) -> Result<(), HttpError> {
        if !self.authorizes_subscribers() {
            if let Some(channel) = channels
                .iter()
                .find(|c| private_prefixes.iter().any(|p| c.starts_with(p.as_str())))
            {
                crate::metrics::count_auth_refusal("private_channel");
                return Err(HttpError::new(
                    StatusCode::FORBIDDEN,
                    format!("Channel {channel} is private: subscribe through a location that authorizes subscribers."),
                ));
            }
        }
        if let Some(auth) = &self.token {
            check_token(auth, vars, headers, channels)?;
        }
        if let Some(upstream) = &self.upstream {
            upstream.check(headers, channels).await?;
        }
        Ok(())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_token(
    auth: &TokenAuth,
    vars: &RequestVars<'_>,
    headers: &HeaderMap,
    channels: &[&str],
) -> Result<(), HttpError> {
    let from_expr = auth
        .source
        .as_ref()
        .map(|e| e.eval(vars))
        .filter(|t| !t.is_empty());
    // An empty `?token=` is no token: it does not hide an `Authorization: Bearer` one.
    let from_arg = || vars.arg("token").filter(|t| !t.is_empty());
    let token = match &auth.source {
        Some(_) => from_expr,
        None => from_arg().or_else(|| bearer(headers).map(str::to_string)),
    };
    let Some(token) = token else {
        crate::metrics::count_auth_refusal("token_missing");
        return Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "Missing subscriber token (the token query argument or Authorization: Bearer).",
        ));
    };
    let refuse = |explain: String| {
        crate::metrics::count_auth_refusal("token_invalid");
        HttpError::new(StatusCode::UNAUTHORIZED, explain)
    };
    let decoded = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        &token,
        &auth.key,
        &auth.validation,
    )
    .map_err(|e| refuse(format!("Invalid subscriber token: {e}.")))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    check_registered_claims(&decoded.claims, now, auth.leeway).map_err(refuse)?;
    let claims: Claims = serde_json::from_value(serde_json::Value::Object(decoded.claims))
        .map_err(|e| refuse(format!("Invalid subscriber token: {e}.")))?;
    let allowed = |channel: &str| {
        claims
            .channels
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => channel.starts_with(prefix),
                None => channel == pattern,
            })
    };
    if let Some(channel) = channels.iter().find(|c| !allowed(c)) {
        crate::metrics::count_auth_refusal("token_channel");
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!("The subscriber token does not allow channel {channel}."),
        ));
    }
    if let Some(user) = &claims.sub {
        tracing::debug!(user, "subscriber token accepted");
    }
    Ok(())
}

/// Checks the registered claims of a token whose signature is valid (RFC 7519 §4.1): `exp`, `nbf`
/// and `iat` must be NumericDates (JSON numbers of seconds since 1970, not negative), `iss`, `sub`
/// and `jti` strings, `aud` a string or a list of them; `exp` must not have passed and `nbf` must
/// have come, each give or take `leeway` seconds. The error is what the client is told.
fn check_registered_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    now: f64,
    leeway: f64,
) -> Result<(), String> {
    use serde_json::Value;
    let date = |name: &str| -> Result<Option<f64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some(seconds)),
                _ => Err(format!(
                    "Invalid subscriber token: claim {name} must be a date in seconds since 1970, not {n}."
                )),
            },
            Some(other) => Err(format!(
                "Invalid subscriber token: claim {name} must be a number of seconds since 1970, not {other}."
            )),
        }
    };
    let (exp, nbf) = (date("exp")?, date("nbf")?);
    date("iat")?;
    for name in ["iss", "sub", "jti"] {
        if let Some(value) = claims.get(name).filter(|v| !v.is_string()) {
            return Err(format!(
                "Invalid subscriber token: claim {name} must be a string, not {value}."
            ));
        }
    }
    if let Some(aud) = claims.get("aud") {
        let strings = match aud {
            Value::String(_) => true,
            Value::Array(items) => items.iter().all(Value::is_string),
            _ => false,
        };
        if !strings {
            return Err(format!(
                "Invalid subscriber token: claim aud must be a string or a list of strings, not {aud}."
            ));
        }
    }
    if exp.is_some_and(|exp| now > exp + leeway) {
        return Err("Subscriber token expired.".to_string());
    }
    if nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err("Subscriber token not valid yet (nbf).".to_string());
    }
    Ok(())
}

impl UpstreamAuth {
    async fn check(&self, headers: &HeaderMap, channels: &[&str]) -> Result<(), HttpError> {
        let credentials = |name: header::HeaderName| {
            headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        // Everything forwarded to the backend is part of the key: it may decide on any of it.
        let forwarded = format!(
            "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
            credentials(header::COOKIE),
            credentials(header::AUTHORIZATION),
            credentials(header::USER_AGENT),
            credentials(header::ORIGIN),
            channels.join("/")
        );
        let cache_key = self.digest.of(&forwarded);
        if !self.cache_for.is_zero() {
            if let Some((at, answer)) = self.cache.lock().get(&cache_key) {
                if at.elapsed() < self.cache_for {
                    return answer.clone();
                }
            }
        }
        let answer = self.ask(headers, channels).await;
        // A failure to reach the backend is not an answer worth reusing.
        let unavailable = matches!(&answer, Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE);
        if !self.cache_for.is_zero() && !unavailable {
            let mut cache = self.cache.lock();
            make_room(&mut cache, UPSTREAM_CACHE_MAX, self.cache_for, |(at, _)| {
                *at
            });
            cache.insert(cache_key, (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn ask(&self, headers: &HeaderMap, channels: &[&str]) -> Result<(), HttpError> {
        let mut request = hyper::Request::get(self.url.clone());
        for name in [
            header::COOKIE,
            header::AUTHORIZATION,
            header::USER_AGENT,
            header::ORIGIN,
        ] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        let request = request
            .header("X-Herald-Channels", channels.join("/"))
            .body(Body::empty())
            .map_err(|e| {
                HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot build the authorization request: {e}"),
                )
            })?;
        let client = self
            .client
            .get_or_init(|| Client::builder(TokioExecutor::new()).build_http());
        match tokio::time::timeout(self.timeout, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => {
                crate::metrics::count_auth_refusal("upstream");
                let status = if response.status() == StatusCode::UNAUTHORIZED {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                };
                Err(HttpError::new(
                    status,
                    format!(
                        "Subscription refused by the authorization service ({}).",
                        response.status()
                    ),
                ))
            }
            Ok(Err(err)) => {
                crate::metrics::count_auth_refusal("upstream_unavailable");
                tracing::warn!(url = %self.url, error = %err, "authorization service unreachable");
                Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Authorization service unreachable; try again later.",
                ))
            }
            Err(_) => {
                crate::metrics::count_auth_refusal("upstream_unavailable");
                tracing::warn!(url = %self.url, timeout = ?self.timeout, "authorization service timed out");
                Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Authorization service did not answer in time; try again later.",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_honours_only_trusted_proxies() {
        let trusted = vec![
            parse_net("127.0.0.1").unwrap(),
            parse_net("10.0.0.0/8").unwrap(),
        ];
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_address(stranger, &headers, &trusted), stranger);
    }

    #[test]
    fn rates_parse_and_limit() {
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5/d").is_err());
        assert!(parse_rate("five/s").is_err());
        let limiter = RateLimiter {
            rate: parse_rate("2/m").unwrap(),
            text: "2/m".into(),
            buckets: Mutex::new(HashMap::new()),
        };
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_err());
        assert!(limiter.take("b").is_ok());
        assert_eq!(limiter.rate.text_count, 2);
    }

    #[test]
    fn a_flood_of_keys_keeps_the_newest_entries() {
        let mut map: HashMap<u32, Instant> = HashMap::new();
        let start = Instant::now();
        for key in 0..100u32 {
            map.insert(key, start + Duration::from_millis(u64::from(key)));
        }
        make_room(&mut map, 100, Duration::from_secs(3600), |at| *at);
        assert!(map.len() < 100 && map.len() >= 40, "{}", map.len());
        assert!(map.contains_key(&99), "the newest entry stays");
        assert!(!map.contains_key(&0), "the oldest goes");
        let mut small: HashMap<u32, Instant> = (0..10u32).map(|k| (k, start)).collect();
        make_room(&mut small, 100, Duration::from_secs(3600), |at| *at);
        assert_eq!(small.len(), 10, "under the cap nothing goes");
    }

    #[test]
    fn registered_claims_must_be_well_formed() {
        let claims = |json: serde_json::Value| match json {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("test claims are objects"),
        };
        let now = 1_000_000.0;
        let check = |json| check_registered_claims(&claims(json), now, 5.0);
        assert!(check(serde_json::json!({"channels": ["a"]})).is_ok());
        assert!(
            check(serde_json::json!({"exp": 1_000_100, "nbf": 999_000, "iat": 999_000.5})).is_ok()
        );
        for malformed in [
            serde_json::json!({"exp": "0"}),
            serde_json::json!({"exp": -1}),
            serde_json::json!({"exp": null}),
            serde_json::json!({"nbf": "soon"}),
            serde_json::json!({"iat": [1]}),
            serde_json::json!({"sub": 42}),
            serde_json::json!({"aud": ["a", 1]}),
        ] {
            let err = check(malformed.clone()).expect_err("malformed claim refused");
            assert!(
                err.starts_with("Invalid subscriber token: claim"),
                "{malformed}: {err}"
            );
        }
        assert_eq!(
            check(serde_json::json!({"exp": 999_990})).unwrap_err(),
            "Subscriber token expired."
        );
        assert!(
            check(serde_json::json!({"exp": 999_996})).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            check(serde_json::json!({"nbf": 1_000_010})).unwrap_err(),
            "Subscriber token not valid yet (nbf)."
        );
        assert!(
            check(serde_json::json!({"nbf": 1_000_004})).is_ok(),
            "within the leeway"
        );
    }

    #[test]
    fn ipv6_clients_share_one_budget_per_64() {
        let access = LocationAccess::from_config(&LocationConfig::default()).expect("empty rules");
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let headers = HeaderMap::new();
        assert_eq!(access.rate_key(a, &headers), access.rate_key(b, &headers));
        assert_ne!(
            access.rate_key(a, &headers),
            access.rate_key(other, &headers)
        );
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(access.rate_key(v4, &headers), "192.0.2.7");
    }
}
