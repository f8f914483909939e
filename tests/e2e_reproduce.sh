#!/usr/bin/env bash
# End-to-end test of apps/reproduce_experiments on the tiny profile: the files it writes,
# a rerun that skips finished runs, a killed-then-resumed grid that gives the same e3.csv,
# no orphaned jobs after kill -9 of the runner, a clean stop on SIGINT, one run per output
# folder, --plan lines that run on their own (with a job.log and named output lines),
# --collect, one profile per folder, and clear errors. $1: the meson build dir.
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
grep -q "\[7/7\] done" "$tmp/a.log" || fail "no progress lines (done/total): $(cat "$tmp/a.log")"
grep -q "ETA" "$tmp/a.log" || fail "no ETA in the progress lines"
for f in report.md results.json plan.json e1.csv e2.csv e3.csv e3_correlations.csv e4.csv e5.csv; do
  [ -s "$tmp/a/$f" ] || fail "missing $f"
done
head -1 "$tmp/a/e3.csv" | grep -q "^model,ratio,trial,n,epochs,train_loss,train_accuracy,test_accuracy,gap,trace,ms,ms_node,normalized" \
  || fail "e3.csv columns: $(head -1 "$tmp/a/e3.csv")"
[ "$(wc -l < "$tmp/a/e3.csv")" -eq 3 ] || fail "e3.csv should have 2 runs"
for s in "## E1" "## E2" "## E3" "## E4" "## E5: the edge of stability" "Side by side with the paper" "Kendall"; do
  grep -q "$s" "$tmp/a/report.md" || fail "report.md lacks '$s'"
done
if command -v gnuplot > /dev/null; then
  for png in e1_trace e2_error_vs_time e3_small-mlp e4_scale_invariance e5_edge_of_stability; do
    [ -s "$tmp/a/figures/$png.png" ] || fail "missing figure $png.png"
    grep -q "figures/$png.png" "$tmp/a/report.md" || fail "report.md does not embed $png"
  done
fi
[ -s "$tmp/a/e3/runs/small-mlp-r1-t0/job.log" ] || fail "no job log"
# E5: full-batch gradient descent with tracked sharpness, one e5.csv row per tracked step.
head -1 "$tmp/a/e5.csv" | grep -q "^model,lr,two_over_lr,n,step,loss,lambda_max,trace,ms" \
  || fail "e5.csv columns: $(head -1 "$tmp/a/e5.csv")"
[ "$(grep -c '"kind":"track"' "$tmp/a/e5/runs/small-mlp-lr0.05/metrics.jsonl")" -eq 4 ] \
  || fail "E5 run lacks its track lines"
[ "$(wc -l < "$tmp/a/e5.csv")" -eq 9 ] || fail "e5.csv should have 2 runs x 4 points"

# 2. Rerun: everything is skipped, finished files untouched.
before=$(stat -c '%i %Y' "$tmp/a/e3/runs/small-mlp-r0-t0/measures.json" "$tmp/a/e3/runs/small-mlp-r0-t0/model.safetensors")
"$app" --profile tiny --jobs 2 --out "$tmp/a" "${data[@]}" > "$tmp/b.log" 2>&1 || fail "rerun failed"
grep -q "7 already finished, 0 to run" "$tmp/b.log" || fail "rerun did not skip: $(cat "$tmp/b.log")"
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

