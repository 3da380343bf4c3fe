//! Short leak check (the CI version of a soak): one in-process server, 5 waves of ~300 subscribers
//! (streaming, EventSource, long-polling, WebSocket, plus polling requests) on 50 channels while a
//! task publishes; each wave is dropped entirely. Afterwards subscribers and channels go back to 0,
//! the process's file descriptors return to their baseline, and resident memory does not grow after
//! the load stops. Server and clients share this process, so `/proc/self` covers both.

mod common;

use common::{config, rss_kb, TestServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const WAVES: usize = 5;
const CHANNELS: usize = 50;
/// Long-lived subscribers per transport per wave (4 transports: 300 per wave).
const PER_TRANSPORT: usize = 75;
/// Polling requests per wave.
const POLLS: usize = 50;
/// Bound for one subscriber to connect and see its first message.
const OPEN_WAIT: Duration = Duration::from_secs(20);

fn locations() -> String {
    r#"
[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "~id~:~text~\n"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"

[[location]]
path = "/lp/"
role = "subscriber"
mode = "long-polling"
longpolling_connection_ttl = "15s"

[[location]]
path = "/poll/"
role = "subscriber"
mode = "polling"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
"#
    .to_string()
}

/// Open file descriptors of this process.
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// (channels, subscribers) from the statistics summary.
async fn counts(server: &TestServer) -> (u64, u64, String) {
    let summary = server.stats("").await;
    let channels = summary["channels"].as_u64().expect("channels");
    let subscribers = summary["subscribers"].as_u64().expect("subscribers");
    (channels, subscribers, summary.to_string())
}

fn channel(i: usize) -> String {
    format!("soak{}", i % CHANNELS)
}

/// Reads a long-lived HTTP body until some bytes arrive (bounded).
async fn first_bytes(response: reqwest::Response, what: &str) -> Result<reqwest::Response, String> {
    let mut response = response;
    if response.status() != StatusCode::OK {
        return Err(format!("{what}: status {}", response.status()));
    }
    let deadline = Instant::now() + OPEN_WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => {
                return Err(format!(
                    "{what}: no message within {OPEN_WAIT:?}; got {:?}",
                    String::from_utf8_lossy(&seen)
                ))
            }
            Ok(Err(e)) => return Err(format!("{what}: body error {e}")),
            Ok(Ok(None)) => {
                return Err(format!(
                    "{what}: body ended; got {:?}",
                    String::from_utf8_lossy(&seen)
                ))
            }
            Ok(Ok(Some(chunk))) => {
                seen.extend_from_slice(&chunk);
                // EventSource starts with the header comment (": \n\n"); wait for a data line.
                let text = String::from_utf8_lossy(&seen);
                if text.contains("data: ") || (text.contains(':') && !what.contains("/ev/")) {
                    return Ok(response);
                }
            }
        }
    }
}

/// GET `{base}{path}`, the whole answer within `OPEN_WAIT`: its status and body (or why there is
/// none).
async fn get_within(
    client: &reqwest::Client,
    base: &str,
    path: &str,
) -> Result<(StatusCode, reqwest::Result<String>), String> {
    tokio::time::timeout(OPEN_WAIT, async {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let status = response.status();
        Ok((status, response.text().await))
    })
    .await
    .unwrap_or_else(|_| Err(format!("{path}: no answer within {OPEN_WAIT:?}")))
}

