//! The TOML config loader: `Config::from_toml` on fuzzed text, and, when it is accepted, everything a
//! server builds from it before binding (the router with its templates, regexes, expressions and
//! access rules, the channel id rules and the broker settings). Errors must be errors, never panics.
//!
//! Inputs naming a file (`header_template_file`, `jwt_public_key_file`) are skipped: the loader reads
//! those paths from disk, and a fuzzer that finds `/dev/zero` would only measure the disk.

#![no_main]

use herald::broker::{BrokerSettings, ChannelIdRules};
use herald::http::router::{FormatRegistry, Router};
use herald::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("_file") {
        return;
    }
    let Ok(config) = Config::from_toml(
        text,
        "fuzz.toml",
        Some(Path::new("/nonexistent-herald-fuzz")),
    ) else {
        return;
    };
    let _ = config.listen_addr();
    let mut formats = FormatRegistry::default();
    let _ = Router::compile(&config, &mut formats);
    let _ = ChannelIdRules::new(
        config.channels.max_channel_id_length,
        &config.channels.channel_id_pattern,
    );
    let _ = BrokerSettings::from_config(&config.channels, formats.len());
});
