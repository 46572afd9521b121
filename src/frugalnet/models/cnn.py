"""CNN-2 of Ahmad & Scheinkman 2019: two 5x5 conv layers with 2x2 max-pooling, a hidden layer, a linear output.

Dense:  conv(32) -> BN -> pool -> ReLU -> conv(64) -> BN -> pool -> ReLU -> flatten -> linear(700) -> BN -> ReLU
        -> linear(classes)
Sparse: the same with k-WTA in place of every ReLU and sparse weights:
        conv1 dense weights, 9.5% of units on; conv2 50% weight sparsity, 12.5% on (Numenta's GSC settings);
        hidden 700 units with 30% nonzero weights and 14.3% on; boost strength 1.5, factor 0.85, k-inference 1.5.

Both use batch norm without affine parameters before each activation, as Numenta's sparse CNNs do: k-WTA picks winners
across channels (and positions), and without normalisation a few high-scale channels win everything (measured on
mnist-5k, 5 epochs, one seed: 93.5% test accuracy without it, 96.7% with it). `batch_norm=False` drops it.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from frugalnet.nn.fused_blocks import FusedSequential
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


def _assemble(conv1: nn.Module, act1: nn.Module, conv2: nn.Module, act2: nn.Module, fc1: nn.Module,
              act3: nn.Module, fc_out: nn.Module, batch_norm: bool, fused: bool = False) -> nn.Sequential:
    """conv1 [bn1] pool1 act1 conv2 [bn2] pool2 act2 flatten fc1 [bn3] act3 fc_out; `fused`: a FusedSequential
    (trains each bn -> pool -> k-WTA run as one block; the same modules and state_dict)."""
    norms = {"conv1": ("bn1", nn.BatchNorm2d(conv1.out_channels, affine=False)),
             "conv2": ("bn2", nn.BatchNorm2d(conv2.out_channels, affine=False)),
             "fc1": ("bn3", nn.BatchNorm1d(fc1.out_features, affine=False))}
    order = [("conv1", conv1), ("pool1", nn.MaxPool2d(2)), ("act1", act1), ("conv2", conv2),
             ("pool2", nn.MaxPool2d(2)), ("act2", act2), ("flatten", nn.Flatten()), ("fc1", fc1), ("act3", act3),
             ("fc_out", fc_out)]
    layers = []
    for name, module in order:
        layers.append((name, module))
        if batch_norm and name in norms:
            layers.append(norms[name])
    return (FusedSequential if fused else nn.Sequential)(OrderedDict(layers))


def dense_cnn2(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, channels: Sequence[int] = (32, 64),
               hidden: int = 700, kernel_size: int = 5, batch_norm: bool = True) -> nn.Sequential:
    h, w = cnn2_output_size(input_shape, kernel_size)
    c1, c2 = channels
    return _assemble(nn.Conv2d(input_shape[0], c1, kernel_size), nn.ReLU(), nn.Conv2d(c1, c2, kernel_size),
                     nn.ReLU(), nn.Linear(c2 * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes), batch_norm)


def sparse_cnn2(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, channels: Sequence[int] = (32, 64),
                hidden: int = 700, kernel_size: int = 5, conv_percent_on: Sequence[float] = (0.095, 0.125),
                conv_weight_sparsity: Sequence[float] = (0.0, 0.5), hidden_percent_on: float = 0.143,
                hidden_weight_sparsity: float = 0.7, boost_strength: float = 1.5,
                boost_strength_factor: float = 0.85, k_inference_factor: float = 1.5,
                duty_cycle_period: int = 1000, seed: int = 0, batch_norm: bool = True) -> nn.Sequential:
    """Sparse CNN-2; masks are drawn from `seed` (layer i uses seed + i) so every process builds the same network."""
    h, w = cnn2_output_size(input_shape, kernel_size)
    c1, c2 = channels
    kw = dict(k_inference_factor=k_inference_factor, boost_strength=boost_strength,
              boost_strength_factor=boost_strength_factor, duty_cycle_period=duty_cycle_period)
    return _assemble(SparseConv2d(input_shape[0], c1, kernel_size, conv_weight_sparsity[0], seed=seed),
                     KWinners2d(c1, conv_percent_on[0], **kw),
                     SparseConv2d(c1, c2, kernel_size, conv_weight_sparsity[1], seed=seed + 1),
                     KWinners2d(c2, conv_percent_on[1], **kw),
                     SparseLinear(c2 * h * w, hidden, hidden_weight_sparsity, seed=seed + 2),
                     KWinners(hidden, hidden_percent_on, **kw), nn.Linear(hidden, num_classes), batch_norm,
                     fused=True)
