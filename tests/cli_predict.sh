#!/usr/bin/env bash
# mtl predict end to end: a tiny two-task (plus one regression head) net trained for a few
# iterations on tiny PNGs with ImageData, then run through a deploy prototxt sharing its layer names;
# text and JSON outputs, batching, the pixel transform against hand-computed values, and every error
# path. Usage: cli_predict.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"
cat >"$work/png.py" <<'EOF'
# Writes a PNG with the standard library: png.py PATH W H C SEED (a pattern) or PATH W H C v1,v2,...
import struct, sys, zlib
path, w, h, c, spec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if ',' in spec:
    px = [int(v) for v in spec.split(',')]
else:
    seed = int(spec)
    px = [(x * 37 + y * 11 + k * 5 + seed * 53) % 256 for y in range(h) for x in range(w) for k in range(c)]
assert len(px) == w * h * c
raw = b''.join(b'\0' + bytes(px[(y * w) * c:(y * w + w) * c]) for y in range(h))
def chunk(t, d):
    return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
ihdr = struct.pack('>IIBBBBB', w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
EOF

# ---- a tiny trained net --------------------------------------------------------------------------
mkdir -p "$work/img"
: >"$work/train.txt"
for s in $(seq 0 11); do
  $py "$work/png.py" "$work/img/$s.png" 8 8 1 "$s"
  echo "img/$s.png $((s % 3)) $((s % 2)) 0.$s" >>"$work/train.txt"
done
# layers shared by the training and the deploy net (same names, so the snapshot loads by name)
trunk='
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc1" type: "InnerProduct" bottom: "conv1" top: "fc1"
        inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "score_a" type: "InnerProduct" bottom: "fc1" top: "score_a"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "score_b" type: "InnerProduct" bottom: "fc1" top: "score_b"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "reg" type: "InnerProduct" bottom: "fc1" top: "reg"
        inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }'
cat >"$work/train_net.prototxt" <<EOF
name: "tinypred"
layer {
  name: "data" type: "ImageData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  image_data_param { source: "$work/train.txt" root_folder: "$work" batch_size: 4 is_color: false shuffle: true }
}
layer { name: "slice" type: "Slice" bottom: "label" top: "la" top: "lb" top: "lr" slice_param { axis: 1 slice_point: 1 slice_point: 2 } }
$trunk
layer { name: "loss_a" type: "SoftmaxWithLoss" bottom: "score_a" bottom: "la" top: "loss_a" loss_weight: 0.4 }
layer { name: "loss_b" type: "SoftmaxWithLoss" bottom: "score_b" bottom: "lb" top: "loss_b" loss_weight: 0.4 }
layer { name: "loss_r" type: "EuclideanLoss" bottom: "reg" bottom: "lr" top: "loss_r" loss_weight: 0.2 }
EOF
cat >"$work/solver.prototxt" <<'EOF'
net: "train_net.prototxt"
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
max_iter: 12
display: 4
snapshot_prefix: "tinypred"
random_seed: 5
EOF
deploy_head='name: "tinypred"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }'
deploy_tail='
layer { name: "prob_a" type: "Softmax" bottom: "score_a" top: "prob_a" }
layer { name: "prob_b" type: "Softmax" bottom: "score_b" top: "prob_b" }'
printf '%s\n%s\n%s\n' "$deploy_head" "$trunk" "$deploy_tail" >"$work/deploy.prototxt"

expect_rc 0 "train the tiny net" "$mtl" train --solver "$work/solver.prototxt"
snap="$work/tinypred_iter_12.mtlsnap"
[ -f "$snap" ] && ok || bad "snapshot written at the end of training"

# images to predict: the grey training size, a larger RGB one (decoded to grey, resized), more grey
imgs=()
for s in 20 21 22; do
  $py "$work/png.py" "$work/img/p$s.png" 8 8 1 "$s"
  imgs+=("$work/img/p$s.png")
done
$py "$work/png.py" "$work/img/big.png" 12 10 3 4
imgs+=("$work/img/big.png")
$py "$work/png.py" "$work/img/p23.png" 8 8 1 23
imgs+=("$work/img/p23.png")

# ---- text ----------------------------------------------------------------------------------------
expect_rc 0 "predict --help" "$mtl" predict --help
expect_grep "usage: mtl predict" "$work/out" "predict usage"
expect_rc 0 "predict text" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --scale 0.00390625 \
  --labels prob_a=cat,dog,bird "${imgs[@]}"
