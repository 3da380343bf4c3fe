#!/usr/bin/env bash
# Multi-node fan-out: 1, 2 and 4 local Herald nodes sharing channels through 2 Redis shards.
#
#   loadtest/nodes.sh [--reps N] [--nodes "1 2 4"] [--subs N] [--messages M] [--size B]
#                     [--engine redis|memory] [--pub-to first|all]
#
# Builds Herald and loadtest (release), starts 2 redis-server processes (no persistence) on free
# loopback ports, then REPS times (default 3) for each node count: starts that many Herald nodes
# with [engine] kind = "redis", both shard URLs and a key_prefix of their own, runs
#   loadtest fanout -n SUBS -c 1 -m MESSAGES --nodes … --sub /ev/{ch} --pub /pub?id={ch}
# (SSE subscribers spread round-robin over the nodes, the publisher on the first node), and stops
# the nodes. Prints the medians per node count (deliveries/s in all and per node, CPU seconds of
# the Herald nodes and of Redis, p99 latency, lost, duplicated) and writes them to
# loadtest/results/nodes-<UTC time>.txt, the JSON reports to loadtest/results/nodes-<UTC time>/.
#
# --engine memory: nodes with separate memory engines and no Redis, to test the tool; there
# --pub-to defaults to all (every message is POSTed to every node; with first, only the first
# node's subscribers get anything).
#
# Environment: HERALD_BIN / LOADTEST_BIN (prebuilt binaries instead of building; HERALD_REV names
# the revision HERALD_BIN was built from), NODE_THREADS
# (runtime threads per node, default 1), BASE_PORT (first port tried, default 18300),
# PER_SOURCE (subscribers per loopback source address, default 500: 127.0.0.1, .2, .3 …),
# NODE_CPUS (e.g. "1 2 3 4": node k runs under taskset -c on entry k % count; default: no
# pinning), LOAD_CPU (taskset -c for the tool; default: none), RESULTS (default
# loadtest/results). Everything it starts is stopped on exit, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

REPS=3
COUNTS="1 2 4"
SUBS=2000
MESSAGES=300
SIZE=128
ENGINE=redis
PUB_TO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS="$2"; shift ;;
    --nodes) COUNTS="$2"; shift ;;
    --subs) SUBS="$2"; shift ;;
    --messages) MESSAGES="$2"; shift ;;
    --size) SIZE="$2"; shift ;;
    --engine) ENGINE="$2"; shift ;;
    --pub-to) PUB_TO="$2"; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
case "$ENGINE" in redis|memory) ;; *) echo "--engine redis or memory" >&2; exit 2 ;; esac
[ -n "$PUB_TO" ] || PUB_TO=$([ "$ENGINE" = memory ] && echo all || echo first)
case "$PUB_TO" in first|all) ;; *) echo "--pub-to first or all" >&2; exit 2 ;; esac
for c in $COUNTS; do
  [[ "$c" =~ ^[1-9][0-9]?$ ]] || { echo "--nodes: node counts 1..99, got $c" >&2; exit 2; }
done
# Each run must stay well under the 20,000 open files of one process (the tool holds every
# subscriber itself below that, one socket each).
[ "$SUBS" -le 15000 ] || { echo "--subs: at most 15000" >&2; exit 2; }

