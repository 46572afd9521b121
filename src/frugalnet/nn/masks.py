"""Mask builders for sparse weights: pure functions of shapes and a seed.

A mask is a bool tensor shaped like the weight; True marks a weight that may be nonzero.
"""
from __future__ import annotations

import torch
from torch import Tensor

from frugalnet.utils.validation import check_fraction, check_positive_int


def nonzeros_per_unit(fan_in: int, sparsity: float) -> int:
    """round((1 - sparsity) * fan_in): the number of nonzero incoming weights each output unit keeps."""
    check_fraction("sparsity", sparsity)
    nnz = int(round((1.0 - sparsity) * fan_in))
    if nnz < 1:
        raise ValueError(f"sparsity={sparsity} leaves no nonzero weight for fan-in {fan_in}; "
                         f"use sparsity <= {1 - 0.5 / fan_in:.4f}")
    return nnz


def fixed_fan_in(shape: tuple[int, ...], sparsity: float, generator: torch.Generator | None = None) -> Tensor:
    """Each output unit (dim 0) gets exactly round((1 - sparsity) * fan_in) nonzeros, placed at random.

    `shape` is (out, fan_in...) as for Linear (out, in) or Conv2d (out, in/groups, kh, kw).
    """
    out = check_positive_int("out_features", int(shape[0]))
    fan_in = 1
    for s in shape[1:]:
        fan_in *= int(s)
    nnz = nonzeros_per_unit(fan_in, sparsity)
    scores = torch.rand(out, fan_in, generator=generator)
    keep = scores.argsort(dim=1)[:, :nnz]
    mask = torch.zeros(out, fan_in, dtype=torch.bool)
    mask.scatter_(1, keep, True)
    return mask.view(*shape)


def complementary(shape: tuple[int, ...], n: int, generator: torch.Generator | None = None) -> Tensor:
    """N disjoint masks that partition a weight of `shape`: returns bool (n, *shape) whose sum over dim 0 is all ones.

    Complementary sparsity (Hunter, Spracklen & Ahmad 2021): each of the n masks keeps 1/n of every output unit's
    fan-in (sparsity 1 - 1/n), and because they never overlap the n sparse kernels pack into one dense kernel.
    Every output unit's fan-in must be divisible by n.
    """
    check_positive_int("n", n)
    out = int(shape[0])
    fan_in = 1
    for s in shape[1:]:
        fan_in *= int(s)
    if fan_in % n:
        raise ValueError(f"complementary masks need fan-in divisible by n; fan-in {fan_in}, n={n}")
    owner = torch.arange(fan_in).remainder(n).repeat(out, 1)
    perm = torch.rand(out, fan_in, generator=generator).argsort(dim=1)
    owner = torch.gather(owner, 1, perm)
    masks = torch.stack([owner == i for i in range(n)])
    return masks.view(n, *shape)
