//! WebSocket frames from clients: the fuzzed bytes are what a client sends after the handshake, read by
//! Herald's own WebSocket subscriber loop (`herald::transport::websocket::run` on one end of a
//! duplex pipe, with `websocket_allow_publish` on so text frames are published back to the
//! subscription) with the protocol settings Herald uses (the default `max_body_size`, 1 MiB, as
//! message and frame limit; unmasked frames refused). The client side then closes; the server must
//! answer and finish without a panic, within a bound.

#![no_main]

use bytes::Bytes;
use herald::broker::{BrokerSettings, ChannelId, FormatId, StartAt, SubscribePolicy, SubscribeTo};
use herald::config::{ChannelsConfig, EngineConfig};
use herald::engine::Engine;
use herald::transport::live::LiveOptions;
use herald::transport::template::TemplateFramer;
use herald::transport::websocket::{self, WebSocketOptions};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Herald's default `max_body_size`, the WebSocket message and frame limit.
const MAX_BODY_SIZE: usize = 1 << 20;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    engine: Engine,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channels = ChannelsConfig {
            max_messages_stored_per_channel: Some(8),
            ..ChannelsConfig::default()
        };
        Fixture {
            runtime,
            engine: Engine::new(
                &EngineConfig::default(),
                BrokerSettings::from_config(&channels, 1),
                "fuzz",
            )
            .expect("memory engine"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let input = Bytes::copy_from_slice(data);
    fixture.runtime.block_on(async move {
        let engine = fixture.engine.clone();
        let broker = engine.broker().clone();
        let targets = [SubscribeTo {
            channel: ChannelId::new_unchecked("fuzz"),
            start: StartAt::Live,
        }];
        let subscription = broker
            .subscribe(&targets, &SubscribePolicy::default())
            .expect("subscribe");
        let options = WebSocketOptions {
            live: LiveOptions {
                format: FormatId(0),
                framer: Arc::new(TemplateFramer::new(
                    "HELLO",
                    "~channel~:~id~:~text~",
                    "BYE",
                    " ",
                    "text/plain",
                )),
                ping_interval: None,
                connection_ttl: None,
                transport: "websocket",
            },
            allow_publish: true,
            publish_gate: None,
            max_message_size: MAX_BODY_SIZE,
            message_timeout: Duration::from_secs(30),
            buffered_bytes: Some((Arc::default(), 1 << 20)),
        };
        let (client, server_io) = tokio::io::duplex(64 * 1024);
        let (trigger, shutdown) = herald::shutdown::channel();
        let server = tokio::spawn(async move {
            websocket::run(server_io, subscription, options, engine, shutdown).await;
        });
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = from_server.read_to_end(&mut sink).await;
        });
        let _ = to_server.write_all(&input).await;
        let _ = to_server.shutdown().await;
        drop(to_server);
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("websocket task failed: {e}"),
            Err(_) => panic!("websocket loop still running 10s after the client closed"),
        }
        drop(trigger);
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    });
});
