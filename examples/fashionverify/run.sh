#!/usr/bin/env bash
# FashionVerify: trains every configuration of this directory for SEEDS seeds, embeds the unseen test
# classes 6-9 with deploy.prototxt, verifies on the 6000 pairs, and writes the table (mean and standard
# deviation over seeds) to examples/fashionverify/results.md. Builds the data first if it is missing.
# Finished runs (a verify.json in their directory) are kept; FORCE=1 redoes them.
#
# Environment: MTL (default build/mtl), SEEDS (3), WEIGHTS (the verification weights of (b),
# default "0.05 0.2 1"), OUT (out/fashionverify), MAX_ITER (the solvers' 560 unless set),
# ONLY (a space-separated subset of: pixels ident verif triplet), RESULTS (the table's file).
set -euo pipefail
cd "$(dirname "$0")/../.."
MTL=${MTL:-build/mtl}
SEEDS=${SEEDS:-3}
WEIGHTS=${WEIGHTS:-"0.05 0.2 1"}
OUT=${OUT:-out/fashionverify}
ONLY=${ONLY:-"pixels ident verif triplet"}
FORCE=${FORCE:-0}
EX=examples/fashionverify
RESULTS=${RESULTS:-$EX/results.md}
DATA=data/fashionverify
SCALE=0.00390625 # the training nets' transform_param scale

[ -x "$MTL" ] || { echo "run.sh: no $MTL; build mtl first (make)" >&2; exit 1; }
if [ ! -f "$DATA/pairs.txt" ] || [ ! -f "$DATA/test.txt" ]; then
  "$MTL" dataset fashionverify --out "$DATA" --seed 1
fi
if [ ! -d "$DATA/train_lmdb" ]; then
  "$MTL" convert --gray --shuffle "$DATA/train.txt" "$DATA" "$DATA/train_lmdb"
fi
mkdir -p "$OUT"

# configuration name, net file, verification weight (b only), label in the table
configs=()
for c in $ONLY; do
  case $c in
    pixels) configs+=("pixels|||raw pixels (no training; reference)") ;;
    ident) configs+=("ident|ident_train.prototxt||(a) softmax") ;;
    verif)
      for w in $WEIGHTS; do
        configs+=("verif_$w|ident_verif_train.prototxt|$w|(b) softmax + pair loss, weight $w")
      done ;;
    triplet) configs+=("triplet|ident_triplet_train.prototxt||(c) softmax + triplet (L2-normalised, batch-hard)") ;;
    *) echo "run.sh: unknown configuration '$c' in ONLY" >&2; exit 2 ;;
  esac
done

evaluate() { # dir embed-arguments...: embeds the test images, verifies, keeps verify.txt and verify.json
  local dir=$1; shift
  "$MTL" embed "$@" --blob feat --list "$DATA/test.txt" --root "$DATA" --scale "$SCALE" --out "$dir/test.emb"
  "$MTL" verify --embeddings "$dir/test.emb" --pairs "$DATA/pairs.txt" | tee "$dir/verify.txt"
  "$MTL" verify --embeddings "$dir/test.emb" --pairs "$DATA/pairs.txt" --json >"$dir/verify.json.tmp"
  mv "$dir/verify.json.tmp" "$dir/verify.json"
}

record() { # dir name label seed: appends config, label, seed, accuracy, AUC, recall@1, recall@5, seconds
  sed -e 's/.*"accuracy":{"mean":\([^,]*\),.*"auc":\([^,]*\),"recall":{"1":\([^,]*\),"5":\([^}]*\)}}/\1 \2 \3 \4/' \
    "$1/verify.json" | awk -v n="$2" -v l="$3" -v s="$4" -v t="$(cat "$1/train_seconds")" \
    '{ printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n, l, s, $1, $2, $3, $4, t }' >>"$runs"
}

