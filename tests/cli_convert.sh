#!/usr/bin/env bash
# mtl convert end to end: tiny PNGs (written by Python's standard library) packed into LMDBs and read
# back from data.mdb byte for byte (labels as float32 bits, '-' as NaN), every option, every error
# path, interruption, and --coco. Usage: cli_convert.sh MTL_BINARY SOURCE_DIR
. "$(dirname "$0")/support/cli_lib.sh" "$@"
expect_no_db() { # path description: neither the database nor its partial directory exists
  if [ ! -e "$1" ] && [ ! -e "$1.partial" ]; then ok; else bad "$2: something was left at $1"; ls -la "$1"* >&2; fi
}
tool="$work/tool.py"
cat >"$tool" <<'EOF'
# Fixture PNGs and a reader of mtl records straight from data.mdb (stdlib only).
import json, math, re, struct, sys, zlib

def pixel(x, y, k, seed):
    return (x * 7 + y * 13 + k * 5 + seed * 31) % 256

def png(path, w, h, c, seed):
    raw = b''.join(b'\0' + bytes(pixel(x, y, k, seed) for x in range(w) for k in range(c)) for y in range(h))
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 8, {1: 0, 3: 2}[c], 0, 0, 0)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))

def records(db):
    """Every record in data.mdb: LMDB leaf nodes put the ten-digit key right before the value."""
    data = open(db + '/data.mdb', 'rb').read()
    out = {}
    for m in re.finditer(rb'(\d{10})MTLR', data):
        p = m.start(1) + 10
        version, flags, c, h, w = struct.unpack_from('<HHIII', data, p + 4)
        q = p + 20
        (nl,) = struct.unpack_from('<I', data, q)
        labels = struct.unpack_from('<%df' % nl, data, q + 4)
        q += 4 + 4 * nl
        (nb,) = struct.unpack_from('<I', data, q)
        boxes = struct.unpack_from('<%df' % (5 * nb), data, q + 4)
        q += 4 + 20 * nb
        (n,) = struct.unpack_from('<I', data, q)
        out[int(m.group(1))] = dict(flags=flags, c=c, h=h, w=w, labels=labels, boxes=boxes, data=data[q + 4:q + 4 + n])
    at = data.find(b'__mtl_meta__{')
    meta = json.JSONDecoder().raw_decode(data[at + 12:].decode('latin-1'))[0] if at >= 0 else None
    return out, meta

def f32(v):
    return struct.unpack('<f', struct.pack('<f', float(v)))[0]

def expected_pixels(name, channels):
    """Fixture names carry their size and seed: img_W_H_C_SEED.png; CHW planes."""
    w, h, c, seed = map(int, re.match(r'.*img_(\d+)_(\d+)_(\d+)_(\d+)\.png$', name).groups())
    assert channels == c
    return bytes(pixel(x, y, k, seed) for k in range(c) for y in range(h) for x in range(w))

def check_list(db, listfile, root):
    """The records equal the list's images and labels, in order, exactly."""
    recs, meta = records(db)
    lines = [l.split() for l in open(listfile) if l.strip()]
    assert meta['count'] == len(lines) == len(recs), (meta, len(lines), len(recs))
    for i, toks in enumerate(lines):
        r = recs[i]
        assert r['flags'] == 0
        assert r['data'] == expected_pixels(toks[0], r['c']), 'pixels of record %d' % i
        want = toks[1:]
        assert len(r['labels']) == len(want)
        for got, text in zip(r['labels'], want):
            if text == '-':
                assert math.isnan(got), (i, got)
            else:
                assert got == f32(text), (i, got, text)
    return meta

cmd = sys.argv[1]
if cmd == 'png':
    for spec in sys.argv[2:]:
        path, w, h, c, seed = spec.split(':')
        png(path, int(w), int(h), int(c), int(seed))
elif cmd == 'check-list':
    meta = check_list(*sys.argv[2:5])
    print(json.dumps(meta))
elif cmd == 'meta':
    print(json.dumps(records(sys.argv[2])[1]))
elif cmd == 'order':
    recs, meta = records(sys.argv[2])
    print(' '.join(str(recs[i]['labels'][0]) for i in range(meta['count'])))
