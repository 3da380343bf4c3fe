//! The deployment files: the systemd unit (`deploy/herald.service`) passes `systemd-analyze verify`
//! without a warning, and the container's config (`config/container.toml`, what the `Dockerfile`
//! runs) starts on every address, keeps the publisher, statistics and metrics to private networks,
//! and answers the Dockerfile's own HEALTHCHECK command. (Building the image needs a Docker engine,
//! which the test machines do not run: README "Running in production" gives the manual check.)

mod common;

use common::process::{run, HeraldProcess};
use reqwest::StatusCode;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_herald");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_systemd_unit_verifies_clean() {
    let unit = std::fs::read_to_string(Path::new(ROOT).join("deploy/herald.service"))
        .expect("read deploy/herald.service");
    for needed in [
        "ExecReload=/usr/local/bin/herald reload $MAINPID",
        "LimitNOFILE=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(needed), "{needed} missing from the unit");
    }
    // verify checks that the commands exist: point them at this build's binary.
    let dir = std::env::temp_dir().join(format!("herald-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("herald.service");
    std::fs::write(&file, unit.replace("/usr/local/bin/herald", BIN)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .expect("run systemd-analyze (package systemd; scripts/test.sh installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(said.trim().is_empty(), "warnings: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_config_serves_everyone_but_publishes_for_private_networks_only() {
    let config = Path::new(ROOT).join("config/container.toml");
    let config = config.to_str().expect("utf-8 path");
    let out = run(&["check-config", config]).await;
    assert!(out.status.success(), "{}", out.stderr);
    let dockerfile =
        std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("read Dockerfile");
    assert!(dockerfile.contains("COPY config/container.toml /etc/herald/herald.toml"));
    assert!(dockerfile.contains("USER herald"));
    // Listens beyond loopback (as in a container) without the open-admin refusal.
    let mut herald = HeraldProcess::start(&["--config", config, "--listen", "0.0.0.0:0"]).await;
    let port = herald.addr.port();
    // The Dockerfile's HEALTHCHECK command, against this server.
    let health = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("CMD curl"))
        .expect("HEALTHCHECK CMD curl line")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("curl{health}"))
        .status()
        .expect("run the health check");
    assert!(status.success(), "health check failed: curl{health}");
    // Loopback is a private address: the publisher answers it; other addresses are refused (403)
    // as the unit tests of allow_addresses show.
    let (status, _, body) = herald.post("/pub?id=news", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = herald.get("/channels-stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(herald.terminate().await.success());
}
