#!/usr/bin/env bash
# mtl embed and mtl verify end to end: tiny PNGs (written by Python's standard library) embedded by a
# tiny net from a list and from an LMDB, the MTLEMB1 file read back byte for byte, metrics checked
# against a plain Python computation, and every error path. Usage: cli_embed_verify.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"
expect_tool() { # description python-arguments...: the tool must exit 0
  local what=$1; shift
  if /usr/bin/python3 "$work/tool.py" "$@" >"$work/pyout" 2>&1; then ok; else bad "$what"; cat "$work/pyout" >&2; fi
}
cat >"$work/tool.py" <<'EOF'
# Fixture PNGs, a reader of MTLEMB1 files and the verification metrics recomputed by brute force.
import json, math, struct, sys, zlib

def png(path, w, h, c, pixels):
    """pixels: rows of interleaved values."""
    raw = b''.join(b'\0' + bytes(pixels[y * w * c:(y + 1) * w * c]) for y in range(h))
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))

PATTERNS = {  # class -> 4x4 grey pattern; images of a class differ by a small offset
    0: lambda x, y: 40 + 50 * x,
    1: lambda x, y: 40 + 50 * y,
    2: lambda x, y: 200 if (x + y) % 2 else 30,
}

def grey(cls, shift):
    return [PATTERNS[cls](x, y) + shift for y in range(4) for x in range(4)]

def make(root):
    import os
    os.makedirs(root + '/img', exist_ok=True)
    items = [('g0a', 0, 0), ('g0b', 0, 3), ('g1a', 1, 0), ('g1b', 1, 4), ('g2a', 2, 0), ('g2b', 2, 5)]
    lines = []
    for name, cls, shift in items:
        png('%s/img/%s.png' % (root, name), 4, 4, 1, grey(cls, shift))
        lines.append('img/%s.png %d' % (name, cls))
    png(root + '/img/rgb.png', 4, 4, 3, [v for v in grey(0, 1) for _ in range(3)])  # grey content, stored RGB
    png(root + '/img/big.png', 6, 6, 1, [100] * 36)
    lines += ['img/rgb.png 0', 'img/big.png -', 'img/nolabel.png']
    png(root + '/img/nolabel.png', 4, 4, 1, grey(1, 2))
    open(root + '/list.txt', 'w').write('\n'.join(lines) + '\n\n')

def read(path):
    b = open(path, 'rb').read()
    assert b[:8] == b'MTLEMB1\0', b[:8]
    n, dim = struct.unpack_from('<II', b, 8)
    values = struct.unpack_from('<%df' % (n * dim), b, 16)
    labels = struct.unpack_from('<%df' % n, b, 16 + 4 * n * dim)
    at, names = 16 + 4 * (n * dim + n), []
    for _ in range(n):
        (length,) = struct.unpack_from('<I', b, at)
        names.append(b[at + 4:at + 4 + length].decode())
        at += 4 + length
    assert at == len(b), (at, len(b))
    return [list(values[i * dim:(i + 1) * dim]) for i in range(n)], list(labels), names

def f32(v):
    return struct.unpack('<f', struct.pack('<f', v))[0]

def check_list(path, scale, mean):
    scale, mean = float(scale), float(mean)
    """The grey 4x4 images embed to (pixel - mean) * scale exactly, with their labels and names."""
    rows, labels, names = read(path)
    assert names == ['img/g0a.png', 'img/g0b.png', 'img/g1a.png', 'img/g1b.png', 'img/g2a.png', 'img/g2b.png',
                     'img/rgb.png', 'img/big.png', 'img/nolabel.png'], names
    want = [0, 0, 1, 1, 2, 2, 0]
    assert labels[:7] == want and math.isnan(labels[7]) and math.isnan(labels[8]), labels
    shifts = [0, 3, 0, 4, 0, 5]
    for i in range(6):
        exp = [f32((p - mean) * scale) for p in grey(want[i], shifts[i])]
        assert rows[i] == exp, (i, rows[i], exp)
    assert rows[6] == [f32((p - mean) * scale) for p in grey(0, 1)], rows[6]  # RGB decoded to grey
    assert rows[7] == [f32((100 - mean) * scale)] * 16, rows[7]               # 6x6 resized to 4x4
    assert rows[8] == [f32((p - mean) * scale) for p in grey(1, 2)], rows[8]

def same_rows(a, b):
    ra, la, na = read(a)
    rb, lb, nb = read(b)
    assert ra == rb, 'embeddings differ'
    assert [str(x) for x in la] == [str(x) for x in lb], (la, lb)
    assert nb == [str(i) for i in range(len(rb))], nb
    assert len(rb[0]) == 16

