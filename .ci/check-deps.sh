#!/usr/bin/env bash
# Fails when a configured build uses a file (a header it included, a library it linked, a
# tool it ran) from a Debian package that scripts/packages.txt does not pull in through
# hard dependencies. A package installed by hand on the CI machine would otherwise hide a
# missing install step that breaks the README's commands on a fresh machine.
#   .ci/check-deps.sh BUILD_DIR
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:?usage: check-deps.sh BUILD_DIR}

used_files() {
  ninja -C "$build" -t deps | grep -o '^ *\(/usr\|/lib\)[^ ]*' | tr -d ' '
  python3 - "$build/meson-info/intro-dependencies.json" <<'PY'
import json, sys
for dep in json.load(open(sys.argv[1])):
    for arg in dep.get("link_args", []):
        if arg.startswith("/"):
            print(arg)
PY
  for tool in meson ninja pkg-config gnuplot c++; do command -v "$tool"; done
}

hard_dependency_closure() {
  sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$repo/scripts/packages.txt" |
    xargs apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances 2>/dev/null | grep -v '^ ' | sort -u
}

closure=$(mktemp); files=$(mktemp); trap 'rm -f "$closure" "$files"' EXIT
hard_dependency_closure > "$closure"
[ -s "$closure" ] || { echo "check-deps: apt-cache found no packages (run apt-get update)" >&2; exit 1; }
used_files | sort -u > "$files"

# dpkg's own file lists, read once (a dpkg -S per file takes minutes).
python3 - "$closure" "$files" <<'PY'
import glob, os, sys
owner = {}
for listing in glob.glob("/var/lib/dpkg/info/*.list"):
    package = os.path.basename(listing)[:-len(".list")].split(":")[0]
    with open(listing, errors="replace") as f:
        for line in f:
            owner.setdefault(line.rstrip("\n"), package)

def owner_of(path):
    # Debian 12 merged /lib into /usr/lib, but dpkg knows some files by one name only.
    real = os.path.realpath(path)
    for candidate in (path, real, real.removeprefix("/usr"), "/usr" + real):
        if candidate in owner:
            return owner[candidate]
    return None

closure = set(open(sys.argv[1]).read().split())
used = open(sys.argv[2]).read().split()
bad = 0
for path in used:
    package = owner_of(path)
    if package is None:
        print(f"check-deps: {path} belongs to no Debian package", file=sys.stderr); bad = 1
    elif package not in closure:
        print(f"check-deps: {path} is from {package}, which scripts/packages.txt does not pull in",
              file=sys.stderr); bad = 1
print(f"check-deps: {len(used)} files of the build checked against {len(closure)} packages")
sys.exit(bad)
PY