cp "$work/out" "$work/text.out"
expect_py "text: one line per image, in order, every output, probabilities in [0,1]" '
import re, sys
lines = open(sys.argv[1]).read().splitlines()
imgs = sys.argv[2:]
assert len(lines) == len(imgs), (len(lines), len(imgs))
for line, img in zip(lines, imgs):
    assert line.startswith(img + "  "), line
    fields = dict(f.split(": ", 1) for f in line[len(img) + 2:].split("  "))
    assert sorted(fields) == ["prob_a", "prob_b", "reg"], line
    ma = re.fullmatch(r"(\d) \((cat|dog|bird)\) ([0-9.]+)", fields["prob_a"])
    mb = re.fullmatch(r"(\d) ([0-9.]+)", fields["prob_b"])
    mr = re.fullmatch(r"\[(\S+)\]", fields["reg"])
    assert ma and mb and mr, line
    (a, name, pa), (b, pb), (r,) = ma.groups(), mb.groups(), mr.groups()
    assert ["cat", "dog", "bird"][int(a)] == name, line
    assert 0 <= float(pa) <= 1 and 0 <= float(pb) <= 1 and int(a) < 3 and int(b) < 2, line
    assert float(pa) >= 1 / 3 - 1e-3 and float(pb) >= 0.5 - 1e-3, line
    float(r)
' "$work/text.out" "${imgs[@]}"

# ---- JSON ----------------------------------------------------------------------------------------
expect_rc 0 "predict --json" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --scale 0.00390625 \
  --json --top 3 --labels prob_b=even,odd --labels=prob_a=cat,dog,bird "${imgs[@]}"
cp "$work/out" "$work/json.out"
expect_py "json: one object per image, top-K sorted, names, probabilities in [0,1], values" '
import json, sys
lines = open(sys.argv[1]).read().splitlines()
imgs = sys.argv[2:]
assert len(lines) == len(imgs), (len(lines), len(imgs))
for line, img in zip(lines, imgs):
    o = json.loads(line)
    assert o["image"] == img, o
    out = o["outputs"]
    assert sorted(out) == ["prob_a", "prob_b", "reg"], out
    for name, n, names in (("prob_a", 3, ["cat", "dog", "bird"]), ("prob_b", 2, ["even", "odd"])):
        p = out[name]
        assert len(p["top"]) == n, p          # --top 3 clipped to the classes there are
        probs = [q for _, q in p["top"]]
        assert all(0 <= q <= 1 for q in probs) and abs(sum(probs) - 1) < 1e-3, p
        assert probs == sorted(probs, reverse=True), p
        assert sorted(c for c, _ in p["top"]) == list(range(n)), p
        assert p["class"] == p["top"][0][0] and p["prob"] == p["top"][0][1], p
        assert p["name"] == names[p["class"]], p
    assert len(out["reg"]["values"]) == 1 and "class" not in out["reg"], out
' "$work/json.out" "${imgs[@]}"
expect_py "text and JSON agree on classes" '
import json, re, sys
text = open(sys.argv[1]).read().splitlines()
js = [json.loads(l) for l in open(sys.argv[2])]
for t, j in zip(text, js):
    a = int(re.search(r"prob_a: (\d)", t).group(1))
    b = int(re.search(r"prob_b: (\d)", t).group(1))
    assert (a, b) == (j["outputs"]["prob_a"]["class"], j["outputs"]["prob_b"]["class"]), (t, j)
' "$work/text.out" "$work/json.out"

# batching changes nothing: one image per pass, two per pass (a short last batch), all at once
for b in 1 2; do
  expect_rc 0 "predict --batch $b" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" \
    --scale 0.00390625 --json --top 3 --labels prob_b=even,odd --labels=prob_a=cat,dog,bird --batch "$b" "${imgs[@]}"
  if cmp -s "$work/out" "$work/json.out"; then ok; else bad "--batch $b gives other results"; diff "$work/out" "$work/json.out" >&2; fi
done

# ---- the pixel transform, by hand ----------------------------------------------------------------
# A deploy net whose output is its input: (pixel - mean) * scale, channel-planar (CHW), RGB order.
$py "$work/png.py" "$work/img/rgb.png" 2 1 3 10,20,30,40,50,60
$py "$work/png.py" "$work/img/grey.png" 2 1 1 100,200
printf '%s\n' 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 1 dim: 2 } } }' \
  'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }' >"$work/ident3.prototxt"
printf '%s\n' 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 2 } } }' \
  'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }' >"$work/ident1.prototxt"
expect_rc 0 "per-channel mean and scale" "$mtl" predict --model "$work/ident3.prototxt" --weights "$snap" \
  --mean 10,20,30 --scale 0.5 --json "$work/img/rgb.png"
