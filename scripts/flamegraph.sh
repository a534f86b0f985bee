#!/usr/bin/env bash
# Flame graphs of a server under load, to see where its CPU goes next to the floor relay's
# (docs/BENCHMARKS.md, "Where the time goes"). The server runs on core 0 and
# `switchboard-bench` on core 1, as in scripts/bench.sh; `perf record` samples the server's
# stacks, user space and kernel, for a few seconds in the middle of the run, and inferno
# draws them. Needs `perf` (linux-perf) and inferno (`cargo install inferno`).
#
# Usage: [FLOOR=<floor binary>] scripts/flamegraph.sh [join] [offer] [cross]
#   join   token + connect + join + close, concurrency 64 (join-storm)
#   offer  100 pairs relaying 2 KB offers, closed loop (relay)
#   cross  three nodes and Redis on core 0, 5,000 messages/s: same-node, then cross-node
#          (the whole core is sampled, Redis and the kernel included)
# join and offer run against the floor too when FLOOR is set. SVGs go to $OUT (default
# target/flame), named <scenario>-<server>.svg.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/flame}
SECONDS_SAMPLED=${SECONDS_SAMPLED:-4}
SECRET=bench-only-secret-not-for-production-0123456789
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
for tool in perf taskset inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || {
    echo "flamegraph.sh: $tool is missing (perf: apt-get install linux-perf; inferno: cargo install inferno)" >&2
    exit 1
  }
done
if [ -n "${FLOOR:-}" ] && [ ! -x "$FLOOR" ]; then
  echo "flamegraph.sh: FLOOR=$FLOOR is not an executable file; build the floor relay (its README says how) and pass its binary" >&2
  exit 1
fi
cargo build --release --locked --workspace
BIN=target/release/switchboard
BENCH_BIN=target/release/switchboard-bench
export AUTH_SECRET=$SECRET ALLOW_OPEN_ISSUANCE=true LOG_LEVEL=warn \
  MESSAGE_RATE=10000000 MESSAGE_BURST=10000000 MAX_CONNECTIONS=100000 \
  MAX_CONNECTIONS_PER_IP=100000 RATE_PER_IP_PER_MINUTE=100000000 SHED_CPU_PERCENT=0 \
  SHED_MEMORY_PERCENT=0

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start PORT COMMAND...: COMMAND on core 0, listening on PORT; sets $pid.
start() {
  local port=$1; shift
  taskset -c 0 "$@" >"$OUT/server-$port.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "flamegraph.sh: the server on port $port did not start; see $OUT/server-$port.log" >&2
  exit 1
}

# draw NAME TITLE PERF-TARGET BENCH-ARGS...: runs the generator on core 1, samples
# PERF-TARGET (`-p PID` or `-C 0`) after a second of it, and draws $OUT/NAME.svg.
draw() {
  local name=$1 title=$2 target=$3; shift 3
  taskset -c 1 "$BENCH_BIN" "$@" >"$OUT/$name.txt" 2>&1 &
  local bench=$!
  sleep 1
  # DWARF unwinding: release builds keep no frame pointers.
  # shellcheck disable=SC2086
  perf record -F 499 -g --call-graph dwarf,65528 $target -o "$OUT/$name.data" \
    -- sleep "$SECONDS_SAMPLED" >/dev/null 2>&1
  wait "$bench"
  perf script -i "$OUT/$name.data" 2>/dev/null | inferno-collapse-perf >"$OUT/$name.folded"
  inferno-flamegraph --title "$title" --minwidth 0.5 <"$OUT/$name.folded" >"$OUT/$name.svg"
  rm -f "$OUT/$name.data"
  echo "$OUT/$name.svg (the generator's report: $OUT/$name.txt)"
}

# single SERVER-NAME COMMAND...: the single-node scenarios against COMMAND on port 9100.
single() {
  local who=$1; shift
  local url=ws://127.0.0.1:9100
  if has join; then
    start 9100 "$@"
    draw "join-$who" "$who: join storm (token, connect, join, close), concurrency 64" "-p $pid" \
      --url $url join-storm --joins $(((SECONDS_SAMPLED + 3) * 15000)) --concurrency 64
    kill "$pid"; wait "$pid" 2>/dev/null || true
  fi
  if has offer; then
    start 9100 "$@"
    draw "offer-$who" "$who: 2 KB offers relayed, 100 pairs, closed loop" "-p $pid" \
      --url $url --secret $SECRET relay --pairs 100 --duration $((SECONDS_SAMPLED + 3))s
    kill "$pid"; wait "$pid" 2>/dev/null || true
  fi
}

scenarios=("$@")
has() { [ ${#scenarios[@]} -eq 0 ] || [[ " ${scenarios[*]} " == *" $1 "* ]]; }

if has join || has offer; then
  single switchboard env "$BIN" serve --bind 127.0.0.1 --port 9100
  if [ -n "${FLOOR:-}" ]; then
    single floor "$FLOOR" --addr 127.0.0.1:9100
  fi
fi

if has cross; then
  command -v redis-server >/dev/null || { echo "flamegraph.sh: redis-server is missing" >&2; exit 1; }
  taskset -c 0 redis-server --port 9199 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
  pids+=("$!")
  sleep 0.5
  urls=()
  for port in 9101 9102 9103; do
    start $port env REDIS_URL=redis://127.0.0.1:9199 "$BIN" serve --bind 127.0.0.1 --port $port
    urls+=(--url ws://127.0.0.1:$port)
  done
  duration=$((SECONDS_SAMPLED + 3))s
  draw cross-same "core 0: three nodes and Redis, 5,000 same-node messages/s" "-C 0" \
    "${urls[@]}" --secret $SECRET relay --pairs 100 --rate 5000 --duration $duration
  draw cross-node "core 0: three nodes and Redis, 5,000 cross-node messages/s" "-C 0" \
    "${urls[@]}" --secret $SECRET multi-node --pairs 100 --rate 5000 --duration $duration
fi
