#!/usr/bin/env bash
# Times one MultiLeNet training iteration (batch 256: zero gradients, forward, backward, SGD step)
# in mtl and in PyTorch, at 1 and 2 threads, in the same run, and prints a table of medians (and
# best iterations) with the ratio mtl / torch (below 1: mtl is faster). Run by `make bench`; see
# bench/README.md.
#
# Environment: BUILD (build folder with libmtl.a, default build), REPEATS (runs per configuration,
# default 5), ITERS (timed iterations per run, default 30), THREADS (default "1 2"), LAYERS=1 to
# add per-layer forward+backward times, PYTHON (default /usr/bin/python3, Debian's python3-torch).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
repeats=${REPEATS:-5}
iters=${ITERS:-30}
threads_list=${THREADS:-"1 2"}
layers=${LAYERS:-0}
python=${PYTHON:-/usr/bin/python3}

# Both sides call OpenBLAS single-threaded (torch's own threads are set with set_num_threads);
# OPENBLAS_CORETYPE is left as the environment has it.
export OPENBLAS_NUM_THREADS=1

if [ ! -f "$build/libmtl.a" ]; then
  echo "multilenet.sh: $build/libmtl.a not found; run 'make' first" >&2
  exit 1
fi
bin="$build/multilenet_mtl"
# link like the mtl executable does (CMake knows the libraries; everything after libmtl.a)
link_txt="$build/CMakeFiles/mtl.dir/link.txt"
if [ -f "$link_txt" ]; then
  libs=$(sed -e 's/.* libmtl\.a//' "$link_txt")
else
  libs="$(pkg-config --libs openblas) -llmdb -lstb -lcjson -lz -lm -lpthread"
fi
# shellcheck disable=SC2046,SC2086
cc -std=c11 -O2 -march=x86-64-v2 -fopenmp -D_POSIX_C_SOURCE=200809L -DMTL_OPENMP=1 -Isrc -Iinclude \
  $(pkg-config --cflags openblas) bench/multilenet_mtl.c "$build/libmtl.a" $libs -fopenmp \
  -Wl,-rpath,"$(pkg-config --variable=libdir openblas)" -o "$bin"

have_torch=1
if ! "$python" -c 'import torch' 2>/dev/null; then
  have_torch=0
  echo "multilenet.sh: PyTorch not importable by $python (scripts/install-deps.sh bench installs it);" \
    "timing mtl only" >&2
fi

layer_flag=()
[ "$layers" = 1 ] && layer_flag=(--layers)
results=$(mktemp)
trap 'rm -f "$results"' EXIT

echo "MultiLeNet, batch 256, one training iteration; $repeats runs x $iters iterations per configuration" >&2
# Runs alternate between the two sides so that load changes on the machine hit both alike.
for ((r = 1; r <= repeats; r++)); do
  for t in $threads_list; do
    "$bin" --threads "$t" --iters "$iters" "${layer_flag[@]}" | sed "s/^/mtl $t /" >>"$results"
    if [ "$have_torch" = 1 ]; then
      "$python" bench/multilenet_torch.py --threads "$t" --iters "$iters" "${layer_flag[@]}" |
        sed "s/^/torch $t /" >>"$results"
    fi
  done
  echo "  run $r of $repeats done" >&2
done

# results lines: side threads name median_ms min_ms. Table: the median over runs of each run's
# median, and the best single iteration seen (what the machine does when nothing else runs).
awk -v threads="$threads_list" '
function median(list,    n, a, i, j, x) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
  key = $1 SUBSEP $2 SUBSEP $3
  runs[key] = runs[key] " " $4
  if (!(key in best) || $5 < best[key]) best[key] = $5
  if (!($3 in seen)) { seen[$3] = 1; names[++n] = $3 }
}
function cell(key) { return (key in runs) ? sprintf("%.3f", median(runs[key])) : "-" }
function ratio(a, b) { return (a in runs) && (b in runs) ? sprintf("%.2f", median(runs[a]) / median(runs[b])) : "-" }
END {
  nt = split(threads, ts, " ")
  printf "%-18s %7s %10s %10s %8s %10s %10s %8s\n", "measurement", "threads", "mtl ms", "torch ms", "ratio",
    "mtl best", "torch best", "ratio"
  for (i = 1; i <= n; i++) for (k = 1; k <= nt; k++) {
    m = "mtl" SUBSEP ts[k] SUBSEP names[i]; p = "torch" SUBSEP ts[k] SUBSEP names[i]
    if (!(m in runs) && !(p in runs)) continue
    best_ratio = (m in best) && (p in best) && (best[p] > 0) ? sprintf("%.2f", best[m] / best[p]) : "-"
    printf("%-18s %7s %10s %10s %8s %10s %10s %8s\n", names[i], ts[k], cell(m), cell(p), ratio(m, p),
      (m in best) ? sprintf("%.3f", best[m]) : "-", (p in best) ? sprintf("%.3f", best[p]) : "-", best_ratio)
  }
}' "$results"
