#!/usr/bin/env bash
# The main job: build MultiFashion from Debian's Fashion-MNIST, pack it into LMDBs, train MultiLeNet
# on both tasks and the two single-task baselines, and print per-task test accuracy side by side.
# Usage: scripts/demo.sh [MAX_ITER]   (default: the solvers' full recipe)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh demo
make --no-print-directory all
mtl=build/mtl
data=data/multifashion
out=out/multifashion
mkdir -p "$data" "$out"
max_iter=()
[ $# -ge 1 ] && max_iter=(--max-iter "$1")

scripts/multifashion-data.sh "$mtl" "$data"

run() { # name solver
  echo "== training $1"
  "$mtl" train --solver "examples/multifashion/$2" --log "$out/$1.jsonl" "${max_iter[@]}" | grep -E "Iteration|Test net|Optimization"
}
run multitask solver.prototxt
run single_left solver_left.prototxt
run single_right solver_right.prototxt

/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def final(name):
    tests = [json.loads(l) for l in open(f"{out}/{name}.jsonl") if '"phase":"test"' in l]
    o = tests[-1]["outputs"] if tests else {}
    return {k: v["value"] if isinstance(v, dict) else v for k, v in o.items()}
multi, left, right = final("multitask"), final("single_left"), final("single_right")
print("\nMultiFashion test accuracy (%)")
print(f"{'':24}{'left':>10}{'right':>10}")
print(f"{'single task':24}{100*left.get('accuracy_left', float('nan')):10.2f}{100*right.get('accuracy_right', float('nan')):10.2f}")
print(f"{'multi-task (0.5 / 0.5)':24}{100*multi.get('accuracy_left', float('nan')):10.2f}{100*multi.get('accuracy_right', float('nan')):10.2f}")
PY
