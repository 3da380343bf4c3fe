#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs the formatting check, clippy and
# every test. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# The Redis engine's tests start their own redis-server processes (Debian's package).
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# tests/deploy.rs verifies the systemd unit with systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

echo "== rust-version is the locked dependencies' minimum"
python3 scripts/check-msrv.py
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets --locked
# Doc tests run separately (--all-targets skips them).
cargo test --workspace --doc --locked
echo "== fuzz: a short run of every cargo-fuzz target (fuzz/README.md has the long runs)"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash fuzz/run-short.sh
echo "== browser tests (herald.js, demo page, dashboard in headless Chromium)"
bash browser-tests/run.sh
