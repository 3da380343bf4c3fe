//! Prometheus metrics: names, descriptions, the process-wide recorder (installed once, rendered by
//! metrics locations), and the per-connection handles transports count deliveries with. Values the
//! broker already keeps (channels, stored messages, …) are read at scrape time, so the publish path
//! does no metrics work of its own.

use crate::broker::Broker;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

/// Subscriber connections open now, by transport.
pub const CONNECTIONS: &str = "herald_connections";
/// Channel subscriptions now (a connection on 3 channels counts 3).
pub const SUBSCRIPTIONS: &str = "herald_subscriptions";
/// Channels now, by kind (normal, wildcard).
pub const CHANNELS: &str = "herald_channels";
/// Messages stored now.
pub const STORED_MESSAGES: &str = "herald_stored_messages";
/// Bytes of stored messages counted against `shared_memory_size`.
pub const STORED_BYTES: &str = "herald_stored_message_bytes";
/// Messages published since start.
pub const PUBLISHED: &str = "herald_messages_published_total";
/// Messages written to subscribers, by transport.
pub const DELIVERIES: &str = "herald_deliveries_total";
/// Bytes of frames written to subscribers, by transport.
pub const BYTES_WRITTEN: &str = "herald_bytes_written_total";
/// Pings sent, by transport.
pub const PINGS: &str = "herald_pings_sent_total";
/// Connections closed because a write failed or did not drain within the send timeout, by reason.
pub const DEAD_CONNECTIONS: &str = "herald_dead_connections_total";
/// Subscribers cut off for falling behind the recent-message window.
pub const SLOW_CONSUMERS: &str = "herald_slow_consumers_total";
/// HTTP requests answered, by location and status.
pub const REQUESTS: &str = "herald_http_requests_total";
/// Time from publish to the frame being handed to the connection (sampled).
pub const PUBLISH_TO_WRITE: &str = "herald_publish_to_write_seconds";
/// Resident memory of the process.
pub const RESIDENT_MEMORY: &str = "herald_process_resident_memory_bytes";
/// Open file descriptors of the process.
pub const OPEN_FDS: &str = "herald_process_open_fds";
/// Requests refused by a limit (channels, subscribers, body size, memory, …), by limit.
pub const LIMIT_REFUSALS: &str = "herald_limit_refusals_total";

/// Requests refused by access rules, by reason.
pub const AUTH_REFUSALS: &str = "herald_auth_refusals_total";
/// Connections refused at accept time by `max_connections` / `max_connections_per_address`, or
/// `open_files` (accept ran out of file descriptors).
pub const CONNECTION_REFUSALS: &str = "herald_connection_refusals_total";

/// Publishes a channel answered as a replay of an `Idempotency-Key` it already took (one per
/// channel).
pub const PUBLISH_REPLAYS: &str = "herald_publish_replays_total";
/// Reconnections to Redis shards (Redis engine).
pub const REDIS_RECONNECTS: &str = "herald_redis_reconnects_total";
/// Publishes refused because a Redis shard was unavailable (Redis engine), by outcome:
/// `not_published`, or `unknown` (Redis may have taken it).
pub const REDIS_PUBLISH_FAILURES: &str = "herald_redis_publish_failures_total";
/// 1 while a Redis shard's connection is up, by shard (Redis engine).
pub const REDIS_SHARD_UP: &str = "herald_redis_shard_up";

/// One in how many deliveries of a connection records its publish-to-write latency.
const LATENCY_SAMPLE_EVERY: u32 = 16;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same handle). `None` when
/// another recorder was installed first (metrics then go there).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(PUBLISH_TO_WRITE.to_string()),
                    &[
                        0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                        1.0, 2.5,
                    ],
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            start_at_zero();
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_gauge!(
        CONNECTIONS,
        "Subscriber connections open now, by transport."
    );
    describe_gauge!(
        SUBSCRIPTIONS,
        "Channel subscriptions now (a connection on 3 channels counts 3)."
    );
    describe_counter!(
        AUTH_REFUSALS,
        "Requests refused by access rules (address, bearer, token, upstream, private channel), by reason."
    );
    describe_counter!(
        CONNECTION_REFUSALS,
        "Connections refused at accept time by max_connections / max_connections_per_address, or open_files when accept ran out of descriptors, by limit."
    );
    describe_counter!(
        REDIS_RECONNECTS,
        "Reconnections to Redis shards after a lost connection (Redis engine)."
    );
    describe_counter!(
        REDIS_PUBLISH_FAILURES,
        "Publishes answered 503 because a Redis shard was unavailable (Redis engine)."
    );
    describe_gauge!(
        REDIS_SHARD_UP,
        "1 while the connection to a Redis shard is up, by shard (Redis engine)."
    );
    describe_gauge!(CHANNELS, "Channels now, by kind (normal, wildcard).");
    describe_gauge!(STORED_MESSAGES, "Messages stored now.");
    describe_gauge!(
        STORED_BYTES,
        Unit::Bytes,
        "Bytes of stored messages counted against shared_memory_size."
    );
    describe_counter!(
        PUBLISHED,
        "Messages published since start (events channel excluded)."
    );
    describe_counter!(DELIVERIES, "Messages written to subscribers, by transport.");
    describe_counter!(
        BYTES_WRITTEN,
        Unit::Bytes,
        "Bytes of frames written to subscribers, by transport."
    );
    describe_counter!(PINGS, "Pings sent, by transport.");
    describe_counter!(
        DEAD_CONNECTIONS,
        "Connections closed because a write failed or did not drain in time, by reason."
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Subscribers cut off for falling behind the recent-message window."
    );
    describe_counter!(REQUESTS, "HTTP requests answered, by location and status.");
    describe_histogram!(
        PUBLISH_TO_WRITE,
        Unit::Seconds,
        "Publish to frame handed to the connection (1 in 16 deliveries per connection)."
    );
    describe_gauge!(
        RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of the process."
    );
    describe_gauge!(OPEN_FDS, "Open file descriptors of the process.");
    describe_counter!(
        PUBLISH_REPLAYS,
        "Publishes not applied again because the channel had taken their Idempotency-Key."
    );
    describe_counter!(
        LIMIT_REFUSALS,
        "Requests refused by a configured limit, by limit."
    );
}