elif cmd == 'record':
    recs, meta = records(sys.argv[2])
    r = recs[int(sys.argv[3])]
    r['data'] = r['data'].hex()
    r['labels'] = [None if math.isnan(v) else v for v in r['labels']]
    print(json.dumps(r))
elif cmd == 'same-bytes':
    recs, meta = records(sys.argv[2])
    sys.exit(0 if recs[int(sys.argv[3])]['data'] == open(sys.argv[4], 'rb').read() else 1)
EOF

img="$work/img"
mkdir -p "$img/sub"
$py "$tool" png "$img/img_4_3_1_0.png:4:3:1:0" "$img/img_4_3_1_1.png:4:3:1:1" "$img/sub/img_4_3_1_2.png:4:3:1:2" \
  "$img/img_4_3_3_3.png:4:3:3:3" "$img/img_5_2_1_4.png:5:2:1:4" || { echo "cannot make fixtures"; exit 1; }
for s in $(seq 10 29); do $py "$tool" png "$img/img_3_2_1_$s.png:3:2:1:$s"; done

expect_rc 0 "convert --help" "$mtl" convert --help
expect_grep "usage: mtl convert" "$work/out" "convert usage"

# labels: integers, floats (regression targets) and '-' for missing; exact float32 round trip
cat >"$work/list.txt" <<'EOF'
img_4_3_1_0.png 1 0.1 -3.25e-7
img_4_3_1_1.png - 2.5 1e10

sub/img_4_3_1_2.png 0 - -
img_4_3_3_3.png 7 -0.125 3
EOF
expect_rc 0 "convert a list" "$mtl" convert "$work/list.txt" "$img" "$work/db"
expect_grep "wrote 4 records to '$work/db'" "$work/out" "summary names records"
expect_grep "skipped 0 bad images; 3 missing labels" "$work/out" "summary counts skipped and missing"
if grep -q "images/s" "$work/err"; then bad "progress printed when stderr is not a terminal"; else ok; fi
if $py "$tool" check-list "$work/db" "$work/list.txt" "$img" >"$work/meta.json"; then ok; else bad "list round trip"; fi
expect_grep '"n_labels": 3' "$work/meta.json" "metadata K"
expect_grep '"missing_labels": 3' "$work/meta.json" "metadata missing labels"
expect_grep '"channels": 0' "$work/meta.json" "mixed grey and RGB: no common shape"
[ ! -e "$work/db.partial" ] && ok || bad "partial directory left after success"

# --gray, --label-names, --labels K, CRLF line ends; converting again replaces the database
printf 'img_4_3_3_3.png 1 2 3\r\nimg_4_3_1_0.png 4 5 6\r\n' >"$work/crlf.txt"
expect_rc 0 "gray + names" "$mtl" convert --gray --labels 3 --label-names class,x,y "$work/crlf.txt" "$img" "$work/db"
$py "$tool" meta "$work/db" >"$work/meta.json"
expect_grep '"label_names": \["class", "x", "y"\]' "$work/meta.json" "label names stored"
expect_grep '"channels": 1, "height": 3, "width": 4' "$work/meta.json" "gray shape"
expect_grep '"count": 2' "$work/meta.json" "replaced database holds the new records"
# RGB 3x4 pixel (0,0) = (93, 98, 103) -> (77*93 + 150*98 + 29*103) >> 8 = 97 = 0x61
$py "$tool" record "$work/db" 0 >"$work/rec.json"
expect_grep '"c": 1, "h": 3, "w": 4' "$work/rec.json" "gray record size"
expect_grep '"data": "61' "$work/rec.json" "gray pixel from the luma weights"

# --resize and --color
printf 'img_4_3_1_0.png 1\nimg_5_2_1_4.png 2\n' >"$work/two.txt"
expect_rc 0 "resize + color" "$mtl" convert --resize 8x6 --color "$work/two.txt" "$img" "$work/resized"
expect_grep "(3x6x8, raw, 1 label each)" "$work/out" "resized shape in summary"

