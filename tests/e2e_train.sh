#!/usr/bin/env bash
# End-to-end test of apps/train: accuracy on MNIST within a fixed budget, the files it
# writes, --resume, and clear errors for bad input. $1: the meson build dir.
set -uo pipefail
build=$1
train=$build/apps/train
repo=${MINSHARP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
if [ ! -f "$repo/data/mnist/train-images-idx3-ubyte" ]; then
  echo "SKIP: MNIST not fetched (run data/fetch_mnist.sh)"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

final_test_accuracy() {  # last metrics.jsonl line's test_accuracy
  tail -n 1 "$1/metrics.jsonl" | grep -o '"test_accuracy":[0-9.e-]*' | cut -d: -f2
}
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# Budget: MLP 5 epochs (lr 0.02) and SmallCNN 1 epoch (lr 0.05) over the 60,000 MNIST
# training images, batch 128, momentum 0.9 — both must reach 97% test accuracy.
"$train" --model mlp --epochs 5 --batch-size 128 --lr 0.02 --seed 1 --eval-every 5 \
  --out "$tmp/mlp" --quiet || fail "mlp training failed"
acc=$(final_test_accuracy "$tmp/mlp"); echo "mlp test accuracy $acc"
at_least "$acc" 0.97 || fail "mlp reached only $acc"
"$train" --model small-cnn --epochs 1 --batch-size 128 --lr 0.05 --seed 1 \
  --out "$tmp/cnn" --quiet || fail "small-cnn training failed"
acc=$(final_test_accuracy "$tmp/cnn"); echo "small-cnn test accuracy $acc"
at_least "$acc" 0.97 || fail "small-cnn reached only $acc"
for f in config.json metrics.jsonl checkpoint.safetensors model.safetensors; do
  [ -s "$tmp/mlp/$f" ] || fail "missing $f"
done
[ "$(wc -l < "$tmp/mlp/metrics.jsonl")" -eq 5 ] || fail "metrics.jsonl should have 5 lines"

# --resume: 3 epochs in one go == 1 epoch, then resumed to 3.
small=(--model small-mlp --train-size 2000 --test-size 500 --batch-size 100 --seed 4 --quiet)
"$train" "${small[@]}" --epochs 3 --out "$tmp/full" || fail "small run failed"
"$train" "${small[@]}" --epochs 1 --out "$tmp/part" || fail "partial run failed"
"$train" "${small[@]}" --epochs 3 --out "$tmp/part" --resume || fail "resume failed"
cmp -s "$tmp/full/model.safetensors" "$tmp/part/model.safetensors" \
  || fail "resumed weights differ from the uninterrupted run"

# Run folders never mix runs: a folder holding a run is refused unless --resume (continue
# exactly: same config, more epochs or none) or --force (delete its files, start over).
one_line_error() {  # expected-substring, args... (must fail with exactly one line)
  local want=$1; shift
  local out; out=$("$train" "$@" 2>&1) && fail "accepted: $*"
  grep -qF -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
  [ "$(grep -c . <<<"$out")" -eq 1 ] || fail "more than one line for '$*': $out"
}
rf=(--model small-mlp --train-size 500 --test-size 200 --batch-size 100 --seed 5 --quiet --out "$tmp/rf")
"$train" "${rf[@]}" --epochs 2 || fail "run-folder run failed"
cp "$tmp/rf/model.safetensors" "$tmp/rf-model"
one_line_error "already holds a run; --resume continues it, --force" "${rf[@]}" --epochs 2 --lr 0.1
one_line_error "cannot be shortened" "${rf[@]}" --epochs 1 --resume
one_line_error "another config (lr 0.05 -> 0.1)" "${rf[@]}" --epochs 3 --lr 0.1 --resume
out=$("$train" "${rf[@]}" --epochs 2 --resume 2>&1) || fail "resume of a finished run failed: $out"
grep -qF "already finished its 2 epochs" <<<"$out" || fail "finished run not reported: $out"
cmp -s "$tmp/rf/model.safetensors" "$tmp/rf-model" || fail "resume of a finished run changed its model"
"$train" "${rf[@]}" --epochs 2 --resume --force >/dev/null 2>&1 && fail "--resume --force accepted"
one_line_error "does not exist" "${small[@]}" --epochs 1 --resume --out "$tmp/never-trained"
[ ! -e "$tmp/never-trained" ] || fail "--resume of nothing created the folder"
# A diverging --force rerun: the old run's files are gone, none of them sits beside the new config.
one_line_error "diverged" "${rf[@]}" --epochs 1 --force --lr 1e30
[ ! -e "$tmp/rf/model.safetensors" ] && [ ! -e "$tmp/rf/checkpoint.safetensors" ] \
  || fail "a failed --force run left the old model or checkpoint"
grep -q '"lr": 1e+30' "$tmp/rf/config.json" || fail "config.json is not the failed run's"
"$train" "${rf[@]}" --epochs 1 --force || fail "--force over a failed run failed"
[ "$(wc -l < "$tmp/rf/metrics.jsonl")" -eq 1 ] || fail "metrics.jsonl mixes runs"

# A non-finite evaluation is a divergence, not a metrics line with nulls.
out=$("$train" --model lenet --lr 10 --train-size 500 --test-size 500 --epochs 1 --seed 0 \
  --quiet --out "$tmp/lenet" 2>&1) && fail "lenet --lr 10 exited 0: $(cat "$tmp/lenet/metrics.jsonl")"
grep -q "diverged" <<<"$out" || fail "lenet --lr 10: $out"
! grep -qs null "$tmp/lenet/metrics.jsonl" || fail "metrics.jsonl has nulls"

# An output folder that cannot be written fails at once, before the data is loaded.
echo x > "$tmp/plain"
one_line_error "is not a folder" "${small[@]}" --epochs 1 --out "$tmp/plain/run"

# --track: the same weights as without it, one track line per point (before the first step
# and every 3rd of the 10 steps), the epoch lines unchanged, and a resume that keeps them.
tr=(--model small-mlp --train-size 500 --test-size 200 --batch-size 100 --seed 6)
track=(--track trace,ms --track-every 3steps --track-n 200)
"$train" "${tr[@]}" --epochs 2 --quiet --out "$tmp/untracked" || fail "untracked run failed"
"$train" "${tr[@]}" --epochs 2 "${track[@]}" --out "$tmp/tracked" > "$tmp/tracked.out" 2> "$tmp/tracked.err" \
  || fail "tracked run failed: $(cat "$tmp/tracked.err")"
cmp -s "$tmp/untracked/model.safetensors" "$tmp/tracked/model.safetensors" \
  || fail "--track changed the weights"
[ "$(grep -c '"kind":"track"' "$tmp/tracked/metrics.jsonl")" -eq 4 ] \
  || fail "expected 4 track lines: $(cat "$tmp/tracked/metrics.jsonl")"
grep '"kind":"track"' "$tmp/tracked/metrics.jsonl" | grep -v '"ms":' && fail "a track line lacks ms"
grep '"kind":"track"' "$tmp/tracked/metrics.jsonl" | grep -v '"trace":' && fail "a track line lacks trace"
without_seconds() { grep -v '"kind":"track"' "$1" | sed 's/"seconds":[0-9.e+-]*//'; }
diff <(without_seconds "$tmp/untracked/metrics.jsonl") <(without_seconds "$tmp/tracked/metrics.jsonl") \
  > /dev/null || fail "--track changed the epoch lines"
grep -q "note: tracking trace,ms every 3steps" "$tmp/tracked.err" || fail "no tracking note: $(cat "$tmp/tracked.err")"
grep -q "^track step 9 (epoch 2):  ms .* trace " "$tmp/tracked.out" || fail "no track log line: $(cat "$tmp/tracked.out")"
"$train" "${tr[@]}" --epochs 1 "${track[@]}" --quiet --out "$tmp/track-resumed" || fail "tracked partial run failed"
"$train" "${tr[@]}" --epochs 2 "${track[@]}" --quiet --out "$tmp/track-resumed" --resume || fail "tracked resume failed"
cmp -s "$tmp/tracked/model.safetensors" "$tmp/track-resumed/model.safetensors" \
  || fail "a tracked resume changed the weights"
strip_seconds() { sed 's/"seconds":[0-9.e+-]*//' "$1"; }
diff <(strip_seconds "$tmp/tracked/metrics.jsonl") <(strip_seconds "$tmp/track-resumed/metrics.jsonl") \
  > /dev/null || fail "resumed metrics.jsonl differs from the uninterrupted one"

# Bad tracking values are command-line errors (exit 2) that name the problem.
usage_error() {  # expected-substring, args...
  local want=$1; shift
  local out rc; out=$("$train" "$@" --out "$tmp/bad" 2>&1); rc=$?
  [ "$rc" -eq 2 ] || fail "'$*' exited $rc, expected 2: $out"
  grep -qF -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
}
usage_error "unknown measure 'sharpest'" --track trace,sharpest
usage_error "unknown unit 'weeks'" --track trace --track-every 5weeks
usage_error "lacks a unit" --track trace --track-every 5
usage_error "is not a whole number in [1," --track trace --track-every 0steps
usage_error "--track-every requires --track" --track-every 5steps
usage_error "--track-n" --track trace --track-n 0
"$train" --help | grep -q -- "--track-every" || fail "--help lacks --track-every"

# Bad input: one clear line, non-zero exit, nothing written.
expect_error() {  # expected-substring, args...
  local want=$1; shift
  local out; out=$("$train" "$@" --out "$tmp/bad" 2>&1) && fail "accepted: $*"
  grep -q -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
}
expect_error "lr" --lr -1
expect_error "label-noise" --label-noise 1.5
expect_error "unknown model 'resnet'" --model resnet
expect_error "dataset" --dataset cifar
expect_error "not found" --data-dir "$tmp/nowhere"
[ ! -e "$tmp/bad/model.safetensors" ] || fail "a failed run wrote a model"
"$train" --help | grep -q -- "--label-noise" || fail "--help lacks --label-noise"
echo "OK"
