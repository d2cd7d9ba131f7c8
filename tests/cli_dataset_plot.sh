#!/usr/bin/env bash
# mtl dataset and mtl plot from the command line: builds on a tiny synthetic Fashion-MNIST written
# here (never the installed data set), usage errors, reproducibility, and SVG curves from a
# hand-written log. Usage: cli_dataset_plot.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"
check() { # description command...: passes when the command succeeds
  local what=$1; shift
  if "$@"; then ok; else bad "$what"; fi
}

# 30 items per split, 28x28, class k % 10, a rectangle of varying values that moves with k
/usr/bin/python3 - "$work/fm" <<'EOF'
import gzip, os, struct, sys
d = sys.argv[1]
os.makedirs(d)
n = 30
for split, off in (("train", 0), ("t10k", 1000)):
    pix = bytearray()
    for k in range(n):
        kk = k + off
        for r in range(28):
            for c in range(28):
                inside = 2 + kk % 5 <= r < 25 - kk % 3 and 3 + kk % 4 <= c < 22 - kk % 6
                pix.append(40 + (r * 7 + c * 13 + kk * 29) % 200 if inside else 0)
    with gzip.open(f"{d}/{split}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(pix))
    with gzip.open(f"{d}/{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(k % 10 for k in range(n)))
EOF

# ---------------------------------------------------------------- mtl dataset: usage
expect_rc 0 "dataset --help" "$mtl" dataset --help
expect_grep "usage: mtl dataset" "$work/out" "dataset usage"
expect_rc 2 "dataset without a kind" "$mtl" dataset --out "$work/x"
expect_grep "usage: mtl dataset" "$work/err" "usage on bad arguments"
expect_rc 2 "unknown kind" "$mtl" dataset multimnist --out "$work/x"
expect_grep "multimnist" "$work/err" "unknown kind named"
expect_rc 2 "missing --out" "$mtl" dataset multifashion --source "$work/fm"
expect_rc 2 "limit 0" "$mtl" dataset multifashion --out "$work/x" --limit 0
expect_rc 2 "limit not a number" "$mtl" dataset multifashion --out "$work/x" --limit ten
expect_rc 2 "negative seed" "$mtl" dataset multifashion --out "$work/x" --seed -1
expect_rc 2 "seed not a number" "$mtl" dataset multifashion --out "$work/x" --seed 1x
expect_rc 2 "unknown option" "$mtl" dataset multifashion --out "$work/x" --bogus
expect_rc 2 "two kinds" "$mtl" dataset multifashion fashiondet --out "$work/x"
[ -e "$work/x" ] && bad "usage errors created the output" || ok

# ---------------------------------------------------------------- mtl dataset: builds
expect_rc 0 "multifashion" "$mtl" dataset multifashion --source "$work/fm" --out "$work/mf" --limit 10 --seed 3
expect_grep "multifashion: built in" "$work/out" "summary"
expect_grep "train 10 images" "$work/out" "summary counts"
check "train list has 10 lines" [ "$(wc -l <"$work/mf/train.txt")" -eq 10 ]
check "test list has 10 lines" [ "$(wc -l <"$work/mf/test.txt")" -eq 10 ]
check "list line format" grep -qE '^train/00000\.png 0 [0-9]$' "$work/mf/train.txt"
check "every list line well formed" [ "$(grep -cE '^test/000[0-9][0-9]\.png [0-9] [0-9]$' "$work/mf/test.txt")" -eq 10 ]
check "10 train images" [ "$(ls "$work/mf/train" | grep -c '\.png$')" -eq 10 ]
check "PNG files" cmp -s -n 8 "$work/mf/train/00009.png" <(printf '\x89PNG\r\n\x1a\n')
check "no temporary files left" [ -z "$(find "$work/mf" -name '*.partial' -o -name '*.tmp')" ]
expect_rc 0 "same seed again" "$mtl" dataset multifashion --source "$work/fm" --out "$work/mf2" --limit 10 --seed 3
check "same seed, same list" cmp -s "$work/mf/train.txt" "$work/mf2/train.txt"
check "same seed, same images" cmp -s "$work/mf/train/00004.png" "$work/mf2/train/00004.png"
expect_rc 0 "another seed" "$mtl" dataset multifashion --source "$work/fm" --out "$work/mf3" --limit 10 --seed 4
diff -rq "$work/mf/train" "$work/mf3/train" >/dev/null && bad "another seed, same train images" || ok
expect_rc 1 "missing source" "$mtl" dataset multifashion --source "$work/nothing" --out "$work/mf4"
expect_grep "nothing/train-images-idx3-ubyte.gz" "$work/err" "missing source named"
: >"$work/plainfile"
expect_rc 1 "unwritable output" "$mtl" dataset fashionpose --source "$work/fm" --out "$work/plainfile/sub"
expect_grep "plainfile" "$work/err" "unwritable output named"

expect_rc 0 "fashiondet" "$mtl" dataset fashiondet --source "$work/fm" --out "$work/det" --limit 5
check "COCO JSON" /usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["images"]) == 5 and len(d["categories"]) == 10 and d["categories"][9]["name"] == "Ankle boot"
for a in d["annotations"]:
    x, y, w, h = a["bbox"]
    assert 1 <= a["category_id"] <= 10 and a["iscrowd"] == 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
' "$work/det/test.json"
expect_rc 0 "fashionpose" "$mtl" dataset fashionpose --source "$work/fm" --out "$work/pose" --limit 5
pose_line='^train/0000[0-4]\.png( -?[0-9]+\.[0-9]{3}){10}( [0-9]+){5}$'
check "pose lines: path, 10 floats, 5 integers" [ "$(grep -cE "$pose_line" "$work/pose/train.txt")" -eq 5 ]
expect_rc 0 "fashionverify" "$mtl" dataset fashionverify --source "$work/fm" --out "$work/ver"
check "verify train classes 0-5" [ "$(grep -cE '^train/[0-9]{5}\.png [0-5]$' "$work/ver/train.txt")" -eq 18 ]
check "verify test classes 6-9" [ "$(grep -cE '^test/[0-9]{5}\.png [6-9]$' "$work/ver/test.txt")" -eq 12 ]
check "6000 pairs" [ "$(grep -cE '^[0-9] test/[0-9]{5}\.png test/[0-9]{5}\.png [01]$' "$work/ver/pairs.txt")" -eq 6000 ]
check "3000 same-class pairs" [ "$(grep -c ' 1$' "$work/ver/pairs.txt")" -eq 3000 ]

# ---------------------------------------------------------------- mtl plot
cat >"$work/log.jsonl" <<'EOF'
{"iter":0,"phase":"train","lr":0.01,"loss":2.3,"iter_loss":2.3,"outputs":{"loss_left":{"value":2.31,"weight":0.5},"loss_right":{"value":2.29,"weight":0.5}},"iter_per_s":0}
{"iter":0,"phase":"test","net":0,"outputs":{"accuracy_left":{"value":0.1,"weight":0},"accuracy_right":{"value":0.12,"weight":0},"loss_left":{"value":2.3,"weight":0.5},"loss_right":{"value":2.3,"weight":0.5}}}
{"iter":50,"phase":"train","lr":0.01,"loss":1.1,"iter_loss":1.0,"outputs":{"loss_left":{"value":0.9,"weight":0.5},"loss_right":{"value":null,"weight":0.5}},"iter_per_s":40}

{"iter":100,"phase":"train","lr":0.01,"loss":0.7,"iter_loss":0.6,"outputs":{"loss_left":{"value":0.6,"weight":0.5},"loss_right":{"value":0.8,"weight":0.5}},"balance":{"weights":{"loss_left":0.4,"loss_right":0.6}},"iter_per_s":40}
{"iter":100,"phase":"snapshot","path":"x_iter_100.mtlsnap"}
{"iter":100,"phase":"test","net":0,"outputs":{"accuracy_left":{"value":0.81,"weight":0},"accuracy_right":{"value":0.74,"weight":0},"loss_left":{"value":0.7,"weight":0.5},"loss_right":{"value":0.9,"weight":0.5}}}
EOF
expect_rc 0 "plot" "$mtl" plot "$work/log.jsonl" -o "$work/curves.svg"
expect_grep "wrote" "$work/out" "plot reports"
for name in loss_left loss_right accuracy_left accuracy_right "total loss" "balance: weights" \
  "Training loss per task" "Test outputs" iteration; do
  expect_grep "$name" "$work/curves.svg" "SVG names $name"
done
check "SVG is well-formed XML" /usr/bin/python3 -c '
import sys, xml.etree.ElementTree as E
assert E.parse(sys.argv[1]).getroot().tag.endswith("svg")' "$work/curves.svg"
expect_rc 0 "plot --output" "$mtl" plot "$work/log.jsonl" --output "$work/c2.svg"
check "same log, same SVG" cmp -s "$work/curves.svg" "$work/c2.svg"
expect_rc 0 "plot default output" "$mtl" plot "$work/log.jsonl"
check "default output name" [ -s "$work/log.svg" ]
expect_rc 0 "plot --help" "$mtl" plot --help
expect_grep "usage: mtl plot" "$work/out" "plot usage"
expect_rc 2 "plot without a log" "$mtl" plot -o "$work/x.svg"
expect_rc 2 "plot with two logs" "$mtl" plot "$work/log.jsonl" "$work/log.jsonl" -o "$work/x.svg"
expect_rc 2 "plot -o without a value" "$mtl" plot "$work/log.jsonl" -o
expect_rc 1 "plot of a missing log" "$mtl" plot "$work/none.jsonl" -o "$work/x.svg"
expect_grep "none.jsonl" "$work/err" "missing log named"
: >"$work/empty.jsonl"
expect_rc 1 "plot of an empty log" "$mtl" plot "$work/empty.jsonl" -o "$work/x.svg"
expect_grep "empty" "$work/err" "empty log said"
{ head -2 "$work/log.jsonl"; echo 'iteration 100 loss 0.5'; } >"$work/bad.jsonl"
expect_rc 1 "plot of a log with a bad line" "$mtl" plot "$work/bad.jsonl" -o "$work/x.svg"
expect_grep "bad.jsonl:3:" "$work/err" "bad line named by number"
echo '{"iter":100,"phase":"snapshot","path":"a"}' >"$work/nodata.jsonl"
expect_rc 1 "plot of a log without records" "$mtl" plot "$work/nodata.jsonl" -o "$work/x.svg"
expect_grep "no train or test records" "$work/err" "log without records"
expect_rc 1 "plot to an unwritable file" "$mtl" plot "$work/log.jsonl" -o "$work/plainfile/x.svg"
expect_grep "plainfile/x.svg" "$work/err" "unwritable SVG named"
[ -e "$work/x.svg" ] && bad "a failed plot wrote its output" || ok

cli_finish
