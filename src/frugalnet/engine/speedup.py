"""measure_speedup: how much faster the compiled engine runs a model than PyTorch does, measured side by side."""
from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from frugalnet.engine.compiler import compile as compile_engine, resize_batch
from frugalnet.engine.timing import interleaved_medians


def outputs_match(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> tuple[bool, float]:
    """(all close at rtol with atol = rtol/10 x max|expected|, max abs difference)."""
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    diff = float((actual - expected).abs().max()) if expected.numel() else 0.0
    return bool(torch.allclose(actual, expected, rtol=rtol, atol=rtol * 0.1 * scale)), diff


def measure_speedup(model: nn.Module, example_input: torch.Tensor, batch_sizes: Sequence[int] = (1, 64),
                    dense_model: nn.Module | None = None, threads: int | None = 2, repeats: int = 15,
                    max_seconds: float = 20.0) -> dict:
    """Compile `model` and time it against PyTorch running the same model (its masked weights computed densely),
    and against `dense_model` (a dense counterpart of the same shapes) when given.

    Returns JSON-able figures: per batch size the median seconds of each, speedup = PyTorch / engine, whether the
    outputs match (rtol 1e-4) and the largest difference; plus the compile time and the engine's layer choices.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    model.eval()
    if dense_model is not None:
        dense_model.eval()
    t0 = time.perf_counter()
    engine = compile_engine(model, example_input, batch_sizes=tuple(batch_sizes), threads=threads)
    compile_s = time.perf_counter() - t0
    result: dict = {"threads": torch.get_num_threads(), "compile_s": compile_s, "batches": {}}
    with torch.no_grad():
        for bs in batch_sizes:
            x = resize_batch(example_input, bs)
            match, diff = outputs_match(engine(x), model(x))
            fns = {"engine": lambda: engine(x), "torch": lambda: model(x)}
            if dense_model is not None:
                fns["torch_dense_model"] = lambda: dense_model(x)
            secs = interleaved_medians(fns, repeats=repeats, min_time=0.01, max_seconds=max_seconds)
            entry = {"engine_s": secs["engine"], "torch_s": secs["torch"],
                     "speedup": secs["torch"] / secs["engine"], "outputs_match": match, "max_abs_diff": diff,
                     "layers": engine.summary(bs)}
            if dense_model is not None:
                entry["torch_dense_model_s"] = secs["torch_dense_model"]
                entry["speedup_vs_dense_model"] = secs["torch_dense_model"] / secs["engine"]
            result["batches"][str(bs)] = entry
    result["outputs_match"] = all(e["outputs_match"] for e in result["batches"].values())
    return result