# --encoded keeps the file's bytes; with --resize the result is re-encoded as PNG
expect_rc 0 "encoded" "$mtl" convert --encoded "$work/two.txt" "$img" "$work/enc"
if $py "$tool" same-bytes "$work/enc" 1 "$img/img_5_2_1_4.png"; then ok; else bad "encoded record keeps file bytes"; fi
$py "$tool" record "$work/enc" 1 >"$work/rec.json"
expect_grep '"flags": 1, "c": 1, "h": 2, "w": 5' "$work/rec.json" "encoded flag and decoded size"
expect_rc 0 "encoded + resize" "$mtl" convert --encoded --resize 6x4 "$work/two.txt" "$img" "$work/enc2"
$py "$tool" record "$work/enc2" 1 >"$work/rec.json"
expect_grep '"flags": 1, "c": 1, "h": 4, "w": 6' "$work/rec.json" "re-encoded size"
expect_grep '"data": "89504e47' "$work/rec.json" "re-encoded as PNG"
if $py "$tool" same-bytes "$work/enc2" 1 "$img/img_5_2_1_4.png"; then bad "resized record kept old bytes"; else ok; fi

# --encoded with a channel change re-encodes; without one the bytes stay
printf 'img_4_3_3_3.png 1\nimg_4_3_1_0.png 2\n' >"$work/rgb.txt"
expect_rc 0 "encoded gray" "$mtl" convert --encoded --gray "$work/rgb.txt" "$img" "$work/enc3"
$py "$tool" record "$work/enc3" 0 >"$work/rec.json"
expect_grep '"flags": 1, "c": 1, "h": 3, "w": 4' "$work/rec.json" "encoded gray size"
expect_grep '"data": "89504e47' "$work/rec.json" "colour file re-encoded as a grey PNG"
if $py "$tool" same-bytes "$work/enc3" 1 "$img/img_4_3_1_0.png"; then ok; else bad "grey file kept as it is"; fi

# --shuffle --seed: a permutation, the same for the same seed, another for another seed
: >"$work/many.txt"
for s in $(seq 10 29); do echo "img_3_2_1_$s.png $s" >>"$work/many.txt"; done
expect_rc 0 "shuffle" "$mtl" convert --shuffle --seed 7 "$work/many.txt" "$img" "$work/sh1"
expect_rc 0 "shuffle again" "$mtl" convert --shuffle --seed 7 "$work/many.txt" "$img" "$work/sh2"
expect_rc 0 "shuffle other seed" "$mtl" convert --shuffle --seed 8 "$work/many.txt" "$img" "$work/sh3"
o1=$($py "$tool" order "$work/sh1"); o2=$($py "$tool" order "$work/sh2"); o3=$($py "$tool" order "$work/sh3")
[ -n "$o1" ] && [ "$o1" = "$o2" ] && ok || bad "same seed, same order: '$o1' vs '$o2'"
[ "$o1" != "$o3" ] && ok || bad "another seed, another order"
sorted=$(echo "$o1" | tr ' ' '\n' | sort -n | tr '\n' ' ')
[ "$sorted" = "$(seq 10 29 | sed 's/$/.0/' | tr '\n' ' ')" ] && ok || bad "shuffle is a permutation: $sorted"
[ "$o1" != "$(seq 10 29 | sed 's/$/.0/' | tr '\n' ' ' | sed 's/ $//')" ] && ok || bad "shuffle changed the order"

