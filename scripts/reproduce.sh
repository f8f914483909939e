#!/usr/bin/env bash
# The main job: set everything up, then reproduce the paper's experiments with the quick
# profile (at most 20 minutes on 2 cores); it ends with the path of report.md.
# Extra arguments go to reproduce_experiments, e.g. --profile standard, --out DIR.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup.sh" build
cd "$repo"
build/apps/reproduce_experiments "$@"
