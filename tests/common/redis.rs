//! Real `redis-server` processes for the Redis engine's tests: each on a free loopback port, with its
//! own data directory, stoppable and restartable on the same port (with or without its data), and
//! killed when dropped. Also the channel → shard rule Herald documents, for tests that pick channels
//! on a given shard.

#![allow(dead_code)]

use super::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's package puts the server.
pub const REDIS_SERVER: &str = "redis-server";

/// One redis-server process on 127.0.0.1.
pub struct RedisServer {
    /// Its TCP port.
    pub port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

/// The shard Herald puts `channel` on: FNV-1a 64 of the id's bytes, modulo the number of shards.
pub fn shard_of(channel: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

/// The first `count` channels named `{prefix}{n}` that live on `shard` of `shards`.
pub fn channels_on_shard(prefix: &str, shard: usize, shards: usize, count: usize) -> Vec<String> {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .filter(|c| shard_of(c, shards) == shard)
        .take(count)
        .collect()
}

impl RedisServer {
    /// Starts a server without persistence (a restart loses everything).
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// Starts a server that keeps its data across restarts (append-only file, fsync always).
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        Self::start_on_free_port("herald-redis", persistent, &[])
    }

    /// Starts a server on a port that was free a moment ago; when another process took the port
    /// first (the server exits), tries again on another one.
    fn start_on_free_port(kind: &str, persistent: bool, extra: &[&str]) -> RedisServer {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("{kind}-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {dir:?}: {e}"));
            let mut server = RedisServer {
                port,
                dir,
                persistent,
                child: None,
            };
            let mut args = server.persistence().to_vec();
            args.extend_from_slice(extra);
            match server.start_process(&args) {
                Ok(()) => return server,
                Err(problem) if attempt < ATTEMPTS => {
                    eprintln!("redis-server on port {port}: {problem}; trying another port");
                    let _ = std::fs::remove_dir_all(&server.dir);
                }
                Err(problem) => panic!("redis-server on port {port}: {problem}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the process again (after `stop`/`kill`) on the same port and data directory, and waits
    /// until it answers.
    pub fn restart(&mut self) {
        let persistence = self.persistence();
        self.start_process(persistence)
            .unwrap_or_else(|problem| panic!("redis-server on port {}: {problem}", self.port));
    }

    fn persistence(&self) -> &'static [&'static str] {
        if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        }
    }

    /// Spawns redis-server and waits until *this* process answers on the port (another test's
    /// server may hold it: then this one exits, and the answer names another process id).
    fn start_process(&mut self, extra: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is already running");
        let mut command = Command::new(REDIS_SERVER);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--protected-mode",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command.args(extra);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {REDIS_SERVER} (apt-get install redis-server): {e}")
        });
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited with {status} (port taken?)"));
            }
            if self.serving_pid() == Some(pid) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("did not answer within 10 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the server answering on the port now (`INFO server`), if one answers.
    fn serving_pid(&self) -> Option<u32> {
        self.cli(&["INFO", "server"])
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// Kills the process (SIGKILL: no save, clients see the connection drop) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command through `redis-cli` and returns its output (for checks from the outside).
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `masters` redis-server processes (no replicas) on free loopback ports, created
/// with `redis-cli --cluster create`; killed when dropped.
pub struct RedisCluster {
    /// The servers, in port order.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the servers in cluster mode and joins them into one cluster covering every slot.
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_on_free_port(
                    "herald-redis-cluster",
                    false,
                    &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cluster
            .nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not reach cluster_state:ok within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT` of every node (seed URLs).
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }
}
