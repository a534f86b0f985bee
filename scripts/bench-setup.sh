# Shared by scripts/bench.sh and scripts/flamegraph.sh, which source it (it is not run on
# its own): the tools they need, the release build, the settings of a node under load,
# and servers started on the server core. The caller sets NAME (its own name, for
# messages), OUT (where logs go), SERVER_CORE and TOOLS (commands that must exist), and
# may set TOOLS_HINT (how to get them).

SECRET=bench-only-secret-not-for-production-0123456789
mkdir -p "$OUT"
# Every process here may open as many files as the machine allows (the floor does not
# raise its own limit; Switchboard and the bench do).
ulimit -n "$(ulimit -Hn)"
for tool in $TOOLS; do
  command -v "$tool" >/dev/null || { echo "$NAME: $tool is missing${TOOLS_HINT:+ ($TOOLS_HINT)}" >&2; exit 1; }
done
if [ -n "${FLOOR:-}" ] && [ ! -x "$FLOOR" ]; then
  echo "$NAME: FLOOR=$FLOOR is not an executable file; build the floor relay (its README says how) and pass its binary" >&2
  exit 1
fi
cargo build --release --locked --workspace
BIN=target/release/switchboard
BENCH_BIN=target/release/switchboard-bench

# A node under load: no per-connection message limit, no shedding, room for 19,000+
# connections, warnings only in the log.
export AUTH_SECRET=$SECRET ALLOW_OPEN_ISSUANCE=true LOG_LEVEL=warn \
  MESSAGE_RATE=10000000 MESSAGE_BURST=10000000 MAX_CONNECTIONS=100000 \
  MAX_CONNECTIONS_PER_IP=100000 RATE_PER_IP_PER_MINUTE=100000000 SHED_CPU_PERCENT=0 \
  SHED_MEMORY_PERCENT=0

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# start_server PORT COMMAND...: COMMAND on core $SERVER_CORE, listening on PORT; sets $pid.
start_server() {
  local port=$1; shift
  taskset -c "$SERVER_CORE" "$@" >"$OUT/node-$port.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$NAME: the server on port $port did not start; see $OUT/node-$port.log" >&2
  exit 1
}
