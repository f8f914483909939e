#!/usr/bin/env bash
# End-to-end test of the command-line convention shared by all apps (docs/limits.md):
# exit 0 on success and --help, 1 on a runtime error, 2 on a usage error, each error as one
# "<app>: error: ..." line on stderr; integers are plain digits; --threads is capped.
# Needs no dataset, except the last part (skipped without MNIST). $1: the meson build dir.
set -uo pipefail
build=$1
repo=${MINSHARP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# expect STATUS SUBSTRING APP ARGS...: the app exits with STATUS; when it fails, stderr is
# one line "APP: error: ..." containing SUBSTRING.
expect() {
  local want=$1 text=$2 app=$3; shift 3
  local err status
  err=$("$build/apps/$app" "$@" 2>&1 >/dev/null); status=$?
  [ "$status" -eq "$want" ] || fail "$app $*: exit $status, expected $want ($err)"
  [ "$want" -eq 0 ] && return 0
  [ "$(wc -l <<<"$err")" -eq 1 ] || fail "$app $*: error is not one line: $err"
  [[ $err == "$app: error: "* ]] || fail "$app $*: error lacks '$app: error: ': $err"
  grep -qF -- "$text" <<<"$err" || fail "$app $*: error lacks '$text': $err"
}

echo junk > "$tmp/junk.safetensors"
nowhere=$tmp/nowhere
# Arguments that make each app fail at run time, after a clean parse, without MNIST.
declare -A runtime_args=(
  [train]="--data-dir $nowhere --out $tmp/run"
  [sharpness]="--checkpoint $tmp/junk.safetensors"
  [reproduce_experiments]="--collect $nowhere"
)
for app in train sharpness reproduce_experiments; do
  read -ra base <<<"${runtime_args[$app]}"
  "$build/apps/$app" --help >"$tmp/help" 2>&1 || fail "$app --help exits non-zero"
  grep -q -- "--threads" "$tmp/help" || fail "$app --help does not list --threads"
  expect 1 "" "$app" "${base[@]}"
  expect 2 "--bogus" "$app" --bogus "${base[@]}"
  expect 2 "--threads" "$app" --threads 100000 "${base[@]}"
  expect 2 "--threads" "$app" --threads -1 "${base[@]}"
  expect 2 "--threads" "$app" --threads 1e3 "${base[@]}"
done

# Seeds: 2^64 − 1 is a seed; -1, 2^64, 1e23 and 010 (octal to CLI11) are not.
for app in train sharpness; do
  read -ra base <<<"${runtime_args[$app]}"
  expect 1 "" "$app" --seed 18446744073709551615 "${base[@]}"
  for bad in -1 18446744073709551616 1e23 010 0x10 " 1" +1; do
    expect 2 "--seed" "$app" --seed "$bad" "${base[@]}"
  done
done
read -ra base <<<"${runtime_args[train]}"
expect 2 "--epochs" train --epochs 99999999999 "${base[@]}"
expect 2 "--epochs" train --epochs 0 "${base[@]}"
expect 2 "--batch-size" train --batch-size -5 "${base[@]}"
expect 2 "--train-size" train --train-size 1.5 "${base[@]}"
expect 2 "--lr" train --lr -1 "${base[@]}"
expect 2 "--dataset" train --dataset cifar "${base[@]}"
expect 2 "--n" sharpness --n -1 --checkpoint "$tmp/junk.safetensors"
expect 2 "--checkpoint" sharpness --checkpoint "$nowhere"
expect 2 "--checkpoint" sharpness
expect 2 "--jobs" reproduce_experiments --jobs 0 --collect "$nowhere"

# Model specs beyond the limits fail at once with the field and the value (needs MNIST:
# the model is built after the data is loaded).
if [ -f "$repo/data/mnist/train-images-idx3-ubyte" ]; then
  small=(--train-size 100 --test-size 100 --epochs 1 --quiet --out "$tmp/spec")
  expect 1 "out features '1152921504606846976'" train "${small[@]}" \
    --model "flatten,dense:1152921504606846976:nobias"
  expect 1 "padding '9223372036854775808'" train "${small[@]}" \
    --model "conv:2:5:pad9223372036854775808"
  expect 1 "padding '2147483634'" train "${small[@]}" --model "conv:1:1:pad2147483634"
  expect 0 "" train "${small[@]}" --model "conv:2:5:pad2,relu,flatten,dense:10" --threads 2
else
  echo "MNIST not fetched: model-spec checks skipped"
fi
echo "OK"
