#!/usr/bin/env bash
# minsharp vs PyTorch on one machine in one sitting: runs bench_train, then right after it
# bench/torch_reference.py on the same workload (models, specs, images, repeats, threads
# and SGD settings taken from bench_train's JSON), then prints and writes a side-by-side
# table with ratios (STEM.md, STEM.json). Numbers from two machines or two days are never
# divided by each other. Without PyTorch it says so and reports minsharp alone.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/compare.sh [--build DIR] [--out STEM] [--repeat R] [--examples N]
                        [--models a,b] [--threads T] [--data-dir DIR] [--python PY]
                        [--openblas-coretype CORE] [--max-isa avx2]
  --build     meson build dir holding bench/bench_train (default: build)
  --out       write STEM.md and STEM.json (default: DIR/compare, i.e. build/compare)
  --repeat    best of R epochs per cell, both sides (default 3)
  --examples  MNIST training images per epoch (default 60000; e.g. 6000 for a quick run)
  --models    comma-separated zoo models (default small-mlp,mlp,small-cnn,lenet)
  --threads   threads of both sides (default 2)
  --data-dir  folder with the MNIST IDX files (default: data/mnist, or $MINSHARP_DATA_DIR)
  --python    interpreter with PyTorch (default /usr/bin/python3, Debian's python3-torch)
  --openblas-coretype CORE
              force OpenBLAS's kernels (e.g. SkylakeX, Haswell) for both sides; both use
              the system OpenBLAS, which falls back to Prescott (SSE3) on CPU models it
              does not know (the header then prints a warning)
  --max-isa avx2
              cap both sides at AVX2 + FMA on an AVX-512 CPU, to stand in for an AVX2-only
              one: minsharp's kernels (MINSHARP_SIMD=avx2), OpenBLAS's (Haswell), PyTorch's
              own (ATEN_CPU_CAPABILITY=avx2) and its oneDNN convolutions (ONEDNN_MAX_CPU_ISA,
              DNNL_MAX_CPU_ISA). Build minsharp for it with
              meson setup build-avx2 -Dnative=false -Dcpp_args=-march=x86-64-v3
              and pass --build build-avx2. Still not a measurement of an AVX2 CPU: cache,
              clock and execution units are this CPU's.
PyTorch runs with torch.set_num_threads(T), OMP_WAIT_POLICY=PASSIVE and glibc's
MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=1 GiB (what minsharp sets for itself).
Both sides run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (malloc asks for transparent huge
pages) unless GLIBC_TUNABLES is already set: where page faults are slow (VMs) blocks that
glibc maps afresh for each step otherwise cost more than the arithmetic (docs/benchmarks.md).
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=$repo/build out="" python=/usr/bin/python3
bench_args=()
die() { echo "compare.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --build|--out|--repeat|--examples|--models|--threads|--data-dir|--python|--openblas-coretype|--max-isa)
      [ $# -ge 2 ] || { echo "compare.sh: error: $1 needs a value (see --help)" >&2; exit 2; }
      case $1 in
        --build) build=$2 ;;
        --out) out=$2 ;;
        --python) python=$2 ;;
        --openblas-coretype) export OPENBLAS_CORETYPE=$2 ;;
        --max-isa)
          [ "$2" = avx2 ] || die "--max-isa takes avx2, not '$2'"
          export MINSHARP_SIMD=avx2 OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 \
                 ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 ;;
        *) bench_args+=("$1" "$2") ;;
      esac
      shift 2 ;;
    *) echo "compare.sh: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
out=${out:-$build/compare}
bench_train=$build/bench/bench_train
[ -x "$bench_train" ] || die "$bench_train not found; build it: meson compile -C $build bench/bench_train"
# The report script needs only the standard library: any python3 will do.
report_python=$python
[ -x "$report_python" ] || report_python=$(command -v python3) || die "no python3 for the report"

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.hugetlb=1}

echo "== minsharp: $bench_train ${bench_args[*]}"
"$bench_train" "${bench_args[@]}" --json "$tmp/minsharp.json" || die "bench_train failed"

# Same sitting: PyTorch right after, on what bench_train just ran (its JSON).
torch_args=()
for ((i = 0; i < ${#bench_args[@]}; i += 2)); do
  [ "${bench_args[i]}" = "--data-dir" ] && torch_args+=(--data-dir "${bench_args[i+1]}")
done
note=""
if ! probe=$("$python" -c 'import torch; print(torch.__version__)' 2>&1); then
  note="$python cannot import torch: $(tail -n 1 <<<"$probe")"
  echo
  echo "compare.sh: PyTorch not available ($note); reporting minsharp's numbers only"
  "$report_python" "$here/compare_report.py" "$tmp/minsharp.json" --out "$out" --note "$note"
  exit 0
fi
# Debian's PyTorch multiplies its dense layers with the same system OpenBLAS: give it the
# kernels bench_train ran on (bench_train re-executes itself with better ones when OpenBLAS
# fell back to pre-AVX2 kernels on this CPU), so both sides run the same GEMM code.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
  OPENBLAS_CORETYPE=$("$report_python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["machine"]["openblas_core"])' "$tmp/minsharp.json")
  export OPENBLAS_CORETYPE
fi
echo
echo "== PyTorch $probe: $python bench/torch_reference.py --from-json (same workload, OpenBLAS core $OPENBLAS_CORETYPE)"
# minsharp keeps freed blocks of up to 32 MiB for reuse (keep_freed_memory in
# minsharp/core/memory.hpp); PyTorch gets the same glibc settings. Without them its batch-1024
# training faults fresh pages in every step, which on a VM with slow page faults made it
# 3-8x slower (docs/benchmarks.md): that would be measuring the VM, not PyTorch.
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 \
OMP_WAIT_POLICY=PASSIVE "$python" "$here/torch_reference.py" --from-json "$tmp/minsharp.json" \
  "${torch_args[@]}" --json "$tmp/pytorch.json" || die "torch_reference.py failed"
echo
"$report_python" "$here/compare_report.py" "$tmp/minsharp.json" "$tmp/pytorch.json" --out "$out"