/// Every counter with the label values Herald uses, so that /metrics shows each from the start at
/// 0 (a rate over a counter that appears only at its first event is wrong, and alerts on a missing
/// series never fire).
fn start_at_zero() {
    const TRANSPORTS: [&str; 5] = [
        "streaming",
        "eventsource",
        "long-polling",
        "polling",
        "websocket",
    ];
    const LIMITS: [&str; 16] = [
        "body_read_timeout",
        "channels_reserved_for_publishers",
        "header_read_timeout",
        "max_body_size",
        "max_buffered_body_size",
        "max_channel_id_length",
        "max_channels_per_publish",
        "max_channels_per_subscription",
        "max_header_size",
        "max_number_of_channels",
        "max_number_of_wildcard_channels",
        "max_subscribers_per_channel",
        "publish_rate_limit",
        "shared_memory_size",
        "wildcard_channel_max_qtd",
        "websocket_message_timeout",
    ];
    const AUTH: [&str; 8] = [
        "address",
        "bearer",
        "private_channel",
        "token_channel",
        "token_invalid",
        "token_missing",
        "upstream",
        "upstream_unavailable",
    ];
    for transport in TRANSPORTS {
        counter!(DELIVERIES, "transport" => transport).absolute(0);
        counter!(BYTES_WRITTEN, "transport" => transport).absolute(0);
        counter!(PINGS, "transport" => transport).absolute(0);
    }
    for limit in LIMITS {
        counter!(LIMIT_REFUSALS, "limit" => limit).absolute(0);
    }
    for limit in [
        "max_connections",
        "max_connections_per_address",
        "open_files",
    ] {
        counter!(CONNECTION_REFUSALS, "limit" => limit).absolute(0);
    }
    for reason in AUTH {
        counter!(AUTH_REFUSALS, "reason" => reason).absolute(0);
    }
    counter!(DEAD_CONNECTIONS, "reason" => "send_timeout").absolute(0);
    counter!(SLOW_CONSUMERS).absolute(0);
    counter!(PUBLISH_REPLAYS).absolute(0);
    counter!(PUBLISHED).absolute(0);
}

