#!/usr/bin/env bash
# mtl evaluate-detections and mtl detect. Evaluation: small hand-written COCO files whose APs are
# worked out by hand below (the same cases as tests/test_detection_eval.c), as a table and as JSON,
# then every kind of bad input. Detection: a parameter-free deploy net whose DetectionOutput reads
# constant RoIs and probabilities (DummyData), so the detections are known: their mapping back to
# the image files (resized per axis), the ids from --categories, the drawings, and the errors.
# Usage: cli_detect.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"
one_error_line() { # description: the last command said what was wrong in one line, and nothing else
  if [ "$(wc -l <"$work/err")" -eq 1 ] && [ ! -s "$work/out" ]; then ok; else bad "$1: not one error line"; cat "$work/err" >&2; fi
}

# ---- evaluate-detections: hand-computed APs ---------------------------------------------------------
# shirt (id 1): four objects in image 1; detections in score order hit, miss, hit, miss, miss, hit:
#   recall .25 .25 .5 .5 .5 .75, precision 1 .5 2/3 .5 .4 .5. VOC (area under the envelope
#   1 2/3 2/3 .5 .5 .5): .25 + .25 * 2/3 + .25 * .5 = 13/24 = 0.5417. COCO at every threshold:
#   recall points 0..0.25 reach precision 1, 0.26..0.5 2/3, 0.51..0.75 .5: (26 + 50/3 + 12.5) / 101
#   = 0.5462.
# bag (id 3): one object in image 2 found at IoU 0.6 (score .9), one in image 3 found at IoU 0.65
#   (score .8), and a crowd region in image 3 with a small detection inside it (score .95). VOC
#   treats the region as a difficult box: the small detection overlaps it by 100/1600, a false
#   positive: recall 0 .5 1, precision 0 .5 2/3: AP 2/3 = 0.6667. COCO ignores it: both found at
#   0.50 0.55 0.60 (AP 1), only the second at 0.65 (miss, hit: 51 points at .5: 25.5/101), none
#   above: (3 + 25.5/101) / 10 = 0.3252.
# hat (id 7): a detection but no ground truth: no AP, left out of the means.
# mAP@0.5 = (13/24 + 2/3) / 2 = 0.6042; mAP@[.5:.95] = (0.5462 + 0.3252) / 2 = 0.4357;
# COCO AP50 = (0.5462 + 1) / 2 = 0.7731, AP75 = (0.5462 + 0) / 2 = 0.2731.
cat >"$work/gt.json" <<'EOF'
{"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}, {"id": 3, "file_name": "c.png"}],
 "categories": [{"id": 7, "name": "hat"}, {"id": 1, "name": "shirt"}, {"id": 3, "name": "bag"}],
 "annotations": [
  {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 0},
  {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 10], "iscrowd": 0},
  {"id": 3, "image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10]},
  {"id": 4, "image_id": 1, "category_id": 1, "bbox": [60, 0, 10, 10], "iscrowd": false},
  {"id": 5, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0},
  {"id": 6, "image_id": 3, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0},
  {"id": 7, "image_id": 3, "category_id": 3, "bbox": [20, 0, 40, 40], "iscrowd": 1}]}
