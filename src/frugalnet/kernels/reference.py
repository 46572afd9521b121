"""Plain PyTorch references the kernels are tested against (the definitions of what each kernel computes)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return F.linear(x, weight, bias)


def linear_active(aidx: Tensor, aval: Tensor, n_in: int, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The input given by its active entries (B, K) -> dense, then a Linear."""
    x = torch.zeros(aidx.shape[0], n_in, dtype=aval.dtype).scatter_(1, aidx.long(), aval)
    return F.linear(x, weight, bias)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def complementary_linear(x: Tensor, weights: Tensor, biases: Tensor) -> Tensor:
    """weights (N, out, in), biases (N, out) -> (B, N, out): each kernel applied to the same input."""
    return torch.einsum("bi,noi->bno", x, weights) + biases.unsqueeze(0)


def complementary_conv2d(x: Tensor, weights: Tensor, biases: Tensor, stride=1, padding=0, dilation=1) -> Tensor:
    """weights (N, Cout, Cin, kh, kw) -> (B, N, Cout, OH, OW)."""
    outs = [F.conv2d(x, weights[n], biases[n], stride, padding, dilation) for n in range(weights.shape[0])]
    return torch.stack(outs, dim=1)


def kwta(x: Tensor, k: int, boost: Tensor | None = None) -> Tensor:
    """Dense k-WTA output x * mask: per row the k largest scores (x, or x * boost) win, ranked as torch.sort ranks
    them (NaN above +inf), ties to the lower index (a stable descending sort). This is the definition that
    frugalnet.nn.kwinners.topk_mask computes fast and the numba k-WTA kernel reproduces."""
    scores = x if boost is None else x * boost
    k = min(int(k), scores.shape[-1])
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, True)
    return x * mask
