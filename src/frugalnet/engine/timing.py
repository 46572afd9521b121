"""Robust side-by-side timing on a shared machine: interleave the candidates, repeat, take medians."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping


def interleaved_medians(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                        min_time: float = 0.0, max_seconds: float = 30.0,
                        samples: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, measured in rounds that call every function once (in rotating
    order), so that load changes on a shared machine hit all candidates alike.

    Each round times a block of calls per function; the block grows until it lasts at least `min_time` seconds.
    Stops early (with at least 3 rounds) once `max_seconds` have passed. `samples`, when given, receives every
    round's seconds per call of each function (for the spread).
    """
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
    if samples is None:
        samples = {}
    samples.update({n: [] for n in names})
    start = time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            f, k = fns[n], inner[n]
            t0 = time.perf_counter()
            for _ in range(k):
                f()
            samples[n].append((time.perf_counter() - t0) / k)
        if r >= 2 and time.perf_counter() - start > max_seconds:
            break
    return {n: statistics.median(v) for n, v in samples.items()}
