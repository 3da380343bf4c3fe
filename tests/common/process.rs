//! The real `herald` binary as a child process: run to completion (`run`), or serving
//! (`HeraldProcess`: its stderr lines collected, its address from the "listening on" line, signals,
//! bounded exit, an optional open-file limit, its resident memory). Temporary config files (`TempFile`). Every child is killed (only by its own handle)
//! when its guard drops; a failing test prints the tail of the child's stderr.

#![allow(dead_code)]

use super::http::Http;
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// A file in the test temp directory (a unique name ending in `name`), removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "herald-test-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    /// Replaces the file's text.
    pub fn write(&self, text: &str) {
        std::fs::write(&self.0, text).expect("rewrite temp file");
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `herald ARGS` with plain info-level logs on stderr and nothing on stdin.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// What a finished run printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary to completion (bounded by 20 s).
pub async fn run(args: &[&str]) -> Output {
    let child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} did not exit within 20s"))
        .expect("wait for herald");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running `herald` server process. Derefs to an `Http` client of its address. Killed (SIGKILL,
/// by its own handle) on drop if still running.
pub struct HeraldProcess {
    pub child: Child,
    pub pid: i32,
    pub http: Http,
    log: Arc<Mutex<Vec<String>>>,
}

impl HeraldProcess {
    /// Starts `herald ARGS` and waits (bounded) for its "listening on http://ADDR" line.
    pub async fn start(args: &[&str]) -> HeraldProcess {
        HeraldProcess::start_command(command(args)).await
    }

    /// `start` with the soft and hard open-file limits (`RLIMIT_NOFILE`) of the child set to `limit`.
    pub async fn start_with_open_file_limit(args: &[&str], limit: u64) -> HeraldProcess {
        let mut command = command(args);
        // SAFETY: the hook only calls setrlimit(2), which is async-signal-safe, on a struct it owns.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        HeraldProcess::start_command(command).await
    }

    async fn start_command(mut command: Command) -> HeraldProcess {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let pid = child.id().expect("pid") as i32;
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn({
            let log = log.clone();
            async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    log.lock().unwrap().push(line);
                }
            }
        });
        let mut herald = HeraldProcess {
            child,
            pid,
            http: Http::new("127.0.0.1:1".parse().unwrap()),
            log,
        };
        let line = herald
            .wait_for_log("listening on http://", 0, Duration::from_secs(15))
            .await;
        let at = line.find("http://").unwrap() + "http://".len();
        let addr: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("cannot parse the address in {line:?}: {e}"));
        herald.http = Http::new(addr);
        herald
    }

    /// The process's resident set size in kB.
    pub fn rss_kb(&self) -> u64 {
        super::status_kb(&self.pid.to_string(), "VmRSS")
    }

    /// The process's peak resident set size so far in kB (`VmHWM`).
    pub fn peak_rss_kb(&self) -> u64 {
        super::status_kb(&self.pid.to_string(), "VmHWM")
    }

    /// How many stderr lines arrived so far.
    pub fn log_len(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    /// Every stderr line so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The stderr lines from line `since` on.
    pub fn log_text_since(&self, since: usize) -> String {
        let log = self.log.lock().unwrap();
        log.get(since..).unwrap_or_default().join("\n")
    }

    fn find_log(&self, needle: &str, since: usize) -> Option<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .skip(since)
            .find(|l| l.contains(needle))
            .cloned()
    }

    /// Waits (bounded by `limit`) for a stderr line at index >= `since` containing `needle`.
    pub async fn wait_for_log(&mut self, needle: &str, since: usize, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.find_log(needle, since) {
                return line;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to collect the last lines, then look once more.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Some(line) = self.find_log(needle, since) {
                    return line;
                }
                panic!(
                    "herald exited ({status:?}) before logging {needle:?}; stderr:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {needle:?} in herald's stderr within {limit:?}; stderr:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory effects.
        let sent = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(
            sent,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Waits at most `limit` for the process to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for herald"))
    }

    /// Sends SIGTERM and waits (bounded by 5 s) for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("herald did not exit within 5s of SIGTERM"))
    }
}

impl Deref for HeraldProcess {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        // Only our own child, by its handle; a no-op once it has exited.
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "---- herald (pid {}) stderr, last {} lines ----\n{}\n---- end ----",
                self.pid,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}
