#!/usr/bin/env bash
# End-to-end test of apps/sharpness: measures of a freshly trained tiny model, the JSON it
# writes, a PyTorch-style state dict (no metadata) named with --model, and one clear error
# line for bad input. $1: the meson build dir.
set -uo pipefail
build=$1
train=$build/apps/train
sharpness=$build/apps/sharpness
repo=${MINSHARP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
if [ ! -f "$repo/data/mnist/train-images-idx3-ubyte" ] && [ ! -f "$repo/data/mnist/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: MNIST not fetched (run data/fetch_mnist.sh)"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

"$train" --model small-mlp --train-size 200 --test-size 200 --epochs 1 --seed 2 \
  --out "$tmp/run" --quiet || fail "training the tiny model failed"
model=$tmp/run/model.safetensors

# Measures on the first 100 training inputs, table on stdout, JSON on disk.
out=$("$sharpness" --checkpoint "$model" --n 100 --measures trace,ms,ms-node,normalized,hutchinson \
  --hutchinson-samples 20 --json "$tmp/s.json" --quiet 2>&1) || fail "sharpness failed: $out"
echo "$out"
for part in "layer0" "layer2" "[trace]" "[ms]" "[ms-node]" "[normalized]" "[hutchinson]" \
            "first 100 mnist training inputs"; do
  grep -qF -- "$part" <<<"$out" || fail "table lacks '$part'"
done
[ -s "$tmp/s.json" ] || fail "no JSON written"
check_json() {  # python3 when present (parses for real), else grep for the keys
  if command -v python3 >/dev/null; then
    python3 - "$1" <<'EOF' || fail "JSON check failed"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["inputs"] == 100, j["inputs"]
assert len(j["layers"]) == 3 and all("weight_trace" in l and "bias_trace" in l for l in j["layers"])
t = sum(l["weight_trace"] + l["bias_trace"] for l in j["layers"])
assert abs(t - j["trace"]) <= 1e-9 * t, (t, j["trace"])
assert 0 < j["ms_node"]["value"] <= j["ms"]["value"] * (1 + 1e-12) <= j["trace"] * (1 + 1e-12)
assert len(j["ms"]["scales"]) == 3 and j["normalized"] > 0
assert j["hutchinson"]["samples"] == 20
for k in ("diag_hessian", "ms", "ms_node", "normalized", "hutchinson", "total"):
    assert k in j["seconds"], k
EOF
  else
    for key in '"inputs": 100' '"trace"' '"ms"' '"ms_node"' '"normalized"' '"hutchinson"' '"seconds"' '"weight_trace"'; do
      grep -qF -- "$key" "$1" || fail "JSON lacks $key"
    done
  fi
}
check_json "$tmp/s.json"

# --rescale: the same function, Tr H moves by orders of magnitude, node-wise MS and
# normalized sharpness do not.
for how in layer node; do
  out=$("$sharpness" --checkpoint "$model" --n 100 --rescale "$how" --json "$tmp/$how.json" --quiet 2>&1) \
    || fail "--rescale $how failed: $out"
  grep -q "rescaled    $how-wise" <<<"$out" || fail "--rescale $how not reported: $out"
  if command -v python3 >/dev/null; then
    python3 - "$tmp/s.json" "$tmp/$how.json" "$how" <<'EOF' || fail "--rescale $how changed an invariant"
import json, math, sys
a, b, how = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
rel = lambda x, y: abs(x - y) / max(abs(x), abs(y))
assert abs(math.log10(b["trace"] / a["trace"])) > 1, (a["trace"], b["trace"])
assert rel(a["ms_node"]["value"], b["ms_node"]["value"]) < 1e-9
assert rel(a["normalized"], b["normalized"]) < 1e-8
if how == "layer": assert rel(a["ms"]["value"], b["ms"]["value"]) < 1e-9
EOF
  fi
done

# The second-order measures: their JSON keys (measure names with '-' -> '_'), per-layer
# lambda_max, and under --rescale layer the adaptive forms and Fisher-Rao stay while
# lambda_max moves. The spectrum PNG lands next to --json when gnuplot is present.
so=lambda-max,top-eigenvalues,hutchinson,spectrum,adaptive,adaptive-lambda-max,fisher-rao
for how in none layer; do
  out=$("$sharpness" --checkpoint "$model" --n 100 --measures "$so" --hutchinson-samples 10 \
    --top-k 3 --spectrum-probes 2 --spectrum-steps 10 --rescale "$how" --json "$tmp/so_$how.json" \
    --quiet 2>&1) || fail "second-order measures ($how) failed: $out"
  for part in "[lambda-max]" "[top-eigenvalues]" "[spectrum]" "[adaptive]" "[adaptive-lambda-max]" \
              "[fisher-rao]" "exact Hv probes" "lambda_max"; do
    grep -qF -- "$part" <<<"$out" || fail "table lacks '$part': $out"
  done
  if command -v gnuplot >/dev/null; then
    [ -s "$tmp/so_${how}_spectrum.png" ] || fail "no spectrum PNG next to the JSON: $out"
  else
    grep -qF "gnuplot not found" <<<"$out" || fail "no note on the missing gnuplot: $out"
  fi
done
if command -v python3 >/dev/null; then
  python3 - "$tmp/so_none.json" "$tmp/so_layer.json" <<'EOF' || fail "second-order JSON check failed"
import json, math, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rel = lambda x, y: abs(x - y) / max(abs(x), abs(y))
for k in ("lambda_max", "top_eigenvalues", "adaptive_lambda_max"):
    for f in ("value", "residuals", "iterations"):
        assert f in a[k], (k, f)
assert len(a["top_eigenvalues"]["values"]) == 3
assert a["top_eigenvalues"]["values"][0] == a["top_eigenvalues"]["value"]
for f in ("value", "estimate", "standard_error", "samples"):
    assert f in a["hutchinson"], f
assert a["hutchinson"]["samples"] == 10
sp = a["spectrum"]
assert len(sp["nodes"]) == len(sp["weights"]) == 2
assert all(abs(sum(w) - 1) < 1e-9 for w in sp["weights"])
assert len(sp["grid"]) == len(sp["density"]) > 1
assert isinstance(a["adaptive"], float) and "value" in a["fisher_rao"]
assert all("value" in l["lambda_max"] for l in a["layers"]) and len(a["layers"]) == 3
assert abs(math.log10(b["lambda_max"]["value"] / a["lambda_max"]["value"])) > 1
assert rel(a["adaptive"], b["adaptive"]) < 1e-9
assert rel(a["adaptive_lambda_max"]["value"], b["adaptive_lambda_max"]["value"]) < 1e-9
assert rel(a["fisher_rao"]["value"], b["fisher_rao"]["value"]) < 1e-9
EOF
fi
out=$("$sharpness" --checkpoint "$model" --n 50 --measures trace --spectrum-png "$tmp/x.png" --quiet 2>&1) \
  && fail "--spectrum-png without the spectrum measure was accepted"
grep -qF "needs the spectrum measure" <<<"$out" || fail "unclear --spectrum-png error: $out"

# Without --n: the inputs the checkpoint was trained on (its config: the first 200).
out=$("$sharpness" --checkpoint "$model" --measures trace --quiet 2>&1) || fail "default inputs: $out"
grep -qF "the 200 mnist training inputs the checkpoint was trained on" <<<"$out" \
  || fail "did not default to the training subset: $out"

# A PyTorch state dict has no minsharp metadata: it needs --model.
if command -v python3 >/dev/null; then
  python3 - "$model" "$tmp/torch.safetensors" <<'EOF' || fail "could not strip the metadata"
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n]); header.pop("__metadata__", None)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
EOF
  out=$("$sharpness" --checkpoint "$tmp/torch.safetensors" --n 50 --measures ms 2>&1) \
    && fail "accepted a state dict without an architecture"
  grep -q -- "--model" <<<"$out" || fail "message does not point to --model: $out"
  "$sharpness" --checkpoint "$tmp/torch.safetensors" --model small-mlp --n 50 --measures ms \
    --quiet >/dev/null || fail "state dict with --model small-mlp failed"
