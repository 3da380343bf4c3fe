//! Subscribers in this process or in worker processes.
//!
//! One process may hold only so many open files (20,000 here), so past `max_per_process`
//! subscribers the tool re-executes itself as `loadtest worker` processes, each running a slice of
//! the subscribers as a [`LocalGroup`]. The protocol is one JSON object per line:
//!
//! - parent → worker stdin: [`WorkerSpec`], later one [`WorkerCommand`];
//! - worker stdout → parent: [`WorkerMessage::Progress`] every 200 ms, then one
//!   [`WorkerMessage::Result`] (or `Error`).
//!
//! A worker exits when its stdin closes (the parent died) or when its own deadline passes, so none
//! outlives a run; the parent also kills them when dropped.

use crate::subscriber::{Counts, GroupPlan, GroupStats, LocalGroup};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The first line a worker reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Its slice of subscribers.
    pub plan: GroupPlan,
    /// It gives up and exits after this many seconds without a command.
    pub max_wait_s: u64,
}

/// What the parent tells a worker after the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerCommand {
    /// Messages per channel to wait for; `None` = close now.
    pub expected: Option<Vec<u64>>,
    /// How long to wait for missing messages, ms.
    pub grace_ms: u64,
}

/// What a worker prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// Live counters.
    Progress(Counts),
    /// Final statistics.
    Result(Box<GroupStats>),
    /// The worker could not run.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// A set of subscribers, here or in workers.
pub enum Group {
    /// In this process.
    Local(LocalGroup),
    /// In worker processes.
    Workers(Vec<Worker>),
}

/// A running worker process.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    count: u64,
    counts: Arc<Mutex<Counts>>,
    result: oneshot::Receiver<Result<GroupStats, String>>,
}

impl Group {
    /// Starts the subscribers of `plan`: here when `processes <= 1`, else in that many workers.
    /// `max_wait` bounds how long workers wait for their command.
    pub async fn start(
        plan: &GroupPlan,
        processes: u64,
        max_wait: Duration,
    ) -> Result<Group, String> {
        if processes <= 1 {
            return LocalGroup::start(plan).map(Group::Local);
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
        let mut workers = Vec::new();
        for slice in plan.split(processes) {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start a worker process: {e}"))?;
            let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err("worker process has no pipes".into());
            };
            let spec = WorkerSpec {
                plan: slice.clone(),
                max_wait_s: max_wait.as_secs().max(1),
            };
            let mut line = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .map_err(|e| format!("cannot talk to a worker: {e}"))?;
            let counts = Arc::new(Mutex::new(Counts::default()));
            let (result_tx, result) = oneshot::channel();
            tokio::spawn(read_worker(stdout, counts.clone(), result_tx));
            workers.push(Worker {
                child,
                stdin,
                count: slice.count,
                counts,
                result,
            });
        }
        Ok(Group::Workers(workers))
    }

    /// Subscribers planned.
    pub fn len(&self) -> u64 {
        match self {
            Group::Local(group) => group.len(),
            Group::Workers(workers) => workers.iter().map(|w| w.count).sum(),
        }
    }

    /// Live counters (workers report every 200 ms).
    pub fn counts(&self) -> Counts {
        match self {
            Group::Local(group) => group.counts(),
            Group::Workers(workers) => {
                let mut total = Counts::default();
                for worker in workers {
                    if let Ok(c) = worker.counts.lock() {
                        total.connected += c.connected;
                        total.failed += c.failed;
                        total.received += c.received;
                    }
                }
                total
            }
        }
    }

