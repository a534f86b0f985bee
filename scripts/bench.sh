#!/usr/bin/env bash
# Reproduces the figures in docs/BENCHMARKS.md on a machine with 2+ cores: every server
# process (and redis-server) is pinned to core 0 with taskset, `switchboard-bench` to core 1.
# JSON reports go to $OUT (default target/bench); the latency-vs-rate plot is drawn from
# the sweep. Takes about four minutes. Usage: scripts/bench.sh [scenario ...]
# (scenarios: relay rate sweep idle storm multi; default: all).
#
# After the cross-node run of `multi` it prints what each message cost Redis, command by
# command (scripts/redis-costs.py, from `INFO commandstats`).
#
# FLOOR=<path to the floor relay's binary> also runs the single-node scenarios against the
# floor, the thinnest relay that speaks the same protocol (no JWT work, no limits, no
# rooms beyond a map), on the same cores right after Switchboard, and prints Switchboard's
# figures as ratios to its: only ratios measured in one session mean anything here.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-target/bench}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-19000}
NAME=bench.sh
TOOLS="taskset redis-server redis-cli python3"
# shellcheck source=scripts/bench-setup.sh
. scripts/bench-setup.sh

# start_node PORT [VAR=VALUE ...]: a `serve` node on core $SERVER_CORE; sets $pid.
start_node() {
  local port=$1; shift
  start_server "$port" env "$@" "$BIN" serve --bind 127.0.0.1 --port "$port"
}

# bench NAME ARGS...: runs the generator on core $BENCH_CORE, keeps the JSON, shows the table.
bench() {
  local name=$1; shift
  echo "== $name: switchboard-bench $*"
  taskset -c "$BENCH_CORE" "$BENCH_BIN" --out "$OUT/$name.json" "$@"
}

scenarios=("$@")
has() { [ ${#scenarios[@]} -eq 0 ] || [[ " ${scenarios[*]} " == *" $1 "* ]]; }

# single_node TAG: the single-node scenarios against the server in $pid on port 9100;
# reports go to $OUT/TAG*.json.
single_node() {
  local tag=$1 node=$pid url=ws://127.0.0.1:9100
  if has relay; then
    bench "${tag}relay-closed" --url $url --secret $SECRET --server-pid "$node" relay --pairs 100 --duration 10s
    bench "${tag}candidates-closed" --url $url --secret $SECRET --server-pid "$node" relay --pairs 100 --message candidate --duration 10s
  fi
  if has rate; then
    bench "${tag}relay-5k" --url $url --secret $SECRET --server-pid "$node" relay --pairs 100 --rate 5000 --duration 10s
    bench "${tag}relay-20k" --url $url --secret $SECRET --server-pid "$node" relay --pairs 100 --rate 20000 --duration 10s
  fi
  if has sweep && [ -z "$tag" ]; then
    bench relay-sweep --url $url --secret $SECRET --server-pid "$node" relay --pairs 100 --sweep --rate 5000 --sweep-factor 1.25 --duration 5s --p99-bound 10ms
    python3 scripts/plot-latency.py docs/latency-vs-rate.svg "$OUT/relay-sweep.json"
  fi
  if has storm; then
    # Tokens from the server's own /auth/token: auth and signaling share the server's core.
    bench "${tag}join-storm" --url $url --server-pid "$node" join-storm --joins 20000 --concurrency 64
  fi
  if has idle; then
    bench "${tag}idle" --url $url --secret $SECRET --server-pid "$node" idle --connections "$IDLE_CONNECTIONS" --hold 5s
  fi
  kill "$node"; wait "$node" 2>/dev/null || true
}

if has relay || has rate || has sweep || has idle || has storm; then
  start_node 9100
  single_node ""
  if [ -n "${FLOOR:-}" ]; then
    start_server 9100 "$FLOOR" --addr 127.0.0.1:9100
    single_node floor-
    python3 scripts/floor-ratios.py "$OUT"
  fi
fi

if has multi; then
  redis_port=9199
  taskset -c "$SERVER_CORE" redis-server --port $redis_port --save '' --appendonly no \
    >"$OUT/redis.log" 2>&1 &
  pids+=("$!")
  # Redis's CPU counts with the nodes': a cross-node message costs it two scripts.
  node_pids=(--server-pid "$!")
  sleep 0.5
  urls=()
  for port in 9101 9102 9103; do
    start_node $port REDIS_URL=redis://127.0.0.1:$redis_port
    urls+=(--url ws://127.0.0.1:$port)
    node_pids+=(--server-pid "$pid")
  done
  # Same rate, same nodes: pairs on one node each, then each pair across two nodes.
  bench multi-same "${urls[@]}" --secret $SECRET "${node_pids[@]}" relay --pairs 100 --rate 5000 --duration 10s
  redis-cli -p $redis_port config resetstat >/dev/null
  bench multi-cross "${urls[@]}" --secret $SECRET "${node_pids[@]}" multi-node --pairs 100 --rate 5000 --duration 10s
  redis-cli -p $redis_port info commandstats | python3 scripts/redis-costs.py "$OUT/multi-cross.json"
fi
echo "reports in $OUT"