def dim(path, d):
    rows, _, _ = read(path)
    assert len(rows[0]) == int(d), len(rows[0])

def cos(a, b):
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (na * nb)

def metrics(emb, pairs, out, accuracy):
    """AUC over the pairs and recall@1,2 over the labelled embeddings, recomputed; accuracy as given."""
    rows, labels, names = read(emb)
    index = {n: i for i, n in enumerate(names)}
    scored = []
    for line in open(pairs):
        t = line.split()
        if not t or t[0].startswith('#'):
            continue
        a, b, same = t[-3], t[-2], int(t[-1])
        scored.append((cos(rows[index[a]], rows[index[b]]), same))
    pos = [s for s, y in scored if y]
    neg = [s for s, y in scored if not y]
    auc = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    lab = [i for i in range(len(rows)) if not math.isnan(labels[i])]
    recall = {}
    for k in (1, 2):
        hits = 0
        for q in lab:
            others = sorted((-cos(rows[q], rows[j]), j) for j in lab if j != q)
            hits += any(labels[j] == labels[q] for _, j in others[:k])
        recall[str(k)] = hits / len(lab)
    got = json.load(open(out))
    assert abs(got['auc'] - auc) < 1e-6, (got['auc'], auc)
    for k in recall:
        assert abs(got['recall'][k] - recall[k]) < 1e-6, (k, got['recall'], recall)
    assert abs(got['accuracy']['mean'] - float(accuracy)) < 1e-6, got['accuracy']
    assert got['pairs'] == len(scored) and got['same'] == len(pos) and got['labelled'] == len(lab), got
    assert len(got['accuracy']['per_fold']) == got['folds']

def truncate(src, dst, drop):
    b = open(src, 'rb').read()
    open(dst, 'wb').write(b[:len(b) - int(drop)])

globals()[sys.argv[1]](*sys.argv[2:])
EOF
tool() { /usr/bin/python3 "$work/tool.py" "$@"; }
tool make "$work/root" || { echo "cannot make the fixtures" >&2; exit 1; }

# a snapshot for a 16 -> 3 InnerProduct named 'ip' (zero learning rate: one iteration just writes it)
cat >"$work/train.prototxt" <<'EOF'
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 2 dim: 16 } shape { dim: 2 dim: 3 } data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
EOF
printf 'net: "train.prototxt"\nbase_lr: 0\nlr_policy: "fixed"\nmax_iter: 1\ndisplay: 0\nsnapshot_prefix: "tiny"\n' \
  >"$work/solver.prototxt"
expect_rc 0 "train the tiny net" "$mtl" train --solver "$work/solver.prototxt"
snap="$work/tiny_iter_1.mtlsnap"
# the deploy net: the image flattened ('flat', 16 values) and projected by 'ip' ('proj', 3 values)
cat >"$work/deploy.prototxt" <<'EOF'
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "proj" inner_product_param { num_output: 3 } }
EOF

# ---- embed: list, values byte for byte, partial batches, grey conversion and resizing
list=(--list "$work/root/list.txt" --root "$work/root")
expect_rc 0 "embed a list" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat "${list[@]}" \
  --scale 0.5 --mean 10 --batch 4 --out "$work/flat.emb"
expect_grep "embedded 9 images (7 labelled)" "$work/out" "embed summary"
[ ! -e "$work/flat.emb.tmp" ] && ok || bad "embed left its temporary file"
expect_tool "list embeddings are (pixel - mean) * scale with labels and names" check_list "$work/flat.emb" 0.5 10
expect_rc 0 "embed with the default scale" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" \
  --blob flat "${list[@]}" --out "$work/flat1.emb"
expect_tool "default scale 1, mean 0" check_list "$work/flat1.emb" 1 0
expect_rc 0 "embed a projection" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob proj \
  "${list[@]}" --out "$work/proj.emb" --threads 1
expect_tool "projection has 3 values" dim "$work/proj.emb" 3
# a net without parameters needs no snapshot; one with parameters does
head -2 "$work/deploy.prototxt" >"$work/pixels.prototxt"
expect_rc 0 "embed without weights" "$mtl" embed --model "$work/pixels.prototxt" --blob flat "${list[@]}" \
  --scale 0.5 --mean 10 --out "$work/pixels.emb"
expect_tool "a parameterless net embeds the pixels" check_list "$work/pixels.emb" 0.5 10
expect_rc 1 "embed a net with parameters without weights" "$mtl" embed --model "$work/deploy.prototxt" --blob proj \
  "${list[@]}" --out "$work/x.emb"
