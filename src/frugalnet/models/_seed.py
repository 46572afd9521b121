"""Build a model's parameters from a seed without touching torch's global random state."""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def build_seeded(seed: int | None, build: Callable[[], T]) -> T:
    """Run `build()` with torch's CPU generator seeded by `seed`, then restore the caller's random state.

    The same seed gives the same weights on the same machine; None uses (and advances) the global generator.
    """
    if seed is None:
        return build()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
