#!/usr/bin/env bash
# Browser tests of herald.js, the demo page and the dashboard: installs Debian's Chromium if it is
# missing (never a downloaded browser), the npm packages of package-lock.json (playwright-core,
# typescript), builds Herald, then runs node's test runner against the real binary.
# Exits non-zero when a test fails. Screenshots: browser-tests/screenshots/ (not committed).
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== npm ci (browser-tests)"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

echo "== cargo build (herald)"
(cd .. && cargo build --locked --bin herald)
target_dir=$(cd .. && cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
export HERALD_BIN="$target_dir/debug/herald"

echo "== browser tests ($("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null | head -1), node $(node --version))"
echo "== screenshots of the demo page and the dashboard (desktop and narrow) go to $(pwd)/screenshots/"
rm -rf screenshots
flags=(--test --test-concurrency=1)
node --help | grep -q -- --test-timeout && flags+=(--test-timeout=120000)
# node's test summary is the last thing printed; its exit status is this script's.
exec node "${flags[@]}" tests/
