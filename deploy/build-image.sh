#!/usr/bin/env bash
# Builds deploy/Dockerfile into the image `switchboard:<tag>` with the first of podman,
# buildah or docker that can actually build here, then runs it as an orchestrator would:
# waits for /health/live, reports the uid, runs the image's HEALTHCHECK, stops it with its
# STOPSIGNAL and checks that it drained and exited 0. Says plainly which builder ran, or why
# none could.
#
#   deploy/build-image.sh [tag]        (default tag: dev)
#   BUILDER=docker deploy/build-image.sh
#   RUST_IMAGE=... DEBIAN_IMAGE=... deploy/build-image.sh    (other base images)
#
# Base images are the Dockerfile's (RUST_IMAGE, DEBIAN_IMAGE), pulled from their registry.
# When a registry cannot be reached and the image is not already here, the script builds a
# local stand-in and says so: Debian by debootstrap (as root) from DEBIAN_MIRROR and
# DEBIAN_SECURITY_MIRROR (else the mirrors this machine's apt uses, else deb.debian.org),
# and the Rust builder as that Debian plus this machine's active rustup toolchain, gcc,
# libc6-dev and its local certificate authorities. Stand-ins are kept and reused (remove
# them to have them made again). The Dockerfile itself is built unchanged either way.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-dev}
image="switchboard:$tag"
say() { echo "build-image.sh: $*"; }
fail() {
  echo "build-image.sh: $*" >&2
  exit 1
}

# A builder counts only if it can reach its engine (docker needs a running daemon; podman
# and buildah need user namespaces or root).
usable() {
  case $1 in
    docker) docker info >/dev/null 2>&1 ;;
    podman) podman info >/dev/null 2>&1 ;;
    buildah) buildah info >/dev/null 2>&1 ;;
  esac
}

builder=${BUILDER:-}
if [ -z "$builder" ]; then
  for candidate in podman buildah docker; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then
      builder=$candidate
      break
    fi
  done
fi
if [ -z "$builder" ]; then
  echo "build-image.sh: no container builder can run here:" >&2
  for candidate in podman buildah docker; do
    if ! command -v "$candidate" >/dev/null 2>&1; then
      echo "  $candidate: not installed" >&2
    else
      echo "  $candidate: installed, but '$candidate info' fails (no daemon, or no rights)" >&2
    fi
  done
  echo "Install podman (apt-get install podman) or start a docker daemon, then run this again." >&2
  exit 1
fi
# buildah builds but does not run containers.
runner=$builder
if [ "$runner" = buildah ]; then
  if command -v podman >/dev/null 2>&1 && usable podman; then runner=podman; else runner=; fi
fi

# Temporary files (stand-in root filesystems, build contexts) and the checked container go
# when the script ends, however it ends.
work=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-image.XXXXXX")
name="switchboard-image-check-$$"
cleanup() {
  if [ -n "$runner" ]; then "$runner" "${engine_opts[@]}" rm -f "$name" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
# Options for podman itself (the OCI runtime, when the default one cannot run here).
engine_opts=()
trap cleanup EXIT

# The base images: the Dockerfile's ARG defaults unless given.
arg_default() { sed -n "s/^ARG $1=//p" deploy/Dockerfile | head -1; }
wanted_rust=${RUST_IMAGE:-$(arg_default RUST_IMAGE)}
wanted_debian=${DEBIAN_IMAGE:-$(arg_default DEBIAN_IMAGE)}
rust_image=$wanted_rust
debian_image=$wanted_debian
if [ -z "$rust_image" ] || [ -z "$debian_image" ]; then
  fail "deploy/Dockerfile has no ARG RUST_IMAGE=... or ARG DEBIAN_IMAGE=..."
fi

has_image() {
  case $builder in
    buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
    *) "$builder" image inspect "$1" >/dev/null 2>&1 ;;
  esac
}

# Present already, or pulled within two minutes. On failure, the reason is in $work/pull.log.
obtain() {
  has_image "$1" && return 0
  say "pulling $1"
  timeout 120 "$builder" pull "$1" >"$work/pull.log" 2>&1
}

# The Debian release a base image is of, from its tag: debian:bookworm-slim,
# rust:1-slim-bookworm and rust:1.88-bookworm are all bookworm.
release_of() {
  local part
  for part in $(echo "${1##*:}" | tr '-' ' '); do
    case $part in
      slim | *[!a-z]*) ;;
      *)
        echo "$part"
        return
        ;;
    esac
  done
  fail "cannot tell which Debian release $1 is, to make a stand-in for it"
}

