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
SERVER_CORE=0
NAME=flamegraph.sh
TOOLS="perf taskset inferno-collapse-perf inferno-flamegraph"
TOOLS_HINT="perf: apt-get install linux-perf; inferno: cargo install inferno"
# shellcheck source=scripts/bench-setup.sh
. scripts/bench-setup.sh

# draw NAME TITLE PERF-TARGET BENCH-ARGS...: runs the generator on core 1, samples
# PERF-TARGET (`-p PID` or `-C 0`) after a second of it, and draws $OUT/NAME.svg.
draw() {
  local name=$1 title=$2 target=$3; shift 3
  taskset -c 1 "$BENCH_BIN" "$@" >"$OUT/$name.txt" 2>&1 &
  local bench=$!
  sleep 1
  # DWARF unwinding: release builds keep no frame pointers.
  # shellcheck disable=SC2086
  if ! perf record -F 499 -g --call-graph dwarf,65528 $target -o "$OUT/$name.data" \
    -- sleep "$SECONDS_SAMPLED" >"$OUT/$name.perf.log" 2>&1; then
    kill "$bench" 2>/dev/null || true
    echo "flamegraph.sh: perf record failed (see $OUT/$name.perf.log; as a non-root user, kernel.perf_event_paranoid may need lowering)" >&2
    exit 1
  fi
  if ! wait "$bench"; then
    echo "flamegraph.sh: the generator failed during $name; see $OUT/$name.txt" >&2
    exit 1
  fi
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
    start_server 9100 "$@"
    draw "join-$who" "$who: join storm (token, connect, join, close), concurrency 64" "-p $pid" \
      --url $url join-storm --joins $(((SECONDS_SAMPLED + 3) * 15000)) --concurrency 64
    kill "$pid"; wait "$pid" 2>/dev/null || true
  fi
  if has offer; then
    start_server 9100 "$@"
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
    start_server $port env REDIS_URL=redis://127.0.0.1:9199 "$BIN" serve --bind 127.0.0.1 --port $port
    urls+=(--url ws://127.0.0.1:$port)
  done
  duration=$((SECONDS_SAMPLED + 3))s
  draw cross-same "core 0: three nodes and Redis, 5,000 same-node messages/s" "-C 0" \
    "${urls[@]}" --secret $SECRET relay --pairs 100 --rate 5000 --duration $duration
  draw cross-node "core 0: three nodes and Redis, 5,000 cross-node messages/s" "-C 0" \
    "${urls[@]}" --secret $SECRET multi-node --pairs 100 --rate 5000 --duration $duration
fi
