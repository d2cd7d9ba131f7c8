#!/usr/bin/python3
"""PyTorch side of the MultiFashion comparison: the recipe of examples/multifashion (solver*.prototxt
and *_train_test.prototxt) trained in PyTorch on the same images, for the same number of iterations.

Usage: multifashion_torch.py [--task both|left|right] [--seeds 1,2,3] [--iters N] [--threads N]
                             [--data DIR] [--out DIR] [--test-interval N]
       multifashion_torch.py --check-mtl build/mtl [--task both|left|right]
Run from anywhere (paths default to the repository's data/multifashion and out/multifashion).
Launch with OPENBLAS_NUM_THREADS=1 (bench/multifashion.sh does).

What is matched to mtl's prototxt, layer for layer and setting for setting:
- data: the PNGs listed in data/multifashion/{train,test}.txt (`train/00000.png left right`),
  pixels times 1/256 (transform_param scale 0.00390625), no mean; training order reshuffled every
  epoch, the sample stream running on across epoch ends (60000 is not a multiple of 256: a batch
  may hold the end of one epoch and the start of the next, as in mtl's Data layer);
- net: conv 1->10 k5, max-pool 2, ReLU, conv 10->20 k5, channel dropout 0.5 (Dropout2d = mtl's
  `channel_wise: true`), max-pool 2, ReLU, fc 320->50, ReLU; per task fc 50->50, ReLU, dropout 0.5,
  fc 50->10, softmax cross-entropy averaged over the batch; loss weight 0.5 per task for `both`,
  1 for a single task;
- init: Caffe's xavier, uniform(-sqrt(3/fan_in), +sqrt(3/fan_in)) with fan_in = count / shape[0]
  (in_channels * k * k for convolutions, in_features for inner products); biases 0;
- solver: Caffe's SGD, written out by hand: g = grad + weight_decay * w (every parameter, biases
  included: decay_mult defaults to 1), h = lr * g + momentum * h, w -= h. torch.optim.SGD keeps the
  learning rate outside the history (h = m * h + g, w -= lr * h), which is the same update except
  for the few iterations after each learning-rate drop; the hand-written form is mtl's exactly.
  base_lr 0.02, momentum 0.9, weight_decay 0.0005, multistep at 1800 and 2400 with gamma 0.1,
  batch 256, 2800 iterations (--iters stops earlier without moving the steps, like
  `mtl train --max-iter`);
- test: the whole 10000-image test set (mtl: test_iter 20 x batch 500), dropout off, at iteration 0
  and every test_interval (700) iterations and at the end.

Decoded images are cached as data/multifashion/{train,test}_{images,labels}.npy (rebuilt when the
list file is newer or the counts differ). Prints per-task final test accuracy and the time per
training iteration; writes out/multifashion/torch_<task>_seed<k>.json per seed.
Time per iteration: the median over 200-iteration windows (mtl's display interval) of the window's
time / 200, training iterations only (data batching, forward, backward, update; tests excluded);
the total training time is in the JSON too.

--check-mtl MTL checks the recipe against the mtl executable instead of training: a few iterations
from the same initial weights on the same batches with dropout off must give the same losses and
parameters (see check_against_mtl)."""
import argparse
import json
import os
import platform
import statistics
import struct
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- recipe (examples/multifashion/solver*.prototxt) ----
BASE_LR = 0.02
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0005
STEPVALUES = (1800, 2400)
GAMMA = 0.1
MAX_ITER = 2800
TRAIN_BATCH = 256
TEST_BATCH = 500
TEST_INTERVAL = 700
DISPLAY = 200
SCALE = 0.00390625


# ------------------------------------------------------------------ PNG reading

