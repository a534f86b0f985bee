#!/usr/bin/env bash
# Renders web/icon.svg to the PNG icons the web app manifest lists (web/icon-192.png,
# web/icon-512.png) with headless Chromium, then shrinks them with optipng when it is
# installed. Run it after changing icon.svg.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=$(command -v chromium || command -v chromium-browser) || {
  echo "icons.sh: chromium is missing (Debian package chromium)" >&2
  exit 1
}
# A throwaway profile: nothing from a user's own browser profile leaks into the render.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

for size in 192 512; do
  # The SVG has no width or height, so it fills the viewport edge to edge.
  "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$profile" --window-size="$size,$size" \
    --screenshot="$PWD/web/icon-$size.png" "file://$PWD/web/icon.svg" 2>/dev/null
done

if command -v optipng >/dev/null 2>&1; then
  optipng -quiet -o7 -strip all web/icon-192.png web/icon-512.png
else
  echo "icons.sh: optipng not installed, icons left unoptimised" >&2
fi
ls -l web/icon-192.png web/icon-512.png