# R plane 10,40 -> (0, 30)/2; G 20,50 -> (0, 30)/2; B 30,60 -> (0, 30)/2
expect_py "RGB values by hand" 'import json,sys; v=json.loads(open(sys.argv[1]).read())["outputs"]["flat"]["values"]; assert v==[0,15,0,15,0,15], v' "$work/out"
expect_rc 0 "one mean, default scale" "$mtl" predict --model "$work/ident1.prototxt" --weights "$snap" --mean 50 \
  --json "$work/img/grey.png"
expect_py "grey values by hand" 'import json,sys; v=json.loads(open(sys.argv[1]).read())["outputs"]["flat"]["values"]; assert v==[50,150], v' "$work/out"
expect_rc 0 "--gray on a 3-channel input" "$mtl" predict --model "$work/ident3.prototxt" --weights "$snap" --gray \
  --json "$work/img/grey.png"
expect_py "grey repeated over channels" 'import json,sys; v=json.loads(open(sys.argv[1]).read())["outputs"]["flat"]["values"]; assert v==[100,200]*3, v' "$work/out"
expect_rc 0 "an RGB file into a grey input" "$mtl" predict --model "$work/ident1.prototxt" --weights "$snap" "$work/img/rgb.png"
expect_grep "rgb.png  flat: \[" "$work/out" "text values of a non-probability output"

# ---- errors --------------------------------------------------------------------------------------
expect_rc 2 "no images" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap"
expect_grep "usage: mtl predict" "$work/err" "usage on no images"
expect_rc 2 "no weights" "$mtl" predict --model "$work/deploy.prototxt" "${imgs[0]}"
expect_rc 2 "bad --top" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --top 0 "${imgs[0]}"
expect_rc 2 "bad --scale" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --scale x "${imgs[0]}"
expect_rc 2 "--labels without =" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --labels cat "${imgs[0]}"
expect_rc 2 "--labels at the end" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" "${imgs[0]}" --labels
expect_rc 2 "--labels twice for one output" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" \
  --labels prob_a=a,b,c --labels prob_a=d,e,f "${imgs[0]}"
expect_rc 2 "--labels for an unknown output" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" \
  --labels prob_c=a,b "${imgs[0]}"
expect_grep "outputs are: .*prob_a" "$work/err" "unknown output lists the outputs"
expect_rc 2 "--labels with the wrong count" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" \
  --labels prob_a=a,b "${imgs[0]}"
expect_grep "3 values per image" "$work/err" "wrong label count explained"
expect_rc 2 "--gray and --color" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --gray --color "${imgs[0]}"
expect_rc 2 "--color on a grey input" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --color "${imgs[0]}"
expect_rc 2 "--mean count" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --mean 1,2,3 "${imgs[0]}"

expect_rc 1 "missing image" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --batch 64 \
  "${imgs[0]}" "${imgs[1]}" "$work/img/none.png" "${imgs[2]}"
expect_grep "none.png" "$work/err" "missing image named"
[ "$(wc -l <"$work/out")" -eq 2 ] && ok || bad "the images before the missing one are printed: $(cat "$work/out")"
grep -q "${imgs[2]}" "$work/out" && bad "an image after the missing one was processed" || ok
printf 'not a png' >"$work/img/corrupt.png"
expect_rc 1 "corrupt image" "$mtl" predict --model "$work/deploy.prototxt" --weights "$snap" --json "$work/img/corrupt.png"
expect_grep "corrupt.png" "$work/err" "corrupt image named"
expect_rc 1 "net without an input blob" "$mtl" predict --model "$work/train_net.prototxt" --weights "$snap" "${imgs[0]}"
expect_grep "no input blob" "$work/err" "missing input explained"
sed 's/num_output: 3 weight_filler/num_output: 4 weight_filler/' "$work/deploy.prototxt" >"$work/deploy4.prototxt"
expect_rc 1 "weights that do not fit" "$mtl" predict --model "$work/deploy4.prototxt" --weights "$snap" "${imgs[0]}"
expect_grep "do not fit" "$work/err" "misfit explained"
expect_grep "score_a/0: 4x8 in the net, 3x8 in the file" "$work/err" "misfit names the parameter"
sed 's/name: "reg"/name: "reg2"/' "$work/deploy.prototxt" >"$work/deploy_renamed.prototxt"
expect_rc 1 "a parameter missing from the weights" "$mtl" predict --model "$work/deploy_renamed.prototxt" --weights "$snap" "${imgs[0]}"
expect_grep "missing .*reg2/0" "$work/err" "missing parameter named"
printf 'garbage' >"$work/bad.mtlsnap"
expect_rc 1 "corrupt weights" "$mtl" predict --model "$work/deploy.prototxt" --weights "$work/bad.mtlsnap" "${imgs[0]}"
expect_grep "bad.mtlsnap" "$work/err" "corrupt weights named"

cli_finish
