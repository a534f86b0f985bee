#!/usr/bin/env bash
# Fuzzes the parsers a client reaches: the client-message parser (parse_message), the
# token verifier (verify_token) and every HTTP route of a node, the WebSocket upgrade's
# checks included (http_request). Each target runs for a bounded time with libFuzzer,
# starting from the seeds in fuzz/corpus/<target>/ (new inputs go to target/fuzz-corpus/,
# so the checked-in seeds stay as they are); a crash stops the script and leaves its input
# in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default: 60, every target)
# Needs the nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_message verify_token http_request)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing; install it with: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

root=$(pwd)
for target in "${targets[@]}"; do
  echo "fuzz.sh: $target for ${seconds}s"
  mkdir -p "$root/target/fuzz-corpus/$target"
  (cd fuzz && cargo +nightly fuzz run "$target" \
    "$root/target/fuzz-corpus/$target" "corpus/$target" \
    -- -max_total_time="$seconds" -max_len=8192)
done
echo "fuzz.sh: no crash in ${targets[*]}"
