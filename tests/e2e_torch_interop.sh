#!/usr/bin/env bash
# End-to-end test of scripts/minsharp_torch.py against the apps, both directions:
#   PyTorch -> minsharp: seeded nn.Sequential models (an MLP and a small CNN) are
#     torch.save'd, exported with the CLI, and measured by apps/sharpness; its exact Tr H
#     must equal the trace of the Hessian PyTorch's autograd computes (double backward).
#   minsharp -> PyTorch: tiny models trained by apps/train are loaded with load_into; the
#     test loss and accuracy PyTorch computes on the same test images must equal the ones
#     apps/train reported.
# Plus the name mapping of bare state dicts and one-line errors. $1: the meson build dir.
# Skips (77) without PyTorch for /usr/bin/python3 (or $MINSHARP_TORCH_PYTHON) or MNIST.
set -uo pipefail
usage="usage: tests/e2e_torch_interop.sh BUILD_DIR  (normally: meson test -C build e2e_torch_interop)"
case ${1:-} in -h|--help) echo "$usage"; exit 0 ;; esac
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
build=$1
train=$build/apps/train
sharpness=$build/apps/sharpness
repo=${MINSHARP_SOURCE_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
py=${MINSHARP_TORCH_PYTHON:-/usr/bin/python3}
tool=$repo/scripts/minsharp_torch.py
if ! "$py" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "SKIP: $py cannot import torch and numpy (Debian: apt-get install python3-torch)"; exit 77
fi
mnist=${MINSHARP_DATA_DIR:-$repo/data/mnist}
if [ ! -f "$mnist/train-images-idx3-ubyte" ] && [ ! -f "$mnist/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP: MNIST not fetched (run data/fetch_mnist.sh)"; exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
export PYTHONPATH=$repo/scripts${PYTHONPATH:+:$PYTHONPATH} MINSHARP_MNIST=$mnist
export OMP_NUM_THREADS=1  # small tensors: threads would only add noise on a shared machine

# ---- PyTorch -> minsharp -------------------------------------------------------------------
"$py" - "$tmp" <<'EOF' || fail "building and saving the torch models failed"
import sys, torch
from torch import nn
torch.manual_seed(0)
# Small enough that autograd's Hessian diagonal (one double backward per parameter) is quick.
mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 3), nn.ReLU(), nn.Linear(3, 10))
cnn = nn.Sequential(nn.Conv2d(1, 2, 5, stride=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(2 * 4 * 4, 10))
torch.save(mlp, sys.argv[1] + "/mlp.pt")
torch.save(cnn, sys.argv[1] + "/cnn.pt")
torch.save(cnn.state_dict(), sys.argv[1] + "/cnn_state.pt")
avg = nn.Sequential(nn.Conv2d(1, 2, 5, stride=3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                    nn.Flatten(), nn.Linear(2 * 4 * 4, 10))
torch.save(avg, sys.argv[1] + "/avg.pt")
EOF

declare -A want_spec=(
  [mlp]="flatten,dense:3,relu,dense:10"
  [cnn]="conv:2:5:stride3:pad1,relu,maxpool:2:2,flatten,dense:10"
  [avg]="conv:2:5:stride3:pad1,relu,avgpool:2:2,flatten,dense:10"
)
for m in mlp cnn avg; do
  spec=$("$py" "$tool" spec "$tmp/$m.pt") || fail "spec of $m.pt failed"
  [ "$spec" = "${want_spec[$m]}" ] || fail "spec of $m.pt is '$spec', expected '${want_spec[$m]}'"
  out=$("$py" "$tool" export "$tmp/$m.pt" "$tmp/$m.safetensors" 2>&1) || fail "export $m: $out"
  grep -qF "0.weight" <<<"$out" || grep -qF "1.weight" <<<"$out" || fail "export did not show the mapping: $out"
  # The two-command path of docs/pytorch.md: export, then sharpness with --model.
  out=$("$sharpness" --checkpoint "$tmp/$m.safetensors" --model "$spec" --n 20 \
        --measures trace,ms,ms-node,normalized --json "$tmp/$m.json" --quiet 2>&1) \
    || fail "sharpness of the exported $m failed: $out"
  grep -qF "[ms]" <<<"$out" || fail "no MS in the $m table: $out"
  # The exported file carries its spec: --model is optional.
  "$sharpness" --checkpoint "$tmp/$m.safetensors" --n 20 --measures trace --quiet >/dev/null 2>&1 \
    || fail "sharpness of the exported $m without --model failed"
done

# The exact Tr H of minsharp against PyTorch autograd's Hessian diagonal, same inputs.
"$py" - "$tmp" <<'EOF' || fail "Tr H differs between minsharp and PyTorch"
import json, os, sys, torch
import minsharp_torch as mt
tmp = sys.argv[1]
images, labels = mt.load_mnist(os.environ["MINSHARP_MNIST"], "train")
x = torch.from_numpy(images[:20].copy()).double()
y = torch.from_numpy(labels[:20].copy())
for name in ("mlp", "cnn", "avg"):
    model = torch.load("%s/%s.pt" % (tmp, name)).double()
    params = list(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    trace = 0.0
    for g, p in zip(grads, params):
        flat = g.reshape(-1)
        for j in range(flat.numel()):
            (row,) = torch.autograd.grad(flat[j], p, retain_graph=True)
            trace += row.reshape(-1)[j].item()
    ours = json.load(open("%s/%s.json" % (tmp, name)))
    assert ours["inputs"] == 20, ours["inputs"]
    rel = abs(ours["trace"] - trace) / abs(trace)
    print("%s: Tr H minsharp %.9g, PyTorch autograd %.9g, relative difference %.2g"
          % (name, ours["trace"], trace, rel))
    assert trace > 0 and rel < 1e-6, (name, ours["trace"], trace)
    assert 0 < ours["ms_node"]["value"] <= ours["ms"]["value"] * (1 + 1e-12)
EOF

# A bare state dict ("0.weight", "4.bias"): names are mapped in order; without --spec no
# architecture is stored and apps/sharpness asks for --model; with --spec it is checked.
"$py" "$tool" export "$tmp/cnn_state.pt" "$tmp/cnn_state.safetensors" >/dev/null \
  || fail "export of a bare state dict failed"
out=$("$sharpness" --checkpoint "$tmp/cnn_state.safetensors" --n 20 --measures trace 2>&1) \
  && fail "a state dict without a spec was accepted without --model"
grep -qF -- "--model" <<<"$out" || fail "message does not point to --model: $out"
"$sharpness" --checkpoint "$tmp/cnn_state.safetensors" --model "${want_spec[cnn]}" --n 20 \
  --measures trace --json "$tmp/cnn_state.json" --quiet >/dev/null || fail "state dict + --model failed"
"$py" - "$tmp" <<'EOF' || fail "the state dict's Tr H differs from the model's"
import json, sys
a = json.load(open(sys.argv[1] + "/cnn.json"))["trace"]
b = json.load(open(sys.argv[1] + "/cnn_state.json"))["trace"]
assert abs(a - b) <= 1e-12 * abs(a), (a, b)
EOF
"$py" "$tool" export "$tmp/cnn_state.pt" "$tmp/x.safetensors" --spec "${want_spec[cnn]}" >/dev/null \
  || fail "export of a state dict with --spec failed"

# A safetensors state dict with PyTorch's names, sorted as the safetensors package sorts
# them ("11.weight" before "3.weight"): export renames in module order, not header order.
"$py" - "$tmp" <<'EOF' || fail "writing the sorted state dict failed"
import sys, torch
from collections import OrderedDict
from torch import nn
import minsharp_torch as mt
torch.manual_seed(1)
layers = [nn.Flatten(), nn.Linear(784, 6)]
for _ in range(5):
    layers += [nn.ReLU(), nn.Linear(6, 6 if _ < 4 else 10)]
model = nn.Sequential(*layers)
mt.write_safetensors(sys.argv[1] + "/sorted.safetensors", OrderedDict(sorted(model.state_dict().items())))
mt.save_sequential(model, sys.argv[1] + "/deep.safetensors")
EOF
deep_spec=flatten,dense:6,relu,dense:6,relu,dense:6,relu,dense:6,relu,dense:6,relu,dense:10
"$py" "$tool" export "$tmp/sorted.safetensors" "$tmp/renamed.safetensors" --spec "$deep_spec" \
  >/dev/null || fail "export of a sorted safetensors state dict failed"
for f in deep renamed; do
  "$sharpness" --checkpoint "$tmp/$f.safetensors" --n 20 --measures trace --json "$tmp/$f.json" \
    --quiet >/dev/null || fail "sharpness of $f.safetensors failed"
done
cmp -s <(grep '"trace"' "$tmp/deep.json") <(grep '"trace"' "$tmp/renamed.json") \
  || fail "the renamed sorted state dict measures differently from the model"

# One clear line and a non-zero exit for what cannot work.
expect_error() {  # expected-substring, command...
  local want=$1; shift
  local out; out=$("$@" 2>&1) && fail "accepted: $*"
  grep -qF -- "$want" <<<"$out" || fail "message for '$*' lacks '$want': $out"
  [ "$(grep -c . <<<"$out")" -eq 1 ] || fail "more than one line for '$*': $out"
}
"$py" -c 'import sys, torch; from torch import nn
torch.save(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Dropout(), nn.Linear(10, 10)), sys.argv[1])' \
  "$tmp/dropout.pt" || fail "saving the dropout model failed"
expect_error "Dropout" "$py" "$tool" export "$tmp/dropout.pt" "$tmp/d.safetensors"
[ ! -e "$tmp/d.safetensors" ] || fail "a failed export left a file behind"
expect_error "do not fit spec" "$py" "$tool" export "$tmp/cnn_state.pt" "$tmp/d.safetensors" --spec small-cnn
expect_error "not a safetensors file" "$py" "$tool" show "$tmp/mlp.pt"
expect_error "error" "$sharpness" --checkpoint "$tmp/mlp.pt" --model "${want_spec[mlp]}" --n 20 --quiet

# ---- minsharp -> PyTorch -------------------------------------------------------------------
for model in small-cnn "flatten,dense:16,relu,dense:10:nobias" "conv:4:5,relu,avgpool:3:2,dense:10"; do
  dir=$tmp/run-${model//[^a-z0-9]/_}
  "$train" --model "$model" --train-size 256 --test-size 300 --epochs 1 --batch-size 64 \
    --seed 3 --threads 1 --out "$dir" --quiet >/dev/null || fail "training $model failed"
  "$py" - "$dir" "$model" <<'EOF' || fail "PyTorch disagrees with minsharp on $model"
import json, os, sys, torch
import minsharp_torch as mt
folder, name = sys.argv[1], sys.argv[2]
_, metadata = mt.read_safetensors(folder + "/model.safetensors")
spec = metadata[mt.META_SPEC]
if name in mt.ZOO:  # keeps the script's copy of the zoo in step with src/nn/models.cpp
    assert spec == mt.ZOO[name], ("zoo drifted", name, spec, mt.ZOO[name])
model = mt.load_into(mt.sequential_from_spec(spec), folder + "/model.safetensors")
assert mt.spec_from_sequential(model).replace("flatten,", "") == spec.replace("flatten,", "")
images, labels = mt.load_mnist(os.environ["MINSHARP_MNIST"], "test")
x, y = torch.from_numpy(images[:300].copy()), torch.from_numpy(labels[:300].copy())
with torch.no_grad():
    logits = model(x)
loss = torch.nn.functional.cross_entropy(logits.double(), y).item()
accuracy = (logits.argmax(1) == y).double().mean().item()
last = [json.loads(l) for l in open(folder + "/metrics.jsonl")][-1]
rel = abs(loss - last["test_loss"]) / last["test_loss"]
print("%s: test loss minsharp %.8f, PyTorch %.8f (relative %.2g); accuracy %.4f / %.4f"
      % (name, last["test_loss"], loss, rel, last["test_accuracy"], accuracy))
assert rel < 1e-4, rel
assert abs(accuracy - last["test_accuracy"]) < 1e-12
# And back: save_sequential writes what was read, bit for bit.
mt.save_sequential(model, folder + "/back.safetensors")
a, _ = mt.read_safetensors(folder + "/model.safetensors")
b, meta = mt.read_safetensors(folder + "/back.safetensors")
assert list(a) == list(b) and all((a[k] == b[k]).all() for k in a), "round trip changed weights"
EOF
  # The re-exported file is a minsharp checkpoint again.
  "$sharpness" --checkpoint "$dir/back.safetensors" --n 20 --measures trace --quiet >/dev/null \
    || fail "sharpness of the round-tripped $model failed"
done

# import: a minsharp checkpoint as a torch.save'd nn.Sequential.
"$py" "$tool" import "$tmp/run-small_cnn/model.safetensors" "$tmp/back.pt" >/dev/null \
  || fail "import failed"
"$py" -c 'import sys, torch; m = torch.load(sys.argv[1]); assert isinstance(m, torch.nn.Sequential)' \
  "$tmp/back.pt" || fail "import did not write an nn.Sequential"
echo "OK"
