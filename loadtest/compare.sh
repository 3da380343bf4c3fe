#!/usr/bin/env bash
# Side-by-side benchmark of Herald and nginx + nchan with the loadtest tool.
#
#   loadtest/compare.sh [--quick] [--reps N] [--only REGEX]
#
# Installs nginx and libnginx-mod-nchan from Debian when missing, builds Herald and loadtest
# (release), writes equivalent configs (same URL shapes, 20 stored messages per channel, pings every
# 10 s), and runs every scenario against both servers alternately, REPS times (default 3), each run
# on a freshly started server pinned to CPU $SERVER_CPU (nginx: worker_processes 1; Herald: one
# runtime worker thread) with the load on CPU $LOAD_CPU. Prints a markdown table of medians with
# the Herald/nchan ratio per figure; the JSON reports and the table go to
# loadtest/results/<UTC time>-<quick|full>/.
#
# Environment: HERALD_BIN / LOADTEST_BIN (use these binaries instead of building; HERALD_REV names
# the revision HERALD_BIN was built from, for the notes), SERVER_CPU (0),
# LOAD_CPU (1), HERALD_PORT (18080), NCHAN_PORT (18081), RESULTS (loadtest/results).
# Everything it starts (nginx, Herald) is stopped on exit, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
REPS=3
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --reps) REPS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
HERALD_PORT=${HERALD_PORT:-18080}
NCHAN_PORT=${NCHAN_PORT:-18081}
RESULTS=${RESULTS:-$ROOT/loadtest/results}
MODE=$([ "$QUICK" = 1 ] && echo quick || echo full)
OUT="$RESULTS/$(date -u +%Y%m%dT%H%M%SZ)-$MODE"
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

# --- dependencies -------------------------------------------------------------------------------
if ! command -v nginx >/dev/null 2>&1 || [ ! -f "$NCHAN_MODULE" ]; then
  echo "== installing nginx and libnginx-mod-nchan"
  # Keep the package scripts from starting a system nginx on port 80: a policy-rc.d that refuses
  # service starts, only when the machine has none (an existing one is left alone).
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
command -v taskset >/dev/null 2>&1 || { echo "taskset (util-linux) is missing" >&2; exit 1; }

HERALD_REV=${HERALD_REV:-}
if [ -z "${HERALD_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
  [ -n "${HERALD_BIN:-}" ] || HERALD_REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo '+local changes')
  echo "== cargo build --release -p herald -p loadtest"
  cargo build --release --locked -p herald -p loadtest
  TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  HERALD_BIN=${HERALD_BIN:-$TARGET_DIR/release/herald}
  LOADTEST_BIN=${LOADTEST_BIN:-$TARGET_DIR/release/loadtest}
fi

# --- configs ------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/herald-compare.XXXXXX)
mkdir -p "$WORK/nginx/logs" "$OUT"
SERVER_PID=""

cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$WORK/herald.toml" <<EOF
[server]
listen = "127.0.0.1:$HERALD_PORT"
shutdown_timeout = "2s"

[channels]
message_ttl = "30m"
max_messages_stored_per_channel = 20
shared_memory_size = "256m"

[[location]]
path = "/pub"
match = "exact"
role = "publisher"
admin = true
channels_path = "\$arg_id"

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
path = "/lp/"
role = "subscriber"
mode = "long-polling"
longpolling_connection_ttl = "30s"

[[location]]
path = "/ws/"
role = "subscriber"
mode = "websocket"
ping_message_interval = "10s"

[[location]]
path = "/channels-stats"
match = "exact"
role = "stats"
channels_path = "\$arg_id"
EOF

cat > "$WORK/nginx.conf" <<EOF
load_module $NCHAN_MODULE;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events {
  worker_connections 20000;
  multi_accept on;
}
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_max_body_size 1m;
  nchan_shared_memory_size 256m;
  server {
    listen 127.0.0.1:$NCHAN_PORT;
    nchan_message_buffer_length 20;
    nchan_message_timeout 30m;
    nchan_subscriber_first_message newest;
    nchan_eventsource_ping_interval 10;
    nchan_websocket_ping_interval 10;
    location = /pub {
      nchan_publisher;
      nchan_channel_id \$arg_id;
    }
    location ~ ^/sub/(.+)\$ {
      nchan_subscriber http-raw-stream;
      nchan_channel_id \$1;
    }
    location ~ ^/ev/(.+)\$ {
      nchan_subscriber eventsource;
      nchan_channel_id \$1;
    }
    location ~ ^/lp/(.+)\$ {
      nchan_subscriber longpoll;
      nchan_channel_id \$1;
      nchan_subscriber_timeout 30s;
    }
    location ~ ^/ws/(.+)\$ {
      nchan_subscriber websocket;
      nchan_channel_id \$1;
    }
    location = /nchan_status {
      nchan_stub_status;
    }
  }
}
EOF
if ! nginx -t -q -p "$WORK/nginx" -c "$WORK/nginx.conf"; then
  echo "the generated nginx.conf is invalid" >&2
  exit 1
fi

# --- servers ------------------------------------------------------------------------------------
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

