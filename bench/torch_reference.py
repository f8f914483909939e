#!/usr/bin/python3
"""PyTorch's throughput on bench_train's workload, measured the same way (examples/s).

Same models (built from minsharp's spec strings with PyTorch's default init), same data
(the first N MNIST training images, normalized as minsharp does, already in memory as a
float tensor), same cells: one SGD epoch at batch 1024 and 128 (gather a shuffled batch,
forward, cross-entropy, zero_grad, backward, SGD step with momentum, weight decay and the
1/(1 + decay·t) rate), and forward passes at batch 1024 (under no_grad). Each cell starts
after one untimed warm-up step and is the best of R repeats, as in bench_train.

bench/compare.sh runs it right after bench_train with --from-json, so both sides take
their models, specs, image count, repeats, threads and SGD settings from one place.

  /usr/bin/python3 bench/torch_reference.py --from-json ours.json --json torch.json
  /usr/bin/python3 bench/torch_reference.py --models small-mlp --examples 6000 --repeat 1

With --hutchinson N it times bench_sharpness's second-order rows instead: Hutchinson's
Tr H estimate with --probes Rademacher probes (default 100) on the first N images, in
float64, each Hessian-vector product by double backward (one forward and a backward with
create_graph, then one backward of ⟨∇L, v⟩ per probe — the way PyHessian forms them):

  /usr/bin/python3 bench/torch_reference.py --hutchinson 1000 --models mlp,lenet
"""

import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))

# Before torch loads its OpenMP runtime: idle OpenMP threads then sleep instead of
# spinning, so they do not steal the core the other worker needs (2-core machines).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import minsharp_torch as mt  # noqa: E402  (needs the path above)

PROG = "torch_reference"
DEFAULT_SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-5, "lr_decay": 1e-4}


def fail(message, status=1):
    print("%s: error: %s" % (PROG, message), file=sys.stderr)
    sys.exit(status)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def openblas_of_this_process(torch):
    """(core, config) of the OpenBLAS PyTorch loaded, or ("", "") if it uses another BLAS.

    Debian's PyTorch does its dense layers' GEMMs through the system OpenBLAS, the library
    minsharp uses: which kernels it chose matters as much on this side as on the other."""
    import ctypes
    a = torch.ones(64, 64)
    (a @ a).sum()  # make sure the BLAS is loaded
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "libopenblas" in line})
        for path in paths:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return (lib.openblas_get_corename().decode(),
                    lib.openblas_get_config().decode().strip())
    except (OSError, AttributeError):
        pass
    return "", ""


def torch_info(torch, threads):
    config = torch.__config__.show()
    capability = re.search(r"CPU capability usage: (\S+)", config)
    core, blas_config = openblas_of_this_process(torch)
    return {
        "torch_version": torch.__version__,
        "cpu_capability": capability.group(1) if capability else "unknown",
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "threads": torch.get_num_threads(),
        "requested_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "environment": {k: os.environ[k] for k in sorted(os.environ)
                        if k.startswith(("MALLOC_", "GLIBC_", "ATEN_", "ONEDNN_", "DNNL_"))},
        "openblas_core": core,
        "openblas_config": blas_config,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
        "cpu": cpu_model(),
        "python": sys.executable,
    }


