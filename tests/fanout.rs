//! Fan-out: 1000 concurrent streaming subscribers, each on its own TCP connection, all receive 100
//! messages in order with nothing missing or duplicated.

mod common;

use common::{config, streaming_location, TestServer};
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 1000;
const MESSAGES: u64 = 100;

/// Reads one subscriber's body until message `MESSAGES` arrives; checks ids 1..=MESSAGES in order.
async fn receive_all(index: usize, response: reqwest::Response) -> Result<(), String> {
    let mut stream = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut next_id = 1u64;
    while next_id <= MESSAGES {
        let chunk = match stream.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(format!("subscriber {index}: body error {e}")),
            None => {
                return Err(format!(
                    "subscriber {index}: body ended after id {}",
                    next_id - 1
                ))
            }
        };
        pending.extend_from_slice(&chunk);
        while let Some(newline) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let expected = format!("{next_id}:m{next_id}");
            if line != expected {
                return Err(format!(
                    "subscriber {index}: expected {expected:?}, got {line:?}"
                ));
            }
            next_id += 1;
        }
    }
    if !pending.is_empty() {
        return Err(format!(
            "subscriber {index}: unexpected bytes after the last message: {:?}",
            String::from_utf8_lossy(&pending)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_receive_every_message_in_order() {
    let server = TestServer::start(&config(
        "",
        &streaming_location("/sub/", "~id~:~text~\n", ""),
    ))
    .await;
    let url = server.url("/sub/fan");

    // Open every subscriber concurrently: the pooled client gives each in-flight request its own
    // connection. Response heads are awaited in the tasks, bounded.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::with_capacity(SUBSCRIBERS);
    for index in 0..SUBSCRIBERS {
        let client = server.client.clone();
        let url = url.clone();
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let response = tokio::time::timeout(Duration::from_secs(30), client.get(&url).send())
                .await
                .map_err(|_| format!("subscriber {index}: no response head within 30s"))?
                .map_err(|e| format!("subscriber {index}: {e}"))?;
            if response.status() != StatusCode::OK {
                return Err(format!("subscriber {index}: status {}", response.status()));
            }
            let _ = ready_tx.send(());
            receive_all(index, response).await
        }));
    }
    drop(ready_tx);
    let mut heads = 0;
    while heads < SUBSCRIBERS {
        match tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
            Ok(Some(())) => heads += 1,
            Ok(None) => break,
            Err(_) => panic!("only {heads} of {SUBSCRIBERS} subscribers connected within 60s"),
        }
    }
    assert_eq!(heads, SUBSCRIBERS, "some subscribers failed to connect");
    server.wait_for_subscribers("fan", SUBSCRIBERS as u64).await;
    let summary = server.stats("").await;
    assert_eq!(summary["subscribers"], SUBSCRIBERS as u64, "{summary}");

    let started = Instant::now();
    for i in 1..=MESSAGES {
        let (status, _, body) = server.publish("fan", &format!("m{i}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "publish {i}: {body}");
    }
    let published = started.elapsed();
    let results = tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(tasks),
    )
    .await
    .expect("subscribers did not all finish within 60s of publishing");
    let elapsed = started.elapsed();
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(format!("task failed: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {SUBSCRIBERS} subscribers failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "fanout: {SUBSCRIBERS} subscribers x {MESSAGES} messages: published in {published:?}, \
         all received {elapsed:?} after the first publish"
    );
    let info = server.channel_info("fan").await.expect("channel");
    assert_eq!(info["published_messages"], MESSAGES);
    server.stop().await;
}
