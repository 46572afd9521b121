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
    if int(fan_in) < 1:
        raise ValueError(f"a sparse layer needs a fan-in >= 1 (in_features, or in_channels/groups * kernel size), "
                         f"got fan-in {fan_in}: a zero-size layer has no weights to make sparse")
    nnz = int(round((1.0 - sparsity) * fan_in))
    if nnz < 1:
        raise ValueError(f"sparsity={sparsity} leaves no nonzero weight for fan-in {fan_in}; "
                         f"use sparsity <= {1 - 0.5 / fan_in:.4f}")
    return nnz


def fixed_fan_in(shape: tuple[int, ...], sparsity: float, generator: torch.Generator | None = None) -> Tensor:
    """Each output unit (dim 0) gets exactly round((1 - sparsity) * fan_in) nonzeros, placed at random.

    `shape` is (out, fan_in...) as for Linear (out, in) or Conv2d (out, in/groups, kh, kw).
    """
    out, fan_in = _out_fan_in(shape)
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


def _out_fan_in(shape: tuple[int, ...]) -> tuple[int, int]:
    """(output units, fan-in) of a weight shaped (out, fan_in...), refusing zero-size weights with a clear error."""
    if len(shape) < 2:
        raise ValueError(f"a weight mask needs a shape (out, fan_in, ...), got {tuple(shape)}")
    out = int(shape[0])
    if out < 1:
        raise ValueError(f"a sparse layer needs at least one output unit, got weight shape {tuple(shape)}")
    fan_in = 1
    for s in shape[1:]:
        fan_in *= int(s)
    if fan_in < 1:
        raise ValueError(f"a sparse layer needs a fan-in >= 1, got weight shape {tuple(shape)}: a zero-size layer "
                         f"has no weights to make sparse")
    return out, fan_in


def keep_count(numel: int, sparsity: float) -> int:
    """Weights kept of `numel` at `sparsity`: round((1 - sparsity) * numel), at least 1."""
    check_fraction("sparsity", sparsity)
    if numel < 1:
        raise ValueError(f"cannot make a zero-size weight sparse (numel {numel})")
    return max(1, int(round((1.0 - sparsity) * numel)))


def magnitude(weight: Tensor, sparsity: float) -> Tensor:
    """Keep the round((1 - sparsity) * numel) largest |w| of one weight (ties: lower flat index)."""
    _out_fan_in(tuple(weight.shape))
    keep = keep_count(weight.numel(), sparsity)
    scores = weight.detach().abs().flatten().float()
    mask = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[torch.topk(scores, keep, sorted=False).indices] = True
    return mask.view(weight.shape)


def global_magnitude(weights: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """One |w| threshold over all the weights together (layers end at different sparsities; each keeps >= 1)."""
    if not weights:
        return {}
    flat = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights.values()])
    keep = keep_count(flat.numel(), sparsity)
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = {}, 0
    for name, w in weights.items():
        m = chosen[start:start + w.numel()].view(w.shape)
        if not m.any():   # a layer left with nothing would cut the network: keep its single largest weight
            m = magnitude(w, 1.0 - 1.0 / w.numel()).cpu()
        out[name] = m.to(w.device)
        start += w.numel()
    return out


def n_m(weight: Tensor, n: int, m: int) -> Tensor:
    """N:M structured sparsity: in every group of m consecutive inputs of each output unit keep the n largest |w|.

    The input dim (dim 1 for Linear (out, in); the flattened fan-in for Conv2d) must be divisible by m."""
    check_positive_int("n", n)
    check_positive_int("m", m)
    if n > m:
        raise ValueError(f"N:M sparsity needs n <= m, got n={n}, m={m}")
    out, fan_in = _out_fan_in(tuple(weight.shape))
    if fan_in % m:
        raise ValueError(f"N:M sparsity needs each unit's fan-in divisible by m; fan-in {fan_in} "
                         f"(weight {tuple(weight.shape)}), m={m}")
    groups = weight.detach().abs().float().reshape(out, fan_in // m, m)
    idx = torch.topk(groups, n, dim=-1, sorted=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.view(weight.shape)


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float, power: float = 1.0) -> dict[str, float]:
    """Erdos-Renyi-Kernel layer densities (Evci et al. 2020, RigL): layer density proportional to
    sum(shape) / prod(shape), scaled so the total kept count equals density * total; layers that would exceed
    density 1 are kept dense and the rest rescaled."""
    check_fraction("density", density, low_inclusive=False, high_inclusive=True)
    numel = {k: int(torch.tensor(s).prod()) for k, s in shapes.items()}
    raw = {k: (sum(s) / numel[k]) ** power for k, s in shapes.items()}
    dense: set[str] = set()
    total = sum(numel.values())
    while True:
        budget = density * total - sum(numel[k] for k in dense)
        rest = {k: raw[k] * numel[k] for k in shapes if k not in dense}
        if not rest:
            return {k: 1.0 for k in shapes}
        eps = budget / sum(rest.values())
        over = [k for k in rest if eps * raw[k] > 1.0]
        if not over:
            return {k: (1.0 if k in dense else eps * raw[k]) for k in shapes}
        dense.update(over)