fi

# --diag-out: the exact diagonal with the model's tensor names and shapes, summing to Tr H;
# written also when no measure needs the diagonal, and in float with --precision float.
"$sharpness" --checkpoint "$model" --n 100 --measures trace,ms --diag-out "$tmp/diag.safetensors" \
  --json "$tmp/d.json" --quiet >/dev/null || fail "--diag-out failed"
"$sharpness" --checkpoint "$model" --n 100 --measures hutchinson --hutchinson-samples 2 \
  --diag-out "$tmp/diag_only.safetensors" --quiet >/dev/null || fail "--diag-out without a diag measure failed"
"$sharpness" --checkpoint "$model" --n 100 --measures trace --precision float \
  --diag-out "$tmp/diag_float.safetensors" --quiet >/dev/null || fail "--diag-out in float failed"
if command -v python3 >/dev/null; then
  python3 - "$model" "$tmp/d.json" "$tmp/diag.safetensors" "$tmp/diag_only.safetensors" \
    "$tmp/diag_float.safetensors" <<'EOF' || fail "the --diag-out file is wrong"
import json, struct, sys
def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        fmt = {"F64": "d", "F32": "f"}[t["dtype"]]
        count = (b - a) // struct.calcsize(fmt)
        tensors[name] = (t["dtype"], t["shape"], struct.unpack("<%d%s" % (count, fmt), raw[8 + n + a:8 + n + b]))
    return tensors, meta
