"""The noise of Ahmad & Scheinkman 2019: a random fraction of each input's pixels set to mean + 2 std."""
from __future__ import annotations

import torch
from torch import Tensor

from frugalnet.utils.validation import check_fraction


def add_pixel_noise(x: Tensor, fraction: float, value: float, generator: torch.Generator | None = None) -> Tensor:
    """Return a copy of x (N, ...) in which round(fraction * pixels) random pixels per sample are set to `value`.

    `value` is the data set's mean + 2 std in raw units (e.g. 0.1307 + 2 * 0.3081 for MNIST in [0, 1]).
    """
    check_fraction("noise fraction", fraction, high_inclusive=True)
    flat = x.reshape(len(x), -1).clone()
    n_pix = flat.shape[1]
    count = int(round(fraction * n_pix))
    if count:
        order = torch.rand(flat.shape, generator=generator).argsort(dim=1)[:, :count]
        flat.scatter_(1, order, value)
    return flat.view_as(x)
