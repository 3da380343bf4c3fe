#!/usr/bin/env bash
# Short fuzzing run of every cargo-fuzz target (for CI): installs cargo-fuzz when it is missing, builds
# the targets once, then runs each for FUZZ_SECONDS (default 20) from the committed seeds in corpus/.
# New inputs go to a temporary directory, so the committed corpus does not change. Exits non-zero when
# any target crashes (the crashing input is kept under fuzz/artifacts/<target>/).
#
#   bash fuzz/run-short.sh                      # every target, 20 s each
#   FUZZ_SECONDS=300 bash fuzz/run-short.sh     # longer
#   bash fuzz/run-short.sh template http_request
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
# cargo fuzz passes nightly-only flags (-Zsanitizer=address); this lets a stable toolchain take them.
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== cargo fuzz build (${targets[*]})"
cargo fuzz build

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  args=(-max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1)
  case "$target" in
    http_request | recovery_headers) args+=(-dict=dict/http.dict) ;;
    nginx_import) args+=(-dict=dict/nginx.dict) ;;
  esac
  echo "== fuzz $target for ${seconds}s"
  if ! cargo fuzz run "$target" "$work/$target" "corpus/$target" -- "${args[@]}"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "== fuzzing found crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  exit 1
fi
echo "== fuzzing: no crash in ${#targets[@]} targets (${seconds}s each)"
