#!/usr/bin/env bash
# End-to-end test of apps/reproduce_experiments on the tiny profile: the files it writes,
# a rerun that skips finished runs, a killed-then-resumed grid that gives the same e3.csv,
# --plan lines that run on their own, --collect, and clear errors. $1: the meson build dir.
set -uo pipefail
build=$1
app=$build/apps/reproduce_experiments
repo=${MINSHARP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
if [ ! -f "$repo/data/mnist/train-images-idx3-ubyte" ]; then
  echo "SKIP: MNIST not fetched (run data/fetch_mnist.sh)"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
data=(--data-dir "$repo/data/mnist")
# e3.csv without its timing columns (wall times differ between executions).
e3_values() {
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) keep[i] = ($i !~ /seconds/) }
           { line = ""; for (i = 1; i <= NF; i++) if (keep[i]) line = line $i ","; print line }' "$1"
}

# 1. The whole tiny pipeline with 2 parallel jobs.
"$app" --profile tiny --jobs 2 --out "$tmp/a" "${data[@]}" > "$tmp/a.log" 2>&1 \
  || { cat "$tmp/a.log"; fail "tiny profile failed"; }
grep -q "report: .*report.md" "$tmp/a.log" || fail "no report path printed"
grep -q "\[5/5\] done" "$tmp/a.log" || fail "no progress lines (done/total): $(cat "$tmp/a.log")"
grep -q "ETA" "$tmp/a.log" || fail "no ETA in the progress lines"
for f in report.md results.json plan.json e1.csv e2.csv e3.csv e3_correlations.csv e4.csv; do
  [ -s "$tmp/a/$f" ] || fail "missing $f"
done
head -1 "$tmp/a/e3.csv" | grep -q "^model,ratio,trial,n,epochs,train_loss,train_accuracy,test_accuracy,gap,trace,ms,ms_node,normalized" \
  || fail "e3.csv columns: $(head -1 "$tmp/a/e3.csv")"
[ "$(wc -l < "$tmp/a/e3.csv")" -eq 3 ] || fail "e3.csv should have 2 runs"
for s in "## E1" "## E2" "## E3" "## E4" "Side by side with the paper" "Kendall"; do
  grep -q "$s" "$tmp/a/report.md" || fail "report.md lacks '$s'"
done
if command -v gnuplot > /dev/null; then
  for png in e1_trace e2_error_vs_time e3_small-mlp e4_scale_invariance; do
    [ -s "$tmp/a/figures/$png.png" ] || fail "missing figure $png.png"
    grep -q "figures/$png.png" "$tmp/a/report.md" || fail "report.md does not embed $png"
  done
fi
[ -s "$tmp/a/e3/runs/small-mlp-r1-t0/job.log" ] || fail "no job log"

# 2. Rerun: everything is skipped, finished files untouched.
before=$(stat -c '%i %Y' "$tmp/a/e3/runs/small-mlp-r0-t0/measures.json" "$tmp/a/e3/runs/small-mlp-r0-t0/model.safetensors")
"$app" --profile tiny --jobs 2 --out "$tmp/a" "${data[@]}" > "$tmp/b.log" 2>&1 || fail "rerun failed"
grep -q "5 already finished, 0 to run" "$tmp/b.log" || fail "rerun did not skip: $(cat "$tmp/b.log")"
after=$(stat -c '%i %Y' "$tmp/a/e3/runs/small-mlp-r0-t0/measures.json" "$tmp/a/e3/runs/small-mlp-r0-t0/model.safetensors")
[ "$before" = "$after" ] || fail "a finished run was rewritten"

# 3. Kill the grid for real while it runs, resume, compare e3.csv with the uninterrupted one.
# In its own process group (set -m), so that one kill reaches the app and its child jobs.
set -m
"$app" --profile tiny --experiments e3 --jobs 1 --threads 1 --out "$tmp/k" "${data[@]}" > "$tmp/k1.log" 2>&1 &
pid=$!
set +m
for _ in $(seq 1 200); do  # until the first run has a checkpoint, at most 20 s
  ls "$tmp"/k/e3/runs/*/checkpoint.safetensors > /dev/null 2>&1 && break
  sleep 0.1
done
kill -9 -- "-$pid" 2> /dev/null; wait "$pid" 2> /dev/null
sleep 0.2
"$app" --profile tiny --experiments e3 --jobs 1 --threads 1 --out "$tmp/k" "${data[@]}" > "$tmp/k2.log" 2>&1 \
  || { cat "$tmp/k2.log"; fail "resume after kill failed"; }
diff <(e3_values "$tmp/a/e3.csv") <(e3_values "$tmp/k/e3.csv") > /dev/null \
  || fail "killed-then-resumed e3.csv differs: $(diff <(e3_values "$tmp/a/e3.csv") <(e3_values "$tmp/k/e3.csv"))"

# 4. --plan: self-contained lines; run them in a shell, then --collect.
"$app" --profile tiny --experiments e3,e4 --out "$tmp/p" "${data[@]}" --plan "$tmp/plan.txt" \
  > /dev/null 2>&1 || fail "--plan failed"
[ "$(wc -l < "$tmp/plan.txt")" -eq 3 ] || fail "plan should have 3 lines: $(cat "$tmp/plan.txt")"
grep -q "^/.*reproduce_experiments run --experiment e3 .*--epochs 3 .*--threads " "$tmp/plan.txt" \
  || fail "plan line is not self-contained: $(head -1 "$tmp/plan.txt")"
(cd / && bash "$tmp/plan.txt" > /dev/null 2>&1) || fail "plan lines failed to run"
"$app" --collect "$tmp/p" > "$tmp/c.log" 2>&1 || fail "--collect failed: $(cat "$tmp/c.log")"
[ -s "$tmp/p/e3.csv" ] && [ -s "$tmp/p/e4.csv" ] && [ -s "$tmp/p/report.md" ] || fail "--collect wrote no outputs"
diff <(e3_values "$tmp/a/e3.csv") <(e3_values "$tmp/p/e3.csv") > /dev/null \
  || fail "plan-run e3.csv differs from the local run"

# 5. Clear errors.
expect_error() {  # expected-substring, args...
  local want=$1; shift
  local out; out=$("$app" "$@" 2>&1) && fail "accepted: $*"
  grep -q -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
}
expect_error "unknown profile 'huge'" --profile huge --out "$tmp/bad"
expect_error "unknown experiment 'e7'" --profile tiny --experiments e1,e7 --out "$tmp/bad"
expect_error "not a folder" --collect "$tmp/nowhere"
expect_error "unknown option --colour" run --colour red
expect_error "is missing" run --experiment e3 --model mlp
"$app" --help | grep -q -- "--plan" || fail "--help lacks --plan"
echo "OK"
