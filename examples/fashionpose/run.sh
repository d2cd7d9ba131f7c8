#!/usr/bin/env bash
# FashionPose: builds the data set, trains the three configurations of this directory for each
# seed (landmarks only; landmarks + auxiliary attributes at fixed weights; the same with task-wise
# early stopping), evaluates each final model on the 5000 test images with `mtl test`, and writes
# the table (mean ± std over seeds) to results.md here. Run from anywhere; paths are taken from
# the repository root.
#
# Environment: SEEDS (default 3: seeds 1..SEEDS; or a list "1 2 5"), CONFIGS (default
# "landmarks tcdcn es"), BUILD (default build), OUT (default out/fashionpose), THREADS (per run,
# default 1: on a busy 2-core machine one thread per run is the fastest), JOBS (runs at once,
# default 1).
#
# Data: data/fashionpose (`mtl dataset fashionpose --seed 1`); train.txt's first 27000 lines train,
# its last 3000 are the validation split the solvers test on (and early stopping watches); the
# test split is only used for the final evaluation. Per run: $OUT/<config>/seed<k>/ holds the
# solver copy (random_seed k, net: pointing back here), train.log, log.jsonl, the snapshot,
# eval.prototxt (the net with the test split) and test.txt (`mtl test`'s output). A run whose
# test.txt exists is kept: delete its directory (or $OUT) to train it again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

build=${BUILD:-build}
out=${OUT:-out/fashionpose}
seeds=${SEEDS:-3}
case "$seeds" in
  *[!0-9]*) ;;
  *) seeds=$(seq 1 "$seeds") ;;
esac
configs=${CONFIGS:-landmarks tcdcn es}
threads=${THREADS:-1}
jobs=${JOBS:-1}
data=data/fashionpose
mtl=$build/mtl
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1

if [ ! -x "$mtl" ]; then
  echo "run.sh: $mtl not found; run 'make' first" >&2
  exit 1
fi

# ---- data -----------------------------------------------------------------------------------
if [ ! -f "$data/test.txt" ]; then
  echo "== building FashionPose from Fashion-MNIST" >&2
  "$mtl" dataset fashionpose --out "$data" --seed 1
fi
if [ ! -f "$data/val.txt" ]; then
  head -n 27000 "$data/train.txt" > "$data/train_split.txt"
  tail -n 3000 "$data/train.txt" > "$data/val.txt"
fi
for split in train val test; do
  list=$data/$split.txt
  [ "$split" = train ] && list=$data/train_split.txt
  if [ ! -d "$data/${split}_lmdb" ]; then
    echo "== converting $split" >&2
    "$mtl" convert --gray "$list" "$data" "$data/${split}_lmdb"
  fi
done

# ---- training and evaluation ----------------------------------------------------------------
net_of() {
  case "$1" in
    landmarks) echo landmarks_train_test.prototxt ;;
    *) echo tcdcn_train_test.prototxt ;;
  esac
}
solver_of() {
  case "$1" in
    landmarks) echo solver_landmarks.prototxt ;;
    tcdcn) echo solver_tcdcn.prototxt ;;
    es) echo solver_es.prototxt ;;
  esac
}

run_one() {
  local config=$1 seed=$2
  local dir=$out/$config/seed$seed
  if [ -s "$dir/test.txt" ]; then
    echo "== $config seed $seed: kept from an earlier run ($dir/test.txt)" >&2
    return 0
  fi
  mkdir -p "$dir"
  local abs
  abs=$(cd "$dir" && pwd)
  sed -e "s#^net: \"\(.*\)\"#net: \"$here/\1\"#" \
      -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$abs/model\"#" \
      -e "s#^random_seed: .*#random_seed: $seed#" "$here/$(solver_of "$config")" > "$dir/solver.prototxt"
  local start end
  start=$(date +%s.%N)
  "$mtl" train --solver "$dir/solver.prototxt" --log "$dir/log.jsonl" --threads "$threads" > "$dir/train.log" 2>&1
  end=$(date +%s.%N)
  echo "$start $end" | awk '{printf "%.1f\n", $2 - $1}' > "$dir/train_seconds"
  local snap
  snap=$(ls -t "$dir"/model_iter_*.mtlsnap | head -n 1)
  sed "s#$data/val_lmdb#$data/test_lmdb#" "$here/$(net_of "$config")" > "$dir/eval.prototxt"
  "$mtl" test --model "$dir/eval.prototxt" --weights "$snap" --iterations 50 --threads "$threads" > "$dir/test.txt"
  local metrics
  metrics=$(grep -E '^(nme|failure_rate) =' "$dir/test.txt" | tr '\n' ' ')
  echo "== $config seed $seed: $metrics($(cat "$dir/train_seconds") s)" >&2
}

