#!/usr/bin/env bash
# Runs a local multi-node Switchboard: one redis-server (no persistence) and three
# `switchboard serve` nodes that share it. Open the web client of two different nodes in two
# browsers, join the same room, and the call is signaled across nodes through Redis.
#
# Settings (environment):
#   REDIS_PORT   port of the demo redis-server (default: 6390, or the next free port above it)
#   NODE_PORTS   ports of the nodes, space- or comma-separated (default: "8081 8082 8083");
#                node N gets NODE_ID=node-N
# Other Switchboard settings (HEARTBEAT_INTERVAL, LOG_LEVEL, TOKEN_TTL, ...) are passed
# through to every node.
#
# Ctrl-C stops the nodes (gracefully), then Redis, and removes the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
# A short drain so Ctrl-C does not wait half a minute for idle demo clients.
export DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-5s}"

say() { echo "cluster-demo: $*"; }
# await_exit PID TENTHS: wait up to TENTHS tenths of a second, then SIGKILL.
await_exit() {
  local pid=$1 i
  for ((i = 0; i < $2; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
die() {
  echo "cluster-demo: $*" >&2
  exit 1
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the HTTP status code of GET $2 on 127.0.0.1:$1, or nothing.
http_status() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
    IFS=' ' read -r -t 2 _ code _ <&3 || exit 0
    echo "$code"
  ) 2>/dev/null
}

# True when the redis-server on port $1 answers PING.
redis_ping() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || exit 1
    [ "${reply%$'\r'}" = "+PONG" ]
  ) 2>/dev/null
}

# Starts a command in its own session, so Ctrl-C in this terminal reaches only this script,
# which then stops the children in order.
spawn() {
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" &
  else
    "$@" &
  fi
}

command -v redis-server >/dev/null 2>&1 ||
  die "redis-server not found; install redis-server (e.g. apt-get install redis-server, brew install redis)."
command -v cargo >/dev/null 2>&1 ||
  die "cargo not found; install the Rust toolchain (https://rustup.rs)."

node_ports=${NODE_PORTS:-8081 8082 8083}
read -r -a ports <<<"${node_ports//,/ }"
[ ${#ports[@]} -ge 1 ] || die "NODE_PORTS lists no port."
for port in "${ports[@]}"; do
  if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "NODE_PORTS: '$port' is not a port number."
  fi
  ! port_in_use "$port" || die "port $port is already in use; set NODE_PORTS to free ports."
done

if [ -n "${REDIS_PORT:-}" ]; then
  [[ $REDIS_PORT =~ ^[0-9]+$ ]] || die "REDIS_PORT: '$REDIS_PORT' is not a port number."
  ! port_in_use "$REDIS_PORT" || die "REDIS_PORT $REDIS_PORT is already in use; pick another."
  redis_port=$REDIS_PORT
else
  redis_port=6390
  while port_in_use "$redis_port"; do
    redis_port=$((redis_port + 1))
    [ "$redis_port" -lt 6490 ] || die "no free port for Redis between 6390 and 6489; set REDIS_PORT."
  done
fi

workdir=""
redis_pid=""
node_pids=()

cleanup() {
  set +e
  trap - EXIT INT TERM
  local pid i
  if [ ${#node_pids[@]} -gt 0 ]; then
    say "stopping the nodes"
    for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    # A node drains (goaway, then 1012) within DRAIN_TIMEOUT and removes its Redis state.
    for pid in "${node_pids[@]}"; do await_exit "$pid" 150; done
  fi
  if [ -n "$redis_pid" ]; then
    say "stopping Redis"
    kill -TERM "$redis_pid" 2>/dev/null
    await_exit "$redis_pid" 50
  fi
  if [ -n "$workdir" ]; then
    rm -rf "$workdir"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building (cargo build --release)"
cargo build --release
binary=target/release/switchboard
[ -x "$binary" ] || die "$binary was not built."

workdir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-demo.XXXXXX")

spawn redis-server --port "$redis_port" --bind 127.0.0.1 \
  --save "" --appendonly no --dir "$workdir" --logfile "$workdir/redis.log"
redis_pid=$!
for ((i = 0; ; i++)); do
  redis_ping "$redis_port" && break
  kill -0 "$redis_pid" 2>/dev/null || {
    cat "$workdir/redis.log" >&2 2>/dev/null || true
    die "redis-server exited at start (log above)."
  }
  [ "$i" -lt 100 ] || die "redis-server did not answer on port $redis_port within 10 s."
  sleep 0.1
done
say "Redis on 127.0.0.1:$redis_port (no persistence)"

# One secret for every node: a token issued by one node validates on all of them.
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')

for n in "${!ports[@]}"; do
  id=$((n + 1))
  spawn env -u AUTH_SECRET_FILE -u REDIS_ADDR -u REDIS_SENTINELS -u REDIS_CLUSTER_NODES \
    AUTH_SECRET="$secret" \
    REDIS_URL="redis://127.0.0.1:$redis_port" \
    NODE_ID="node-$id" \
    BIND_ADDR=127.0.0.1 \
    SIGNALING_PORT="${ports[$n]}" \
    "$binary" serve >"$workdir/node-$id.log" 2>&1
  node_pids+=("$!")
done

for n in "${!ports[@]}"; do
  id=$((n + 1))
  for ((i = 0; ; i++)); do
    [ "$(http_status "${ports[$n]}" /health/ready)" = "200" ] && break
    kill -0 "${node_pids[$n]}" 2>/dev/null || {
      tail -n 20 "$workdir/node-$id.log" >&2 || true
      die "node-$id exited at start (log above)."
    }
    [ "$i" -lt 300 ] || die "node-$id is not ready on port ${ports[$n]} after 30 s; see $workdir/node-$id.log."
    sleep 0.1
  done
done

echo
say "${#ports[@]} nodes share Redis at redis://127.0.0.1:$redis_port"
for n in "${!ports[@]}"; do
  printf '  node-%d  http://localhost:%s  pid %s  log %s\n' \
    $((n + 1)) "${ports[$n]}" "${node_pids[$n]}" "$workdir/node-$((n + 1)).log"
done
echo
echo "  Open two of these URLs in two browsers (or windows), join the same room in both,"
echo "  and start a call: each page gets its token from its own node, and the signaling"
echo "  between them crosses nodes through Redis. Kill a node (kill -9 <pid>) to see its"
echo "  peers leave with reason node_lost. Ctrl-C stops everything."
echo

# Keep running until Ctrl-C; report a node that stops (e.g. killed to watch node_lost).
reported=()
while true; do
  for n in "${!node_pids[@]}"; do
    if [ -z "${reported[$n]:-}" ] && ! kill -0 "${node_pids[$n]}" 2>/dev/null; then
      say "node-$((n + 1)) stopped; the others keep running."
      reported[n]=1
    fi
  done
  if ! kill -0 "$redis_pid" 2>/dev/null; then
    die "redis-server stopped; shutting down."
  fi
  sleep 1
done
