#!/usr/bin/env bash
# Runs a portable build (-Dnative=false) on CPUs this machine may not be, emulated by qemu-user:
#   EPYC-Milan  AMD Zen 3: AVX2 and FMA, no AVX-512
#   Nehalem     Intel: SSE4.2, no AVX
# An instruction the emulated CPU lacks, in minsharp, xsimd or OpenBLAS, stops a run with SIGILL.
# On each CPU:
#   1. apps/train records the CPU's ISA level, minsharp's SIMD kernels and OpenBLAS's own kernel
#      choice in config.json; each must be the one for that CPU;
#   2. the unit tests of suite "emulated" pass (tests/meson.build says which and why);
#   3. Zen 3: one epoch of LeNet and of the MLP (128 images, 4 SGD steps) trains bit-identical
#      weights to the same run on this machine with OPENBLAS_CORETYPE=Haswell MINSHARP_SIMD=avx2,
#      the setting of the AVX2 tables in docs/benchmarks.md and docs/experiments.md
#      (docs/portability.md);
#   4. Nehalem: OPENBLAS_CORETYPE=Haswell is refused with exit 1 and a message that names it.
# This machine's OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE describe its own CPU, not the emulated
# one: the emulated programs start without them, as on a fresh machine with that CPU.
# Speed under emulation means nothing; only correctness is checked.
#   .ci/emulated-cpus.sh BUILD_DIR              everything
#   .ci/emulated-cpus.sh BUILD_DIR checks       1, 3 and 4 only
#   .ci/emulated-cpus.sh BUILD_DIR unit CPU     2 only, on one CPU (its meson log: BUILD_DIR/
#                                               meson-logs/emulated-CPU-qemu-x86_64.json; meson
#                                               adds the wrapper's name)
set -uo pipefail
usage="usage: emulated-cpus.sh BUILD_DIR [checks | unit EPYC-Milan|Nehalem]"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:?$usage}" && pwd)
mode=${2:-all}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

fail() { echo "emulated: FAIL: $*"; failures=$((failures + 1)); }

without_host_blas_pins() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }

emulate() {  # emulate CPU COMMAND...: COMMAND on the emulated CPU, without the host's BLAS pins
  local cpu=$1
  shift
  without_host_blas_pins qemu-x86_64 -cpu "$cpu" "$@" \
    2> >(grep -v "TCG doesn't support requested feature" >&2)
}

# 128 images at batch 32: every step runs every forward and backward kernel and any differing
# bit stays in the weights; more images only cost time, and under qemu on an Intel host one
# epoch of LeNet on 2,048 images took over 20 minutes (docs/portability.md).
train_one_epoch() {  # train_one_epoch OUT MODEL [runner...]: 128 images, seed 0, 2 threads
  local out=$1 model=$2
  shift 2
  "$@" "$build/apps/train" --model "$model" --train-size 128 --test-size 100 --batch-size 32 \
    --epochs 1 --threads 2 --out "$out" --force --quiet >/dev/null
}

check_numerics() {  # check_numerics CPU ISA KERNELS BLAS_CORE
  local cpu=$1 expected="$2 $3 $4" found
  train_one_epoch "$work/$cpu-numerics" small-mlp emulate "$cpu" || { fail "$cpu: train exited $?"; return; }
  found=$(python3 -c 'import json, sys; n = json.load(open(sys.argv[1]))["numerics"]
print(n["cpu_isa"], n["simd_kernels"], n["openblas_core"])' "$work/$cpu-numerics/config.json")
  echo "emulated: $cpu: CPU ISA, minsharp kernels, OpenBLAS kernels: $found"
  [ "$found" = "$expected" ] || fail "$cpu: expected $expected"
}

run_unit_suite() {  # run_unit_suite CPU
  local cpu=$1
  without_host_blas_pins meson test -C "$build" --num-processes 1 \
    --suite emulated --print-errorlogs --logbase "emulated-$cpu" \
    --wrapper "qemu-x86_64 -cpu $cpu" || fail "$cpu: unit suite"
}

host_runs_avx2() { grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; }

check_zen3_weights_match_avx2_emulation() {
  if ! host_runs_avx2; then
    echo "emulated: this machine has no AVX2: skipping the bit-identity check"
    return
  fi
  local model
  for model in lenet mlp; do
    train_one_epoch "$work/zen3-$model" "$model" emulate EPYC-Milan &&
      train_one_epoch "$work/host-$model" "$model" \
        env OPENBLAS_CORETYPE=Haswell MINSHARP_SIMD=avx2 ||
      { fail "$model: a training run failed"; continue; }
    if cmp -s "$work/zen3-$model/model.safetensors" "$work/host-$model/model.safetensors"; then
      echo "emulated: EPYC-Milan: $model weights bit-identical to Haswell + avx2 on this machine"
    else
      fail "$model: weights on the emulated Zen 3 differ from Haswell + avx2 on this machine"
    fi
  done
}

check_unrunnable_blas_core_is_refused() {
  local log=$work/refused.txt status
  OPENBLAS_CORETYPE=Haswell qemu-x86_64 -cpu Nehalem "$build/apps/train" --model small-mlp \
    --train-size 256 --epochs 1 --out "$work/refused" --force --quiet 2>"$log"
  status=$?
  if [ "$status" -eq 1 ] && grep -q "OPENBLAS_CORETYPE=Haswell .* need AVX2 and FMA" "$log"; then
    echo "emulated: Nehalem: OPENBLAS_CORETYPE=Haswell refused: $(head -c 120 "$log")..."
  else
    fail "Nehalem: OPENBLAS_CORETYPE=Haswell gave exit $status: $(head -c 300 "$log")"
  fi
}

command -v qemu-x86_64 >/dev/null ||
  { echo "emulated: no qemu-x86_64 (apt-get install qemu-user)" >&2; exit 2; }
[ -x "$build/apps/train" ] || { echo "emulated: no $build/apps/train: build first" >&2; exit 2; }
[ -d "$repo/data/mnist" ] || bash "$repo/data/fetch_mnist.sh" || exit 2

run_checks() {
  check_numerics EPYC-Milan avx2+fma avx2 Zen
  check_numerics Nehalem sse4.2 sse2 Nehalem
  check_zen3_weights_match_avx2_emulation
  check_unrunnable_blas_core_is_refused
}

case $mode in
  all) run_checks; run_unit_suite EPYC-Milan; run_unit_suite Nehalem ;;
  checks) run_checks ;;
  unit) case ${3:-} in
          EPYC-Milan|Nehalem) run_unit_suite "$3" ;;
          *) echo "$usage" >&2; exit 2 ;;
        esac ;;
  *) echo "$usage" >&2; exit 2 ;;
esac

echo "emulated: $failures failed checks"
[ "$failures" -eq 0 ]
