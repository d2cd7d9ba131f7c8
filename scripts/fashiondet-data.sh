#!/usr/bin/env bash
# Builds FashionDet from Debian's Fashion-MNIST (shared/DATASETS.md) and packs both splits into
# detection LMDBs (box lists from the COCO annotations), skipping what already exists.
# Usage: scripts/fashiondet-data.sh MTL_BINARY [DATA_DIR (default data/fashiondet)]
set -euo pipefail
mtl=$1
data=${2:-data/fashiondet}
mkdir -p "$data"
if [ ! -f "$data/test.json" ]; then
  echo "== building FashionDet from Fashion-MNIST" >&2
  "$mtl" dataset fashiondet --out "$data" --seed 1
fi
for split in train test; do
  if [ ! -d "$data/${split}_lmdb" ]; then
    echo "== converting the $split annotations into an LMDB" >&2
    # shellcheck disable=SC2046
    "$mtl" convert --coco "$data/$split.json" "$data" "$data/${split}_lmdb" --gray \
      $([ "$split" = train ] && echo --shuffle --seed 1)
  fi
done
