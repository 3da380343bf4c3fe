//! Herald: a real-time HTTP push server. Backends publish to channels over HTTP; subscribers
//! receive messages over chunked streaming, EventSource, long-polling, polling (JSONP) or
//! WebSocket; each channel keeps a bounded buffer of recent messages for recovery. The HTTP API
//! follows the nginx push-stream module.
//!
//! Layers (see ARCHITECTURE.md): `config` (schema, validation), `broker` (channels, messages,
//! subscriptions; no HTTP), `engine` (the memory broker alone, or Redis with the broker as its
//! local mirror), `filter` (stream-SQL filters over JSON messages), `transport` (framing per mode),
//! `http` (server, routing, handlers), and the process-wide pieces `metrics`, `memory` (giving
//! freed heap back), `shutdown` and `digest`.

pub mod broker;
pub mod budget;
pub mod config;
pub mod digest;
pub mod engine;
pub mod filter;
mod forward_write;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod transport;

pub use config::Config;
pub use http::{Server, StartError};
