"""Reproducible seeds: the same seed gives the same numbers on the same machine."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


MASK_SALT = 0x6D61736B   # "mask"


def mask_generator(seed: int) -> torch.Generator:
    """A generator for random masks, on a stream of its own: seeded from (seed, MASK_SALT), so a mask drawn with the
    same seed as `torch.manual_seed(seed)` is not the same random stream as the weights' initialisation (with the
    shared stream, the kept weights held 44% of a layer's squared norm at 75% sparsity instead of 25%, and a
    "random" mask baseline was not random with respect to the weights)."""
    state = np.random.SeedSequence([int(seed) % (1 << 63), MASK_SALT]).generate_state(1, np.uint64)[0]
    return make_generator(int(state >> np.uint64(1)))


def make_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation that depends only on (seed, epoch), identical on every rank."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen)
