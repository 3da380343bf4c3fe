//! Herald: a real-time HTTP push-stream server. Backends publish to channels over HTTP; subscribers
//! receive messages over chunked streaming or EventSource; each channel keeps a bounded buffer of
//! recent messages for backtrack. The HTTP API follows the nginx push-stream module.
//!
//! Layers (see ARCHITECTURE.md): `config` (schema, validation), `broker` (channels, messages,
//! subscriptions; no HTTP), `transport` (framing per mode), `http` (server, routing, handlers).

pub mod broker;
pub mod config;
pub mod digest;
pub mod engine;
pub mod filter;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod transport;

pub use config::Config;
pub use http::{Server, StartError};
