#!/usr/bin/env bash
# Runs Switchboard's whole test suite. Prerequisites that are missing are installed with
# apt-get when possible; otherwise the script names what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()

# require COMMAND DEBIAN_PACKAGE: make COMMAND available, installing the package if needed.
require() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing $pkg (for $cmd) with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; } >/dev/null 2>&1 || true
  elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
    echo "test.sh: installing $pkg (for $cmd) with sudo apt-get"
    { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg"; } >/dev/null 2>&1 || true
  fi
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd (Debian package $pkg)")
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is missing; install the Rust toolchain with rustup first." >&2
  exit 1
fi
require redis-server redis-server
require redis-cli redis-tools
require redis-sentinel redis-sentinel

# The browser tests: real Chromium (driven through chromedriver), WebRTC and coturn.
require chromium chromium
require chromedriver chromium-driver
require turnserver coturn
# The JS client package, tested with Node's own test runner (tests/js_client.rs), and its
# TypeScript declarations checked by tsc (from the npm registry).
require node nodejs
if ! command -v tsc >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "test.sh: installing typescript (for tsc) with npm"
  npm install -g -s typescript@5 >/dev/null 2>&1 || true
fi
command -v tsc >/dev/null 2>&1 || missing+=("tsc (npm package typescript)")
# axe-core, the accessibility checker the browser tests inject into the page (a test tool,
# not something the app loads), in target/test-tools where tests/browser.rs looks for it.
axe=target/test-tools/node_modules/axe-core/axe.min.js
if [ ! -f "$axe" ] && command -v npm >/dev/null 2>&1; then
  echo "test.sh: installing axe-core with npm"
  npm install -s --no-audit --no-fund --prefix target/test-tools axe-core@4 >/dev/null 2>&1 || true
fi
[ -f "$axe" ] || missing+=("axe-core (npm install --prefix target/test-tools axe-core@4)")

# The deploy/ files, each checked by the tool that runs it (tests/edge_proxies.rs and
# tests/deploy_*.rs): TLS edges, Prometheus rules, systemd's verifier, the test certificates.
require nginx nginx
require caddy caddy
require promtool prometheus
require systemd-analyze systemd
require openssl openssl
require python3 python3
# Kubernetes schema validation is a PyPI package, not a Debian one.
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  for pip in pip3 pip; do
    command -v "$pip" >/dev/null 2>&1 || continue
    echo "test.sh: installing kubernetes-validate with $pip"
    "$pip" install -q kubernetes-validate >/dev/null 2>&1 \
      || "$pip" install -q --break-system-packages kubernetes-validate >/dev/null 2>&1 || true
    break
  done
  if ! command -v pip3 >/dev/null 2>&1 && ! command -v pip >/dev/null 2>&1; then
    require pip3 python3-pip
    pip3 install -q --break-system-packages kubernetes-validate >/dev/null 2>&1 || true
  fi
  command -v kubernetes-validate >/dev/null 2>&1 \
    || missing+=("kubernetes-validate (PyPI package kubernetes-validate)")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: cannot run the tests, missing: ${missing[*]}" >&2
  exit 1
fi

# A first build of the suite writes about 2.5 GB under the target directory, and about
# 3 GB more of incremental state where cargo keeps it (its default; CI turns it off). When
# the disk fills mid-build the linker dies with a bus error that names neither cause nor
# cure, so say it here first. A warning, not a stop: a rebuild needs far less.
target_dir=${CARGO_TARGET_DIR:-target}
need_mb=6144
[ "${CARGO_INCREMENTAL:-}" = 0 ] && need_mb=3072
mkdir -p "$target_dir"
free_mb=$(df -Pm "$target_dir" | awk 'NR == 2 { print $4 }')
if [ -n "$free_mb" ] && [ "$free_mb" -lt "$need_mb" ]; then
  echo "test.sh: warning: only $free_mb MB free for $target_dir; a first build of the suite" \
    "needs about $((need_mb / 1024 - 1))-$((need_mb / 1024)) GB. If the build fails (a linker" \
    "bus error), free some space (cargo clean removes old builds) and run again." >&2
fi

cargo test --workspace --locked "$@"