    /// Waits until every subscriber connected or failed, or `deadline`; `tick` runs every 50 ms
    /// (progress display).
    pub async fn wait_connected(&self, deadline: Instant, mut tick: impl FnMut(Counts)) -> Counts {
        loop {
            let counts = self.counts();
            tick(counts);
            if counts.connected + counts.failed >= self.len() || Instant::now() >= deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Finishes every subscriber (see [`LocalGroup::finish`]) and sums the results.
    pub async fn finish(self, expected: Option<Vec<u64>>, grace: Duration) -> GroupStats {
        match self {
            Group::Local(group) => group.finish(expected, grace).await,
            Group::Workers(workers) => {
                let command = WorkerCommand {
                    expected,
                    grace_ms: grace.as_millis() as u64,
                };
                let mut line = serde_json::to_vec(&command).unwrap_or_default();
                line.push(b'\n');
                let mut total = GroupStats::default();
                let mut pending = Vec::new();
                for mut worker in workers {
                    if let Err(err) = worker.stdin.write_all(&line).await {
                        *total
                            .errors
                            .entry(format!("worker unreachable: {}", err.kind()))
                            .or_default() += 1;
                    }
                    pending.push(worker);
                }
                let deadline = Instant::now() + grace + Duration::from_secs(30);
                for mut worker in pending {
                    match tokio::time::timeout_at(deadline, &mut worker.result).await {
                        Ok(Ok(Ok(stats))) => total.merge(&stats),
                        Ok(Ok(Err(err))) => {
                            total.subscribers += worker.count;
                            *total.errors.entry(format!("worker: {err}")).or_default() += 1;
                        }
                        Ok(Err(_)) | Err(_) => {
                            total.subscribers += worker.count;
                            *total
                                .errors
                                .entry("worker gave no result".into())
                                .or_default() += 1;
                        }
                    }
                    let _ = worker.child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
                }
                total
            }
        }
    }
}

async fn read_worker(
    stdout: tokio::process::ChildStdout,
    counts: Arc<Mutex<Counts>>,
    result: oneshot::Sender<Result<GroupStats, String>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut result = Some(result);
    // Bounded by the worker's life: it ends when the worker exits or is killed.
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<WorkerMessage>(&line) {
            Ok(WorkerMessage::Progress(c)) => {
                if let Ok(mut counts) = counts.lock() {
                    *counts = c;
                }
            }
            Ok(WorkerMessage::Result(stats)) => {
                if let Some(tx) = result.take() {
                    let _ = tx.send(Ok(*stats));
                }
            }
            Ok(WorkerMessage::Error { message }) => {
                if let Some(tx) = result.take() {
                    let _ = tx.send(Err(message));
                }
            }
            Err(err) => eprintln!("loadtest: unreadable worker line ({err}): {line}"),
        }
    }
    if let Some(tx) = result.take() {
        let _ = tx.send(Err("worker exited without a result".into()));
    }
}

fn emit(message: &WorkerMessage) {
    use std::io::Write;
    if let Ok(line) = serde_json::to_string(message) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The hidden `worker` subcommand: reads a [`WorkerSpec`], runs its subscribers, waits for the
/// command, prints the result.
pub async fn worker_main() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| "no spec on stdin".to_string())?
        .map_err(|e| format!("stdin: {e}"))?
        .ok_or("stdin closed before the spec")?;
    let spec: WorkerSpec =
        serde_json::from_str(&first).map_err(|e| format!("bad worker spec: {e}"))?;
    let group = match LocalGroup::start(&spec.plan) {
        Ok(group) => group,
        Err(message) => {
            emit(&WorkerMessage::Error {
                message: message.clone(),
            });
            return Err(message);
        }
    };
    let probe = group.probe();
    let command = {
        let wait = tokio::time::sleep(Duration::from_secs(spec.max_wait_s));
        tokio::pin!(wait);
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                line = lines.next_line() => break match line {
                    Ok(Some(line)) => serde_json::from_str::<WorkerCommand>(&line)
                        .map_err(|e| format!("bad worker command: {e}")),
                    _ => Err("parent went away".to_string()),
                },
                _ = ticker.tick() => emit(&WorkerMessage::Progress(probe.counts())),
                _ = &mut wait => break Err("no command in time".to_string()),
            }
        }
    };
    match command {
        Ok(command) => {
            let grace = Duration::from_millis(command.grace_ms);
            let finishing = group.finish(command.expected, grace);
            tokio::pin!(finishing);
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            let mut stats = loop {
                tokio::select! {
                    stats = &mut finishing => break stats,
                    _ = ticker.tick() => emit(&WorkerMessage::Progress(probe.counts())),
                }
            };
            stats.client_cpu_s = crate::procstat::own_cpu_seconds();
            emit(&WorkerMessage::Result(Box::new(stats)));
            Ok(())
        }
        Err(message) => {
            let _ = group.finish(None, Duration::ZERO).await;
            Err(message)
        }
    }
}
