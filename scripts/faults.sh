#!/usr/bin/env bash
# Runs the four Redis fault scenarios of tests/failover.rs at production scale (100 calls
# split over 3 nodes, 2,000 cross-node offers/s, a 12 s partition) and prints each one's
# report: offers sent, delivered, refused by code, lost, duplicated, reordered, clients
# closed, longest stall, and every span a node answered /health/ready with other than 200.
# Takes about two minutes after the build (each scenario starts its own Redis deployment and
# three nodes, then runs 5 to 25 s; up to 15 s more when offers go missing, as the checker
# waits out the failover hold for them). Needs redis-server and redis-cli.
# Usage: scripts/faults.sh [name filter ...]  (e.g. `cluster`, `sentinel`, `restarted`,
# `cut_off`; default: all four). FAULT_PROFILE=dev skips the release build (slower
# nodes, so longer stalls). Exit status: non-zero if any scenario broke its promise.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "faults.sh: $tool is missing" >&2; exit 1; }
done
export FAULT_PAIRS=${FAULT_PAIRS:-100} FAULT_RATE=${FAULT_RATE:-2000}
export FAULT_CUT_SECONDS=${FAULT_CUT_SECONDS:-12} FAULT_AFTER_SECONDS=${FAULT_AFTER_SECONDS:-5}
profile=(--release)
[ "${FAULT_PROFILE:-release}" = dev ] && profile=()

filters=("$@")
[ ${#filters[@]} -eq 0 ] && filters=(cluster_master sentinel_master restarted cut_off)
status=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for filter in "${filters[@]}"; do
  # One at a time: each scenario runs its own Redis and nodes on the same cores.
  cargo test "${profile[@]}" --locked --test failover -- --nocapture \
    --test-threads=1 "$filter" >"$out" 2>&1 || status=1
  # The report line, the unready spans, and what broke the promise (or why setup failed).
  grep -E "^[a-z ]+: [0-9]+ pairs|^  node-|^  - |^test .* \.\.\. |^thread '|^gave up|^error" \
    "$out" || cat "$out"
done
exit $status
