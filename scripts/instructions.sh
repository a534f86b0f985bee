#!/usr/bin/env bash
# User-space instructions per relayed offer, counted by callgrind: a figure that, unlike
# CPU time, does not drift with how busy this machine is, so two builds (or Switchboard
# and the floor) compare in one run each. The server runs under
# `valgrind --tool=callgrind`; after a warm-up its counters are zeroed, 10 pairs relay
# 2 KB offers at 1,000/s for 10 s, and the counters are dumped and divided by the
# messages relayed. The kernel's share (most of the CPU time) is not counted.
#
# With WHAT=join it counts instructions per join instead: after a warm-up of 500, 3,000
# handshakes of `join-storm` (token, connect, join, close), 8 at a time.
#
# Usage: [WHAT=join] scripts/instructions.sh [BINARY] [floor]
#   BINARY defaults to target/release/switchboard (built first); pass `floor` after the
#   floor relay's binary to start it the way it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --locked --workspace
BIN=${1:-target/release/switchboard}
KIND=${2:-switchboard}
PORT=${PORT:-9150}
MESSAGES=10000
SECRET=bench-only-secret-not-for-production-0123456789
export AUTH_SECRET=$SECRET ALLOW_OPEN_ISSUANCE=true LOG_LEVEL=warn \
  MESSAGE_RATE=10000000 MESSAGE_BURST=10000000 RATE_PER_IP_PER_MINUTE=100000000 \
  SHED_CPU_PERCENT=0 SHED_MEMORY_PERCENT=0
out=$(mktemp -d)
# Killed outright (its counters are dumped already), and waited for, so the port is free.
trap 'kill -9 "$vpid" 2>/dev/null || true; wait "$vpid" 2>/dev/null || true; rm -rf "$out"' EXIT

if [ "$KIND" = floor ]; then
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" "$BIN" --addr "127.0.0.1:$PORT" >"$out/server.log" 2>&1 &
else
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.%p" "$BIN" serve --bind 127.0.0.1 --port "$PORT" >"$out/server.log" 2>&1 &
fi
vpid=$!
for _ in $(seq 300); do
  (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.2
done
if [ "${WHAT:-offer}" = join ]; then
  MESSAGES=3000
  unit="join"
  storm() { target/release/switchboard-bench --url "ws://127.0.0.1:$PORT" join-storm --concurrency 8 --joins "$1"; }
  storm 500 >/dev/null
  callgrind_control --zero "$vpid" >/dev/null 2>&1
  storm $MESSAGES | tail -1
else
  unit="relayed offer"
  bench() { target/release/switchboard-bench --url "ws://127.0.0.1:$PORT" --secret "$SECRET" relay --pairs 10 "$@"; }
  bench --rate 500 --duration 2s >/dev/null
  callgrind_control --zero "$vpid" >/dev/null 2>&1
  bench --rate 1000 --duration 10s | tail -2
fi
callgrind_control --dump "$vpid" >/dev/null 2>&1
sleep 1
total=$(grep -h '^summary:' "$out"/cg.*.1 | awk '{print $2}')
echo "$KIND: $total user-space instructions for $MESSAGES ${unit}s: $((total / MESSAGES)) per $unit"
