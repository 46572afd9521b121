"""One-shot magnitude pruning for the bench's model cases (a small local helper: frugalnet.sparsity is getting the
full pruning API, and the bench will switch to it then).

`magnitude_prune_(model, sparsity, filter_fn)` zeroes the smallest-magnitude `sparsity` fraction of each selected
layer's weights (per layer, not global) and swaps the layer for a SparseLinear / SparseConv2d that holds that mask,
so any tool that looks for frugalnet sparse layers (the engine, the cost model) sees it. Weights kept are unchanged.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from frugalnet.nn.sparse import SparseConv2d, SparseLinear
from frugalnet.utils.validation import check_fraction

FilterFn = Callable[[str, nn.Module], bool]


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask keeping the round((1 - sparsity) * numel) largest-magnitude weights (ties to the lower index)."""
    check_fraction("sparsity", sparsity)
    flat = weight.detach().abs().flatten()
    keep = int(round((1.0 - sparsity) * flat.numel()))
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if keep > 0:
        order = torch.sort(flat, descending=True, stable=True).indices[:keep]
        mask[order] = True
    return mask.view_as(weight)


def _sparse_copy(layer: nn.Module, mask: torch.Tensor) -> nn.Module:
    sparsity = 1.0 - float(mask.float().mean())
    if isinstance(layer, nn.Linear):
        new = SparseLinear(layer.in_features, layer.out_features, sparsity, bias=layer.bias is not None, mask=mask)
    else:
        new = SparseConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, sparsity, stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                           bias=layer.bias is not None, padding_mode=layer.padding_mode, mask=mask)
    with torch.no_grad():
        new.weight.copy_(layer.weight * mask)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new.train(layer.training)


def magnitude_prune_(model: nn.Module, sparsity: float, filter_fn: FilterFn | None = None) -> nn.Module:
    """Prune every nn.Linear / nn.Conv2d that `filter_fn(qualified_name, module)` accepts (all when None) to
    `sparsity` by weight magnitude, in place; returns the model. Layers already sparse are re-masked too."""
    check_fraction("sparsity", sparsity)
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, (nn.Linear, nn.Conv2d)) and (filter_fn is None or filter_fn(name, m))]
    for name, layer in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, _sparse_copy(layer, magnitude_mask(layer.weight, sparsity)))
    return model