model, _ = load(sys.argv[1])
report = json.load(open(sys.argv[2]))
diag, meta = load(sys.argv[3])
assert sorted(diag) == sorted(model), (sorted(diag), sorted(model))
for name, (dtype, shape, values) in diag.items():
    assert dtype == "F64" and shape == model[name][1], (name, dtype, shape, model[name][1])
    assert min(values) >= 0, name  # a sum of squares for these networks
total = sum(sum(v) for _, _, v in diag.values())
assert abs(total - report["trace"]) <= 1e-9 * report["trace"], (total, report["trace"])
layer0 = sum(diag["layer0.weight"][2])
assert abs(layer0 - report["layers"][0]["weight_trace"]) <= 1e-9 * layer0
assert meta["minsharp.inputs"] == report["inputs_description"], meta
other, _ = load(sys.argv[4])
assert all(other[k][2] == diag[k][2] for k in diag), "diagonal differs without a diag measure"
single, meta_f = load(sys.argv[5])
assert meta_f["minsharp.precision"] == "float"
t_single = sum(sum(v) for _, _, v in single.values())
assert abs(t_single - total) <= 1e-5 * total, (t_single, total)
EOF
fi

# --inputs, --offset, --subset-seed choose the inputs, deterministically. Tr H is a mean
# over inputs, so that of the first 200 is the mean of the first 100 and the 100 after them.
trace_of() {  # args... → Tr H from the JSON on stdout, the inputs_description appended to a file
  "$sharpness" --checkpoint "$model" --measures trace --json "$tmp/t.json" --quiet "$@" >"$tmp/t.out" \
    || fail "sharpness $* failed: $(cat "$tmp/t.out")"
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(repr(j["trace"])); print(j["inputs_description"], file=sys.stderr)' \
    "$tmp/t.json" 2>>"$tmp/descriptions"
}
if command -v python3 >/dev/null; then
  : >"$tmp/descriptions"
  first=$(trace_of --n 100); first200=$(trace_of --n 200)
  next=$(trace_of --offset 100 --n 100); next_again=$(trace_of --offset 100 --n 100)
  test100=$(trace_of --inputs test --n 100)
  random=$(trace_of --subset-seed 5 --n 100); random_again=$(trace_of --subset-seed 5 --n 100)
  other_random=$(trace_of --subset-seed 6 --n 100)
  [ "$next" = "$next_again" ] || fail "--offset is not deterministic: $next vs $next_again"
  [ "$random" = "$random_again" ] || fail "--subset-seed is not deterministic: $random vs $random_again"
  python3 - "$first" "$first200" "$next" "$test100" "$random" "$other_random" <<'EOF' \
    || fail "the chosen inputs are not the expected ones"
import sys
first, first200, nxt, test, rnd, other = map(float, sys.argv[1:])
assert abs((first + nxt) / 2 - first200) <= 1e-9 * first200, (first, nxt, first200)
assert len({first, nxt, test, rnd, other}) == 5, (first, nxt, test, rnd, other)
EOF
  for want in "the first 100 mnist training inputs" \
              "the 100 mnist training inputs at indices 100..199 (--offset 100)" \
              "the first 100 mnist test inputs" \
              "100 mnist training inputs drawn at random (--subset-seed 5)"; do
    grep -qxF -- "$want" "$tmp/descriptions" || fail "no inputs_description '$want': $(cat "$tmp/descriptions")"
  done
fi
# The test split without --n: all of it (the checkpoint's training subset does not apply).
out=$("$sharpness" --checkpoint "$model" --inputs test --measures trace --quiet 2>&1) || fail "--inputs test: $out"
grep -qF "the first 10000 mnist test inputs" <<<"$out" || fail "--inputs test did not use the test split: $out"

