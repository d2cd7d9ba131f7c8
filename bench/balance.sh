#!/usr/bin/env bash
# Task balancing on MultiFashion with MultiLeNet (the MGDA paper's table, on Fashion-MNIST items):
# single task left and right, equal weights (loss_weight 0.5 / 0.5) and each task_balance method,
# for each seed; prints mean ± std of the final test accuracy per task (the whole 10000-image test
# set) and each method's time per training iteration relative to equal weights, and writes the
# table to bench/results/balance.md. See docs/task-balancing.md.
#
# Environment: SEEDS (default 3: seeds 1 2 3; or a list "1 2 5"), ITERS (stop at this iteration as
# `mtl train --max-iter`, learning-rate steps unchanged; default the recipe's 2800), THREADS
# (default 2), METHODS (default "single_left single_right equal UNCERTAINTY GRADNORM DWA PCGRAD
# MGDA_UB"), BUILD (default build), OUT (default out/balance), PYTHON (default /usr/bin/python3).
#
# Each configuration trains from a copy of examples/multifashion/solver*.prototxt written into
# $OUT/seed<k>/ with that random_seed, no snapshots, no test at iteration 0, and for the methods a
# `task_balance { method: ... }` message with the method's defaults (docs/task-balancing.md).
# Files: $OUT/<config>_seed<k>.jsonl (the JSON log), .txt (the human log), wall.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
out=${OUT:-out/balance}
seeds=$(echo "${SEEDS:-3}" | tr ',' ' ')
if [[ "$seeds" =~ ^[0-9]+$ ]]; then seeds=$(seq -s ' ' 1 "$seeds"); fi
iters=${ITERS:-}
threads=${THREADS:-2}
methods=${METHODS:-"single_left single_right equal UNCERTAINTY GRADNORM DWA PCGRAD MGDA_UB"}
python=${PYTHON:-/usr/bin/python3}
data=data/multifashion
mtl=$build/mtl
export OPENBLAS_NUM_THREADS=1

if [ ! -x "$mtl" ]; then
  echo "balance.sh: $mtl not found; run 'make' first" >&2
  exit 1
fi
mkdir -p "$out" "$data" bench/results
if [ ! -f "$data/test.txt" ]; then
  echo "== building MultiFashion from Fashion-MNIST" >&2
  "$mtl" dataset multifashion --out "$data" --seed 1
fi
for split in train test; do
  if [ ! -d "$data/${split}_lmdb" ]; then
    echo "== converting the $split list into an LMDB" >&2
    "$mtl" convert "$data/$split.txt" "$data" "$data/${split}_lmdb" --gray --label-names left,right \
      $([ "$split" = train ] && echo --shuffle --seed 1)
  fi
done

max_iter=()
[ -n "$iters" ] && max_iter=(--max-iter "$iters")
now() { date +%s.%N; }
: >"$out/wall.txt"

for seed in $seeds; do
  dir="$out/seed$seed"
  mkdir -p "$dir"
  rel=$(realpath --relative-to="$dir" examples/multifashion)
  for name in $methods; do
    case $name in
      single_left) solver=solver_left.prototxt; balance= ;;
      single_right) solver=solver_right.prototxt; balance= ;;
      equal) solver=solver.prototxt; balance= ;;
      *) solver=solver.prototxt; balance="task_balance { method: $name }" ;;
    esac
    copy="$dir/$name.prototxt"
    sed -e "s|^net: *\"\\(.*\\)\"|net: \"$rel/\\1\"|" \
      -e "s|^random_seed:.*|random_seed: $seed|" \
      -e "/^snapshot:/d" -e "/^snapshot_prefix:/d" "examples/multifashion/$solver" >"$copy"
    grep -q '^random_seed:' "$copy" || echo "random_seed: $seed" >>"$copy"
    { echo "snapshot_after_train: false"; echo "test_initialization: false"; echo "$balance"; } >>"$copy"
    echo "== seed $seed, $name" >&2
    t0=$(now)
    "$mtl" train --solver "$copy" --log "$out/${name}_seed$seed.jsonl" --threads "$threads" "${max_iter[@]}" \
      >"$out/${name}_seed$seed.txt" 2>&1 || { echo "balance.sh: $name failed; see $out/${name}_seed$seed.txt" >&2; exit 1; }
    t1=$(now)
    echo "$name $seed $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" >>"$out/wall.txt"
  done