train_run() { # dir net weight seed solver max_iter: one training run from copies of the net and solver
  local dir=$1 net=$2 weight=$3 seed=$4 solver=$5 max_iter=$6 abs start
  rm -rf "$dir"
  mkdir -p "$dir"
  abs=$(cd "$dir" && pwd)
  if [ -n "$weight" ]; then
    sed "s/^  loss_weight: 0.05$/  loss_weight: $weight/" "$EX/$net" >"$dir/net.prototxt"
    grep -q "^  loss_weight: $weight$" "$dir/net.prototxt" || { echo "run.sh: cannot set the weight" >&2; exit 1; }
  else
    cp "$EX/$net" "$dir/net.prototxt"
  fi
  sed -e "s|^net: .*|net: \"$abs/net.prototxt\"|" -e "s|^random_seed: .*|random_seed: $seed|" \
    -e "s|^snapshot_prefix: .*|snapshot_prefix: \"$abs/model\"|" "$solver" >"$dir/solver.prototxt"
  start=$(date +%s)
  if ! "$MTL" train --solver "$dir/solver.prototxt" --max-iter "$max_iter" --log "$dir/train.jsonl" \
    >"$dir/train.log" 2>&1; then
    tail -5 "$dir/train.log" >&2
    exit 1
  fi
  echo $(($(date +%s) - start)) >"$dir/train_seconds"
  evaluate "$dir" --model "$EX/deploy.prototxt" --weights "$dir/model_iter_$max_iter.mtlsnap"
}

runs="$OUT/runs.tsv"
: >"$runs"
for entry in "${configs[@]}"; do
  IFS='|' read -r name net weight label <<<"$entry"
  if [ -z "$net" ]; then # the untrained reference: one run
    dir="$OUT/$name"
    if [ "$FORCE" = 1 ] || [ ! -f "$dir/verify.json" ]; then
      echo "== $label"
      mkdir -p "$dir"
      echo 0 >"$dir/train_seconds"
      evaluate "$dir" --model "$EX/pixels.prototxt"
    fi
    record "$dir" "$name" "$label" -
    continue
  fi
  solver="$EX/solver_${net%_train.prototxt}.prototxt"
  max_iter=${MAX_ITER:-$(awk '$1 == "max_iter:" { print $2 }' "$solver")}
  for seed in $(seq 1 "$SEEDS"); do
    dir="$OUT/$name/seed$seed"
    if [ "$FORCE" = 1 ] || [ ! -f "$dir/verify.json" ]; then
      echo "== $label, seed $seed"
      train_run "$dir" "$net" "$weight" "$seed" "$solver" "$max_iter"
    fi
    record "$dir" "$name" "$label" "$seed"
  done
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
{
  echo "# FashionVerify results"
  echo
  echo "Written by \`examples/fashionverify/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores" \
    "(${cpu:-unknown CPU}),"
  echo "$SEEDS seed(s) per trained configuration. Unseen classes 6-9: 4000 test images, 6000 pairs in 10"
  echo "folds; features: the 64-d \`feat\` blob (the raw pixels for the reference row), compared by cosine"
  echo "similarity. Each cell is the mean +/- the standard deviation over seeds (n - 1 in the denominator);"
  echo "verification accuracy is itself the mean over the 10 folds of each run (threshold chosen on the"
  echo "other nine). Training times are wall-clock seconds on a machine that may be shared with other work."
  echo
  echo "| configuration | verification accuracy | ROC AUC | recall@1 | recall@5 | training (s) |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' '
    function cell(i,   m, s, k, d) {
      m = 0; for (k = 1; k <= cnt[c]; k++) m += v[c, k, i]; m /= cnt[c]
      s = 0; for (k = 1; k <= cnt[c]; k++) { d = v[c, k, i] - m; s += d * d }
      s = cnt[c] > 1 ? sqrt(s / (cnt[c] - 1)) : 0
      if (i == 8) return sprintf("%.0f", m)
      return cnt[c] > 1 ? sprintf("%.4f +/- %.4f", m, s) : sprintf("%.4f", m)
    }
    { if (!($1 in cnt)) { order[++n] = $1; label[$1] = $2 }
      cnt[$1]++; for (i = 4; i <= 8; i++) v[$1, cnt[$1], i] = $i }
    END { for (j = 1; j <= n; j++) { c = order[j]
            printf "| %s | %s | %s | %s | %s | %s |\n", label[c], cell(4), cell(5), cell(6), cell(7), cell(8) } }
  ' "$runs"
  echo
  echo "Per run:"
  echo
  echo "| configuration | seed | verification accuracy | ROC AUC | recall@1 | recall@5 | training (s) |"
  echo "|---|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %.4f | %.4f | %.4f | %.4f | %s |\n", $2, $3, $4, $5, $6, $7, $8 }' "$runs"
} >"$RESULTS"
echo
cat "$RESULTS"