expect_grep "has 2 learnable parameters: give their values with --weights" "$work/err" "weights required"

# ---- embed: an LMDB gives the same rows, named by record index
sed 's/^img\/nolabel.png$/img\/nolabel.png -/' "$work/root/list.txt" >"$work/root/list_db.txt" # convert wants K labels
expect_rc 0 "convert" "$mtl" convert --gray "$work/root/list_db.txt" "$work/root" "$work/db"
expect_rc 0 "embed a database" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat \
  --db "$work/db" --scale 0.5 --mean 10 --out "$work/db.emb"
expect_tool "database rows equal list rows" same_rows "$work/flat.emb" "$work/db.emb"

# ---- verify: a hand-made pair list in two folds; the classes separate perfectly under cosine
cat >"$work/pairs.txt" <<'EOF'
# fold name1 name2 same
0 img/g0a.png img/g0b.png 1
0 img/g1a.png img/g1b.png 1
0 img/g0a.png img/g1a.png 0
0 img/g2a.png img/g1b.png 0
1 img/g2a.png img/g2b.png 1
1 img/rgb.png img/g0b.png 1
1 img/g0b.png img/g2b.png 0

1 img/nolabel.png img/g2a.png 0
EOF
expect_rc 0 "verify" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs.txt" --folds 2 --recall 1,2
expect_grep "verification accuracy  1.0000 +/- 0.0000" "$work/out" "perfect verification"
expect_grep "ROC AUC                1.0000" "$work/out" "perfect AUC"
expect_grep "8 pairs (4 same, 4 different) in 2 folds" "$work/out" "pair counts"
expect_rc 0 "verify --json" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs.txt" --folds 2 \
  --recall 1,2 --json
cp "$work/out" "$work/metrics.json"
expect_tool "JSON metrics equal a brute-force computation" metrics "$work/flat.emb" "$work/pairs.txt" \
  "$work/metrics.json" 1.0
# a pair list without folds (contiguous blocks), the projection, the Euclidean metric
grep -v '^#' "$work/pairs.txt" | awk 'NF == 4 { print $2, $3, $4 }' >"$work/pairs3.txt"
expect_rc 0 "verify without a fold column" "$mtl" verify --embeddings "$work/proj.emb" --pairs "$work/pairs3.txt" \
  --folds 2 --metric euclidean
expect_grep "metric euclidean" "$work/out" "euclidean metric named"
# a list with overlapping pairs, not separable: the AUC and recall still match the brute force
cat >"$work/pairs_mixed.txt" <<'EOF'
0 img/g0a.png img/g1a.png 1
0 img/g0b.png img/g0a.png 0
0 img/g2a.png img/g2b.png 1
1 img/g1b.png img/g2b.png 0
1 img/g1a.png img/g1b.png 1
1 img/rgb.png img/g2a.png 0
EOF
expect_rc 0 "verify mixed --json" "$mtl" verify --embeddings "$work/proj.emb" --pairs "$work/pairs_mixed.txt" \
  --folds 2 --recall 1,2 --json
cp "$work/out" "$work/mixed.json"
acc=$(/usr/bin/python3 -c "import json; print(json.load(open('$work/mixed.json'))['accuracy']['mean'])")
expect_tool "mixed pairs: AUC and recall equal a brute-force computation" metrics "$work/proj.emb" \
  "$work/pairs_mixed.txt" "$work/mixed.json" "$acc"

# ---- errors: embed
expect_rc 2 "embed without --blob" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" "${list[@]}" \
  --out "$work/x.emb"
expect_rc 2 "embed with --list and --db" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat \
  "${list[@]}" --db "$work/db" --out "$work/x.emb"
expect_rc 2 "embed with a bad --scale" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat \
  "${list[@]}" --scale abc --out "$work/x.emb"
expect_rc 1 "embed an unknown blob" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob nope \
  "${list[@]}" --out "$work/x.emb"
expect_grep "no blob 'nope'" "$work/err" "unknown blob named"
expect_rc 1 "embed through a missing input" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" \
  --blob flat --input pixels "${list[@]}" --out "$work/x.emb"
expect_grep "no input blob 'pixels'" "$work/err" "missing input named"
{ cat "$work/deploy.prototxt"
  echo 'layer { name: "ip2" type: "InnerProduct" bottom: "proj" top: "q" inner_product_param { num_output: 2 } }'
} >"$work/deploy_extra.prototxt"
expect_rc 1 "embed with weights the snapshot lacks" "$mtl" embed --model "$work/deploy_extra.prototxt" \
  --weights "$snap" --blob q "${list[@]}" --out "$work/x.emb"
