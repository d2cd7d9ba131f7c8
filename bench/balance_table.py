#!/usr/bin/env python3
"""The table of bench/balance.sh: final test accuracy per task (mean ± sample std over seeds), time
per training iteration relative to equal weights, and the balancing diagnostics, as markdown.

usage: balance_table.py OUT "SEEDS" THREADS "CONFIGS" ITERS
OUT holds <config>_seed<k>.jsonl (training logs) and timing.txt (bench/balance_time.c's output:
"<solver file> <median ms> <min ms>" per recipe); without timing.txt the times come from the
training logs."""
import json
import os
import platform
import statistics
import sys

out, seeds, threads, configs, iters = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4].split(), sys.argv[5]

LABELS = {"single_left": "single task (left)", "single_right": "single task (right)",
          "equal": "equal weights (0.5 / 0.5)", "UNCERTAINTY": "uncertainty (Kendall et al.)",
          "GRADNORM": "GradNorm (alpha 1.5)", "DWA": "DWA (T 2)", "PCGRAD": "PCGrad", "MGDA_UB": "MGDA-UB (loss+)"}


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training(name, seed):
    """final test accuracies, weights and cosines over the display iterations"""
    acc, weights, cos, last = {}, {}, [], None
    for r in records(os.path.join(out, f"{name}_seed{seed}.jsonl")):
        if r.get("phase") == "test":
            last = r
        elif r.get("phase") == "train" and not r.get("final"):
            b = r.get("balance", {})
            for t, w in b.get("weights", {}).items():
                weights.setdefault(t, []).append(w)
            cos += [c for c in b.get("cosine", {}).values() if c is not None]
    for k, v in (last or {}).get("outputs", {}).items():
        if k.startswith("accuracy_"):
            acc[k[len("accuracy_"):]] = v["value"] if isinstance(v, dict) else v
    return acc, weights, cos


def ms_per_iter(path):
    """median ms per iteration over a training log's display windows after the first (warm-up)"""
    ms = [1e3 / r["iter_per_s"] for r in records(path) if r.get("phase") == "train" and not r.get("final")
          and r.get("iter", 0) > 0 and (r.get("iter_per_s") or 0) > 0]
    ms = ms[1:] if len(ms) > 1 else ms
    return statistics.median(ms) if ms else float("nan")


timed = {}
if os.path.exists(os.path.join(out, "timing.txt")):
    for line in open(os.path.join(out, "timing.txt")):
        path, median, _ = line.split()
        timed[os.path.splitext(os.path.basename(path))[0]] = float(median)


def timing(name):
    if timed:
        return timed.get(name, float("nan"))
    vals = [v for v in (ms_per_iter(os.path.join(out, f"{name}_seed{s}.jsonl")) for s in seeds) if v == v]
    return statistics.median(vals) if vals else float("nan")


def fmt(xs, scale=100.0, digits=2):
    xs = [x * scale for x in xs if x == x]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


runs = {c: [training(c, s) for s in seeds] for c in configs}
times = {c: timing(c) for c in configs}
base = times.get("equal", float("nan"))
schedule = "the full recipe" if iters == "2800" else (
    "shortened with `mtl train --max-iter`; the learning-rate steps at 1800 and 2400 "
    + ("are not reached" if int(iters) <= 1800 else "partly apply"))
print(f"MultiFashion, MultiLeNet, batch 256: final test accuracy (%) on the 10000 test images after {iters} "
      f"iterations ({schedule}); seeds {' '.join(seeds)}" + (" (mean ± sample std)" if len(seeds) > 1 else "")
      + f"; {threads} threads on a shared {platform.machine()} machine.\n")
print("| recipe | left | right | ms / iteration | vs equal weights | mean weights left / right | mean cosine |")
print("|---|---|---|---|---|---|---|")
for c in configs:
    rs = runs[c]
    left = fmt([r[0].get("left", float("nan")) for r in rs]) if c != "single_right" else "-"
    right = fmt([r[0].get("right", float("nan")) for r in rs]) if c != "single_left" else "-"
    ms = times[c]
    rel = f"{ms / base:.2f}" if c not in ("single_left", "single_right") and base == base and ms == ms else "-"
    w = {}
    for r in rs:
        for t, v in r[1].items():
            w.setdefault(t, []).extend(v)
    weights = " / ".join(f"{statistics.mean(w[t]):.3f}" for t in ("loss_left", "loss_right") if t in w) or "-"
    cos = [x for r in rs for x in r[2]]
    ms_text = f"{ms:.1f}" if ms == ms else "-"
    print(f"| {LABELS.get(c, c)} | {left} | {right} | {ms_text} | {rel} | {weights} | "
          + (f"{statistics.mean(cos):+.3f}" if cos else "-") + " |")
how = ("bench/balance_time.c (all recipes in one process, taking turns a few iterations at a time, OpenMP threads "
       "passive; the median over the rounds after the first)" if timed
       else "the median over the training logs' display windows after the first")
print(f"\nms / iteration: training time per iteration (forward, the method's backward passes, the update) from {how}. "
      "Mean weights and cosines (of the two tasks' gradients on the shared trunk's parameters): over the display "
      "iterations of the training runs.")
