#!/usr/bin/env bash
# mtl predict --draw: the landmarks land where they should. A tiny net trained for two iterations
# gives a classifier head; its deploy net adds a parameter-free landmark head (average pooling of
# the image's quadrants, so the "predicted" points are known from the pixels). The drawn PNG is
# decoded here and its size, dots and text panel checked; then the argument errors.
# Usage: cli_predict_draw.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"
png="$src/tests/support/png.py"

# ---- a tiny trained classifier ---------------------------------------------------------------------
mkdir -p "$work/img"
: >"$work/train.txt"
for s in 0 1 2 3; do
  pixels=$($py -c "print(','.join(str((x * 31 + $s * 17) % 256) for x in range(64)))")
  $py "$png" grey "$work/img/$s.png" 8 8 "$pixels"
  echo "img/$s.png $((s % 2))" >>"$work/train.txt"
done
head='
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }'
cat >"$work/train_net.prototxt" <<EOF
name: "tinydraw"
layer {
  name: "data" type: "ImageData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  image_data_param { source: "$work/train.txt" root_folder: "$work" batch_size: 2 is_color: false }
}
$head
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1" bottom: "label" top: "loss" }
EOF
cat >"$work/solver.prototxt" <<EOF
net: "train_net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 2
snapshot_prefix: "$work/tiny"
EOF
expect_rc 0 "training the tiny net" "$mtl" train --solver "$work/solver.prototxt"
snap=$work/tiny_iter_2.mtlsnap

# the deploy net: the classifier, and landmarks = the means of the four 4x4 quadrants, as
# x0 = top-left, y0 = top-right, x1 = bottom-left, y1 = bottom-right
cat >"$work/deploy.prototxt" <<EOF
name: "tinydraw"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
$head
layer { name: "prob" type: "Softmax" bottom: "fc1" top: "prob" }
layer { name: "quad" type: "Pooling" bottom: "data" top: "quad" pooling_param { pool: AVE kernel_size: 4 stride: 4 } }
layer { name: "points" type: "Flatten" bottom: "quad" top: "points" }
EOF
# quadrants 64, 128 (top), 192, 32 (bottom): with scale 1/256 the points are (0.25, 0.5) and
# (0.75, 0.125) in [-1, 1], pixels (5, 6) and (7, 4.5) of the 8x8 input, drawn 32 times larger
quads=$($py -c "print(','.join(str([[64, 128], [192, 32]][y // 4][x // 4]) for y in range(8) for x in range(8)))")
$py "$png" grey "$work/q.png" 8 8 "$quads"
cp "$work/deploy.prototxt" "$work/deploy_ok.prototxt"
{ cat "$work/deploy.prototxt"
  echo 'layer { name: "one" type: "Pooling" bottom: "data" top: "one" pooling_param { pool: AVE kernel_size: 8 } }'
} >"$work/deploy_odd.prototxt"
expect_rc 0 "predict --draw" "$mtl" predict --model "$work/deploy_ok.prototxt" --weights "$snap" --scale 0.00390625 \
  --landmarks points --normalized --labels prob=no,yes --draw "$work/drawn" "$work/q.png"
expect_grep "points: \[0.25 0.5 0.75 0.125\]" "$work/out" "the landmark values are printed too"
if [ -f "$work/drawn/00000_q.png" ]; then ok; else bad "no drawing 00000_q.png"; ls "$work/drawn" >&2; fi
check='
import sys
sys.path.insert(0, sys.argv[2])
from png import read
w, h, c, rows = read(sys.argv[1])
px = lambda x, y: tuple(rows[y][x * c:x * c + 3])
# 8x8 enlarged 32 times, one text line below (10 px + 4)
assert (w, h, c) == (256, 270, 3), (w, h, c)
# the image itself: the top-left quadrant (64) away from the dots
assert px(10, 100) == (64, 64, 64), px(10, 100)
# point 0 at (160, 192) red, point 1 at (224, 144) green, with a dark rim around each
assert px(160, 192) == (255, 64, 64), px(160, 192)
assert px(224, 144) == (64, 224, 64), px(224, 144)
# the text panel: white letters on black
panel = [px(x, y) for y in range(256, 270) for x in range(w)]
assert (255, 255, 255) in panel and (0, 0, 0) in panel
'
expect_py "the drawing" "$check" "$work/drawn/00000_q.png" "$src/tests/support"

# pixel coordinates (no --normalized): (0.25, 0.5) is near the top-left corner, drawn at (8, 16)
expect_rc 0 "predict --draw in pixels" "$mtl" predict --model "$work/deploy_ok.prototxt" --weights "$snap" \
  --scale 0.00390625 --landmarks points --draw "$work/drawn_px" "$work/q.png" "$work/img/1.png"
check_px='
import sys
sys.path.insert(0, sys.argv[2])
from png import read
w, h, c, rows = read(sys.argv[1])
assert tuple(rows[16][8 * c:8 * c + 3]) == (255, 64, 64), tuple(rows[16][8 * c:8 * c + 3])
'
expect_py "pixel coordinates" "$check_px" "$work/drawn_px/00000_q.png" "$src/tests/support"
if [ -f "$work/drawn_px/00001_1.png" ]; then ok; else bad "second image's drawing"; ls "$work/drawn_px" >&2; fi

# ---- errors ------------------------------------------------------------------------------------------
expect_rc 2 "--landmarks without --draw" "$mtl" predict --model "$work/deploy_ok.prototxt" --weights "$snap" \
  --landmarks points "$work/q.png"
expect_grep "go with --draw" "$work/err" "--landmarks without --draw"
expect_rc 2 "--normalized without --landmarks" "$mtl" predict --model "$work/deploy_ok.prototxt" --weights "$snap" \
  --normalized --draw "$work/d2" "$work/q.png"
expect_grep "needs --landmarks" "$work/err" "--normalized without --landmarks"
expect_rc 2 "--landmarks of a missing output" "$mtl" predict --model "$work/deploy_ok.prototxt" --weights "$snap" \
  --landmarks nothing --draw "$work/d3" "$work/q.png"
expect_grep "does not have" "$work/err" "--landmarks of a missing output"
expect_rc 2 "--landmarks of an odd output" "$mtl" predict --model "$work/deploy_odd.prototxt" --weights "$snap" \
  --landmarks one --draw "$work/d4" "$work/q.png"
expect_grep "not (x, y)" "$work/err" "--landmarks of an odd output"
: >"$work/file"
expect_rc 2 "--draw onto a file" "$mtl" predict --model "$work/deploy_ok.prototxt" --weights "$snap" \
  --draw "$work/file" "$work/q.png"
expect_grep "not a directory" "$work/err" "--draw onto a file"

cli_finish
