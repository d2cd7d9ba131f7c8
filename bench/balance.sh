#!/usr/bin/env bash
# Task balancing on MultiFashion with MultiLeNet (the MGDA paper's table, on Fashion-MNIST items):
# single task left and right, equal weights (loss_weight 0.5 / 0.5) and each task_balance method,
# for each seed; prints mean ± std of the final test accuracy per task (the whole 10000-image test
# set) and each method's time per training iteration relative to equal weights, and writes the
# table to bench/results/balance.md. See docs/task-balancing.md.
#
# Environment: SEEDS (default 3: seeds 1 2 3; or a list "1 2 5"), ITERS (stop at this iteration as
# `mtl train --max-iter`, learning-rate steps unchanged; default the recipe's 2800), CONFIGS
# (default "single_left single_right equal UNCERTAINTY GRADNORM DWA PCGRAD MGDA_UB"), THREADS
# (default 2), TIMING_ROUNDS and TIMING_CHUNK (default 30 and 5; TIMING_ROUNDS=0: time from the
# training logs instead), REUSE=1 (keep training runs whose log is complete), BUILD (default build,
# with libmtl.a), OUT (default out/balance), PYTHON (default /usr/bin/python3).
#
# Each configuration trains from a copy of examples/multifashion/solver*.prototxt written into
# $OUT/seed<k>/ with that random_seed, no snapshots, no test at iteration 0, and for the methods a
# `task_balance { method: ... }` message with the method's defaults (docs/task-balancing.md).
# Time per iteration comes from bench/balance_time.c: all recipes in one process, taking
# turns TIMING_CHUNK iterations at a time for TIMING_ROUNDS rounds (the first one warms up), so
# that load on a shared machine hits them alike, with OMP_WAIT_POLICY=PASSIVE unless set (OpenMP
# threads that spin while other processes hold the cores turn a 20 ms iteration into 50-300 ms on a
# busy 2-core machine). Files: $OUT/<config>_seed<k>.jsonl and .txt (the
# training logs), $OUT/timing.txt, $OUT/wall.txt; the table comes from bench/balance_table.py.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
out=${OUT:-out/balance}
seeds=$(echo "${SEEDS:-3}" | tr ',' ' ')
if [[ "$seeds" =~ ^[0-9]+$ ]]; then seeds=$(seq -s ' ' 1 "$seeds"); fi
iters=${ITERS:-}
threads=${THREADS:-2}
configs=${CONFIGS:-"single_left single_right equal UNCERTAINTY GRADNORM DWA PCGRAD MGDA_UB"}
rounds=${TIMING_ROUNDS:-30}
chunk=${TIMING_CHUNK:-5}
reuse=${REUSE:-0}
python=${PYTHON:-/usr/bin/python3}
data=data/multifashion
mtl=$build/mtl
export OPENBLAS_NUM_THREADS=1

if [ ! -x "$mtl" ]; then
  echo "balance.sh: $mtl not found; run 'make' first" >&2
  exit 1
fi
mkdir -p "$out" "$data" bench/results
scripts/multifashion-data.sh "$mtl" "$data"

# write_solver CONFIG SEED DIR [extra lines...]: the example's solver for CONFIG, copied into DIR
write_solver() {
  local name=$1 seed=$2 dir=$3 solver balance=
  shift 3
  case $name in
    single_left) solver=solver_left.prototxt ;;
    single_right) solver=solver_right.prototxt ;;
    equal) solver=solver.prototxt ;;
    *) solver=solver.prototxt; balance="task_balance { method: $name }" ;;
  esac
  mkdir -p "$dir"
  local rel copy="$dir/$name.prototxt"
  rel=$(realpath --relative-to="$dir" examples/multifashion)
  sed -e "s|^net: *\"\\(.*\\)\"|net: \"$rel/\\1\"|" -e "s|^random_seed:.*|random_seed: $seed|" \
    -e "/^snapshot:/d" -e "/^snapshot_prefix:/d" -e "/^test_initialization:/d" "examples/multifashion/$solver" |
    { if [ $# -gt 0 ]; then grep -v -E "^($(printf '%s|' "${@%%:*}" | sed 's/|$//')):"; else cat; fi; } >"$copy"
  grep -q '^random_seed:' "$copy" || echo "random_seed: $seed" >>"$copy"
  { echo "snapshot_after_train: false"; echo "test_initialization: false"; printf '%s\n' "$@" "$balance"; } >>"$copy"
  echo "$copy"
}

now() { date +%s.%N; }
max_iter=()
[ -n "$iters" ] && max_iter=(--max-iter "$iters")
touch "$out/wall.txt"

for seed in $seeds; do
  for name in $configs; do
    log="$out/${name}_seed$seed.jsonl"
    if [ "$reuse" = 1 ] && [ -f "$log" ] && grep -q '"phase":"test"' "$log"; then
      echo "== seed $seed, $name: reusing $log" >&2
      continue
    fi
    copy=$(write_solver "$name" "$seed" "$out/seed$seed")
    echo "== seed $seed, $name" >&2
    t0=$(now)
    "$mtl" train --solver "$copy" --log "$log" --threads "$threads" "${max_iter[@]}" >"${log%.jsonl}.txt" 2>&1 ||
      { echo "balance.sh: $name failed; see ${log%.jsonl}.txt" >&2; exit 1; }
    t1=$(now)
    echo "$name $seed $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" >>"$out/wall.txt"
  done
done

if [ "$rounds" -gt 1 ]; then
  # bench/balance_time.c, linked like the mtl executable (CMake knows the libraries)
  bin="$build/balance_time"
  link_txt="$build/CMakeFiles/mtl.dir/link.txt"
  if [ -f "$link_txt" ]; then
    libs=$(sed -e 's/.* libmtl\.a//' "$link_txt")
  else
    libs="$(pkg-config --libs openblas) -llmdb -lstb -lcjson -lz -lm -lpthread"
  fi
  # shellcheck disable=SC2046,SC2086
  cc -std=c11 -O2 -march=x86-64-v2 -fopenmp -D_POSIX_C_SOURCE=200809L -DMTL_OPENMP=1 -Isrc -Iinclude \
    $(pkg-config --cflags openblas) bench/balance_time.c "$build/libmtl.a" $libs -fopenmp \
    -Wl,-rpath,"$(pkg-config --variable=libdir openblas)" -o "$bin"
  copies=()
  for name in $configs; do
    copies+=("$(write_solver "$name" 1 "$out/time")")
  done
  echo "== timing: $rounds rounds of $chunk iterations of each recipe, in turns" >&2
  # passive OpenMP threads: on a loaded machine spinning threads measure the load, not the method
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} \
    "$bin" --threads "$threads" --rounds "$rounds" --chunk "$chunk" "${copies[@]}" >"$out/timing.txt"
fi

"$python" bench/balance_table.py "$out" "$seeds" "$threads" "$configs" "${iters:-2800}" |
  tee bench/results/balance.md
