#!/usr/bin/env bash
# Builds deploy/Dockerfile into the image `switchboard:<tag>` with the first of podman,
# buildah or docker that can actually build here, then runs it once and waits for its
# health endpoint. Says plainly which builder ran, or why none could.
#
#   deploy/build-image.sh [tag]        (default tag: dev)
#   BUILDER=docker deploy/build-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-dev}
image="switchboard:$tag"

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

echo "build-image.sh: building $image with $builder"
case $builder in
  buildah) buildah build -f deploy/Dockerfile -t "$image" . ;;
  *) "$builder" build -f deploy/Dockerfile -t "$image" . ;;
esac
echo "build-image.sh: $image built:"
"$builder" images "$image" 2>/dev/null || true

# buildah builds but does not run containers.
runner=$builder
if [ "$runner" = buildah ]; then
  if command -v podman >/dev/null 2>&1 && usable podman; then runner=podman; else
    echo "build-image.sh: built with buildah; no podman or docker to run it, so not run."
    exit 0
  fi
fi

name="switchboard-image-check-$$"
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
"$runner" run -d --rm --name "$name" -p 127.0.0.1::8080 -e AUTH_SECRET="$secret" "$image" >/dev/null
trap '"$runner" stop -t 45 "$name" >/dev/null 2>&1 || true' EXIT
port=$("$runner" port "$name" 8080 | head -1 | sed 's/.*://')
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$port/health/live" >/dev/null 2>&1; then
    echo "build-image.sh: $image runs with $runner: /health/live answers on 127.0.0.1:$port"
    user=$("$runner" exec "$name" id -u 2>/dev/null || echo "?")
    echo "build-image.sh: the process runs as uid $user"
    exit 0
  fi
  sleep 0.5
done
echo "build-image.sh: $image started but /health/live never answered; its logs:" >&2
"$runner" logs "$name" >&2 || true
exit 1
