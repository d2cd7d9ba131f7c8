#!/usr/bin/env bash
# MultiFashion, mtl against PyTorch: trains the example's three recipes (multi-task with loss
# weights 0.5 / 0.5, single-task left, single-task right; examples/multifashion/solver*.prototxt)
# in mtl and the same recipes in PyTorch (bench/multifashion_torch.py), for each seed, and prints
# per-task final test accuracy (whole 10000-image test set) side by side, mean ± std over seeds when
# there are several, with the time per training iteration measured in the same run.
# See examples/multifashion/README.md.
#
# Environment: SEEDS (default "1"; e.g. "1 2 3" or "1,2,3"), ITERS (stop early at this iteration,
# learning-rate steps unchanged, as `mtl train --max-iter`; default: the recipe's 2800), THREADS
# (both sides, default 2), BUILD (default build), OUT (default out/multifashion), PYTHON (default
# /usr/bin/python3, Debian's python3-torch). SUMMARY_ONLY=1 reprints the table from the results
# already in $OUT (same SEEDS) without training.
#
# mtl's seed is the solver's random_seed: for each seed the script writes copies of the solvers into
# $OUT/seed<k>/ with that random_seed, `net:` pointing back at examples/multifashion/ (relative to
# the copy's own directory, as solver paths are) and snapshots kept in that directory. The nets'
# Data layer sources are relative to the current directory, so everything runs from the repo root.
# Files: $OUT/mtl_<config>_seed<k>.jsonl (mtl's log), $OUT/mtl_<config>_seed<k>.txt (its output),
# $OUT/torch_<task>_seed<k>.json (PyTorch results), $OUT/summary.txt (the table).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
out=${OUT:-out/multifashion}
seeds=$(echo "${SEEDS:-1}" | tr ',' ' ')
iters=${ITERS:-}
threads=${THREADS:-2}
python=${PYTHON:-/usr/bin/python3}
data=data/multifashion
mtl=$build/mtl
export OPENBLAS_NUM_THREADS=1

if [ ! -x "$mtl" ]; then
  echo "multifashion.sh: $mtl not found; run 'make' first" >&2
  exit 1
fi
mkdir -p "$out" "$data"
scripts/multifashion-data.sh "$mtl" "$data"

have_torch=1
if ! "$python" -c 'import torch' 2>/dev/null; then
  have_torch=0
  echo "multifashion.sh: PyTorch not importable by $python (scripts/install-deps.sh bench installs it);" \
    "running mtl only" >&2
fi

max_iter=()
iters_flag=()
if [ -n "$iters" ]; then
  max_iter=(--max-iter "$iters")
  iters_flag=(--iters "$iters")
fi

# config name, solver file, PyTorch task
configs=("multitask solver.prototxt both" "single_left solver_left.prototxt left"
  "single_right solver_right.prototxt right")

now() { date +%s.%N; }

if [ "${SUMMARY_ONLY:-0}" != 1 ]; then
for seed in $seeds; do
  dir="$out/seed$seed"
  mkdir -p "$dir"
  rel=$(realpath --relative-to="$dir" examples/multifashion)
  for c in "${configs[@]}"; do
    read -r name solver task <<<"$c"
    copy="$dir/$solver"
    sed -e "s|^net: *\"\\(.*\\)\"|net: \"$rel/\\1\"|" \
      -e "s|^random_seed:.*|random_seed: $seed|" \
      -e "s|^snapshot_prefix:.*|snapshot_prefix: \"$name\"|" "examples/multifashion/$solver" >"$copy"
    grep -q '^random_seed:' "$copy" || echo "random_seed: $seed" >>"$copy"

    # the two sides take turns, so that load on the machine hits both alike
    echo "== seed $seed, $name: mtl" >&2
    t0=$(now)
    "$mtl" train --solver "$copy" --log "$out/mtl_${name}_seed$seed.jsonl" --threads "$threads" \
      "${max_iter[@]}" >"$out/mtl_${name}_seed$seed.txt" 2>&1 ||
      { echo "multifashion.sh: mtl failed; see $out/mtl_${name}_seed$seed.txt" >&2; exit 1; }
    t1=$(now)
    echo "mtl $name $seed wall_s $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" >>"$out/wall.txt.$$"
    if [ "$have_torch" = 1 ]; then
      echo "== seed $seed, $name: torch" >&2
      t0=$(now)
      "$python" bench/multifashion_torch.py --task "$task" --seeds "$seed" --threads "$threads" \
        --out "$out" "${iters_flag[@]}" --quiet >&2
      t1=$(now)
      echo "torch $name $seed wall_s $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" >>"$out/wall.txt.$$"
    fi
  done
