#!/usr/bin/python3
"""PyTorch side of the MultiLeNet benchmark: the same net as bench/multilenet.prototxt (the
MGDA MultiLeNet: shared LeNet trunk, two 50-50-10 heads), one training iteration timed.

Usage: multilenet_torch.py [--threads N] [--iters N] [--warmup N] [--batch N] [--layers]
Prints one line per measurement: "<name> <median ms> <min ms>". --layers adds the per-layer
forward+backward times of the convolution, pooling and inner product shapes."""
import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class MultiLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc = nn.Linear(320, 50)
        self.heads = nn.ModuleList([nn.ModuleDict({"fc1": nn.Linear(50, 50), "fc2": nn.Linear(50, 10)})
                                    for _ in range(2)])

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = F.relu(self.fc(x.view(-1, 320)))
        outs = []
        for h in self.heads:
            y = F.relu(h["fc1"](x))
            y = F.dropout(y, 0.5, self.training)
            outs.append(h["fc2"](y))
        return outs


def timed(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--layers", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    n = args.batch

    net = MultiLeNet().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(n, 1, 28, 28)
    labels = torch.randint(0, 10, (n, 2))

    def iteration():
        opt.zero_grad()
        outs = net(x)
        loss = 0.5 * F.cross_entropy(outs[0], labels[:, 0]) + 0.5 * F.cross_entropy(outs[1], labels[:, 1])
        loss.backward()
        opt.step()

    med, best = timed(iteration, args.iters, args.warmup)
    print(f"iteration {med:.3f} {best:.3f}")

    if args.layers:
        def layer(name, make_input, op):
            inp = make_input().requires_grad_(True)
            out = op(inp)
            g = torch.rand_like(out)

            def step():
                inp.grad = None
                for p in params:
                    p.grad = None
                op(inp).backward(g)
            med, best = timed(step, args.iters, args.warmup)
            print(f"{name} {med:.3f} {best:.3f}")

        conv1 = nn.Conv2d(1, 10, 5)
        conv2 = nn.Conv2d(10, 20, 5)
        fc = nn.Linear(320, 50)
        # conv1 sees the data: no bottom gradient, as in the net
        params = list(conv1.parameters())
        x1 = torch.rand(n, 1, 28, 28)

        def conv1_step():
            for p in params:
                p.grad = None
            conv1(x1).backward(g1)
        g1 = torch.rand(n, 10, 24, 24)
        med, best = timed(conv1_step, args.iters, args.warmup)
        print(f"conv1 {med:.3f} {best:.3f}")
        params = list(conv2.parameters())
        layer("conv2", lambda: torch.rand(n, 10, 12, 12), conv2)
        params = []
        layer("pool1", lambda: torch.rand(n, 10, 24, 24), lambda t: F.max_pool2d(t, 2))
        layer("pool2", lambda: torch.rand(n, 20, 8, 8), lambda t: F.max_pool2d(t, 2))
        params = list(fc.parameters())
        layer("fc", lambda: torch.rand(n, 320), fc)


if __name__ == "__main__":
    main()
