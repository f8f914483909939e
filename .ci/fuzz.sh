#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, AddressSanitizer + UndefinedBehaviorSanitizer)
# and runs each for SECONDS_PER_TARGET seconds (default 30), one after the other.
# Prints one summary line per target; exits non-zero if any target found a crash, leak,
# timeout, out-of-memory or sanitizer report (the reproducing input is kept in
# <build>/fuzz-artifacts/<target>/, rerun it with `<build>/fuzz/<target> <file>`).
#
#   .ci/fuzz.sh [SECONDS_PER_TARGET]      FUZZ_BUILD_DIR=... overrides <repo>/build-fuzz
#   FUZZ_TARGETS="fuzz_idx fuzz_spec" .ci/fuzz.sh 600   runs a subset
#
# New interesting inputs accumulate in <build>/fuzz-corpus/<target>/ (not in the repository);
# the committed seeds in fuzz/corpus/<target>/ are only read.
set -euo pipefail

seconds=${1:-30}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-fuzz_safetensors fuzz_idx fuzz_spec fuzz_plan_line}

# Debian 12's clang 16 with its libFuzzer runtime (scripts/packages-ci.txt): clang 14, the
# default clang, cannot compile lambdas that capture structured bindings. FUZZ_CXX overrides.
pick_clang() {
    command -v clang++-16 >/dev/null ||
        { echo "fuzz.sh: no clang++-16 (apt-get install clang-16 libclang-rt-16-dev)" >&2; exit 2; }
    echo clang++-16
}

if [[ ! -f $build/build.ninja ]]; then
    # The library gets libFuzzer's coverage instrumentation too (fuzzer-no-link), otherwise
    # the fuzzer is blind inside the code it is meant to explore.
    CXX=${FUZZ_CXX:-$(pick_clang)} meson setup "$build" "$root" -Dfuzz=true -Dnative=false \
        -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
        -Dcpp_args=-fsanitize=fuzzer-no-link
fi
# Two ninjas in one build dir corrupt its log and rebuild everything: concurrent runs of
# this script (e.g. one per target) wait for each other's build step.
# shellcheck disable=SC2086
flock "$build/.fuzz-build.lock" meson compile -C "$build" $(printf 'fuzz/%s ' $targets)

# UBSan only reports and continues by default; a report must stop the run as a finding.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

failed=0
for target in $targets; do
    corpus=$build/fuzz-corpus/$target
    artifacts=$build/fuzz-artifacts/$target
    log=$build/fuzz-logs/$target.log
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    status=0
    "$build/fuzz/$target" "$corpus" "$root/fuzz/corpus/$target" \
        -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    findings=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
        -o -name 'oom-*' \) | wc -l)
    printf '%-18s %12s executions in %ss, exit status %d, %d finding(s) in %s\n' \
        "$target" "${executions:-?}" "$seconds" "$status" "$findings" "$artifacts"
    if [[ $status -ne 0 || $findings -ne 0 ]]; then
        failed=1
        tail -n 40 "$log" >&2
    fi
done
exit "$failed"