# ---- errors: each names what is wrong and leaves no database ----
printf 'img_4_3_1_0.png 1 2\nimg_4_3_1_1.png 3 4\nimg_4_3_1_0.png 5\n' >"$work/short.txt"
expect_rc 1 "short line" "$mtl" convert "$work/short.txt" "$img" "$work/e1"
expect_grep "short.txt:3: 1 label, expected 2 as on line 1" "$work/err" "short line named"
expect_no_db "$work/e1" "short line"
expect_rc 1 "short line with --labels" "$mtl" convert --labels 2 "$work/short.txt" "$img" "$work/e1"
expect_grep "short.txt:3: 1 label, expected 2 (--labels 2)" "$work/err" "short line against --labels"
printf 'img_4_3_1_0.png 1 2\nimg_4_3_1_1.png 3 4x\n' >"$work/badnum.txt"
expect_rc 1 "bad number" "$mtl" convert "$work/badnum.txt" "$img" "$work/e2"
expect_grep "badnum.txt:2: label 2 '4x' is not a number" "$work/err" "bad number named"
expect_no_db "$work/e2" "bad number"
printf 'img_4_3_1_0.png nan\n' >"$work/nan.txt"
expect_rc 1 "nan is not a label" "$mtl" convert "$work/nan.txt" "$img" "$work/e2"
expect_grep "'-' marks a missing label" "$work/err" "nan refused with a hint"
: >"$work/empty.txt"
expect_rc 1 "empty list" "$mtl" convert "$work/empty.txt" "$img" "$work/e2"
expect_grep "lists no images" "$work/err" "empty list"
expect_rc 1 "missing list" "$mtl" convert "$work/nolist.txt" "$img" "$work/e2"
expect_grep "nolist.txt" "$work/err" "missing list named"

printf 'img_4_3_1_0.png 1\nnot_there.png 2\nimg_4_3_1_1.png 3\n' >"$work/missing.txt"
expect_rc 1 "missing image" "$mtl" convert "$work/missing.txt" "$img" "$work/e3"
expect_grep "missing.txt:2: cannot open image '$img/not_there.png'" "$work/err" "missing image named with its line"
expect_grep "skip-bad" "$work/err" "missing image hints at --skip-bad"
expect_no_db "$work/e3" "missing image"
expect_rc 0 "missing image skipped" "$mtl" convert --skip-bad "$work/missing.txt" "$img" "$work/e3"
expect_grep "not_there.png" "$work/err" "skipped image reported"
expect_grep "wrote 2 records.*skipped 1 bad images" "$work/out" "skip counted"
expect_grep '"skipped": 1' <($py "$tool" meta "$work/e3") "skip counted in the metadata"

printf '\x89PNG\r\n\x1a\nthis is not a picture' >"$img/corrupt.png"
head -c 40 "$img/img_4_3_3_3.png" >"$img/cut.png"
printf 'img_4_3_1_0.png 1\ncorrupt.png 2\n' >"$work/corrupt.txt"
expect_rc 1 "corrupt image" "$mtl" convert "$work/corrupt.txt" "$img" "$work/e4"
expect_grep "corrupt.txt:2: cannot decode image '$img/corrupt.png'" "$work/err" "corrupt image named"
expect_no_db "$work/e4" "corrupt image"
printf 'img_4_3_1_0.png 1\ncorrupt.png 2\ncut.png 3\nimg_4_3_1_1.png 4\n' >"$work/corrupt.txt"
expect_rc 0 "corrupt images skipped" "$mtl" convert --skip-bad "$work/corrupt.txt" "$img" "$work/e4"
expect_grep "cut.png" "$work/err" "truncated image reported"
expect_grep "wrote 2 records.*skipped 2 bad images" "$work/out" "corrupt skips counted"
printf 'corrupt.png 2\n' >"$work/allbad.txt"
expect_rc 1 "nothing converted" "$mtl" convert --skip-bad "$work/allbad.txt" "$img" "$work/e4b"
expect_grep "no image of" "$work/err" "all images bad"
expect_no_db "$work/e4b" "all images bad"

echo "not a directory" >"$work/file.txt"
expect_rc 1 "unwritable output" "$mtl" convert "$work/list.txt" "$img" "$work/file.txt/db"
expect_grep "cannot create the database directory '$work/file.txt/db.partial'" "$work/err" "unwritable output named"
expect_rc 1 "output is a file" "$mtl" convert "$work/list.txt" "$img" "$work/file.txt"
expect_grep "not replacing it" "$work/err" "a file is not replaced"
expect_grep "not a directory" "$work/file.txt" "the file is intact"
if [ "$(id -u)" -ne 0 ]; then
  mkdir "$work/ro" && chmod 555 "$work/ro"
  expect_rc 1 "read-only directory" "$mtl" convert "$work/list.txt" "$img" "$work/ro/db"
  expect_grep "Permission denied" "$work/err" "read-only directory explained"