pids=()
for config in $configs; do
  for seed in $seeds; do
    echo "== training $config, seed $seed" >&2
    run_one "$config" "$seed" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs" ]; then
      wait "${pids[0]}"
      pids=("${pids[@]:1}")
    fi
  done
done
for pid in "${pids[@]}"; do wait "$pid"; done

# ---- the table ------------------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
machine="$(getconf _NPROCESSORS_ONLN) cores ($cpu), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
machine="$machine; $jobs run(s) at once, $threads thread(s) each"
python3 - "$out" "$here/results.md" "$machine" "mtl train" $configs -- $seeds <<'EOF'
import datetime, json, math, os, re, sys
out, dest, machine, trainer = sys.argv[1:5]
rest = sys.argv[5:]
configs, seeds = rest[:rest.index('--')], rest[rest.index('--') + 1:]
names = {'landmarks': 'landmarks only', 'tcdcn': 'landmarks + attributes (fixed weights 0.1)',
         'es': 'landmarks + attributes, task-wise early stopping'}
cols = [('nme', 'NME %', 100), ('failure_rate', 'failure % (NME > 10%)', 100),
        ('accuracy_class', 'class %', 100), ('accuracy_group', 'group %', 100), ('accuracy_pose', 'pose %', 100),
        ('accuracy_mirrored', 'mirrored %', 100), ('accuracy_size', 'size %', 100)]
def stat(xs, digits=2):
    if not xs:
        return '—'
    m = sum(xs) / len(xs)
    if len(xs) == 1:
        return '%.*f' % (digits, m)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return '%.*f ± %.*f' % (digits, m, digits, sd)
lines = ['# FashionPose results', '',
         'Written by examples/fashionpose/run.sh on %s; %s.' % (datetime.date.today().isoformat(), machine),
         'Test split (5000 images), final weights after 2000 iterations; mean ± sample std over seeds %s.'
         % ', '.join(seeds), 'Early-stopping configuration trained with: %s. "train s": wall-clock seconds of '
         'training (tests on the validation split included), which depend on the load.' % trainer, '',
         '| configuration | seeds | ' + ' | '.join(c[1] for c in cols) + ' | train s |',
         '|---|---|' + '---|' * len(cols) + '---|']
stops = []
for config in configs:
    vals = {c[0]: [] for c in cols}
    secs, n = [], 0
    for seed in seeds:
        d = os.path.join(out, config, 'seed' + seed)
        try:
            text = open(os.path.join(d, 'test.txt')).read()
        except OSError:
            continue
        n += 1
        for key, _, scale in cols:
            m = re.search(r'^%s = ([-0-9.eE+naif]+)' % key, text, re.M)
            if m:
                vals[key].append(float(m.group(1)) * scale)
        try:
            secs.append(float(open(os.path.join(d, 'train_seconds')).read()))
        except (OSError, ValueError):
            pass
        if config == 'es':
            stopped = []
            try:
                for line in open(os.path.join(d, 'log.jsonl')):
                    if '"task_stopped"' in line:
                        e = json.loads(line)
                        stopped.append('%s at %d' % (e['task'], e['iter']))
            except OSError:
                pass
            stops.append('seed %s: %s' % (seed, ', '.join(stopped) if stopped else 'none'))
    lines.append('| %s | %d | ' % (names.get(config, config), n) + ' | '.join(stat(vals[c[0]]) for c in cols) +
                 ' | %s |' % stat(secs, 0))
if stops:
    lines += ['', 'Auxiliary tasks stopped by early stopping (validation test iteration): ' + '; '.join(stops) + '.']
open(dest, 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
EOF
