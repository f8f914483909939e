#!/usr/bin/env bash
# Set everything up, then run the whole test suite (unit tests and end-to-end app tests).
#   scripts/test.sh [BUILD_DIR [extra meson options...]]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
"$repo/scripts/install-packages.sh" "$repo/scripts/packages-test.txt"
"$repo/scripts/setup.sh" "$@"
cd "$repo"
meson test -C "$build" --print-errorlogs --num-processes 1