fi

expect_rc 1 "label names count" "$mtl" convert --label-names a,b "$work/list.txt" "$img" "$work/e5"
expect_grep "label-names gives 2 names but '$work/list.txt' has 3 labels per line" "$work/err" "names count"
expect_no_db "$work/e5" "label names count"
expect_rc 1 "check size" "$mtl" convert --check-size "$work/two.txt" "$img" "$work/e6"
expect_grep "two.txt:2: image '$img/img_5_2_1_4.png' is 5x2, but the first image ('$img/img_4_3_1_0.png') is 4x3" \
  "$work/err" "check-size names both files"
expect_no_db "$work/e6" "check size"
expect_rc 0 "check size after resize" "$mtl" convert --check-size --resize 4x3 "$work/two.txt" "$img" "$work/e6"

expect_rc 2 "bad resize" "$mtl" convert --resize 8by6 "$work/list.txt" "$img" "$work/e7"
expect_grep "WIDTHxHEIGHT" "$work/err" "resize syntax explained"
expect_rc 2 "gray and color" "$mtl" convert --gray --color "$work/list.txt" "$img" "$work/e7"
expect_rc 2 "missing DB argument" "$mtl" convert "$work/list.txt" "$img"
expect_rc 2 "seed without shuffle" "$mtl" convert --seed 3 "$work/list.txt" "$img" "$work/e7"
expect_rc 2 "empty label name" "$mtl" convert --label-names a,,c "$work/list.txt" "$img" "$work/e7"
expect_no_db "$work/e7" "usage errors"

# ---- interruption: Ctrl-C while an image read blocks (a FIFO) leaves nothing at DB ----
: >"$work/slow.txt"
for s in $(seq 10 29); do echo "img_3_2_1_$s.png $s" >>"$work/slow.txt"; done
mkfifo "$img/fifo.png"
echo "fifo.png 99" >>"$work/slow.txt"
for s in $(seq 10 14); do echo "img_3_2_1_$s.png $s" >>"$work/slow.txt"; done
interrupt_run() { # signal db
  "$mtl" convert "$work/slow.txt" "$img" "$2" >"$work/out" 2>"$work/err" &
  local pid=$! i
  for i in $(seq 100); do [ -d "$2.partial" ] && break; sleep 0.1; done
  sleep 0.5
  kill "-$1" "$pid"
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  # should the signal have come just before the read started blocking, open the FIFO's other end
  # (from this shell: a helper subshell killed right after its fork could run this script's EXIT trap)
  if kill -0 "$pid" 2>/dev/null; then timeout 2 bash -c "exec 3>'$img/fifo.png'" 2>/dev/null; fi
  wait "$pid" 2>/dev/null
}
interrupt_run INT "$work/int"
rc=$?
[ "$rc" -eq 130 ] && ok || { bad "interrupted convert exits 130, got $rc"; cat "$work/err" >&2; }
expect_grep "interrupted" "$work/err" "interruption reported"
expect_no_db "$work/int" "interrupted conversion"
interrupt_run TERM "$work/int"
[ ! -e "$work/int" ] && ok || bad "terminated conversion left a database"
# killed outright, only the partial directory can remain, never DB; the next run replaces it
interrupt_run KILL "$work/killed"
[ ! -e "$work/killed" ] && [ -d "$work/killed.partial" ] && ok || bad "killed conversion: no DB, a partial dir"
rm "$img/fifo.png"
expect_rc 0 "rerun after a kill" "$mtl" convert "$work/many.txt" "$img" "$work/killed"
[ -d "$work/killed" ] && [ ! -e "$work/killed.partial" ] && ok || bad "rerun replaced the stale partial directory"

# ---- progress on a terminal ----
if script -qec "true" /dev/null >/dev/null 2>&1; then
  script -qec "'$mtl' convert '$work/many.txt' '$img' '$work/tty'" "$work/tty.log" >/dev/null 2>&1
  expect_grep "images/s" "$work/tty.log" "progress shows images/s on a terminal"
  expect_grep "ETA" "$work/tty.log" "progress shows the ETA"