def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png_grey8(path):
    """Decodes an 8-bit greyscale, non-interlaced PNG (what stb_image_write writes for 1 channel)
    with zlib alone; handles the five filter types."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, width = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or colour != 0 or interlace != 0:
                raise ValueError(f"{path}: only 8-bit grey non-interlaced PNGs are handled "
                                 f"(depth {depth}, colour type {colour}, interlace {interlace})")
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if width is None:
        raise ValueError(f"{path}: no IHDR")
    raw = zlib.decompress(b"".join(idat))
    stride = width + 1
    if len(raw) != stride * height:
        raise ValueError(f"{path}: {len(raw)} bytes of image data for {width}x{height}")
    out = bytearray(width * height)
    prev = bytearray(width)
    for y in range(height):
        ftype = raw[y * stride]
        line = bytearray(raw[y * stride + 1:(y + 1) * stride])
        # one byte per pixel: the "left" neighbour is the previous byte
        if ftype == 1:
            for x in range(1, width):
                line[x] = (line[x] + line[x - 1]) & 0xFF
        elif ftype == 2:
            for x in range(width):
                line[x] = (line[x] + prev[x]) & 0xFF
        elif ftype == 3:
            for x in range(width):
                left = line[x - 1] if x else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif ftype == 4:
            for x in range(width):
                left = line[x - 1] if x else 0
                upleft = prev[x - 1] if x else 0
                line[x] = (line[x] + _paeth(left, prev[x], upleft)) & 0xFF
        elif ftype != 0:
            raise ValueError(f"{path}: unknown PNG filter type {ftype}")
        out[y * width:(y + 1) * width] = line
        prev = line
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(height, width)


try:
    from PIL import Image

    def read_grey(path):
        with Image.open(path) as im:
            if im.mode != "L":
                im = im.convert("L")
            return np.asarray(im, dtype=np.uint8)
except ImportError:  # no Pillow: the standard library is enough for these files
    read_grey = decode_png_grey8


def load_split(data_dir, split):
    """(images uint8 N x 28 x 28, labels int64 N x 2) of the split, from the .npy cache when it is
    current, else decoded from the PNGs of <split>.txt and cached."""
    listing = os.path.join(data_dir, f"{split}.txt")
    with open(listing) as f:
        rows = [line.split() for line in f if line.strip()]
    img_cache = os.path.join(data_dir, f"{split}_images.npy")
    lab_cache = os.path.join(data_dir, f"{split}_labels.npy")
    if all(os.path.exists(p) and os.path.getmtime(p) >= os.path.getmtime(listing) for p in (img_cache, lab_cache)):
        images, labels = np.load(img_cache), np.load(lab_cache)
        if len(images) == len(rows) == len(labels):
            return images, labels
    t0 = time.perf_counter()
    images = np.stack([read_grey(os.path.join(data_dir, r[0])) for r in rows])
    labels = np.array([[int(r[1]), int(r[2])] for r in rows], dtype=np.int64)
    for path, arr in ((img_cache, images), (lab_cache, labels)):
        tmp = path + f".tmp{os.getpid()}.npy"
        np.save(tmp, arr)
        os.replace(tmp, path)
    print(f"decoded {len(rows)} {split} images in {time.perf_counter() - t0:.1f} s; cached as {img_cache}",
          file=sys.stderr)
    return images, labels


# ------------------------------------------------------------------ net

class MultiLeNet(nn.Module):
    """examples/multifashion/*_train_test.prototxt: shared trunk, one head per task."""

    def __init__(self, tasks):
        super().__init__()
        self.tasks = tasks
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.drop2 = nn.Dropout2d(0.5)
        self.head_dropout = 0.5
        self.fc1 = nn.Linear(320, 50)
        self.heads = nn.ModuleDict({t: nn.ModuleDict({"fc2": nn.Linear(50, 50), "score": nn.Linear(50, 10)})
                                    for t in tasks})
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                fan_in = w.numel() // w.shape[0]
                scale = (3.0 / fan_in) ** 0.5
                with torch.no_grad():
                    w.uniform_(-scale, scale)
                    m.bias.zero_()

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.drop2(self.conv2(x)), 2))
        x = F.relu(self.fc1(x.flatten(1)))
        out = {}
        for t in self.tasks:
            y = F.relu(self.heads[t]["fc2"](x))
            y = F.dropout(y, self.head_dropout, self.training)
            out[t] = self.heads[t]["score"](y)
        return out


TASK_COLUMN = {"left": 0, "right": 1}


def lr_at(it):
    """Caffe's multistep policy: base_lr * gamma ^ (number of stepvalues <= it)."""
    return BASE_LR * GAMMA ** sum(1 for s in STEPVALUES if it >= s)


def evaluate(net, images, labels, tasks):
    net.eval()
    correct = {t: 0 for t in tasks}
    loss = {t: 0.0 for t in tasks}
    n = len(images)
    with torch.no_grad():
        for start in range(0, n, TEST_BATCH):
            x = images[start:start + TEST_BATCH].float().mul_(SCALE).unsqueeze(1)
            out = net(x)
            for t in tasks:
                y = labels[start:start + TEST_BATCH, TASK_COLUMN[t]]
                correct[t] += int((out[t].argmax(1) == y).sum())
                loss[t] += float(F.cross_entropy(out[t], y, reduction="sum"))
    net.train()
    return {f"accuracy_{t}": correct[t] / n for t in tasks} | {f"loss_{t}": loss[t] / n for t in tasks}


def train_one(task, seed, iters, train, test, test_interval, log):
    tasks = ["left", "right"] if task == "both" else [task]
    weight = 0.5 if task == "both" else 1.0
    torch.manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    net = MultiLeNet(tasks).train()
    params = list(net.parameters())
    hist = [torch.zeros_like(p) for p in params]
    train_x, train_y = train
    test_x, test_y = test
    n = len(train_x)

    # the sample stream: position g is sample order_e[g % n] of epoch e = g // n
    stream = torch.empty(0, dtype=torch.int64)
    history = []

    def test_now(it):
        r = evaluate(net, test_x, test_y, tasks)
        history.append({"iter": it} | r)
        log(f"  [{task} seed {seed}] test at iter {it}: " +
            " ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("accuracy")))

    window_ms, train_s = [], 0.0
    if test_interval > 0:
        test_now(0)
    window_start = 0.0  # train_s when the current display window began
    for it in range(iters):
        t0 = time.perf_counter()
        while len(stream) < TRAIN_BATCH:
            stream = torch.cat([stream, torch.randperm(n, generator=order_gen)])
        idx, stream = stream[:TRAIN_BATCH], stream[TRAIN_BATCH:]
        x = train_x[idx].float().mul_(SCALE).unsqueeze(1)
        y = train_y[idx]
        out = net(x)
        loss = sum(weight * F.cross_entropy(out[t], y[:, TASK_COLUMN[t]]) for t in tasks)
        for p in params:
            p.grad = None
        loss.backward()
        lr = lr_at(it)
        with torch.no_grad():
            for p, h in zip(params, hist):
                g = p.grad.add(p, alpha=WEIGHT_DECAY)
                h.mul_(MOMENTUM).add_(g, alpha=lr)
                p.sub_(h)
        train_s += time.perf_counter() - t0
        done = it + 1
        if done % DISPLAY == 0:
            window_ms.append((train_s - window_start) / DISPLAY * 1e3)
            window_start = train_s
            log(f"  [{task} seed {seed}] iter {done} lr {lr:g} loss {float(loss):.4f}")
        if test_interval > 0 and done % test_interval == 0 and done != iters:
            test_now(done)
    test_now(iters)
    final = history[-1]
    per_iter = statistics.median(window_ms) if window_ms else train_s / max(iters, 1) * 1e3
    return {
        "side": "torch", "task": task, "seed": seed, "iters": iters, "batch": TRAIN_BATCH,
        "accuracy": {t: final[f"accuracy_{t}"] for t in tasks},
        "test": history,
        "ms_per_iter": per_iter, "ms_per_iter_windows": window_ms, "train_seconds": train_s,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
    }


# ------------------------------------------------------------------ check against mtl

NET_FILES = {"both": "multilenet_train_test.prototxt", "left": "single_left_train_test.prototxt",
             "right": "single_right_train_test.prototxt"}


def write_mtlsnap(path, arrays):
    """A PARM-only snapshot (docs/snapshot-format.md) that `mtl train --weights` reads."""
    payload = struct.pack("<I", len(arrays))
    for name, a in arrays:
        a = np.ascontiguousarray(a, dtype="<f4")
        nb = name.encode()
        payload += (struct.pack("<I", len(nb)) + nb + struct.pack("<I", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
                    + struct.pack("<Q", a.size) + a.tobytes())
    section = b"PARM" + struct.pack("<IQ", 0, len(payload)) + payload
    data = b"MTLSNAP\0" + struct.pack("<IIQ", 1, 0, 24 + len(section) + 4) + section
    with open(path, "wb") as f:
        f.write(data + struct.pack("<I", zlib.crc32(data) & 0xFFFFFFFF))


def read_mtlsnap_params(path):
    with open(path, "rb") as f:
        d = f.read()
    pos, out = 24, {}
    while pos < len(d) - 4:
        tag, length = d[pos:pos + 4], struct.unpack("<Q", d[pos + 8:pos + 16])[0]
        p = pos + 16
        if tag == b"PARM":
            n_arrays = struct.unpack("<I", d[p:p + 4])[0]
            p += 4
            for _ in range(n_arrays):
                n = struct.unpack("<I", d[p:p + 4])[0]
                name = d[p + 4:p + 4 + n].decode()
                p += 4 + n
                ndim = struct.unpack("<I", d[p:p + 4])[0]
                shape = struct.unpack(f"<{ndim}I", d[p + 4:p + 4 + 4 * ndim])
                p += 4 + 4 * ndim
                count = struct.unpack("<Q", d[p:p + 8])[0]
                out[name] = np.frombuffer(d[p + 8:p + 8 + 4 * count], "<f4").reshape(shape)
                p += 8 + 4 * count
        pos += 16 + length
    return out


def check_against_mtl(task, mtl_bin, data_dir, iters=6):
    """Trains `iters` iterations in mtl and here from the same initial weights on the same batches
    (the first 512 training images, in list order, no shuffling) with dropout off, the learning rate
    dropping at iteration 3, and compares the losses and every parameter after each iteration. This
    checks everything in the recipe that is not random: forward, backward (the gradient sum where the
    heads leave the shared trunk included), loss weights, weight decay, momentum and the schedule."""
    import re
    import subprocess
    import tempfile
    tasks = ["left", "right"] if task == "both" else [task]
    weight = 0.5 if task == "both" else 1.0
    with tempfile.TemporaryDirectory(prefix="mf_check_") as tmp:
        with open(os.path.join(data_dir, "train.txt")) as f:
            rows = [next(f) for _ in range(512)]
        with open(os.path.join(data_dir, "test.txt")) as f:
            test_rows = [next(f) for _ in range(500)]
        for name, lines in (("train", rows), ("test", test_rows)):
            with open(os.path.join(tmp, f"{name}.txt"), "w") as f:
                f.writelines(lines)
            subprocess.run([mtl_bin, "convert", os.path.join(tmp, f"{name}.txt"), data_dir, os.path.join(tmp, f"{name}_lmdb"),
                            "--gray", "--label-names", "left,right"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(ROOT, "examples", "multifashion", NET_FILES[task])) as f:
            net_txt = f.read()
        net_txt = net_txt.replace("data/multifashion/train_lmdb", os.path.join(tmp, "train_lmdb"))
        net_txt = net_txt.replace("data/multifashion/test_lmdb", os.path.join(tmp, "test_lmdb"))
        net_txt = net_txt.replace("shuffle: true", "shuffle: false")
        net_txt = re.sub(r"dropout_ratio: *[0-9.]+", "dropout_ratio: 0", net_txt)
        with open(os.path.join(tmp, "net.prototxt"), "w") as f:
            f.write(net_txt)
        with open(os.path.join(tmp, "solver.prototxt"), "w") as f:
            f.write(f'net: "net.prototxt"\ntype: "SGD"\nbase_lr: {BASE_LR}\nmomentum: {MOMENTUM}\n'
                    f'weight_decay: {WEIGHT_DECAY}\nlr_policy: "multistep"\nstepvalue: 3\ngamma: {GAMMA}\n'
                    f'max_iter: {iters}\ndisplay: 1\naverage_loss: 1\ntest_iter: 1\ntest_interval: 100000\n'
                    f'test_initialization: false\nsnapshot: 1\nsnapshot_prefix: "snap"\nrandom_seed: 1\n')
        torch.manual_seed(12345)
        net = MultiLeNet(tasks).train()
        net.drop2.p = 0.0
        net.head_dropout = 0.0
        layers = {"conv1": net.conv1, "conv2": net.conv2, "fc1": net.fc1}
        for t in tasks:
            layers[f"fc2_{t}"] = net.heads[t]["fc2"]
            layers[f"score_{t}"] = net.heads[t]["score"]
        write_mtlsnap(os.path.join(tmp, "init.mtlsnap"),
                      [(f"{n}/{k}", (m.weight if k == 0 else m.bias).detach().numpy()) for n, m in layers.items()
                       for k in (0, 1)])
        r = subprocess.run([mtl_bin, "train", "--solver", os.path.join(tmp, "solver.prototxt"), "--weights",
                            os.path.join(tmp, "init.mtlsnap"), "--log", os.path.join(tmp, "log.jsonl")],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"mtl train failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        with open(os.path.join(tmp, "log.jsonl")) as f:
            mtl_loss = {e["iter"]: e["iter_loss"] for e in map(json.loads, f)
                        if e.get("phase") == "train" and not e.get("final")}
        images = np.stack([read_grey(os.path.join(data_dir, line.split()[0])) for line in rows])
        x_all = torch.from_numpy(images).float().mul_(SCALE).unsqueeze(1)
        y_all = torch.tensor([[int(v) for v in line.split()[1:3]] for line in rows])
        params = list(net.parameters())
        hist = [torch.zeros_like(p) for p in params]
        worst_all = 0.0
        for it in range(iters):
            idx = torch.arange(it * TRAIN_BATCH, (it + 1) * TRAIN_BATCH) % len(rows)
            out = net(x_all[idx])
            loss = sum(weight * F.cross_entropy(out[t], y_all[idx, TASK_COLUMN[t]]) for t in tasks)
            for p in params:
                p.grad = None
            loss.backward()
            lr = BASE_LR * (GAMMA if it >= 3 else 1.0)
            with torch.no_grad():
                for p, h in zip(params, hist):
                    h.mul_(MOMENTUM).add_(p.grad.add(p, alpha=WEIGHT_DECAY), alpha=lr)
                    p.sub_(h)
            snap = read_mtlsnap_params(os.path.join(tmp, f"snap_iter_{it + 1}.mtlsnap"))
            worst = max(float(np.abs(snap[f"{n}/{k}"] - (m.weight if k == 0 else m.bias).detach().numpy()).max()
                              / (np.abs(snap[f"{n}/{k}"]).max() + 1e-12)) for n, m in layers.items() for k in (0, 1))
            worst_all = max(worst_all, worst)
            print(f"iter {it}: loss torch {float(loss):.7f} mtl {mtl_loss.get(it, float('nan')):.7f}; "
                  f"parameters after the update: largest difference {worst:.2e} (relative to each tensor's largest value)")
        ok = worst_all < 1e-4
        print(f"check against mtl, task {task}: {'agree' if ok else 'DIFFER'} (largest relative difference {worst_all:.2e})")
        return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=["both", "left", "right"], default="both")
    ap.add_argument("--seeds", default="1", help="comma-separated, e.g. 1,2,3")
    ap.add_argument("--iters", type=int, default=MAX_ITER)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--test-interval", type=int, default=TEST_INTERVAL, help="0: test at the end only")
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "multifashion"))
    ap.add_argument("--out", default=os.path.join(ROOT, "out", "multifashion"))
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ap.add_argument("--check-mtl", metavar="MTL", help="instead of training: check this script's recipe against "
                    "the mtl executable MTL (e.g. build/mtl) for --task, with dropout off; see check_against_mtl")
    args = ap.parse_args()
    if args.check_mtl:
        torch.set_num_threads(args.threads)
        sys.exit(0 if check_against_mtl(args.task, args.check_mtl, args.data) else 1)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    train = tuple(torch.from_numpy(a) for a in load_split(args.data, "train"))
    test = tuple(torch.from_numpy(a) for a in load_split(args.data, "test"))
    for seed in seeds:
        r = train_one(args.task, seed, args.iters, train, test, args.test_interval, log)
        path = os.path.join(args.out, f"torch_{args.task}_seed{seed}.json")
        with open(path, "w") as f:
            json.dump(r, f, indent=1)
        acc = " ".join(f"accuracy_{t} {v:.4f}" for t, v in r["accuracy"].items())
        print(f"torch task {args.task} seed {seed}: {acc}  {r['ms_per_iter']:.2f} ms/iter "
              f"(train {r['train_seconds']:.1f} s, {r['threads']} threads) -> {path}", flush=True)


if __name__ == "__main__":
    main()
