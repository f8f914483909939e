#!/usr/bin/env bash
# The main job: set everything up, then reproduce the paper's experiments with the quick
# profile (about 20 minutes on 2 cores). Extra arguments go to reproduce_experiments.
#   scripts/reproduce.sh [--profile quick|standard|full] [--out DIR] ...
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup.sh" build
cd "$repo"
out=results/quick
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [ "${args[$i]}" = "--out" ] && out=${args[$((i + 1))]}
done
build/apps/reproduce_experiments --out "$out" "$@"
echo "report: $repo/$out/report.md"
