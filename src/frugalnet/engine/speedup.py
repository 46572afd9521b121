"""measure_speedup: how much faster the compiled engine runs a model than PyTorch does, measured side by side.

On a shared machine one timing can be off by orders of magnitude (a run of the demo once reported 354x where another
reported 2.64x), so every figure here is a median over interleaved rounds *with its spread*: each round times every
candidate once (order rotated), each round gives one ratio, and the report carries the median ratio, its quartiles,
min and max, and a flag when the interquartile range is wide compared with the median.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from frugalnet.engine.compiler import compile as compile_engine, resize_batch
from frugalnet.engine.timing import interleaved_samples

# Interquartile range / median above which a ratio is flagged as unreliable ("wide spread").
WIDE_SPREAD = 0.25


def outputs_match(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> tuple[bool, float]:
    """(all close at rtol with atol = rtol/10 x max|expected|, max abs difference)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    diff = float((actual - expected).abs().max()) if expected.numel() else 0.0
    return bool(torch.allclose(actual, expected, rtol=rtol, atol=rtol * 0.1 * scale)), diff


def spread(values: Sequence[float], wide: float = WIDE_SPREAD) -> dict:
    """Median, quartiles, min, max of a sample; `relative_iqr` = IQR / median; `wide` when that exceeds `wide`."""
    if not values:
        raise ValueError("spread needs at least one value")
    v = sorted(float(x) for x in values)
    med = statistics.median(v)
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1 = q3 = v[0]
    rel = (q3 - q1) / med if med > 0 else float("inf")
    return {"median": med, "q1": q1, "q3": q3, "min": v[0], "max": v[-1], "rounds": len(v),
            "relative_iqr": rel, "wide": bool(rel > wide)}


def interleaved_rounds(fns: Mapping[str, Callable[[], object]], repeats: int = 15, warmup: int = 1,
                       min_time: float = 0.01, max_seconds: float = 20.0) -> dict[str, list[float]]:
    """Seconds per call of each function, one sample per interleaved round (`timing.interleaved_samples`), with at
    least 5 rounds before `max_seconds` can stop it."""
    return interleaved_samples(fns, repeats, warmup, min_time, max_seconds, min_rounds=5)


def ratio_spread(numerator: Sequence[float], denominator: Sequence[float], wide: float = WIDE_SPREAD) -> dict:
    """Spread of the per-round ratios numerator[i] / denominator[i] (rounds are paired: same load)."""
    return spread([a / b for a, b in zip(numerator, denominator)], wide)


def measure_speedup(model: nn.Module, example_input: torch.Tensor, batch_sizes: Sequence[int] = (1, 64),
                    dense_model: nn.Module | None = None, threads: int | None = 2, repeats: int = 15,
                    max_seconds: float = 20.0, wide: float = WIDE_SPREAD) -> dict:
    """Compile `model` and time it against PyTorch running the same model (its masked weights computed densely),
    and against `dense_model` (a dense counterpart of the same shapes) when given.

    Returns JSON-able figures: per batch size the median seconds of each, speedup = PyTorch median / engine median
    with the spread of the per-round ratios (`speedup_spread`: median, quartiles, min, max, rounds, `wide` when
    IQR / median > `wide`), whether the outputs match (rtol 1e-4) and the largest difference; the compile time and the engine's
    layer choices; `wide_spread` when any ratio's spread is wide.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    model.eval()
    if dense_model is not None:
        dense_model.eval()
    t0 = time.perf_counter()
    # torch.export specialises a batch of 1, so the engine is planned from a batch of at least 2 samples
    example = example_input if example_input.shape[0] >= 2 else resize_batch(example_input, 2)
    engine = compile_engine(model, example, batch_sizes=tuple(batch_sizes), threads=threads)
    compile_s = time.perf_counter() - t0
    result: dict = {"threads": torch.get_num_threads(), "compile_s": compile_s, "wide_threshold": wide,
                    "batches": {}}
    with torch.no_grad():
        for bs in batch_sizes:
            x = resize_batch(example_input, bs)
            match, diff = outputs_match(engine(x), model(x))
            fns = {"engine": lambda: engine(x), "torch": lambda: model(x)}
            if dense_model is not None:
                fns["torch_dense_model"] = lambda: dense_model(x)
            secs = interleaved_rounds(fns, repeats=repeats, min_time=0.01, max_seconds=max_seconds)
            med = {n: statistics.median(v) for n, v in secs.items()}
            sp = ratio_spread(secs["torch"], secs["engine"], wide)
            entry = {"engine_s": med["engine"], "torch_s": med["torch"], "speedup": med["torch"] / med["engine"],
                     "speedup_spread": sp, "outputs_match": match, "max_abs_diff": diff,
                     "layers": engine.summary(bs)}
            if dense_model is not None:
                sd = ratio_spread(secs["torch_dense_model"], secs["engine"], wide)
                entry["torch_dense_model_s"] = med["torch_dense_model"]
                entry["speedup_vs_dense_model"] = med["torch_dense_model"] / med["engine"]
                entry["speedup_vs_dense_model_spread"] = sd
            result["batches"][str(bs)] = entry
    result["outputs_match"] = all(e["outputs_match"] for e in result["batches"].values())
    result["wide_spread"] = any(v["wide"] for e in result["batches"].values()
                                for k, v in e.items() if k.endswith("_spread"))
    return result