done
mv "$out/wall.txt.$$" "$out/wall.txt"
fi

"$python" - "$out" "$seeds" "$threads" <<'PY' | tee "$out/summary.txt"
import json, os, statistics, sys
out, seeds, threads = sys.argv[1], [int(s) for s in sys.argv[2].split()], sys.argv[3]
configs = [("single task", "single_left", "left", ["left"]), ("single task", "single_right", "right", ["right"]),
           ("multi-task 0.5/0.5", "multitask", "both", ["left", "right"])]
wall = {}
for line in open(os.path.join(out, "wall.txt")):
    side, name, seed, _, s = line.split()
    wall.setdefault((side, name), []).append(float(s))

def mtl_run(name, seed):
    acc, windows = {}, []
    last_test = None
    for line in open(os.path.join(out, f"mtl_{name}_seed{seed}.jsonl")):
        r = json.loads(line)
        if r.get("phase") == "test":
            last_test = r
        elif r.get("phase") == "train" and r.get("iter", 0) > 0 and r.get("iter_per_s", 0) > 0:
            windows.append(1e3 / r["iter_per_s"])
    for k, v in (last_test or {}).get("outputs", {}).items():
        if k.startswith("accuracy_"):
            acc[k[len("accuracy_"):]] = v["value"] if isinstance(v, dict) else v
    return acc, windows, (last_test or {}).get("iter")

def torch_run(task, seed):
    p = os.path.join(out, f"torch_{task}_seed{seed}.json")
    if not os.path.exists(p):
        return {}, [], None
    r = json.load(open(p))
    return r["accuracy"], r["ms_per_iter_windows"], r["iters"]

def fmt(xs, scale=100.0, digits=2):
    xs = [x * scale for x in xs if x == x]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"

def ms(runs):
    # all 200-iteration windows of all seeds: median (fastest)
    w = [x for r in runs for x in r[1]]
    return f"{statistics.median(w):.1f} ({min(w):.1f})" if w else "-"

iters_seen = set()
rows = []
for label, name, task, tasks in configs:
    runs_m = [mtl_run(name, s) for s in seeds]
    runs_t = [torch_run(task, s) for s in seeds]
    iters_seen |= {r[2] for r in runs_m + runs_t if r[2] is not None}
    for i, t in enumerate(tasks):
        first = i == 0
        rows.append((label, t,
                     fmt([r[0].get(t, float("nan")) for r in runs_m]),
                     fmt([r[0].get(t, float("nan")) for r in runs_t]),
                     ms(runs_m) if first else "", ms(runs_t) if first else "",
                     fmt(wall.get(("mtl", name), []), 1.0, 0) if first else "",
                     fmt(wall.get(("torch", name), []), 1.0, 0) if first else ""))
n = len(seeds)
print(f"\nMultiFashion test accuracy (%) on the 10000 test images, final iteration "
      f"{'/'.join(str(i) for i in sorted(iters_seen))}; seeds {' '.join(map(str, seeds))}"
      + (" (mean ± sample std)" if n > 1 else "") + f"; {threads} threads each side")
head = ("recipe", "task", "mtl", "PyTorch", "mtl ms/it", "torch ms/it", "mtl wall s", "torch wall s")
w = (20, 6, 16, 16, 14, 14, 12, 13)
print("".join(h.ljust(x) if k < 2 else h.rjust(x) for k, (h, x) in enumerate(zip(head, w))))
for r in rows:
    print("".join(c.ljust(x) if k < 2 else c.rjust(x) for k, (c, x) in enumerate(zip(r, w))))
print("ms/it: training time per iteration over 200-iteration windows, median (fastest window) over all "
      "windows of all seeds (mtl: from its log's iter_per_s, whose windows also hold the tests at 700, 1400 "
      "and 2100; PyTorch: training steps only); wall s: the whole run (start-up, data loading, 5 tests, "
      "snapshots). On a shared machine the fastest window is the best estimate of either side's own speed.")
PY
