"""Groups of layers trained with complementary (disjoint, partitioning) masks, and their packing for the kernels.

`complementary_linears(in, out, n)` / `complementary_conv2ds(...)` make N SparseLinear / SparseConv2d layers whose
masks come from one `masks.complementary` partition: each keeps 1/n of every unit's fan-in, the n masks never
overlap and together cover the whole weight. Trained as usual (each layer enforces its own mask), they pack into
one dense weight plus an owner map (`pack_group`), which the complementary kernels multiply by a sparse input once,
routing each product to its own layer's output. `ComplementaryGroup` applies all N to the same input and stacks
the outputs on a new dim 1; the inference engine runs it with the packed kernels.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from frugalnet.nn.sparse import SparseConv2d, SparseLinear
from frugalnet.nn.masks import complementary
from frugalnet.utils.seeding import make_generator
from frugalnet.utils.validation import check_positive_int


def complementary_linears(in_features: int, out_features: int, n: int, bias: bool = True,
                          seed: int = 0) -> list[SparseLinear]:
    """N SparseLinear(in, out) whose masks partition the (out, in) weight (in_features divisible by n)."""
    check_positive_int("n", n)
    masks = complementary((out_features, in_features), n, make_generator(seed))
    return [SparseLinear(in_features, out_features, 1.0 - 1.0 / n, bias=bias, mask=masks[i], seed=seed + i)
            for i in range(n)]


def complementary_conv2ds(in_channels: int, out_channels: int, kernel_size: int, n: int, stride: int = 1,
                          padding: int = 0, bias: bool = True, seed: int = 0) -> list[SparseConv2d]:
    """N SparseConv2d whose masks partition the (out, in, k, k) weight (in_channels * k * k divisible by n)."""
    check_positive_int("n", n)
    masks = complementary((out_channels, in_channels, kernel_size, kernel_size), n, make_generator(seed))
    return [SparseConv2d(in_channels, out_channels, kernel_size, 1.0 - 1.0 / n, stride=stride, padding=padding,
                         bias=bias, mask=masks[i], seed=seed + i) for i in range(n)]


def check_complementary(layers: list[nn.Module]) -> None:
    """Raise ValueError unless the layers share one shape and their masks are disjoint."""
    if not layers:
        raise ValueError("a complementary group needs at least one layer")
    shapes = {tuple(l.weight.shape) for l in layers}
    if len(shapes) != 1:
        raise ValueError(f"complementary layers must share one weight shape, got {sorted(shapes)}")
    masks = torch.stack([getattr(l, "weight_mask", l.weight != 0).bool() for l in layers])
    if (masks.sum(0) > 1).any():
        raise ValueError("complementary layers' masks overlap: each weight may belong to one layer only")


def pack_group(layers: list[nn.Module]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(packed dense weight, owner int8 map, biases (N, out)) of N complementary layers."""
    from frugalnet.kernels.complementary import pack

    check_complementary(layers)
    with torch.no_grad():
        weights = torch.stack([l.weight.detach().float() * l.weight_mask for l in layers])
        masks = torch.stack([l.weight_mask.bool() for l in layers])
        biases = torch.stack([l.bias.detach().float() if l.bias is not None else torch.zeros(l.weight.shape[0])
                              for l in layers])
    dense, owner = pack(weights.numpy(), masks.numpy())
    return dense, owner, biases.numpy().astype(np.float32)


class ComplementaryGroup(nn.Module):
    """Applies N complementary layers (all SparseLinear or all SparseConv2d) to one input; output (B, N, ...)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        kinds = {type(l) for l in layers}
        if not kinds <= {SparseLinear} and not kinds <= {SparseConv2d}:
            raise ValueError(f"ComplementaryGroup takes SparseLinear or SparseConv2d layers, got {kinds}")
        check_complementary(layers)
        self.layers = nn.ModuleList(layers)

    @property
    def n(self) -> int:
        return len(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([layer(x) for layer in self.layers], dim=1)
