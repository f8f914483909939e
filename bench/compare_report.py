#!/usr/bin/env python3
"""Side-by-side table of bench_train's and torch_reference.py's JSON (standard library only).

  bench/compare_report.py OURS.json [TORCH.json] --out STEM [--note TEXT]

Prints the table and writes STEM.md and STEM.json (each via a temp file and a rename).
Without TORCH.json (no PyTorch on this machine) it reports minsharp's numbers alone.
Ratios are minsharp / PyTorch: above 1, minsharp is faster. Both files must come from the
same machine and the same workload; a mismatch is an error, not a footnote.
"""

import argparse
import json
import os
import sys
import tempfile
import time

PROG = "compare_report"
CELLS = [("train_b1024", "train b1024"), ("train_b128", "train b128"),
         ("infer_b1024", "infer b1024")]


class ReportError(Exception):
    pass


def load(path, what):
    try:
        with open(path) as f:
            j = json.load(f)
        for key in ("machine", "examples", "repeat", "models"):
            if key not in j:
                raise ReportError("%s '%s' lacks '%s'" % (what, path, key))
        return j
    except (OSError, ValueError) as e:
        raise ReportError("cannot read %s '%s': %s" % (what, path, e))


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_same_workload(ours, torch):
    for key in ("examples", "repeat"):
        if ours[key] != torch[key]:
            raise ReportError("the two runs differ in %s: minsharp %s, PyTorch %s"
                              % (key, ours[key], torch[key]))
    if ours["machine"]["cpu"] != torch["machine"]["cpu"]:
        raise ReportError("the two runs come from different CPUs ('%s' vs '%s')"
                          % (ours["machine"]["cpu"], torch["machine"]["cpu"]))
    if ours["machine"]["threads"] != torch["machine"]["threads"]:
        raise ReportError("the two runs use different thread counts (%s vs %s)"
                          % (ours["machine"]["threads"], torch["machine"]["threads"]))
    specs = {m["name"]: m["spec"] for m in torch["models"]}
    for m in ours["models"]:
        if m["name"] in specs and specs[m["name"]] != m["spec"]:
            raise ReportError("model '%s' differs: minsharp '%s', PyTorch '%s'"
                              % (m["name"], m["spec"], specs[m["name"]]))


def build(ours, torch, note):
    m = ours["machine"]
    lines = []
    lines.append("# minsharp vs PyTorch, one machine, one sitting")
    lines.append("")
    lines.append("- date: %s" % time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    lines.append("- cpu: %s (%s hardware threads), ISA %s" % (m["cpu"], m["hardware_threads"],
                                                               m["isa"]))
    build_line = "- minsharp: compiled for %s" % m["compile_target"]
    if m.get("kernel_isa"):
        build_line += ", kernels %s" % m["kernel_isa"]
    build_line += ", %s threads, OpenBLAS core %s (%s), OPENBLAS_CORETYPE %s" % (
        m["threads"], m["openblas_core"], m["openblas_config"],
        m["openblas_coretype"] or "unset")
    lines.append(build_line)
    lines.append("- memory: transparent huge pages %s, GLIBC_TUNABLES %s" % (
        m.get("transparent_hugepages", "unknown"), m.get("glibc_tunables") or "unset"))
    if torch:
        t = torch["machine"]
        lines.append("- PyTorch: %s (CPU capability %s, mkldnn %s), %s threads, "
                     "OMP_WAIT_POLICY=%s, OpenBLAS core %s" % (
                         t["torch_version"], t["cpu_capability"],
                         "on" if t["mkldnn"] else "off", t["threads"],
                         t["omp_wait_policy"] or "unset", t.get("openblas_core") or "none")
                     + "".join(", %s=%s" % kv for kv in t.get("environment", {}).items()))
    else:
        lines.append("- PyTorch: not measured (%s)" % (note or "unavailable"))
    if m.get("warning"):
        lines.append("- **warning**: %s" % m["warning"])
    if torch and torch["machine"].get("openblas_core") and \
            torch["machine"]["openblas_core"] != m["openblas_core"]:
        lines.append("- **warning**: the two sides ran different OpenBLAS kernels (%s vs %s)"
                     % (m["openblas_core"], torch["machine"]["openblas_core"]))
    lines.append("- workload: %d MNIST training images per epoch, best of %d; examples/s "
                 "(higher is better)" % (ours["examples"], ours["repeat"]))
    lines.append("")
    tm = {r["name"]: r for r in torch["models"]} if torch else {}
    if torch:
        lines.append("| model | cell | minsharp | PyTorch | minsharp / PyTorch |")
        lines.append("|---|---|---:|---:|---:|")
    else:
        lines.append("| model | cell | minsharp |")
        lines.append("|---|---|---:|")
    rows = []
    for r in ours["models"]:
        for key, label in CELLS:
            row = {"model": r["name"], "cell": key, "minsharp": r[key]}
            if torch:
                theirs = tm.get(r["name"], {}).get(key)
                row["pytorch"] = theirs
                row["ratio"] = r[key] / theirs if theirs else None
                lines.append("| %s | %s | %.0f | %s | %s |" % (
                    r["name"], label, r[key], "%.0f" % theirs if theirs else "-",
                    "%.2fx" % row["ratio"] if row["ratio"] else "-"))
            else:
                lines.append("| %s | %s | %.0f |" % (r["name"], label, r[key]))
            rows.append(row)
    lines.append("")
    if torch:
        lines.append("Ratios above 1: minsharp is faster. Both columns were measured by "
                     "bench/compare.sh back to back on this machine.")
    text = "\n".join(lines) + "\n"
    report = {"minsharp": ours, "pytorch": torch, "rows": rows,
              "note": note or ""}
    return text, report


def main():
    parser = argparse.ArgumentParser(prog=PROG, description="Side-by-side table of "
                                     "bench_train's and torch_reference.py's JSON.")
    parser.add_argument("ours", help="bench_train --json output")
    parser.add_argument("torch", nargs="?", help="torch_reference.py --json output "
                        "(omit when PyTorch was not measured)")
    parser.add_argument("--out", required=True, metavar="STEM",
                        help="write STEM.md and STEM.json")
    parser.add_argument("--note", help="why PyTorch is missing (shown in the report)")
    args = parser.parse_args()
    try:
        ours = load(args.ours, "minsharp results")
        torch = load(args.torch, "PyTorch results") if args.torch else None
        if torch:
            check_same_workload(ours, torch)
        text, report = build(ours, torch, args.note)
        write_atomic(args.out + ".md", text)
        write_atomic(args.out + ".json", json.dumps(report, indent=2) + "\n")
    except ReportError as e:
        print("%s: error: %s" % (PROG, e), file=sys.stderr)
        return 1
    print(text, end="")
    print("wrote %s.md and %s.json" % (args.out, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