# The Debian mirror (and security mirror) this machine's apt uses, else deb.debian.org.
apt_uri() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^[[:space:]]*#' | grep -Eo "https?://[^ ]+/$1/?( |\$)" | head -1 | tr -d ' ' | sed 's:/$::' \
    || true
}
mirror=${DEBIAN_MIRROR:-$(apt_uri debian)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-$(apt_uri debian-security)}
security=${security:-http://deb.debian.org/debian-security}

build_opts=()
case $builder in
  # The OCI image format has no HEALTHCHECK; podman and buildah drop it unless told to write
  # Docker's format. Host networking: RUN steps reach crates.io and the Debian mirror however
  # container networks are set up here.
  podman | buildah) build_opts+=(--format docker --network host) ;;
esac
runtime_opts=()
build() { "$builder" build "${build_opts[@]}" "${runtime_opts[@]}" "$@"; }

# Debian <release>, minimal (debootstrap's minbase, from the mirror above), trimmed and
# configured like the official slim images: no manuals, no documentation but copyright
# files, no translations, and apt keeps neither its caches nor downloaded packages, so an
# `apt-get install` layer holds only what it installed.
standin_debian() {
  local release=$1 out="localhost/switchboard-standin/debian:$1-slim"
  if has_image "$out"; then
    say "reusing the stand-in $out" >&2
    echo "$out"
    return
  fi
  [ "$(id -u)" = 0 ] || fail "a stand-in for the Debian image is made with debootstrap, which needs root"
  command -v debootstrap >/dev/null 2>&1 || fail "a stand-in for the Debian image needs debootstrap (apt-get install debootstrap)"
  local root="$work/debian-$release"
  say "making $out: debootstrap --variant=minbase $release from $mirror (a minute or two)" >&2
  if ! debootstrap --variant=minbase "$release" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2
    fail "debootstrap failed (log above)"
  fi
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  # The container engine provides these.
  rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  mkdir "$work/debian-ctx"
  tar --numeric-owner -C "$root" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$work/debian-ctx/rootfs.tar" .
  rm -rf "$root"
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$work/debian-ctx/Containerfile"
  build -q -t "$out" -f "$work/debian-ctx/Containerfile" "$work/debian-ctx" >&2
  rm -rf "$work/debian-ctx"
  echo "$out"
}