# Sets SERVER_PID (the process we signal), PIDS (--pid options) and BASE/WSBASE/STATS URLs.
start_server() {
  case "$1" in
    herald)
      TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c "$SERVER_CPU" "$HERALD_BIN" \
        --config "$WORK/herald.toml" >>"$WORK/herald.log" 2>&1 &
      SERVER_PID=$!
      wait_port "$HERALD_PORT"
      PIDS="--pid $SERVER_PID"
      BASE="http://127.0.0.1:$HERALD_PORT"
      WSBASE="ws://127.0.0.1:$HERALD_PORT"
      STATS="$BASE/channels-stats"
      ;;
    nchan)
      taskset -c "$SERVER_CPU" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf" -g 'daemon off;' &
      SERVER_PID=$!
      wait_port "$NCHAN_PORT"
      PIDS="--pid $SERVER_PID"
      workers=""
      for _ in $(seq 50); do
        workers=$(pgrep -P "$SERVER_PID" || true)
        [ -n "$workers" ] && break
        sleep 0.1
      done
      for worker in $workers; do PIDS="$PIDS --pid $worker"; done
      BASE="http://127.0.0.1:$NCHAN_PORT"
      WSBASE="ws://127.0.0.1:$NCHAN_PORT"
      STATS="$BASE/nchan_status"
      ;;
  esac
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# --- scenarios ----------------------------------------------------------------------------------
# label | loadtest arguments (@B@ = http://host:port, @W@ = ws://host:port). The fixed-rate
# scenarios use 8 publisher connections so that a server whose publish answers only after the
# fan-out (nchan) still gets the offered rate instead of slowing the publisher down.
if [ "$QUICK" = 1 ]; then
  SCENARIOS=(
    "idle-sse-2k|idle -n 2000 -c 100 --hold 3 --sub @B@/ev/{ch}"
    "fanout-sse-2k|fanout -n 2000 -c 1 -m 50 -s 128 --sub @B@/ev/{ch}"
    "fanout-stream-100ch-x10|fanout -n 1000 -c 100 -m 20 -s 128 --pub-conns 4 --sub streaming=@B@/sub/{ch}"
    "publish-0sub|publish -c 100 --requests 10000 --conns 8 -s 128"
    "fanout-ws-2k|fanout -n 2000 -c 1 -m 50 -s 128 --sub @W@/ws/{ch}"
    "latency-sse-2k-50mps|fanout -n 2000 -c 1 -m 100 --rate 50 --pub-conns 8 -s 128 --sub @B@/ev/{ch}"
  )
else
  SCENARIOS=(
    "idle-sse-15k|idle -n 15000 -c 100 --hold 10 --sub @B@/ev/{ch}"
    "fanout-sse-10k|fanout -n 10000 -c 1 -m 200 -s 128 --sub @B@/ev/{ch}"
    "fanout-stream-1000ch-x10|fanout -n 10000 -c 1000 -m 50 -s 128 --pub-conns 4 --sub streaming=@B@/sub/{ch}"
    "publish-0sub|publish -c 100 --requests 50000 --conns 8 -s 128"
    "fanout-ws-10k|fanout -n 10000 -c 1 -m 200 -s 128 --sub @W@/ws/{ch}"
    "latency-sse-10k-50mps|fanout -n 10000 -c 1 -m 250 --rate 50 --pub-conns 8 -s 128 --sub @B@/ev/{ch}"
  )
fi

{
  echo "# $MODE comparison, $(date -u '+%Y-%m-%d %H:%M UTC'), $REPS runs each"
  echo "herald: $HERALD_BIN (revision: ${HERALD_REV:-unknown, prebuilt HERALD_BIN; set HERALD_REV})"
  echo "nginx: $(nginx -v 2>&1), nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
  echo "server on CPU $SERVER_CPU, load on CPU $LOAD_CPU; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/README.txt"
cat "$OUT/README.txt"

for rep in $(seq "$REPS"); do
  # Alternate which server goes first in each repetition.
  if [ $((rep % 2)) = 1 ]; then ORDER="herald nchan"; else ORDER="nchan herald"; fi
  for entry in "${SCENARIOS[@]}"; do
    label=${entry%%|*}
    args=${entry#*|}
    if [ -n "$ONLY" ] && ! [[ "$label" =~ $ONLY ]]; then continue; fi
    for server in $ORDER; do
      start_server "$server"
      run_args=${args//@B@/$BASE}
      run_args=${run_args//@W@/$WSBASE}
      echo "== run $rep/$REPS $label against $server"
      # shellcheck disable=SC2086 # word splitting of the argument list is intended
      if ! taskset -c "$LOAD_CPU" "$LOADTEST_BIN" $run_args --pub "$BASE/pub?id={ch}" $PIDS \
        --stats "$STATS" --label "$label" --server "$server" --no-progress \
        --out "$OUT/${label}__${server}__${rep}.json" >"$WORK/last.txt" 2>&1; then
        echo "   FAILED:"; sed 's/^/   /' "$WORK/last.txt"
      else
        grep -E '^  (connected|deliveries_per_s|deliveries_per_server_cpu_s|requests_per_s|rss_per_sub_bytes|pss_per_sub_bytes|latency_p99_ms|lost|duplicated) ' "$WORK/last.txt" | tr -s ' ' | paste -sd ';' | sed 's/^/  /'
      fi
      stop_server
      sleep 1
    done
  done
done

"$LOADTEST_BIN" summarize "$OUT" --subject herald --baseline nchan | tee "$OUT/table.md"
echo "results: $OUT"