expect_grep "lacks 2 of the net's parameters.*ip2/0" "$work/err" "missing parameter named"
printf 'img/g0a.png 0\nimg/none.png 1\n' >"$work/root/missing.txt"
expect_rc 1 "embed a missing image" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat \
  --list "$work/root/missing.txt" --root "$work/root" --out "$work/x.emb"
expect_grep "missing.txt:2" "$work/err" "missing image's line named"
printf 'img/g0a.png 0\nimg/g0b.png zero\n' >"$work/root/badlabel.txt"
expect_rc 1 "embed a bad label" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat \
  --list "$work/root/badlabel.txt" --root "$work/root" --out "$work/x.emb"
expect_grep "badlabel.txt:2: label 'zero'" "$work/err" "bad label named"
printf '\n\n' >"$work/root/empty.txt"
expect_rc 1 "embed an empty list" "$mtl" embed --model "$work/deploy.prototxt" --weights "$snap" --blob flat \
  --list "$work/root/empty.txt" --root "$work/root" --out "$work/x.emb"
expect_grep "lists no images" "$work/err" "empty list"
[ ! -e "$work/x.emb" ] && [ ! -e "$work/x.emb.tmp" ] && ok || bad "a failed embed left a file"

# ---- errors: verify
printf '0 img/g0a.png img/g0b.png 1\n1 img/g0a.png img/missing.png 0\n' >"$work/pairs_bad.txt"
expect_rc 1 "verify an unknown name" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs_bad.txt" --folds 2
expect_grep "pairs_bad.txt:2: image 'img/missing.png' has no embedding" "$work/err" "unknown name and line"
expect_rc 1 "verify joined files of two dimensions" "$mtl" verify --embeddings "$work/flat.emb,$work/proj.emb" \
  --pairs "$work/pairs.txt" --folds 2
expect_grep "embeddings of 3 values but .* of 16" "$work/err" "dimension mismatch"
expect_rc 1 "verify joined files naming an image twice" "$mtl" verify --embeddings "$work/flat.emb,$work/flat1.emb" \
  --pairs "$work/pairs.txt" --folds 2
expect_grep "has two embeddings" "$work/err" "duplicate name"
printf '# nothing\n\n' >"$work/pairs_empty.txt"
expect_rc 1 "verify an empty pair list" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs_empty.txt"
expect_grep "lists no pairs" "$work/err" "empty pair list"
tool truncate "$work/flat.emb" "$work/trunc.emb" 100
expect_rc 1 "verify a truncated file" "$mtl" verify --embeddings "$work/trunc.emb" --pairs "$work/pairs.txt" --folds 2
expect_grep "truncated" "$work/err" "truncation"
printf 'MTLEMB1\0\0\0\0\0\0\0\0\0' >"$work/empty.emb"
expect_rc 1 "verify an empty embeddings file" "$mtl" verify --embeddings "$work/empty.emb" --pairs "$work/pairs.txt"
expect_grep "is empty" "$work/err" "empty embeddings"
expect_rc 2 "verify --folds 1" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs.txt" --folds 1
expect_rc 1 "verify with empty folds" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs.txt"
expect_grep "fold 2 holds no pair" "$work/err" "empty fold named"
printf '3 img/g0a.png img/g0b.png 1\n' >"$work/pairs_fold.txt"
expect_rc 1 "verify a fold beyond --folds" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs_fold.txt" \
  --folds 2
expect_grep "fold '3' is not a number in 0..1" "$work/err" "fold range"
printf '0 img/g0a.png img/g0b.png 1\nimg/g0a.png img/g1a.png 0\n' >"$work/pairs_cols.txt"
expect_rc 1 "verify mixed columns" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs_cols.txt" --folds 2
expect_grep "pairs_cols.txt:2: 3 fields, but line 1 has 4" "$work/err" "mixed columns"
printf '0 img/g0a.png img/g0b.png yes\n' >"$work/pairs_same.txt"
expect_rc 1 "verify a bad same flag" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs_same.txt" \
  --folds 2
expect_grep "'yes' is not 1" "$work/err" "bad same flag"
expect_rc 2 "verify a bad metric" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs.txt" --metric l1
expect_rc 2 "verify a bad --recall" "$mtl" verify --embeddings "$work/flat.emb" --pairs "$work/pairs.txt" --recall 1,,2
expect_rc 2 "verify without --pairs" "$mtl" verify --embeddings "$work/flat.emb"
expect_rc 0 "embed --help" "$mtl" embed --help
expect_grep "MTLEMB1" "$work/out" "format documented in --help"
expect_rc 0 "verify --help" "$mtl" verify --help

cli_finish