# The Rust builder: Debian plus this machine's active rustup toolchain (cargo, rustc and
# their libraries), with a C compiler for the crates that build C (ring, mimalloc), laid
# out like the official image (CARGO_HOME=/usr/local/cargo, cargo on the PATH). It trusts
# the certificate authorities this machine adds to Debian's (/usr/local/share/ca-certificates):
# where HTTPS goes through an inspecting proxy, cargo reaches crates.io only with them.
standin_rust() {
  local release=$1 base=$2 sysroot version out
  command -v rustc >/dev/null 2>&1 || fail "a stand-in for the Rust image needs a Rust toolchain here (rustup)"
  sysroot=$(rustc --print sysroot)
  version=$(rustc --version | cut -d' ' -f2)
  out="localhost/switchboard-standin/rust:$version-slim-$release"
  if has_image "$out"; then
    say "reusing the stand-in $out" >&2
    echo "$out"
    return
  fi
  if [ ! -x "$sysroot/bin/cargo" ] || [ ! -x "$sysroot/bin/rustc" ] || [ "$sysroot" = /usr ]; then
    fail "a stand-in for the Rust image needs a rustup toolchain (cargo and rustc under one directory); rustc's is $sysroot"
  fi
  local ctx="$work/rust-ctx"
  mkdir -p "$ctx/rust/bin"
  # Hard links where the toolchain shares a file system with the context, else a copy.
  if ! cp -al "$sysroot/lib" "$ctx/rust/lib" 2>/dev/null; then
    rm -rf "$ctx/rust/lib"
    cp -a "$sysroot/lib" "$ctx/rust/lib"
  fi
  cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$ctx/rust/bin/"
  mkdir "$ctx/local-ca"
  local cas=0
  if [ -d /usr/local/share/ca-certificates ]; then
    cp -r /usr/local/share/ca-certificates/. "$ctx/local-ca/"
    cas=$(find "$ctx/local-ca" -name '*.crt' | wc -l)
  fi
  cat >"$ctx/Containerfile" <<EOF
FROM $base
COPY rust /usr/local/rust
COPY local-ca /usr/local/share/ca-certificates
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
    && rm -rf /var/lib/apt/lists/* \\
    && mkdir -p /usr/local/cargo/bin \\
    && ln -s /usr/local/rust/bin/cargo /usr/local/rust/bin/rustc /usr/local/cargo/bin/
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
  say "making $out: Debian $release with rustc $version from $sysroot, gcc, libc6-dev and this machine's $cas local certificate authorities" >&2
  build -q -t "$out" -f "$ctx/Containerfile" "$ctx" >&2
  rm -rf "$ctx"
  echo "$out"
}

# Runs `true` in the Debian image with the engine's current options.
runs_here() {
  case ${runner:-$builder} in
    podman) podman "${engine_opts[@]}" run --rm --network none "$debian_image" true ;;
    buildah)
      local c rc=0
      c=$(buildah from -q "$debian_image") || return 1
      buildah run "${runtime_opts[@]}" --network none "$c" true || rc=$?
      buildah rm "$c" >/dev/null
      return "$rc"
      ;;
    *) return 0 ;;
  esac
}

# Some machines (containers inside containers, mostly) refuse podman's defaults: crun cannot
# set the open-file and process limits podman asks for, or cannot handle hybrid cgroups.
# runc without those default limits can, so that is tried before giving up (with a
# containers.conf of the script's own, for its podman and buildah commands only).
choose_runtime() {
  [ "$builder" = docker ] && return 0
  runs_here 2>"$work/run.log" && return 0
  local why
  why=$(tail -1 "$work/run.log")
  command -v runc >/dev/null 2>&1 || fail "containers cannot run here ($why), and runc is not installed to try instead"
  printf '[containers]\ndefault_ulimits = []\n' >"$work/containers.conf"
  export CONTAINERS_CONF="$work/containers.conf"
  runtime_opts=(--runtime runc)
  if [ "${runner:-$builder}" = podman ]; then engine_opts=(--runtime runc); fi
  if ! runs_here 2>"$work/run.log"; then
    fail "containers cannot run here: with the default runtime: $why; with runc: $(tail -1 "$work/run.log")"
  fi
  say "the default runtime cannot run containers here ($why); using runc without default ulimits"
}

standins=()
if ! obtain "$debian_image"; then
  why=$(tail -1 "$work/pull.log")
  debian_image=$(standin_debian "$(release_of "$debian_image")")
  standins+=("$debian_image for $wanted_debian ($why)")
fi
choose_runtime
if ! obtain "$rust_image"; then
  why=$(tail -1 "$work/pull.log")
  release=$(release_of "$rust_image")
  # On the Debian image the runtime stage uses, when it is the same release (it should be).
  if [ "$release" = "$(release_of "$wanted_debian")" ]; then
    base=$debian_image
  else
    base=$(standin_debian "$release")
  fi
  rust_image=$(standin_rust "$release" "$base")
  standins+=("$rust_image for $wanted_rust ($why)")
fi
if [ "${#standins[@]}" -gt 0 ]; then
  say "LOCAL STAND-INS for base images that could not be pulled; this image is built from:"
  for s in "${standins[@]}"; do echo "  $s"; done
fi

say "building $image with $builder from $rust_image and $debian_image"
started=$SECONDS
build -f deploy/Dockerfile -t "$image" \
  --build-arg "RUST_IMAGE=$rust_image" --build-arg "DEBIAN_IMAGE=$debian_image" .
say "$image built in $((SECONDS - started)) s:"
"$builder" images "$image" 2>/dev/null || true

if [ -z "$runner" ]; then
  say "built with buildah; no podman or docker to run it, so not run."
  exit 0
fi
ctr() { "$runner" "${engine_opts[@]}" "$@"; }

secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
if ! ctr run -d --name "$name" -p 127.0.0.1::8080 -e AUTH_SECRET="$secret" "$image" >/dev/null 2>"$work/run.log"; then
  cat "$work/run.log" >&2
  fail "$image does not start"
fi
# podman schedules health checks with systemd timers and only logs errors where systemd
# does not run; the check below runs the image's command itself.
if grep -q 'systemd connection' "$work/run.log"; then
  say "no systemd here to schedule the image's HEALTHCHECK; it is run once below instead"
fi
port=$(ctr port "$name" 8080 | head -1 | sed 's/.*://')
live=
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/health/live" >/dev/null 2>&1; then
    live=1
    break
  fi
  sleep 0.5
done
if [ -z "$live" ]; then
  echo "build-image.sh: $image started but /health/live never answered; its logs:" >&2
  ctr logs "$name" >&2 || true
  exit 1
fi
say "$image runs with $runner: /health/live answers on 127.0.0.1:$port"
say "the process runs as uid $(ctr exec "$name" id -u 2>/dev/null || echo "?")"

# The image's own HEALTHCHECK command, run in the container as the engine would run it.
if [ "$runner" = podman ]; then
  ctr healthcheck run "$name" || fail "the image's HEALTHCHECK failed"
  say "the image's HEALTHCHECK passes (podman healthcheck run)"
else
  for _ in $(seq 1 40); do
    health=$(ctr inspect --format '{{.State.Health.Status}}' "$name")
    [ "$health" = starting ] || break
    sleep 0.5
  done
  [ "$health" = healthy ] || fail "the image's HEALTHCHECK says $health"
  say "the image's HEALTHCHECK passes (docker reports healthy)"
fi

# A client in a room while the node stops, so that stopping has something to drain: a
# WebSocket held by bash itself (a masked text frame needs no client library when the mask
# is zero). It must hear goaway, and the node must wait for it to go.
token=$(curl -fsS -H 'Content-Type: application/json' -d '{"userId":"image-check","roomId":"image-check"}' \
  "http://127.0.0.1:$port/auth/token" | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$token" ] || fail "no token from POST /auth/token"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /ws/signal?token=%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' \
  "$token" "$port" >&3
IFS= read -r -t 10 status <&3 || true
case $status in *" 101 "*) ;; *) fail "the WebSocket upgrade got: ${status:-nothing}" ;; esac
while IFS= read -r -t 10 header <&3 && [ "$header" != $'\r' ]; do :; done
join='{"type":"join","roomId":"image-check"}'
printf "\\x81\\x$(printf %02x $((0x80 + ${#join})))\\x00\\x00\\x00\\x00%s" "$join" >&3
timeout 60 cat <&3 >"$work/client" &
reader=$!
for _ in $(seq 1 20); do
  grep -q '"joined"' "$work/client" && break
  sleep 0.25
done
grep -q '"joined"' "$work/client" || fail "the client never joined its room: $(cat -v "$work/client")"

# Stopped as an orchestrator stops it: its STOPSIGNAL, then a kill after the grace period
# (longer than the default DRAIN_TIMEOUT of 30 s). It must drain and exit 0 by itself. The
# client answers the close frame (1012) that follows goaway, as browsers do; alone, with no
# other node to resume on, its session is kept until the drain timeout ends.
started=$SECONDS
ctr stop -t 45 "$name" >/dev/null 2>"$work/stop.log" &
stopper=$!
for _ in $(seq 1 180); do
  if LC_ALL=C grep -q $'\x88' "$work/client"; then
    printf '\x88\x82\x00\x00\x00\x00\x03\xf4' >&3 2>/dev/null || true
    break
  fi
  sleep 0.25
done
wait "$stopper" || { cat "$work/stop.log" >&2; fail "$runner stop failed"; }
took=$((SECONDS - started))
wait "$reader" || true
exec 3<&-
code=$(ctr inspect --format '{{.State.ExitCode}}' "$name")
signal=$(ctr inspect --format '{{.Config.StopSignal}}' "$name" 2>/dev/null || true)
case $signal in '' | *[!0-9]*) ;; *) signal=SIG$(kill -l "$signal") ;; esac
ctr logs "$name" >"$work/logs" 2>&1 || true
if ! grep -q '"draining"' "$work/logs"; then
  cat "$work/logs" >&2
  fail "stopped in $took s with exit status $code, but never logged that it was draining"
fi
grep -q '"goaway"' "$work/client" || fail "the node drained, but the client in a room never heard goaway"
[ "$code" = 0 ] || fail "stopped in $took s, drained, but exited with status $code"
say "stopped with ${signal:-its STOPSIGNAL}: told the client in a room to go (goaway), drained and exited 0 in $took s"