EOF
cat >"$work/res.json" <<'EOF'
[{"image_id": 1, "category_id": 1, "bbox": [100, 100, 10, 10], "score": 0.8},
 {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
 {"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10], "score": 0.4},
 {"image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 10], "score": 0.7},
 {"image_id": 1, "category_id": 1, "bbox": [200, 100, 10, 10], "score": 0.6},
 {"image_id": 1, "category_id": 1, "bbox": [300, 100, 10, 10], "score": 0.5},
 {"image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 6], "score": 0.9},
 {"image_id": 3, "category_id": 3, "bbox": [0, 0, 10, 6.5], "score": 0.8},
 {"image_id": 3, "category_id": 3, "bbox": [25, 5, 10, 10], "score": 0.95},
 {"image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.3}]
EOF
expect_rc 0 "evaluate-detections --help" "$mtl" evaluate-detections --help
expect_grep "usage: mtl evaluate-detections" "$work/out" "evaluate-detections usage"
expect_rc 0 "evaluate-detections table" "$mtl" evaluate-detections "$work/gt.json" "$work/res.json"
cp "$work/out" "$work/table.out"
expect_grep "^3 images, 3 categories (2 with ground truth), 7 ground-truth boxes (1 crowd), 10 detections" \
  "$work/table.out" "summary line"
expect_grep "^shirt  *1  *4  *6  *0.5417  *0.5462$" "$work/table.out" "shirt row"
expect_grep "^bag  *3  *2  *3  *0.6667  *0.3252$" "$work/table.out" "bag row"
expect_grep "^hat  *7  *0  *1  *-  *-$" "$work/table.out" "hat row: no ground truth"
expect_grep "^mAP@0.5  *0.6042 " "$work/table.out" "VOC mAP"
expect_grep "^mAP@\[.5:.95\]  *0.4357 " "$work/table.out" "COCO mAP"
expect_grep "^COCO AP50  *0.7731  *AP75  *0.2731$" "$work/table.out" "COCO AP50 and AP75"
expect_py "table: categories by increasing id" '
import sys
rows = [l.split()[0] for l in open(sys.argv[1]) if l.split() and l.split()[0] in ("hat", "shirt", "bag")]
assert rows == ["shirt", "bag", "hat"], rows
' "$work/table.out"

expect_rc 0 "evaluate-detections --json" "$mtl" evaluate-detections "$work/gt.json" "$work/res.json" --json
expect_py "JSON report: the hand-computed values" '
import json, sys
r = json.loads(open(sys.argv[1]).read())
near = lambda a, b: abs(a - b) < 1e-12
s, sc = 13 / 24, (26 + 50 / 3 + 12.5) / 101
b, bc = 2 / 3, (3 + 25.5 / 101) / 10
assert near(r["map50"], (s + b) / 2) and near(r["map"], (sc + bc) / 2), r
assert near(r["coco_ap50"], (sc + 1) / 2) and near(r["coco_ap75"], sc / 2), r
assert r["images"] == 3 and r["ground_truth"] == 7 and r["detections"] == 10 and r["categories_with_gt"] == 2, r
cats = {c["name"]: c for c in r["categories"]}
assert [c["id"] for c in r["categories"]] == [1, 3, 7]
assert near(cats["shirt"]["ap50"], s) and near(cats["shirt"]["ap"], sc) and cats["shirt"]["gt"] == 4
assert near(cats["bag"]["ap50"], b) and near(cats["bag"]["ap"], bc) and cats["bag"]["crowd"] == 1
assert near(cats["bag"]["coco_ap50"], 1) and cats["bag"]["coco_ap75"] == 0
assert cats["hat"]["ap50"] is None and cats["hat"]["ap"] is None and cats["hat"]["detections"] == 1
' "$work/out"

# perfect results and empty results
$py -c '
import json, sys
gt = json.load(open(sys.argv[1]))
res = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.5}
       for a in gt["annotations"] if not a.get("iscrowd")]
json.dump(res, open(sys.argv[2], "w"))
' "$work/gt.json" "$work/perfect.json"
expect_rc 0 "perfect results" "$mtl" evaluate-detections "$work/gt.json" "$work/perfect.json" --json
expect_py "perfect results: mAP 1" '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["map50"] == 1 and abs(r["map"] - 1) < 1e-12, r
' "$work/out"
echo '[]' >"$work/empty.json"
expect_rc 0 "no results" "$mtl" evaluate-detections "$work/gt.json" "$work/empty.json"
expect_grep "^mAP@0.5  *0.0000 " "$work/out" "no results: mAP 0"

# ---- evaluate-detections: bad input ------------------------------------------------------------------
expect_rc 2 "evaluate-detections without RESULTS" "$mtl" evaluate-detections "$work/gt.json"
expect_rc 2 "evaluate-detections unknown option" "$mtl" evaluate-detections "$work/gt.json" "$work/res.json" --top 3
expect_rc 1 "missing GT" "$mtl" evaluate-detections "$work/nothere.json" "$work/res.json"
expect_grep "cannot open '$work/nothere.json'" "$work/err" "missing GT named"
one_error_line "missing GT named"
expect_rc 1 "missing results" "$mtl" evaluate-detections "$work/gt.json" "$work/nothere.json"
expect_grep "cannot open '$work/nothere.json'" "$work/err" "missing results named"
printf '[{"image_id": 1,\n "category_id": 1 "bbox": []}]' >"$work/broken.json"
expect_rc 1 "results not JSON" "$mtl" evaluate-detections "$work/gt.json" "$work/broken.json"
expect_grep "$work/broken.json:2: not valid JSON" "$work/err" "results not JSON: file and line"
one_error_line "results not JSON: file and line"
echo '{"images": [], "annotations": []}' >"$work/nocat.json"
expect_rc 1 "GT without categories" "$mtl" evaluate-detections "$work/nocat.json" "$work/res.json"
expect_grep "$work/nocat.json: 'categories' is missing" "$work/err" "GT without categories"
echo '{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], "annotations": [{"image_id": 1, "category_id": 1}]}' \
  >"$work/nobox.json"
expect_rc 1 "GT annotation without bbox" "$mtl" evaluate-detections "$work/nobox.json" "$work/empty.json"
expect_grep "$work/nobox.json: annotation 0 needs a 'bbox'" "$work/err" "GT annotation without bbox"
echo '{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], "annotations": [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 1, 1]}]}' \
  >"$work/badimg.json"
expect_rc 1 "GT annotation of an unlisted image" "$mtl" evaluate-detections "$work/badimg.json" "$work/empty.json"
expect_grep "annotation 0 refers to image 2, which is not listed" "$work/err" "GT annotation of an unlisted image"
echo '{"image_id": 1}' >"$work/notlist.json"
expect_rc 1 "results not a list" "$mtl" evaluate-detections "$work/gt.json" "$work/notlist.json"
expect_grep "$work/notlist.json: a COCO results file is a JSON list" "$work/err" "results not a list"
echo '[{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]' >"$work/unknown_image.json"
expect_rc 1 "result for an unknown image" "$mtl" evaluate-detections "$work/gt.json" "$work/unknown_image.json"
expect_grep "$work/unknown_image.json: result 0 is for image 99, which $work/gt.json does not list" "$work/err" \
  "result for an unknown image"
one_error_line "result for an unknown image"
echo '[{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 0.5}]' >"$work/unknown_cat.json"
expect_rc 1 "result of an unknown category" "$mtl" evaluate-detections "$work/gt.json" "$work/unknown_cat.json"
expect_grep "result 0 has category 2, which $work/gt.json does not list" "$work/err" "result of an unknown category"
one_error_line "result of an unknown category"
echo '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}, {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]' \
  >"$work/noscore.json"
expect_rc 1 "result without a score" "$mtl" evaluate-detections "$work/gt.json" "$work/noscore.json"
expect_grep "$work/noscore.json: result 1 needs a number 'score'" "$work/err" "result without a score"
echo '[{"image_id": 1, "category_id": 1, "bbox": [0, 0, -1, 1], "score": 0.5}]' >"$work/negbox.json"
expect_rc 1 "result with a negative width" "$mtl" evaluate-detections "$work/gt.json" "$work/negbox.json"
expect_grep "result 0 needs a 'bbox' \[x, y, width, height\]" "$work/err" "result with a negative width"

# ---- detect: a net whose detections are known -----------------------------------------------------
png="$src/tests/support/png.py"
mkdir -p "$work/img"
$py "$png" pattern "$work/img/big.png" 40 40 3 1   # twice the input size: boxes x2
$py "$png" pattern "$work/img/wide.png" 20 10 1 2  # x as is, y halved
echo 'not an image' >"$work/img/text.png"

# weights: any snapshot fits a net without parameters
cp "$src/tests/data/tiny_net.prototxt" "$src/tests/data/tiny_solver.prototxt" "$work/"
expect_rc 0 "train a snapshot" "$mtl" train --solver "$work/tiny_solver.prototxt" --max-iter 1
snap="$work/tiny_iter_1.mtlsnap"

# One RoI [4, 2, 12, 10] on the 20x20 input, class probabilities background .1, class 1 .3,
# class 2 .6, zero deltas: DetectionOutput gives [0, 4, 2, 12, 10, .6, 2] and [0, 4, 2, 12, 10, .3, 1].
deploy_head='name: "tinydet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 20 } } }
layer { name: "im_info" type: "Input" top: "im_info" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "silence" type: "Silence" bottom: "data" }
layer {
  name: "fake" type: "DummyData"
  top: "r0" top: "r1" top: "r2" top: "r3" top: "r4" top: "p0" top: "p1" top: "p2" top: "bbox_pred"
  dummy_data_param {
    shape { dim: 1 dim: 1 } shape { dim: 1 dim: 1 } shape { dim: 1 dim: 1 } shape { dim: 1 dim: 1 }
    shape { dim: 1 dim: 1 } shape { dim: 1 dim: 1 } shape { dim: 1 dim: 1 } shape { dim: 1 dim: 1 }
    shape { dim: 1 dim: 12 }
    data_filler { value: 0 } data_filler { value: 4 } data_filler { value: 2 } data_filler { value: 12 }
    data_filler { value: 10 } data_filler { value: 0.1 } data_filler { value: 0.3 } data_filler { value: 0.6 }
    data_filler { value: 0 }
  }
}
layer { name: "rois" type: "Concat" bottom: "r0" bottom: "r1" bottom: "r2" bottom: "r3" bottom: "r4" top: "rois"
        concat_param { axis: 1 } }
layer { name: "cls_prob" type: "Concat" bottom: "p0" bottom: "p1" bottom: "p2" top: "cls_prob"
        concat_param { axis: 1 } }'
printf '%s\n%s\n' "$deploy_head" '
layer { name: "det" type: "DetectionOutput" bottom: "rois" bottom: "cls_prob" bottom: "bbox_pred"
        bottom: "im_info" top: "detections" detection_output_param { num_classes: 3 } }' >"$work/deploy.prototxt"
printf '%s\n' "$deploy_head" >"$work/no_detout.prototxt"

expect_rc 0 "detect --help" "$mtl" detect --help
expect_grep "usage: mtl detect" "$work/out" "detect usage"
expect_rc 0 "detect" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" "$work/img/big.png" \
  "$work/img/wide.png"
expect_grep "detect: 2 images, 2 detections scoring >= 0.5" "$work/err" "detect summary"
expect_py "detect: class 2 only, boxes mapped to each file per axis, ids by position" '
import json, sys
r = json.load(open(sys.argv[1]))
assert r == [{"image_id": 0, "category_id": 2, "bbox": [8, 4, 16, 16], "score": 0.6},
             {"image_id": 1, "category_id": 2, "bbox": [4, 1, 8, 4], "score": 0.6}], r
' "$work/out"

# ids and names from an annotation file; file_name matched on the path's end, then on the base name
cat >"$work/cats.json" <<'EOF'
{"images": [{"id": 5, "file_name": "img/big.png"}, {"id": 9, "file_name": "other/dir/wide.png"},
            {"id": 6, "file_name": "img/unused.png"}],
 "categories": [{"id": 20, "name": "bag"}, {"id": 10, "name": "shirt"}],
 "annotations": [{"image_id": 5, "category_id": 20, "bbox": [8, 4, 16, 16]},
                 {"image_id": 9, "category_id": 10, "bbox": [4, 1, 8, 4]}]}
EOF
expect_rc 0 "detect --categories --output --draw" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" \
  --threshold 0.2 --categories "$work/cats.json" --output "$work/results.json" --draw "$work/drawn" \
  "$work/img/big.png" "$work/img/wide.png"
[ ! -s "$work/out" ] && ok || bad "--output: nothing on standard output"
expect_py "detect --categories: image ids by file name, class k -> k-th category by id" '
import json, sys
r = json.load(open(sys.argv[1]))
assert r == [{"image_id": 5, "category_id": 20, "bbox": [8, 4, 16, 16], "score": 0.6},
             {"image_id": 5, "category_id": 10, "bbox": [8, 4, 16, 16], "score": 0.3},
             {"image_id": 9, "category_id": 20, "bbox": [4, 1, 8, 4], "score": 0.6},
             {"image_id": 9, "category_id": 10, "bbox": [4, 1, 8, 4], "score": 0.3}], r
' "$work/results.json"
# bag (20): hit in image 5 (.6), miss in image 9 (.6, ranked after image 5): AP 1. shirt (10): miss
# in image 5 (.3), hit in image 9 (.3): recall 0 1, precision 0 .5: AP .5 (COCO: .5 at every
# recall point). mAP .75 both ways.
expect_rc 0 "detect's results evaluate" "$mtl" evaluate-detections "$work/cats.json" "$work/results.json"
expect_grep "^mAP@0.5  *0.7500 " "$work/out" "detect -> evaluate: VOC mAP"
expect_grep "^mAP@\[.5:.95\]  *0.7500 " "$work/out" "detect -> evaluate: COCO mAP"
expect_py "--draw: one PNG per image, enlarged, the class colours on the box outlines" '
import sys
sys.path.insert(0, sys.argv[2])
import png
w, h, c, rows = png.read(sys.argv[1] + "/drawn/00000_big.png")
assert (w, h, c) == (280, 280, 3), (w, h, c)  # 40 x 40 enlarged 7 times to reach 256
px = lambda x, y: tuple(rows[y][3 * x:3 * x + 3])
green, red = (60, 180, 75), (230, 25, 75)     # class 2 and class 1 in the palette
# box [8, 4, 24, 20] in file pixels -> [56, 28, 167, 139] drawn: class 2 (drawn last) on its edges
assert px(56, 80) == green and px(167, 80) == green and px(100, 139) == green, (px(56, 80), px(167, 80))
assert px(100, 28 - 3) == green  # the label above the box, on a class-coloured background
assert px(100, 80) not in (green, red)  # the inside is the image
w, h, c, rows = png.read(sys.argv[1] + "/drawn/00001_wide.png")
assert (w, h) == (260, 130), (w, h)  # 20 x 10 enlarged 13 times
' "$work" "$src/tests/support"

# ---- detect: errors ------------------------------------------------------------------------------------
expect_rc 2 "detect without --weights" "$mtl" detect --model "$work/deploy.prototxt" "$work/img/big.png"
expect_rc 2 "detect without IMAGE" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap"
expect_rc 2 "detect bad threshold" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" --threshold x \
  "$work/img/big.png"
expect_rc 2 "detect --gray --color" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" --gray --color \
  "$work/img/big.png"
expect_rc 1 "detect missing model" "$mtl" detect --model "$work/nothere.prototxt" --weights "$snap" \
  "$work/img/big.png"
expect_grep "nothere.prototxt" "$work/err" "missing model named"
expect_rc 1 "detect missing weights" "$mtl" detect --model "$work/deploy.prototxt" --weights "$work/nothere.mtlsnap" \
  "$work/img/big.png"
expect_grep "nothere.mtlsnap" "$work/err" "missing weights named"
expect_rc 1 "detect on a file that is not an image" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" \
  "$work/img/big.png" "$work/img/text.png"
expect_grep "text.png" "$work/err" "the bad image is named"
one_error_line "the bad image is named: no results written"
expect_rc 1 "detect on a missing image" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" \
  "$work/img/none.png"
expect_grep "none.png" "$work/err" "the missing image is named"
expect_rc 1 "detect: net without DetectionOutput" "$mtl" detect --model "$work/no_detout.prototxt" --weights "$snap" \
  "$work/img/big.png"
expect_grep "has no DetectionOutput layer; give the blob holding the detections with --blob" "$work/err" \
  "net without DetectionOutput"
expect_rc 1 "detect --blob of another shape" "$mtl" detect --model "$work/no_detout.prototxt" --weights "$snap" \
  --blob cls_prob "$work/img/big.png"
expect_grep "detections blob 'cls_prob' is 1x3; expected (D, 7)" "$work/err" "--blob of another shape"
expect_rc 1 "detect --blob unknown" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" --blob nope \
  "$work/img/big.png"
expect_grep "has no blob 'nope'" "$work/err" "--blob unknown"
expect_rc 1 "detect: image not in --categories" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" \
  --categories "$work/cats.json" "$work/img/big.png" "$work/img/text.png"
expect_grep "image '$work/img/text.png' is not among the images of '$work/cats.json'" "$work/err" \
  "image not in --categories"
echo '{"images": [{"id": 1, "file_name": "big.png"}], "categories": [{"id": 3, "name": "x"}]}' >"$work/one_cat.json"
expect_rc 1 "detect: class beyond the categories" "$mtl" detect --model "$work/deploy.prototxt" --weights "$snap" \
  --categories "$work/one_cat.json" "$work/img/big.png"
expect_grep "expected batch index 0, finite values and a class in 1..1" "$work/err" "class beyond the categories"
expect_rc 1 "detect: --output in a missing directory" "$mtl" detect --model "$work/deploy.prototxt" \
  --weights "$snap" --output "$work/no/dir/r.json" "$work/img/big.png"
expect_grep "cannot write '$work/no/dir/r.json.tmp'" "$work/err" "--output in a missing directory"
cli_finish
