"""Exact counts of one nn.Linear / nn.Conv2d call for `model_cost`: dense and effective MACs of the forward and both
backward GEMMs from the zero patterns measured in the pass, and the layer's bit widths (`gemm_bits`)."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GEMMS = ("forward", "grad_input", "grad_weight")
FP32_BITS = {"forward": (32, 32), "grad_input": (32, 32), "grad_weight": (32, 32)}


def gemm_bits(module: nn.Module) -> dict[str, tuple[int, int]]:
    bits = getattr(module, "gemm_bits", None)
    if bits is None:
        return FP32_BITS
    try:
        out = {k: (int(bits[k][0]), int(bits[k][1])) for k in GEMMS}
    except (KeyError, TypeError, IndexError, ValueError):
        raise ValueError(f"{type(module).__name__}.gemm_bits must map each of {GEMMS} to (bits, bits), "
                         f"got {bits!r}") from None
    return out


def _padded_indicator(module: nn.Conv2d, x: Tensor) -> tuple[Tensor, Any]:
    """The input's nonzero indicator (float64) and the padding to convolve it with, as the layer pads it."""
    ind = (x != 0).to(torch.float64)
    if module.padding_mode != "zeros":
        return F.pad(ind, module._reversed_padding_repeated_twice, mode=module.padding_mode), 0
    return ind, module.padding


def count_forward(module: nn.Module, x: Tensor, out: Tensor) -> tuple[int, int, Any]:
    """(dense MACs, effective MACs, saved state for backward) of one call."""
    w_nz = module.weight.detach() != 0
    if isinstance(module, nn.Conv2d):
        per_output = module.weight[0].numel()  # in_channels/groups * kh * kw
        dense = out.numel() * per_output
        ind, pad = _padded_indicator(module, x.detach())
        eff = F.conv2d(ind, w_nz.to(torch.float64), None, module.stride, pad, module.dilation, module.groups).sum()
        return dense, int(round(float(eff))), (ind, pad)
    in_f = module.weight.shape[1]
    xf = x.detach().reshape(-1, in_f) != 0
    dense = xf.shape[0] * module.weight.numel()
    eff = (xf.sum(0, dtype=torch.float64) * w_nz.sum(0, dtype=torch.float64)).sum()
    return dense, int(round(float(eff))), xf


def count_backward(module: nn.Module, saved: Any, g: Tensor, need_input: bool, need_weight: bool
                    ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((dense, effective) grad_input MACs, (dense, effective) grad_weight MACs) of one call."""
    w = module.weight.detach()
    w_nz = w != 0
    mask = getattr(module, "weight_mask", None)
    keep = (mask != 0) if isinstance(mask, Tensor) and mask.shape == w.shape else torch.ones_like(w_nz)
    g_nz = g.detach() != 0
    gi = gw = (0, 0)
    if isinstance(module, nn.Conv2d):
        dense = g.numel() * w[0].numel()
        per_out_channel = g_nz.sum(dim=(0, 2, 3), dtype=torch.float64)  # nnz of grad_output per channel
        if need_input:
            gi = (dense, int(round(float((per_out_channel * w_nz.flatten(1).sum(1, dtype=torch.float64)).sum()))))
        if need_weight:
            ind, pad = saved
            pairs = torch.nn.grad.conv2d_weight(ind, w.shape, g_nz.to(torch.float64), module.stride, pad,
                                                module.dilation, module.groups)
            gw = (dense, int(round(float((pairs * keep).sum()))))
        return gi, gw
    out_f, in_f = w.shape
    gf = g_nz.reshape(-1, out_f)
    dense = gf.shape[0] * w.numel()
    if need_input:
        gi = (dense, int(round(float((gf.sum(0, dtype=torch.float64) * w_nz.sum(1, dtype=torch.float64)).sum()))))
    if need_weight:
        pairs = gf.to(torch.float64).T @ saved.to(torch.float64)
        gw = (dense, int(round(float((pairs * keep).sum()))))
    return gi, gw


def index_bits(fan_in: int) -> int:
    return max(1, math.ceil(math.log2(max(fan_in, 2))))
