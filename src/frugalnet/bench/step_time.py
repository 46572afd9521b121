"""Side-by-side step timing: one training step (forward, backward, SGD update) of the same model in FP32 and under
each recipe, interleaved in one process (order rotated every round) so that machine load hits all alike; medians."""
from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalnet.lowbit.convert import quantize_
from frugalnet.lowbit.recipes import get_recipe


def step_time_ratios(build: Callable[[], nn.Module], x: Tensor, y: Tensor, recipes: Sequence[str],
                     repeats: int = 7, warmup: int = 2) -> dict[str, dict]:
    """{recipe: {"median_s", "ratio"}} where ratio = median step time / the plain FP32 model's median step time.

    "fp32" is always measured: the unconverted model (plain PyTorch), not the fp32 recipe's pass-through layers.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    base = build()
    names = ["fp32"] + [r for r in recipes if r != "fp32"]
    models = {r: copy.deepcopy(base) if r == "fp32" else quantize_(copy.deepcopy(base), get_recipe(r))
              for r in names}
    opts = {r: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for r, m in models.items()}
    times: dict[str, list[float]] = {r: [] for r in names}
    for rnd in range(warmup + repeats):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for r in order:
            model, opt = models[r], opts[r]
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if rnd >= warmup:
                times[r].append(dt)
    med = {r: statistics.median(v) for r, v in times.items()}
    return {r: {"median_s": med[r], "ratio": med[r] / med["fp32"]} for r in names}
