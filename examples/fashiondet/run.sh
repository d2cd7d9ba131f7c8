#!/usr/bin/env bash
# FashionDet: builds the data set, trains Faster R-CNN with the proposal network and the detector
# sharing one trunk ("shared") and, for the ablation, with a trunk each ("separate"), then runs
# `mtl detect` on the 2000 test images and `mtl evaluate-detections` on the results, and writes the
# table (mAP@0.5, mAP@[.5:.95], training time, detection speed) to results.md here. Run from
# anywhere; paths are taken from the repository root.
#
# Environment: CONFIGS (default "shared separate"), MAX_ITER (default: the solvers' recipe),
# BUILD (default build), OUT (default out/fashiondet), THREADS (default 2), RESULTS (the table's
# file, default results.md here).
# Per configuration, $OUT/<config>/ holds the solver copy, train.log, log.jsonl, the snapshots,
# results.json (the detections), eval.txt and eval.json. A configuration whose eval.json exists is
# kept: delete its directory to train it again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

build=${BUILD:-build}
out=${OUT:-out/fashiondet}
configs=${CONFIGS:-shared separate}
threads=${THREADS:-2}
results=${RESULTS:-$here/results.md}
data=data/fashiondet
mtl=$build/mtl
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive

if [ ! -x "$mtl" ]; then
  echo "run.sh: $mtl not found; run 'make' first" >&2
  exit 1
fi
scripts/fashiondet-data.sh "$mtl" "$data"

run_one() {
  local config=$1 dir=$out/$1
  local solver=solver.prototxt
  [ "$config" = separate ] && solver=solver_separate.prototxt
  if [ -s "$dir/eval.json" ]; then
    echo "== $config: kept from an earlier run ($dir/eval.json)" >&2
    return 0
  fi
  mkdir -p "$dir"
  local abs
  abs=$(cd "$dir" && pwd)
  sed -e "s#^net: \"\(.*\)\"#net: \"$here/\1\"#" \
      -e "s#^snapshot_prefix: .*#snapshot_prefix: \"$abs/model\"#" "$here/$solver" > "$dir/solver.prototxt"
  local max_iter=()
  [ -n "${MAX_ITER:-}" ] && max_iter=(--max-iter "$MAX_ITER")
  echo "== training $config" >&2
  local start end
  start=$(date +%s.%N)
  "$mtl" train --solver "$dir/solver.prototxt" --log "$dir/log.jsonl" --threads "$threads" "${max_iter[@]}" \
    > "$dir/train.log" 2>&1
  end=$(date +%s.%N)
  echo "$start $end" | awk '{printf "%.0f\n", $2 - $1}' > "$dir/train_seconds"
  local snap deploy=$here/deploy.prototxt
  snap=$(ls -t "$dir"/model_iter_*.mtlsnap | head -n 1)
  [ "$config" = separate ] && deploy=$here/deploy_separate.prototxt
  echo "== detecting on the test images with $snap" >&2
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  "$mtl" detect --model "$deploy" --weights "$snap" --threshold 0.01 --scale 0.00390625 \
    --categories "$data/test.json" --output "$dir/results.json" --threads "$threads" \
    $(python3 -c 'import json,sys; print(" ".join(sys.argv[2] + "/" + i["file_name"] for i in json.load(open(sys.argv[1]))["images"]))' \
      "$data/test.json" "$data")
  end=$(date +%s.%N)
  echo "$start $end" | awk '{printf "%.2f\n", $2 - $1}' > "$dir/detect_seconds"
  "$mtl" evaluate-detections "$data/test.json" "$dir/results.json" | tee "$dir/eval.txt" >&2
  "$mtl" evaluate-detections --json "$data/test.json" "$dir/results.json" > "$dir/eval.json"
}

for config in $configs; do
  run_one "$config"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
machine="$(getconf _NPROCESSORS_ONLN) cores ($cpu), $threads thread(s), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
python3 - "$out" "$results" "$machine" $configs <<'PY'
import datetime, json, os, sys
out, dest, machine = sys.argv[1:4]
configs = sys.argv[4:]
names = {'shared': 'shared trunk (Faster R-CNN)', 'separate': 'separate trunks (RPN and detector)'}
lines = ['# FashionDet results', '',
         'Written by examples/fashiondet/run.sh on %s; %s.' % (datetime.date.today().isoformat(), machine),
         'Test split (2000 images, 6063 boxes), final weights. "train" is the wall-clock time of `mtl train`',
         '(its periodic test passes included); "detect" is `mtl detect` over the 2000 test images (one image',
         'per forward, decoding and JSON writing included).', '',
         '| configuration | iterations | mAP@0.5 | mAP@[.5:.95] | train | detect (images/s) |',
         '|---|---|---|---|---|---|']
for config in configs:
    d = os.path.join(out, config)
    try:
        ev = json.load(open(os.path.join(d, 'eval.json')))
    except (OSError, ValueError):
        continue
    secs = float(open(os.path.join(d, 'train_seconds')).read())
    det = float(open(os.path.join(d, 'detect_seconds')).read())
    iters = max((json.loads(l).get('iter', 0) for l in open(os.path.join(d, 'log.jsonl')) if l.strip()), default=0)
    lines.append('| %s | %d | %.3f | %.3f | %d min %02d s | %.0f |' % (
        names.get(config, config), iters, ev['map50'], ev['map'], secs // 60, secs % 60, 2000 / det))
    per = ev.get('categories', [])
    if per:
        lines += ['', '%s, per class: ' % names.get(config, config) +
                  ', '.join('%s %.3f/%.3f' % (c['name'], c['ap50'], c['ap']) for c in per) + ' (AP@0.5/AP@[.5:.95])']
open(dest, 'w').write('\n'.join(lines) + '\n')
print('\n'.join(lines))
PY
