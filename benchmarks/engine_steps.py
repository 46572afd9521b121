"""Where an engine's time goes: the sparse CNN-2 of `frugalnet bench` compiled for batch 1 and 64, then the whole
engine, PyTorch dense, and every bound step on its own (each on the input it sees in the chain), timed interleaved
in one run. The steps' sum against the engine's time shows what the chain itself costs (cache misses, hand-offs).

    python benchmarks/engine_steps.py                 # speech-commands size (1x32x32)
    python benchmarks/engine_steps.py --size 28 --repeats 5
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from frugalnet.engine.act import Act
from frugalnet.bench.sparse_inference import _cnn_input
from frugalnet.engine.compiler import compile as compile_engine
from frugalnet.engine.timing import interleaved_medians
from frugalnet.models import dense_cnn2, sparse_cnn2
from frugalnet.nn.kwinners import KWinners, KWinners2d


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32, help="input height = width (32: Speech Commands, 28: MNIST)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.size < 12:
        raise SystemExit(f"--size must be at least 12 (two 5x5 convs and pools), got {args.size}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = (1, args.size, args.size)
    model = sparse_cnn2(shape, num_classes=12, seed=args.seed).eval()
    for m in model.modules():   # as in `frugalnet bench`: nonuniform duty cycles, so boosting matters
        if isinstance(m, (KWinners, KWinners2d)):
            m.duty_cycle.copy_(torch.rand(m.duty_cycle.shape, generator=torch.Generator().manual_seed(7)) * 0.3)
    dense = dense_cnn2(shape, num_classes=12).eval()
    x64 = _cnn_input(shape, 64, np.random.default_rng(args.seed + 1))
    engine = compile_engine(model, x64, batch_sizes=(1, 64), threads=args.threads, quiet=False)
    for batch in (1, 64):
        x = x64[:batch].contiguous()
        bound, step_shape = [], tuple(x.shape)
        for step, variant in zip(engine.steps, engine.plans[batch]):   # the callables the engine runs
            bound.append(step.bind(variant, step_shape))
            step_shape = step.out_shape(step_shape)
        acts = [Act(tuple(x.shape), dense=x.numpy())]
        for f in bound:
            acts.append(f(acts[-1].fresh()))
        fns = {"torch dense": lambda: dense(x), "engine": lambda: engine(x)}
        for i, (f, step) in enumerate(zip(bound, engine.steps)):
            fns[f"{step.name} [{engine.plans[batch][i]}]"] = (lambda f=f, a=acts[i]: f(a.fresh()))
        with torch.no_grad():
            secs = interleaved_medians(fns, repeats=args.repeats, min_time=0.05)
        steps_total = sum(v for k, v in secs.items() if k not in ("torch dense", "engine"))
        print(f"\nbatch {batch}: engine {secs['engine'] * 1e6:.0f} us, PyTorch dense "
              f"{secs['torch dense'] * 1e6:.0f} us ({secs['torch dense'] / secs['engine']:.2f}x); steps alone sum to "
              f"{steps_total * 1e6:.0f} us")
        for k, v in secs.items():
            if k not in ("torch dense", "engine"):
                print(f"  {k:32s} {v * 1e6:9.1f} us  {v / secs['engine']:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