NODE_THREADS=${NODE_THREADS:-1}
read -r -a NODE_CPU_LIST <<< "${NODE_CPUS:-}"
LOAD_CPU=${LOAD_CPU:-}
if [ ${#NODE_CPU_LIST[@]} -gt 0 ] || [ -n "$LOAD_CPU" ]; then
  command -v taskset >/dev/null 2>&1 || { echo "taskset (util-linux) is missing" >&2; exit 1; }
fi
BASE_PORT=${BASE_PORT:-18300}
PER_SOURCE=${PER_SOURCE:-500}
RESULTS=${RESULTS:-$ROOT/loadtest/results}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT="$RESULTS/nodes-$STAMP"
TABLE="$RESULTS/nodes-$STAMP.txt"

command -v curl >/dev/null 2>&1 || { echo "curl is missing" >&2; exit 1; }
if [ "$ENGINE" = redis ] && ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (Debian)"
  apt-get update -qq
  # The package's service is not started in containers without systemd; the nodes use their own.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server
fi

HERALD_REV=${HERALD_REV:-}
if [ -z "${HERALD_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  [ -n "${HERALD_BIN:-}" ] || HERALD_REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+local changes')
  echo "== cargo build --release -p herald -p loadtest"
  cargo build --release -p herald -p loadtest
  TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  HERALD_BIN=${HERALD_BIN:-$TARGET_DIR/release/herald}
  LOADTEST_BIN=${LOADTEST_BIN:-$TARGET_DIR/release/loadtest}
fi
HERALD_REV=${HERALD_REV:-unknown (prebuilt HERALD_BIN; set HERALD_REV)}

WORK=$(mktemp -d /tmp/herald-nodes.XXXXXX)
mkdir -p "$OUT/logs"
REDIS_PIDS=()
REDIS_PORTS=()
NODE_PIDS=()

# Stops one process we started: TERM, up to 5 s, then KILL.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
  NODE_PIDS=()
}

cleanup() {
  stop_nodes
  local pid
  for pid in "${REDIS_PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A TCP port on 127.0.0.1 that nothing listens on (and that we have not handed out), from $1 up.
USED_PORTS=" "
free_port() {
  local p=$1
  while [ "$p" -lt 32000 ]; do
    if [[ "$USED_PORTS" != *" $p "* ]] && ! ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
    p=$((p + 1))
  done
  echo "no free port from $1" >&2
  return 1
}

# One Redis command over /dev/tcp (no redis-cli needed); prints the first line of the answer.
redis_cmd() {
  local port=$1; shift
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf '%s\r\n' "$*" >&3
    IFS= read -t 2 -r line <&3 || exit 1
    printf '%s\n' "${line%$'\r'}"
  ) 2>/dev/null
}

# Number of clients connected to a Redis (INFO clients, connected_clients).
redis_clients() {
  local port=$1
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'INFO clients\r\n' >&3
    while IFS= read -t 2 -r line <&3; do
      case "$line" in connected_clients:*) line=${line#connected_clients:}; echo "${line%$'\r'}"; exit 0 ;; esac
    done
    exit 1
  ) 2>/dev/null || echo 0
}

# --- Redis shards -------------------------------------------------------------------------------
if [ "$ENGINE" = redis ]; then
  port=$BASE_PORT
  for shard in 0 1; do
    port=$(free_port "$port")
    redis-server --port "$port" --save "" --appendonly no --bind 127.0.0.1 \
      --dir "$WORK" --logfile "$OUT/logs/redis-$shard.log" --daemonize no >/dev/null 2>&1 &
    REDIS_PIDS+=($!)
    REDIS_PORTS+=("$port")
    port=$((port + 1))
  done
  for i in 0 1; do
    ok=0
    for _ in $(seq 50); do
      if [ "$(redis_cmd "${REDIS_PORTS[$i]}" PING)" = "+PONG" ]; then ok=1; break; fi
      kill -0 "${REDIS_PIDS[$i]}" 2>/dev/null || break
      sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "redis-server on port ${REDIS_PORTS[$i]} did not start (see $OUT/logs/redis-$i.log)" >&2; exit 1; }
  done
  echo "== redis shards: 127.0.0.1:${REDIS_PORTS[0]} (pid ${REDIS_PIDS[0]}), 127.0.0.1:${REDIS_PORTS[1]} (pid ${REDIS_PIDS[1]})"
fi

