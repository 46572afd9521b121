"""CNN-2 of Ahmad & Scheinkman 2019: two 5x5 conv layers with 2x2 max-pooling, a hidden layer, a linear output.

Dense:  conv(32) -> pool -> ReLU -> conv(64) -> pool -> ReLU -> flatten -> linear(700) -> ReLU -> linear(classes)
Sparse: the same with k-WTA in place of every ReLU and sparse weights:
        conv1 dense weights, 9.5% of units on; conv2 50% weight sparsity, 12.5% on (Numenta's GSC settings);
        hidden 700 units with 30% nonzero weights and 14.3% on; boost strength 1.5, factor 0.85, k-inference 1.5.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from frugalnet.nn.kwinners import KWinners, KWinners2d
from frugalnet.nn.sparse import SparseConv2d, SparseLinear


def cnn2_output_size(input_shape: Sequence[int], kernel_size: int = 5) -> tuple[int, int]:
    """Spatial size after conv-pool-conv-pool (valid convs, 2x2 pools)."""
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    h, w = input_shape[1:]
    for _ in range(2):
        h, w = (h - kernel_size + 1) // 2, (w - kernel_size + 1) // 2
    if h < 1 or w < 1:
        raise ValueError(f"input {tuple(input_shape)} is too small for CNN-2 with {kernel_size}x{kernel_size} kernels")
    return h, w


def dense_cnn2(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, channels: Sequence[int] = (32, 64),
               hidden: int = 700, kernel_size: int = 5) -> nn.Sequential:
    h, w = cnn2_output_size(input_shape, kernel_size)
    c1, c2 = channels
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(input_shape[0], c1, kernel_size)), ("pool1", nn.MaxPool2d(2)), ("act1", nn.ReLU()),
        ("conv2", nn.Conv2d(c1, c2, kernel_size)), ("pool2", nn.MaxPool2d(2)), ("act2", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c2 * h * w, hidden)), ("act3", nn.ReLU()),
        ("fc_out", nn.Linear(hidden, num_classes)),
    ]))


def sparse_cnn2(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, channels: Sequence[int] = (32, 64),
                hidden: int = 700, kernel_size: int = 5, conv_percent_on: Sequence[float] = (0.095, 0.125),
                conv_weight_sparsity: Sequence[float] = (0.0, 0.5), hidden_percent_on: float = 0.143,
                hidden_weight_sparsity: float = 0.7, boost_strength: float = 1.5,
                boost_strength_factor: float = 0.85, k_inference_factor: float = 1.5,
                duty_cycle_period: int = 1000, seed: int = 0) -> nn.Sequential:
    """Sparse CNN-2; masks are drawn from `seed` (layer i uses seed + i) so every process builds the same network."""
    h, w = cnn2_output_size(input_shape, kernel_size)
    c1, c2 = channels
    kw = dict(k_inference_factor=k_inference_factor, boost_strength=boost_strength,
              boost_strength_factor=boost_strength_factor, duty_cycle_period=duty_cycle_period)
    return nn.Sequential(OrderedDict([
        ("conv1", SparseConv2d(input_shape[0], c1, kernel_size, conv_weight_sparsity[0], seed=seed)),
        ("pool1", nn.MaxPool2d(2)), ("act1", KWinners2d(c1, conv_percent_on[0], **kw)),
        ("conv2", SparseConv2d(c1, c2, kernel_size, conv_weight_sparsity[1], seed=seed + 1)),
        ("pool2", nn.MaxPool2d(2)), ("act2", KWinners2d(c2, conv_percent_on[1], **kw)),
        ("flatten", nn.Flatten()),
        ("fc1", SparseLinear(c2 * h * w, hidden, hidden_weight_sparsity, seed=seed + 2)),
        ("act3", KWinners(hidden, hidden_percent_on, **kw)),
        ("fc_out", nn.Linear(hidden, num_classes)),
    ]))
