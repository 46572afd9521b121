"""Robust side-by-side timing on a shared machine: interleave the candidates, repeat, take medians."""
from __future__ import annotations

import glob
import os
import statistics
import time
from typing import Callable, Mapping

import numpy as np


def interleaved_samples(fns: Mapping[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
                        min_time: float = 0.0, max_seconds: float = 30.0, min_rounds: int = 3,
                        before: Callable[[], object] | None = None) -> dict[str, list[float]]:
    """Per function, the seconds per call of each round. A round times a block of calls of every function (the block
    grows until it lasts at least `min_time` seconds), in rotating order, so that load changes on a shared machine
    hit all candidates alike. Stops early, after at least `min_rounds` rounds, once `max_seconds` have passed.
    `before`, when given, runs untimed before every call (e.g. `cache_evictor`), and each call is timed alone
    (`min_time` does not apply).
    The one timer of the engine's compiler, its speedup figures and `frugalnet bench`."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    inner = {n: 1 for n in names}
    if min_time > 0 and before is None:
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
            if before is not None:
                before()
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
                        min_time: float = 0.0, max_seconds: float = 30.0,
                        before: Callable[[], object] | None = None) -> dict[str, float]:
    """Fastest round's seconds per call of each function (interleaved as above). For *choosing* between variants:
    other processes only ever add time, so the fastest round is the estimate least moved by load, where the
    median flipped plan choices between compiles on a busy machine. Reports use the medians."""
    got = interleaved_samples(fns, repeats, warmup, min_time, max_seconds, min_rounds=3, before=before)
    return {n: min(v) for n, v in got.items()}



def last_level_cache_bytes(default: int = 32 << 20) -> int:
    """Size of CPU 0's last-level cache from Linux sysfs (`default` where it cannot be read)."""
    best = (0, default)
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            level = int(open(os.path.join(d, "level")).read())
            text = open(os.path.join(d, "size")).read().strip().upper()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in "KMG" else text
        if digits.isdigit() and level >= best[0]:
            best = (level, int(digits) * mult)
    return best[1]


def cache_evictor(nbytes: int | None = None) -> Callable[[], float]:
    """A function that reads `nbytes` (default 1.5x the last-level cache) of its own memory, so that what a timed
    call reads next comes from DRAM, as the weights of a model larger than the caches do when the whole model runs.
    Read-only, so the evicted lines are clean and cost the next call nothing to write back."""
    n = int(nbytes if nbytes is not None else 1.5 * last_level_cache_bytes()) // 8
    buf = np.ones(max(n, 1), np.float64)
    return lambda: float(buf.sum())