# --- Herald nodes -------------------------------------------------------------------------------
# Writes node K's config for run $2 (a unique key prefix per run) and prints its path.
node_config() {
  local k=$1 run=$2 port=$3 file="$WORK/node-$1.toml"
  {
    cat <<EOF
[server]
listen = "127.0.0.1:$port"
shutdown_timeout = "2s"

[channels]
message_ttl = "30m"
max_messages_stored_per_channel = 20
EOF
    if [ "$ENGINE" = redis ]; then
      cat <<EOF

[engine]
kind = "redis"
redis_urls = ["redis://127.0.0.1:${REDIS_PORTS[0]}/0", "redis://127.0.0.1:${REDIS_PORTS[1]}/0"]
key_prefix = "ltnodes-$STAMP-$run"
node_name = "node-$k"
EOF
    fi
    cat <<'EOF'

[[location]]
path = "/pub"
match = "exact"
role = "publisher"
admin = true
channels_path = "$arg_id"

[[location]]
path = "/sub/"
role = "subscriber"
mode = "streaming"
message_template = "~text~\n"
ping_message_interval = "10s"

[[location]]
path = "/ev/"
role = "subscriber"
mode = "eventsource"
ping_message_interval = "10s"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
ping_message_interval = "10s"

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"
channels_path = "$arg_id"
EOF
  } > "$file"
  echo "$file"
}