def train_throughput(torch, spec, x, y, batch, sgd):
    F = torch.nn.functional
    torch.manual_seed(1)
    model = mt.sequential_from_spec(spec)
    opt = torch.optim.SGD(model.parameters(), lr=sgd["lr"], momentum=sgd["momentum"],
                          weight_decay=sgd["weight_decay"])
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(2))

    def step(t, idx):
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        for group in opt.param_groups:
            group["lr"] = sgd["lr"] / (1 + sgd["lr_decay"] * t)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0, order[:batch])  # warm-up: first-touch allocation is not what we measure
    start = time.perf_counter()
    for t, first in enumerate(range(0, n - batch + 1, batch)):
        step(t, order[first:first + batch])
    return (n // batch * batch) / (time.perf_counter() - start)


def inference_throughput(torch, spec, x, batch):
    torch.manual_seed(1)
    model = mt.sequential_from_spec(spec).eval()
    n = x.shape[0]
    with torch.no_grad():
        model(x[:batch])
        start = time.perf_counter()
        for first in range(0, n - batch + 1, batch):
            model(x[first:first + batch])
        return (n // batch * batch) / (time.perf_counter() - start)


def hutchinson_seconds(torch, spec, x, y, probes):
    """(seconds, estimate, standard error) of Hutchinson with exact double-backward Hv."""
    F = torch.nn.functional
    torch.manual_seed(1)
    model = mt.sequential_from_spec(spec).double()
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    samples = []
    for _ in range(probes):
        v = [torch.randint(0, 2, p.shape, generator=generator, dtype=torch.float64) * 2 - 1
             for p in params]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        samples.append(sum(float((a * b).sum()) for a, b in zip(v, hv)))
    seconds = time.perf_counter() - start
    s = torch.tensor(samples, dtype=torch.float64)
    error = float(s.std() / len(samples) ** 0.5) if len(samples) > 1 else 0.0
    return seconds, float(s.mean()), error


def hutchinson_bench(torch, plan, images, labels, n, probes):
    x = torch.from_numpy(images[:n].copy()).double()
    y = torch.from_numpy(labels[:n].copy()).long()
    print("Hutchinson, %d probes on the first %d images, float64, double backward; best of %d"
          % (probes, n, plan["repeat"]))
    print("%-10s %12s %16s %12s" % ("model", "ms", "Tr H estimate", "std. error"))
    rows = []
    for name, spec in plan["models"]:
        runs = [hutchinson_seconds(torch, spec, x, y, probes) for _ in range(plan["repeat"])]
        seconds, estimate, error = min(runs)
        print("%-10s %12.1f %16.6g %12.3g" % (name, seconds * 1e3, estimate, error))
        sys.stdout.flush()
        rows.append({"name": name, "spec": spec, "seconds": seconds, "estimate": estimate,
                     "standard_error": error, "probes": probes, "inputs": n})
    return rows


def best_of(repeat, run):
    # The machine's noise only ever slows a run down.
    return max(run() for _ in range(repeat))


def main():
    parser = argparse.ArgumentParser(
        prog=PROG, description="PyTorch throughput (examples/s) on bench_train's workload.")
    parser.add_argument("--from-json", metavar="FILE",
                        help="bench_train --json output: take models, specs, examples, repeat, "
                        "threads and SGD settings from it (explicit options still win)")
    parser.add_argument("--models", help="comma-separated zoo names "
                        "(default small-mlp,mlp,small-cnn,lenet)")
    parser.add_argument("--examples", type=int, help="MNIST training images per epoch "
                        "(default 60000)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeat", type=int, help="best of R epochs per cell (default 3)")
    parser.add_argument("--data-dir", default=os.environ.get(
        "MINSHARP_DATA_DIR", os.path.join(REPO, "data", "mnist")),
        help="folder with the MNIST IDX files (default: $MINSHARP_DATA_DIR, else data/mnist)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    parser.add_argument("--hutchinson", type=int, metavar="N",
                        help="instead: time Hutchinson (double backward, float64) on N images")
    parser.add_argument("--probes", type=int, default=100,
                        help="Rademacher probes with --hutchinson (default 100)")
    args = parser.parse_args()

    plan = {"models": [], "examples": 60000, "repeat": 3, "threads": 2, "sgd": dict(DEFAULT_SGD)}
    if args.from_json:
        try:
            with open(args.from_json) as f:
                ours = json.load(f)
            plan["models"] = [(m["name"], m["spec"]) for m in ours["models"]]
            plan["examples"] = ours["examples"]
            plan["repeat"] = ours["repeat"]
            plan["threads"] = ours["machine"]["threads"]
            plan["sgd"] = ours["sgd"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            fail("cannot take the workload from '%s': %s" % (args.from_json, e))
    if args.models:
        plan["models"] = [(m, mt.ZOO.get(m, m)) for m in args.models.split(",") if m]
    if not plan["models"]:
        plan["models"] = [(m, mt.ZOO[m]) for m in ("small-mlp", "mlp", "small-cnn", "lenet")]
    for key in ("examples", "repeat", "threads"):
        value = getattr(args, key)
        if value is not None:
            if value < 1:
                fail("--%s %d is not positive" % (key, value), 2)
            plan[key] = value

    try:
        import torch
    except ImportError as e:
        fail("%s cannot import torch (%s)" % (sys.executable, e))
    torch.set_num_threads(plan["threads"])
    try:
        images, labels = mt.load_mnist(args.data_dir, "train")
        models = [(name, spec, mt.sequential_from_spec(spec)) for name, spec in plan["models"]]
    except mt.InteropError as e:
        fail(str(e))
    info = torch_info(torch, plan["threads"])
    if args.hutchinson is not None:
        if args.hutchinson < 1 or args.probes < 1:
            fail("--hutchinson and --probes must be positive", 2)
        if not args.repeat:
            plan["repeat"] = 1
        print("torch_reference: %s, PyTorch %s, %d threads" % (
            info["cpu"], info["torch_version"], info["threads"]))
        rows = hutchinson_bench(torch, plan, images, labels,
                                min(args.hutchinson, images.shape[0]), args.probes)
        if args.json:
            out = {"bench": "torch_reference", "framework": "pytorch", "machine": info,
                   "work": "hutchinson", "models": rows}
            mt._write_atomic(args.json, (json.dumps(out, indent=2) + "\n").encode())
            print("\nwrote %s" % args.json)
        return
    n = min(plan["examples"], images.shape[0])
    if n < 1024:
        fail("--examples %d is less than one batch of 1024" % n)
    x = torch.from_numpy(images[:n].copy())
    y = torch.from_numpy(labels[:n].copy())

    print("torch_reference")
    print("cpu:      %s, PyTorch %s (CPU capability %s, mkldnn %s), %d threads, "
          "OMP_WAIT_POLICY=%s" % (info["cpu"], info["torch_version"], info["cpu_capability"],
                                  "on" if info["mkldnn"] else "off", info["threads"],
                                  info["omp_wait_policy"] or "unset"))
    print("openblas: %s" % ("core %s (%s), OPENBLAS_CORETYPE %s" % (
        info["openblas_core"], info["openblas_config"], info["openblas_coretype"] or "unset")
        if info["openblas_core"] else "none loaded (PyTorch uses another BLAS)"))
    print("examples per epoch: %d, best of %d; examples/s\n" % (n, plan["repeat"]))
    print("%-10s %14s %14s %14s" % ("model", "train b1024", "train b128", "infer b1024"))
    sys.stdout.flush()
    rows = []
    for name, spec, _ in models:
        r = plan["repeat"]
        t1024 = best_of(r, lambda: train_throughput(torch, spec, x, y, 1024, plan["sgd"]))
        t128 = best_of(r, lambda: train_throughput(torch, spec, x, y, 128, plan["sgd"]))
        inf = best_of(r, lambda: inference_throughput(torch, spec, x, 1024))
        print("%-10s %14.0f %14.0f %14.0f" % (name, t1024, t128, inf))
        sys.stdout.flush()
        rows.append({"name": name, "spec": spec, "train_b1024": t1024, "train_b128": t128,
                     "infer_b1024": inf})
    if args.json:
        out = {"bench": "torch_reference", "framework": "pytorch", "machine": info,
               "examples": n, "repeat": plan["repeat"], "unit": "examples/s",
               "sgd": plan["sgd"], "models": rows}
        mt._write_atomic(args.json, (json.dumps(out, indent=2) + "\n").encode())
        print("\nwrote %s" % args.json)


if __name__ == "__main__":
    main()
