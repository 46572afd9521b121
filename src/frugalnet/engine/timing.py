"""Robust side-by-side timing on a shared machine: interleave the candidates, repeat, take medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def interleaved_samples(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                        min_time: float = 0.0, max_seconds: float = 30.0, min_rounds: int = 3) -> dict[str, list[float]]:
    """Per function, the seconds per call of each round. A round times a block of calls of every function (the block
    grows until it lasts at least `min_time` seconds), in rotating order, so that load changes on a shared machine
    hit all candidates alike. Stops early, after at least `min_rounds` rounds, once `max_seconds` have passed.
    The one timer of the engine's compiler, its speedup figures and `frugalnet bench`."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    inner = {n: 1 for n in names}
    if min_time > 0:
        for n in names:
            while True:
                t0 = time.perf_counter()
                for _ in range(inner[n]):
                    fns[n]()
                if time.perf_counter() - t0 >= min_time or inner[n] >= 1 << 14:
                    break
                inner[n] *= 2
    samples: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(repeats):
        for n in names[r % len(names):] + names[:r % len(names)]:
            f, k = fns[n], inner[n]
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            samples[n].append((time.perf_counter() - t0) / k)
        if r >= min(repeats, min_rounds) - 1 and time.perf_counter() - start > max_seconds:
            break
    return samples


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                        min_time: float = 0.0, max_seconds: float = 30.0,
                        samples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, timed by `interleaved_samples` (at least 3 rounds). `samples`,
    when given, receives every round's seconds per call of each function (for the spread)."""
    got = interleaved_samples(fns, repeats, warmup, min_time, max_seconds, min_rounds=3)
    if samples is not None:
        samples.update(got)
    return {n: statistics.median(v) for n, v in got.items()}


def interleaved_fastest(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                        min_time: float = 0.0, max_seconds: float = 30.0) -> dict[str, float]:
    """Fastest round's seconds per call of each function (interleaved as above). For *choosing* between variants:
    other processes only ever add time, so the fastest round is the estimate least moved by load, where the
    median flipped plan choices between compiles on a busy machine. Reports use the medians."""
    got = interleaved_samples(fns, repeats, warmup, min_time, max_seconds, min_rounds=3)
    return {n: min(v) for n, v in got.items()}