# Command-line errors exit 2; a window beyond the data exits 1 (known only once the data is
# loaded, as for --n beyond the dataset). Each is one line naming the problem.
expect_status() {  # status, expected-substring, args...
  local want_status=$1 want=$2; shift 2
  local out status; out=$("$sharpness" "$@" 2>&1); status=$?
  [ "$status" -eq "$want_status" ] || fail "exit $status (not $want_status) for '$*': $out"
  grep -qF -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
  [ "$(grep -c . <<<"$out")" -eq 1 ] || fail "more than one line for '$*': $out"
}
expect_status 2 "--offset excludes --subset-seed" --checkpoint "$model" --n 10 --offset 5 --subset-seed 1 --quiet
expect_status 2 "--subset-seed requires --n" --checkpoint "$model" --subset-seed 1 --quiet
expect_status 2 "--inputs" --checkpoint "$model" --inputs validation --quiet
expect_status 2 "--offset" --checkpoint "$model" --offset -1 --quiet
expect_status 1 "--offset 9990 + --n 20 goes beyond the mnist test set, which has only 10000 inputs" \
  --checkpoint "$model" --inputs test --offset 9990 --n 20 --quiet
expect_status 1 "--offset 60000 leaves no inputs" --checkpoint "$model" --offset 60000 --quiet
expect_status 1 "--n 70000 with --subset-seed: the mnist training set has only 60000 inputs" \
  --checkpoint "$model" --n 70000 --subset-seed 1 --quiet
expect_status 1 "is the checkpoint itself" --checkpoint "$model" --n 10 --quiet \
  --diag-out "$tmp/run/./model.safetensors"
expect_status 1 "is the --json file" --checkpoint "$model" --n 10 --quiet \
  --diag-out "$tmp/same.json" --json "$tmp/same.json"

# Bad input: one clear line, non-zero exit.
expect_error() {  # expected-substring, args...
  local want=$1; shift
  local out; out=$("$sharpness" "$@" 2>&1) && fail "accepted: $*"
  grep -qF -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
  [ "$(grep -c . <<<"$out")" -eq 1 ] || fail "more than one line for '$*': $out"
}
expect_error "layer0.weight" --checkpoint "$model" --model small-cnn --n 10 --quiet
expect_error "--n 0" --checkpoint "$model" --n 0 --quiet
expect_error "unknown measure 'bogus'" --checkpoint "$model" --n 10 --measures bogus --quiet
expect_error "tanh" --checkpoint "$model" --model flatten,dense:20,tanh,dense:20,relu,dense:10 --quiet
expect_error "not found" --checkpoint "$model" --n 10 --data-dir "$tmp/nowhere" --quiet
expect_error "has only 60000" --checkpoint "$model" --n 70000 --quiet

# A NaN weight is refused when the checkpoint is loaded, naming the tensor and flat index.
if command -v python3 >/dev/null; then
  python3 - "$model" "$tmp/nan.safetensors" <<'EOF' || fail "could not write a NaN weight"
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
begin = json.loads(raw[8:8 + n])["layer1.weight"]["data_offsets"][0]
at = 8 + n + begin + 4 * 5  # F32 element 5
raw[at:at + 4] = struct.pack("<f", float("nan"))
open(sys.argv[2], "wb").write(raw)
EOF
  expect_error "tensor 'layer1.weight' holds nan at flat index 5" \
    --checkpoint "$tmp/nan.safetensors" --measures trace,ms,ms-node --n 10 --quiet
fi

# --json must not replace the checkpoint (however the path is spelled), and an unwritable
# --json fails before the measuring (one line: nothing was printed before it).
cp "$model" "$tmp/copy.safetensors"
expect_error "is the checkpoint itself" --checkpoint "$tmp/copy.safetensors" --n 10 --quiet \
  --json "$tmp/./run/../copy.safetensors"
ln "$tmp/copy.safetensors" "$tmp/hardlink.safetensors"
expect_error "is the checkpoint itself" --checkpoint "$tmp/copy.safetensors" --n 10 --quiet \
  --json "$tmp/hardlink.safetensors"
cmp -s "$model" "$tmp/copy.safetensors" || fail "the checkpoint was overwritten"
expect_error "is not a folder" --checkpoint "$model" --quiet --json "$tmp/s.json/report.json"
expect_error "it is a folder" --checkpoint "$model" --quiet --json "$tmp/run"
echo "OK"
