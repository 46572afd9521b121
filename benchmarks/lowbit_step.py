"""Step-time ratio of simulated low-bit training against plain FP32: the MNIST CNN (CNN-2), batch 128.

    python benchmarks/lowbit_step.py [--recipes ibm4 mxfp4 nvfp4] [--repeats 15] [--threads 1] [--channels 32 64]

One process, every recipe's model built from the same FP32 weights, steps interleaved (order rotated each round),
medians reported; the issue's bar is ratio <= 3. Set --threads to compare at a fixed torch thread count (on a shared
machine 1 thread gives steadier numbers).
"""
from __future__ import annotations

import argparse

import torch

from frugalnet.data import load
from frugalnet.bench.step_time import step_time_ratios
from frugalnet.models import dense_cnn2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["ibm4", "mxfp4", "nvfp4"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--channels", type=int, nargs=2, default=[16, 32], help="CNN-2 conv widths (study default)")
    p.add_argument("--hidden", type=int, default=128)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = load("mnist-5k")
    torch.manual_seed(0)
    idx = torch.randperm(len(bundle.train))[:args.batch]
    x, y = bundle.normalize(bundle.train.x[idx]), bundle.train.y[idx]
    res = step_time_ratios(lambda: dense_cnn2(channels=tuple(args.channels), hidden=args.hidden), x, y,
                           args.recipes, repeats=args.repeats)
    print(f"CNN-2 channels={tuple(args.channels)} hidden={args.hidden} batch={args.batch} "
          f"threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"{'recipe':8s} {'median ms':>10s} {'ratio':>6s}")
    for r, v in res.items():
        print(f"{r:8s} {1e3 * v['median_s']:10.1f} {v['ratio']:6.2f}")


if __name__ == "__main__":
    main()