/// Drains recorded histogram samples into their buckets; run it periodically so that memory stays
/// bounded when nobody scrapes.
pub fn upkeep() {
    if let Some(Some(handle)) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// The Prometheus text exposition, with the gauges read from `broker` and `/proc` refreshed first.
pub fn render(broker: &Broker) -> String {
    let summary = broker.summary();
    gauge!(CHANNELS, "kind" => "normal").set(summary.channels as f64);
    gauge!(CHANNELS, "kind" => "wildcard").set(summary.wildcard_channels as f64);
    gauge!(STORED_MESSAGES).set(summary.stored_messages as f64);
    gauge!(STORED_BYTES).set(summary.stored_bytes as f64);
    gauge!(SUBSCRIPTIONS).set(broker.subscriptions() as f64);
    counter!(PUBLISHED).absolute(summary.published_messages);
    counter!(SLOW_CONSUMERS).absolute(broker.lagged_subscribers());
    if let Some(rss) = process_resident_bytes() {
        gauge!(RESIDENT_MEMORY).set(rss as f64);
    }
    if let Some(fds) = process_open_fds() {
        gauge!(OPEN_FDS).set(fds as f64);
    }
    match HANDLE.get() {
        Some(Some(handle)) => handle.render(),
        _ => "# metrics recorder not installed\n".to_string(),
    }
}

/// Resident set size from `/proc/self/status` (Linux).
pub fn process_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Number of open file descriptors from `/proc/self/fd` (Linux).
pub fn process_open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Counts a reconnection to a Redis shard after its connection was lost.
pub fn count_redis_reconnect() {
    counter!(REDIS_RECONNECTS).increment(1);
}

/// Counts a publish the Redis engine could not carry out (a shard down or too slow); `unknown`
/// when Redis may have taken it all the same.
pub fn count_redis_publish_failure(unknown: bool) {
    let outcome = if unknown { "unknown" } else { "not_published" };
    counter!(REDIS_PUBLISH_FAILURES, "outcome" => outcome).increment(1);
}

/// Counts channels that answered a publish as a replay of its idempotency key.
pub fn count_publish_replays(channels: u64) {
    if channels > 0 {
        counter!(PUBLISH_REPLAYS).increment(channels);
    }
}

/// Whether a Redis shard's connection is up (1) or not (0).
pub fn redis_shard_up(shard: usize, up: bool) {
    gauge!(REDIS_SHARD_UP, "shard" => shard.to_string()).set(if up { 1.0 } else { 0.0 });
}

/// Counts a refusal by a configured limit.
pub fn count_limit_refusal(limit: &'static str) {
    counter!(LIMIT_REFUSALS, "limit" => limit).increment(1);
}

/// Counts a request refused by access rules (address, bearer, token, upstream, private channel).
pub fn count_auth_refusal(reason: &'static str) {
    counter!(AUTH_REFUSALS, "reason" => reason).increment(1);
}

/// Counts a connection refused at accept time.
pub fn count_connection_refusal(limit: &'static str) {
    counter!(CONNECTION_REFUSALS, "limit" => limit).increment(1);
}

/// Counts a connection closed by the liveness checks.
pub fn count_dead_connection(reason: &'static str) {
    counter!(DEAD_CONNECTIONS, "reason" => reason).increment(1);
}

/// Counts an HTTP answer (see `RequestCounters` for the cached form).
pub fn count_request(location: &str, status: u16) {
    counter!(REQUESTS, "location" => location.to_string(), "status" => status.to_string())
        .increment(1);
}

/// Request counters of one location, made once for the usual statuses so that counting an answer
/// costs an atomic add instead of a registry lookup.
#[derive(Debug)]
pub struct RequestCounters {
    location: String,
    common: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

const COMMON_STATUSES: [u16; 12] = [101, 200, 304, 400, 401, 403, 404, 405, 413, 429, 500, 503];

impl RequestCounters {
    /// Counters for `location` (its configured path).
    pub fn new(location: &str) -> RequestCounters {
        RequestCounters {
            location: location.to_string(),
            common: Default::default(),
        }
    }

    /// Counts one answer; a status's counter is registered the first time it is seen.
    pub fn count(&self, status: u16) {
        match COMMON_STATUSES.iter().position(|s| *s == status) {
            Some(index) => self.common[index]
                .get_or_init(|| {
                    counter!(REQUESTS, "location" => self.location.clone(), "status" => status.to_string())
                })
                .increment(1),
            None => count_request(&self.location, status),
        }
    }
}

/// One subscriber connection's metric handles; it counts the connection open while it lives.
#[derive(Debug)]
pub struct ConnectionMetrics {
    connections: Gauge,
    deliveries: Counter,
    bytes: Counter,
    pings: Counter,
    latency: Histogram,
    sampled: u32,
}

impl ConnectionMetrics {
    /// Opens the connection's count for `transport`.
    pub fn open(transport: &'static str) -> ConnectionMetrics {
        let connections = gauge!(CONNECTIONS, "transport" => transport);
        connections.increment(1.0);
        ConnectionMetrics {
            connections,
            deliveries: counter!(DELIVERIES, "transport" => transport),
            bytes: counter!(BYTES_WRITTEN, "transport" => transport),
            pings: counter!(PINGS, "transport" => transport),
            latency: histogram!(PUBLISH_TO_WRITE),
            // The first delivery of every connection is sampled (then 1 in 16).
            sampled: 0,
        }
    }

    /// Counts one delivered frame of `bytes` bytes of a message published at `published_at`.
    pub fn delivered(&mut self, bytes: usize, published_at: Instant) {
        self.deliveries.increment(1);
        self.bytes.increment(bytes as u64);
        if self.sampled == 0 {
            self.latency.record(published_at.elapsed().as_secs_f64());
        }
        self.sampled = (self.sampled + 1) % LATENCY_SAMPLE_EVERY;
    }

    /// Counts one ping of `bytes` bytes.
    pub fn pinged(&mut self, bytes: usize) {
        self.pings.increment(1);
        self.bytes.increment(bytes as u64);
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.connections.decrement(1.0);
    }
}
