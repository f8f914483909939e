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
