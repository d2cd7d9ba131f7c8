#!/usr/bin/env bash
# Builds MultiFashion from Debian's Fashion-MNIST and packs both splits into LMDBs, skipping what
# already exists. Shared by `make demo` and the benchmarks so they all train on the same data.
# Usage: scripts/multifashion-data.sh MTL_BINARY [DATA_DIR (default data/multifashion)]
set -euo pipefail
mtl=$1
data=${2:-data/multifashion}
mkdir -p "$data"
if [ ! -f "$data/test.txt" ]; then
  echo "== building MultiFashion from Fashion-MNIST" >&2
  "$mtl" dataset multifashion --out "$data" --seed 1
fi
for split in train test; do
  if [ ! -d "$data/${split}_lmdb" ]; then
    echo "== converting the $split list into an LMDB" >&2
    # shellcheck disable=SC2046
    "$mtl" convert "$data/$split.txt" "$data" "$data/${split}_lmdb" --gray --label-names left,right \
      $([ "$split" = train ] && echo --shuffle --seed 1)
  fi
done