# Waits (at most 20 s) until `condition` holds.
wait_for() {
  for _ in $(seq 1 400); do eval "$1" && return 0; sleep 0.05; done
  return 1
}
alive() {  # pid: running (a zombie waiting for its reaper is not)
  local state; state=$(ps -o stat= -p "$1" 2> /dev/null)
  [ -n "$state" ] && [[ $state != Z* ]]
}
results_in() { ls "$1"/e*/runs/*/measures.json "$1"/e*/runs/*/result.json 2> /dev/null; }

# 3b. kill -9 of the runner alone: its child jobs die with it instead of computing on.
"$app" --profile tiny --experiments e3 --jobs 2 --threads 1 --out "$tmp/o" "${data[@]}" > "$tmp/o.log" 2>&1 &
pid=$!
wait_for '[ -n "$(pgrep -P "$pid")" ]' || fail "the runner started no job: $(cat "$tmp/o.log")"
children=$(pgrep -P "$pid")
kill -9 "$pid"; wait "$pid" 2> /dev/null
for c in $children; do
  wait_for '! alive "$c"' || fail "job $c survived kill -9 of its runner"
done

# 3c. SIGINT to the runner: the running job is stopped and waited for, finished jobs are
# kept, one line says so, the exit status is non-zero, and a rerun resumes.
set -m
"$app" --profile tiny --experiments e3,e4 --jobs 1 --threads 1 --out "$tmp/i" "${data[@]}" > "$tmp/i.log" 2>&1 &
pid=$!
set +m
wait_for '[ -n "$(results_in "$tmp/i")" ] && [ -n "$(pgrep -P "$pid")" ]' \
  || fail "no finished job while another runs: $(cat "$tmp/i.log")"
children=$(pgrep -P "$pid")
finished=$(results_in "$tmp/i")
kill -INT "$pid"; wait "$pid"; rc=$?
[ "$rc" -ne 0 ] || fail "an interrupted grid exited with status 0"
tail -1 "$tmp/i.log" | grep -Eq "error: interrupted by SIGINT: stopped [0-9]+ running job\(s\); .* run the same command again" \
  || fail "no one-line interruption message: $(tail -3 "$tmp/i.log")"
for c in $children; do alive "$c" && fail "job $c still runs after SIGINT"; done
for f in $finished; do [ -s "$f" ] || fail "SIGINT lost the finished result $f"; done
kept=$(results_in "$tmp/i" | wc -l)
"$app" --profile tiny --experiments e3,e4 --jobs 1 --threads 1 --out "$tmp/i" "${data[@]}" > "$tmp/i2.log" 2>&1 \
  || fail "resume after SIGINT failed: $(cat "$tmp/i2.log")"
grep -q "3 jobs: $kept already finished" "$tmp/i2.log" \
  || fail "the rerun did not reuse the finished jobs: $(head -3 "$tmp/i2.log")"

# 3d. A second run into the same folder while one runs: refused, naming the first one.
"$app" --profile tiny --experiments e3 --jobs 1 --threads 1 --out "$tmp/l" "${data[@]}" > "$tmp/l1.log" 2>&1 &
pid=$!
wait_for '[ -s "$tmp/l/.lock" ]' || fail "the first run holds no lock"
second=$("$app" --profile tiny --experiments e3 --jobs 1 --threads 1 --out "$tmp/l" "${data[@]}" 2>&1); rc=$?
wait "$pid" || fail "the first run failed: $(cat "$tmp/l1.log")"
[ "$rc" -eq 1 ] || fail "second concurrent run: exit status $rc, expected 1: $second"
grep -q "another reproduce_experiments (pid $pid) is running in $tmp/l" <<<"$second" \
  || fail "second concurrent run: $second"

# 4. --plan: self-contained lines; run them in a shell, then --collect.
"$app" --profile tiny --experiments e3,e4 --out "$tmp/p" "${data[@]}" --plan "$tmp/plan.txt" \
  > /dev/null 2>&1 || fail "--plan failed"
[ "$(wc -l < "$tmp/plan.txt")" -eq 3 ] || fail "plan should have 3 lines: $(cat "$tmp/plan.txt")"
grep -q "^/.*reproduce_experiments run --experiment e3 .*--epochs 3 .*--threads " "$tmp/plan.txt" \
  || fail "plan line is not self-contained: $(head -1 "$tmp/plan.txt")"
(cd / && bash "$tmp/plan.txt" > "$tmp/plan.log" 2>&1) || fail "plan lines failed to run"
grep -q "epoch 3/3" "$tmp/p/e3/runs/small-mlp-r0-t0/job.log" \
  || fail "a plan line wrote no job.log: $(ls "$tmp/p/e3/runs/small-mlp-r0-t0")"
grep -q "^\[e3/small-mlp-r1-t0\] epoch 3/3" "$tmp/plan.log" \
  || fail "plan lines' output does not name its job: $(head -3 "$tmp/plan.log")"
(cd / && bash <(head -1 "$tmp/plan.txt")) 2>&1 | grep -q "job e[34]/small-mlp.* already done" \
  || fail "rerunning a finished plan line does not say so"
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
expect_error "colour" run --colour red
expect_error "is missing" run --experiment e3 --model mlp
expect_error "--ratio" run --experiment e3 --ratio 0 --ratio 1
expect_error "--profile" --profile tiny --profile quick --out "$tmp/bad"
"$app" --help | grep -q -- "--plan" || fail "--help lacks --plan"
"$app" --help | grep -q -- "--force" || fail "--help lacks --force"
for option in experiment model ratio trial seed epochs lr factors threads; do
  "$app" run --help | grep -q -- "--$option " || fail "run --help lacks --$option"
done

# 6. One profile per folder: another subset of the same profile joins the plan; another
# profile's plan is refused (plan.json untouched), unless --force starts over.
"$app" --profile tiny --experiments e1 --out "$tmp/p" "${data[@]}" --plan "$tmp/p1.txt" > /dev/null 2>&1 \
  || fail "a plan of another subset of the same profile was refused"
grep -A4 '"experiments"' "$tmp/p/plan.json" | tr -d ' \n' | grep -q '\["e1","e3","e4"\]' \
  || fail "the subset plan dropped the earlier experiments: $(grep -A4 '"experiments"' "$tmp/p/plan.json")"
before=$(md5sum < "$tmp/p/plan.json")
expect_error "holds a grid of profile tiny on mnist" --profile quick --out "$tmp/p" "${data[@]}" --plan "$tmp/q.txt"
[ "$(md5sum < "$tmp/p/plan.json")" = "$before" ] || fail "a refused plan overwrote plan.json"
"$app" --profile quick --out "$tmp/p" "${data[@]}" --plan "$tmp/q.txt" --force > /dev/null 2>&1 \
  || fail "--force did not start over"
grep -q '"name": "quick"' "$tmp/p/plan.json" || fail "--force wrote no new plan"
[ ! -e "$tmp/p/e3" ] || fail "--force kept the other profile's runs"
echo "OK"