fi

# ---- COCO detection annotations ----
cat >"$work/coco.json" <<'EOF'
{
  "images": [
    {"id": 10, "file_name": "img_4_3_1_0.png", "width": 4, "height": 3},
    {"id": 20, "file_name": "img_5_2_1_4.png", "width": 5, "height": 2},
    {"id": 30, "file_name": "img_4_3_3_3.png"}
  ],
  "annotations": [
    {"id": 1, "image_id": 20, "category_id": 3, "bbox": [1, 0.5, 2, 1.5], "iscrowd": 0},
    {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0, 0, 4, 3]},
    {"id": 3, "image_id": 20, "category_id": 1, "bbox": [0.25, 0, 1, 1]},
    {"id": 4, "image_id": 20, "category_id": 1, "bbox": [0, 0, 5, 2], "iscrowd": 1}
  ],
  "categories": [{"id": 3, "name": "boot"}, {"id": 1, "name": "shirt"}]
}
EOF
expect_rc 0 "coco" "$mtl" convert --coco "$work/coco.json" --gray "$img" "$work/det"
expect_grep "wrote 3 records.*3 boxes" "$work/out" "coco summary"
expect_grep "1 crowd annotations left out" "$work/out" "crowd annotations counted"
$py "$tool" meta "$work/det" >"$work/meta.json"
expect_grep '"label_names": \["shirt", "boot"\], "category_ids": \[1, 3\]' "$work/meta.json" "categories by id"
expect_grep '"has_boxes": true' "$work/meta.json" "has_boxes"
expect_grep '"n_labels": 0' "$work/meta.json" "no image labels"
$py "$tool" record "$work/det" 1 >"$work/rec.json"
expect_grep '"boxes": \[3.0, 1.0, 0.5, 2.0, 1.5, 1.0, 0.25, 0.0, 1.0, 1.0\]' "$work/rec.json" "boxes in file order"
$py "$tool" record "$work/det" 2 >"$work/rec.json"
expect_grep '"boxes": \[\]' "$work/rec.json" "an image without annotations keeps 0 boxes"
expect_rc 0 "coco resized" "$mtl" convert --coco "$work/coco.json" --resize 8x6 "$img" "$work/det2"
$py "$tool" record "$work/det2" 0 >"$work/rec.json"
expect_grep '"boxes": \[1.0, 0.0, 0.0, 8.0, 6.0\]' "$work/rec.json" "boxes scaled with the image"
sed 's/"width": 5/"width": 6/' "$work/coco.json" >"$work/coco_size.json"
expect_rc 1 "coco size mismatch" "$mtl" convert --coco "$work/coco_size.json" "$img" "$work/e8"
expect_grep "is 5x2, but the annotations say 6x2" "$work/err" "annotation size checked"
sed 's/"category_id": 3/"category_id": 4/' "$work/coco.json" >"$work/coco_cat.json"
expect_rc 1 "coco unknown category" "$mtl" convert --coco "$work/coco_cat.json" "$img" "$work/e8"
expect_grep "annotation 0 refers to category 4" "$work/err" "unknown category named"
sed 's/"category_id": 3/"category_id": 9999999999/; s/{"id": 3, "name"/{"id": 9999999999, "name"/' "$work/coco.json" \
  >"$work/coco_bigcat.json"
expect_rc 1 "coco category id beyond 32 bits" "$mtl" convert --coco "$work/coco_bigcat.json" "$img" "$work/e8"
expect_grep "category 0 has id 9999999999, beyond the 32-bit ids" "$work/err" "category id too large named"
printf '{"images": [\n{"id": 1,\n "file_name": }]}' >"$work/coco_bad.json"
expect_rc 1 "coco bad json" "$mtl" convert --coco "$work/coco_bad.json" "$img" "$work/e8"
expect_grep "coco_bad.json:3: not valid JSON" "$work/err" "JSON error line"
expect_rc 2 "coco with --labels" "$mtl" convert --coco "$work/coco.json" --labels 2 "$img" "$work/e8"
expect_no_db "$work/e8" "coco errors"

cli_finish