/// One subscriber of a wave: connects, receives its first message (result on `opened`), then holds
/// its connection until `release` turns true, then drops it.
async fn subscriber(
    kind: usize,
    index: usize,
    base: String,
    client: reqwest::Client,
    opened: mpsc::UnboundedSender<Result<(), String>>,
    mut release: watch::Receiver<bool>,
) {
    let ch = channel(index);
    let hold = |mut release: watch::Receiver<bool>| async move {
        let _ = tokio::time::timeout(Duration::from_secs(60), release.wait_for(|r| *r)).await;
    };
    match kind {
        0 | 1 => {
            let path = if kind == 0 {
                format!("/sub/{ch}")
            } else {
                format!("/ev/{ch}")
            };
            let sent = tokio::time::timeout(OPEN_WAIT, client.get(format!("{base}{path}")).send())
                .await
                .map_err(|_| format!("{path}: no response head within {OPEN_WAIT:?}"))
                .and_then(|r| r.map_err(|e| format!("{path}: {e}")));
            let response = match sent {
                Ok(response) => first_bytes(response, &path).await,
                Err(e) => Err(e),
            };
            match response {
                Ok(response) => {
                    let _ = opened.send(Ok(()));
                    hold(release).await;
                    drop(response);
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            }
        }
        2 => {
            // Long-polling: answered by the next message on the channel.
            let path = format!("/lp/{ch}");
            let result = get_within(&client, &base, &path)
                .await
                .and_then(|(status, body)| {
                    let body = body.map_err(|e| format!("{path}: body {e}"))?;
                    if status != StatusCode::OK || body.is_empty() {
                        return Err(format!("{path}: {status} {body:?}"));
                    }
                    Ok(())
                });
            let _ = opened.send(result);
        }
        3 => {
            let path = format!("/ws/{ch}");
            let url = format!("{}{path}", base.replacen("http://", "ws://", 1));
            let result = tokio::time::timeout(OPEN_WAIT, async {
                let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                    .await
                    .map_err(|e| format!("{path}: handshake {e}"))?;
                loop {
                    match ws.next().await {
                        Some(Ok(WsMessage::Text(_))) => return Ok(ws),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Err(format!("{path}: {e}")),
                        None => return Err(format!("{path}: closed before a message")),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| Err(format!("{path}: no message within {OPEN_WAIT:?}")));
            match result {
                Ok(ws) => {
                    let _ = opened.send(Ok(()));
                    // Keep reading (answers pings) until released; then drop without a close frame.
                    let mut ws = ws;
                    let reader = async { while let Some(Ok(_)) = ws.next().await {} };
                    tokio::select! {
                        _ = reader => {}
                        _ = release.wait_for(|r| *r) => {}
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            }
        }
        _ => {
            let path = format!("/poll/{ch}.b1");
            let result = get_within(&client, &base, &path)
                .await
                .and_then(|(status, _)| {
                    if status != StatusCode::OK && status != StatusCode::NOT_MODIFIED {
                        return Err(format!("{path}: {status}"));
                    }
                    Ok(())
                });
            let _ = opened.send(result);
        }
    }
}

struct WavePeak {
    rss_kb: u64,
    fds: usize,
    subscribers: u64,
    channels: u64,
}

async fn run_wave(server: &TestServer, wave: usize) -> WavePeak {
    // A fresh client per wave that keeps no idle connections: every fd it opened goes with it.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let base = format!("http://{}", server.addr);

    // Publisher: round-robin over the channels until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        let stop = stop.clone();
        let published = published.clone();
        async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{base}/pub?id={}", channel(i));
                let response = client
                    .post(url)
                    .timeout(Duration::from_secs(5))
                    .body(format!("wave{wave}-msg{i}"))
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let _ = r.bytes().await;
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => panic!("publish: {}", r.status()),
                    Err(e) => panic!("publish: {e}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });

    let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let total = 4 * PER_TRANSPORT + POLLS;
    for i in 0..total {
        let kind = if i < 4 * PER_TRANSPORT { i % 4 } else { 4 };
        tasks.push(tokio::spawn(subscriber(
            kind,
            i,
            base.clone(),
            client.clone(),
            opened_tx.clone(),
            release_rx.clone(),
        )));
    }
    drop(opened_tx);
    let mut failures = Vec::new();
    let deadline = Instant::now() + OPEN_WAIT + Duration::from_secs(5);
    for _ in 0..total {
        match tokio::time::timeout_at(deadline, opened_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => failures.push(e),
            Ok(None) => {
                failures.push("a subscriber task ended without reporting".into());
                break;
            }
            Err(_) => {
                failures.push("timed out waiting for subscribers to open".into());
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "wave {wave}: {} subscribers failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    let (channels, subscribers, _) = counts(server).await;
    let peak = WavePeak {
        rss_kb: rss_kb(),
        fds: fd_count(),
        subscribers,
        channels,
    };

    // Stop publishing first, then drop every subscriber: nothing is written to the dropped
    // connections, so the server must notice the clients leaving by itself.
    stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), publisher)
        .await
        .expect("publisher did not stop within 10s")
        .expect("publisher task failed");
    release_tx.send_replace(true);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap_or_else(|_| panic!("wave {wave}: a subscriber task did not end"))
            .expect("subscriber task panicked");
    }
    drop(client);
    // Every subscriber of the wave is gone from the statistics within a bounded time.
    let released = Instant::now();
    loop {
        let (_, subscribers, text) = counts(server).await;
        if subscribers == 0 {
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(10),
            "wave {wave}: {subscribers} subscribers still counted 10s after every client left: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "wave {wave}: {total} clients, {} published; peak: {} subscribers, {} channels, rss {} kB, {} fds; subscribers back to 0 {:?} after release",
        published.load(Ordering::Relaxed),
        peak.subscribers,
        peak.channels,
        peak.rss_kb,
        peak.fds,
        released.elapsed()
    );
    peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_of_subscribers_leave_no_channels_fds_or_memory_behind() {
    let started = Instant::now();
    let server = TestServer::start(&config(
        "channel_inactivity_time = \"1s\"\nmessage_ttl = \"1s\"",
        &locations(),
    ))
    .await;
    let (channels, subscribers, text) = counts(&server).await;
    assert_eq!((channels, subscribers), (0, 0), "{text}");
    let baseline_rss = rss_kb();
    let baseline_fds = fd_count();

    let mut peak_rss = baseline_rss;
    let mut peak_fds = baseline_fds;
    for wave in 1..=WAVES {
        let peak = run_wave(&server, wave).await;
        assert!(
            peak.subscribers >= (3 * PER_TRANSPORT) as u64,
            "wave {wave}: only {} subscribers at the peak",
            peak.subscribers
        );
        peak_rss = peak_rss.max(peak.rss_kb);
        peak_fds = peak_fds.max(peak.fds);
    }

    // Subscribers leave at once; channels go once their messages expire (1s) and they sat idle (1s).
    let deadline = Instant::now() + Duration::from_secs(20);
    let drained = loop {
        let (channels, subscribers, text) = counts(&server).await;
        if channels == 0 && subscribers == 0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "20s after the last wave: {channels} channels and {subscribers} subscribers remain: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let after_fds = loop {
        let fds = fd_count();
        if fds <= baseline_fds + 10 || Instant::now() >= deadline {
            break fds;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after_rss = rss_kb();
    eprintln!(
        "soak: {WAVES} waves in {:?}; RSS kB baseline {baseline_rss} / peak {peak_rss} / after {after_rss}; fds baseline {baseline_fds} / peak {peak_fds} / after {after_fds}; stats after: {drained}",
        started.elapsed()
    );
    assert!(
        after_fds <= baseline_fds + 10,
        "file descriptors did not return: baseline {baseline_fds}, peak {peak_fds}, after {after_fds}"
    );
    // No growth once the load has stopped (allocator slack allowed).
    assert!(
        after_rss <= peak_rss + peak_rss / 10,
        "RSS grew after the load stopped: baseline {baseline_rss} kB, peak {peak_rss} kB, after {after_rss} kB"
    );
    server.stop().await;
}
