#!/usr/bin/env bash
# Installs, from Debian's archive, the packages listed in the given files that are missing.
#   scripts/install-packages.sh LIST [LIST...]
set -euo pipefail

listed_packages() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$@"; }

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
while read -r p; do
  # npm from Debian is only needed when no npm is on the PATH already.
  [ "$p" = npm ] && command -v npm >/dev/null 2>&1 && continue
  is_installed "$p" || missing+=("$p")
done < <(listed_packages "$@")

((${#missing[@]})) || exit 0
echo "setup: installing ${missing[*]}"
[ "$(id -u)" -eq 0 ] || { echo "setup: run as root to install packages" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