done

"$python" - "$out" "$seeds" "$threads" "$methods" "${iters:-2800}" <<'PY' | tee bench/results/balance.md
import json, os, platform, statistics, sys
out, seeds, threads, methods, iters = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4].split(), sys.argv[5]

def run(name, seed):
    """final test accuracies, median ms per iteration over display windows, mean weights, cosine"""
    acc, ms, weights, cos = {}, [], {}, []
    last = None
    for line in open(os.path.join(out, f"{name}_seed{seed}.jsonl")):
        r = json.loads(line)
        if r.get("phase") == "test":
            last = r
        elif r.get("phase") == "train" and not r.get("final"):
            if r.get("iter", 0) > 0 and (r.get("iter_per_s") or 0) > 0:
                ms.append(1e3 / r["iter_per_s"])
            b = r.get("balance", {})
            for t, w in b.get("weights", {}).items():
                weights.setdefault(t, []).append(w)
            cos += [c for c in b.get("cosine", {}).values() if c is not None]
    for k, v in (last or {}).get("outputs", {}).items():
        if k.startswith("accuracy_"):
            acc[k[len("accuracy_"):]] = v["value"] if isinstance(v, dict) else v
    return acc, statistics.median(ms) if ms else float("nan"), weights, cos

def fmt(xs, scale=100.0, digits=2):
    xs = [x * scale for x in xs if x == x]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"

labels = {"single_left": "single task (left)", "single_right": "single task (right)",
          "equal": "equal weights (0.5 / 0.5)", "UNCERTAINTY": "uncertainty (Kendall et al.)",
          "GRADNORM": "GradNorm (alpha 1.5)", "DWA": "DWA (T 2)", "PCGRAD": "PCGrad", "MGDA_UB": "MGDA-UB (loss+)"}
runs = {m: [run(m, s) for s in seeds] for m in methods}
base = statistics.mean([r[1] for r in runs["equal"]]) if "equal" in runs else float("nan")
print(f"MultiFashion, MultiLeNet: test accuracy (%) after {iters} iterations"
      + (" (the full recipe)" if iters == "2800" else " (shortened with --max-iter; the learning-rate steps at 1800 "
         "and 2400 " + ("are not reached" if int(iters) <= 1800 else "partly apply") + ")")
      + f", seeds {' '.join(seeds)}" + (" (mean ± sample std)" if len(seeds) > 1 else "") + f", {threads} threads, "
      + f"{platform.machine()} shared machine.\n")
print("| recipe | left | right | ms / iteration | time vs equal | mean weights (left / right) | mean cosine |")
print("|---|---|---|---|---|---|---|")
for m in methods:
    rs = runs[m]
    left = fmt([r[0].get("left", float("nan")) for r in rs]) if m != "single_right" else "-"
    right = fmt([r[0].get("right", float("nan")) for r in rs]) if m != "single_left" else "-"
    ms = statistics.mean([r[1] for r in rs])
    rel = f"{ms / base:.2f}x" if m not in ("single_left", "single_right") and base == base else "-"
    w = {}
    for r in rs:
        for t, v in r[2].items():
            w.setdefault(t, []).extend(v)
    weights = " / ".join(f"{statistics.mean(w[t]):.3f}" for t in ("loss_left", "loss_right") if t in w) or "-"
    cos = [c for r in rs for c in r[3]]
    print(f"| {labels.get(m, m)} | {left} | {right} | {ms:.1f} | {rel} | {weights} | "
          + (f"{statistics.mean(cos):+.3f}" if cos else "-") + " |")
print("\nms / iteration: median over the 200-iteration display windows of each run (from the log's iter_per_s), "
      "mean over seeds; display iterations include the gradient diagnostics. Mean weights and cosines: over the "
      "display iterations (cosine of the two tasks' gradients on the shared trunk).")
PY