# Starts N nodes for run $2; sets NODE_PIDS and NODE_URLS.
start_nodes() {
  local n=$1 run=$2 k port cfg pid
  NODE_PIDS=()
  NODE_URLS=()
  port=$((BASE_PORT + 10))
  for k in $(seq 0 $((n - 1))); do
    port=$(free_port "$port")
    cfg=$(node_config "$k" "$run" "$port")
    "$HERALD_BIN" check-config "$cfg" >/dev/null \
      || { echo "herald check-config $cfg failed" >&2; return 1; }
    local pin=()
    if [ ${#NODE_CPU_LIST[@]} -gt 0 ]; then
      pin=(taskset -c "${NODE_CPU_LIST[$((k % ${#NODE_CPU_LIST[@]}))]}")
    fi
    # taskset execs Herald, so $! is the node's own PID either way.
    TOKIO_WORKER_THREADS=$NODE_THREADS RUST_LOG=${RUST_LOG:-warn} "${pin[@]}" "$HERALD_BIN" --config "$cfg" \
      >"$OUT/logs/$run-node$k.log" 2>&1 &
    pid=$!
    NODE_PIDS+=("$pid")
    NODE_URLS+=("http://127.0.0.1:$port")
    port=$((port + 1))
  done
  for k in $(seq 0 $((n - 1))); do
    local ok=0
    for _ in $(seq 100); do
      if curl -sf -m 1 -o /dev/null "${NODE_URLS[$k]}/readyz"; then ok=1; break; fi
      kill -0 "${NODE_PIDS[$k]}" 2>/dev/null || break
      sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "node $k (${NODE_URLS[$k]}) not ready in 10 s, see $OUT/logs/$run-node$k.log" >&2; return 1; }
  done
}

# --- runs ---------------------------------------------------------------------------------------
WARNINGS=()
echo "== $REPS × nodes {$COUNTS}: $SUBS SSE subscribers on 1 channel, $MESSAGES messages of $SIZE B, engine $ENGINE, publish to $PUB_TO"
for rep in $(seq 1 "$REPS"); do
  for n in $COUNTS; do
    run="n$n-r$rep"
    if [ "$ENGINE" = redis ]; then
      for p in "${REDIS_PORTS[@]}"; do redis_cmd "$p" FLUSHALL >/dev/null || true; done
    fi
    start_nodes "$n" "$run"
    if [ "$ENGINE" = redis ]; then
      clients=0
      for p in "${REDIS_PORTS[@]}"; do clients=$((clients + $(redis_clients "$p"))); done
      # Our own INFO connection counts itself once per shard.
      if [ "$clients" -le 2 ]; then
        w="$run: no Herald node is connected to Redis (this herald build does not implement [engine] kind = \"redis\" yet?): the nodes ran separate memory engines"
        echo "   warning: $w"
        WARNINGS+=("$w")
      fi
    fi
    args=(fanout -n "$SUBS" -c 1 -m "$MESSAGES" -s "$SIZE"
      --nodes "$(IFS=,; echo "${NODE_URLS[*]}")" --sub '/ev/{ch}' --pub '/pub?id={ch}'
      --pub-to "$PUB_TO" --stats /channels-stats
      --per-source "$PER_SOURCE" --settle-ms 1500 --grace 5 --timeout 40
      --label "nodes-$n" --server herald --out "$OUT/$run.json" --json --no-progress)
    for pid in "${NODE_PIDS[@]}"; do args+=(--pid "$pid"); done
    for pid in "${REDIS_PIDS[@]}"; do args+=(--redis-pid "$pid"); done
    # Bounded twice: the tool's own --timeout and an outer kill after 58 s.
    load_pin=()
    [ -z "$LOAD_CPU" ] || load_pin=(taskset -c "$LOAD_CPU")
    if ! timeout -k 5 58 "${load_pin[@]}" "$LOADTEST_BIN" "${args[@]}" >"$WORK/report.json" 2>"$OUT/logs/$run-loadtest.err"; then
      w="$run: loadtest failed (see $OUT/logs/$run-loadtest.err)"
      echo "   warning: $w"
      WARNINGS+=("$w")
    fi
    stop_nodes
    if [ -s "$OUT/$run.json" ] && command -v jq >/dev/null 2>&1; then
      jq -r --arg run "$run" '.figures as $f | "   \($run): \($f.deliveries_per_s | floor) deliveries/s, per node [" +
        ([range(0; ($f.nodes // 1))] | map(($f["node\(.)_deliveries_per_s"] // 0) | floor | tostring) | join(", ")) +
        "], herald cpu \($f.server_cpu_s // null | if . == null then "-" else (. * 100 | round / 100) end) s, redis cpu \($f.redis_cpu_s // null | if . == null then "-" else (. * 100 | round / 100) end) s, lost \($f.lost), dup \($f.duplicated), \(.duration_s * 10 | floor / 10) s"' \
        "$OUT/$run.json"
      if [ "$n" -gt 1 ] && [ "$PUB_TO" = first ]; then
        missing=$(jq -r '.figures as $f | [range(1; $f.nodes)] | map(select(($f["node\(.)_deliveries"] // 0) == 0)) | length' "$OUT/$run.json")
        if [ "$missing" != 0 ]; then
          w="$run: $missing node(s) other than the publisher's received nothing: channels are not shared between nodes"
          echo "   warning: $w"
          WARNINGS+=("$w")
        fi
      fi
    fi
  done
done

# --- table --------------------------------------------------------------------------------------
{
  echo "Herald multi-node fan-out, $(date -u '+%Y-%m-%d %H:%M UTC') (loadtest/nodes.sh)"
  echo "herald $HERALD_REV; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  [ "$ENGINE" = redis ] && echo "$(redis-server --version | cut -d' ' -f1-3); 2 shards, --save \"\" --appendonly no"
  echo "engine $ENGINE; $SUBS SSE subscribers on 1 channel spread round-robin over the nodes; $MESSAGES messages of $SIZE B"
  echo "published to $([ "$PUB_TO" = first ] && echo "the first node" || echo "every node") as fast as it answers; $NODE_THREADS runtime thread(s) per node; medians of $REPS runs"
  echo "pinning: nodes ${NODE_CPUS:-not pinned}; tool ${LOAD_CPU:-not pinned}"
  echo "reports: $OUT"
  echo
  "$LOADTEST_BIN" summarize-nodes "$OUT"
  echo
  echo "Deliveries/s = distinct messages received / (last receive - first send); per node = that node's"
  echo "subscribers only. CPU s = utime+stime of the node processes / redis-servers from the first publish"
  echo "to the end of the run. Lost/Dup: median of the runs (max when a run was worse)."
  if [ ${#WARNINGS[@]} -gt 0 ]; then
    echo
    echo "Warnings:"
    for w in "${WARNINGS[@]}"; do echo "- $w"; done
  fi
} | tee "$TABLE"
echo "== written to $TABLE"
