"""ResNet-18 for CIFAR-size (32x32) inputs, built from a config, no pretrained weights.

The CIFAR variant of He et al. (2016): a 3x3 stride-1 stem without max-pool, four stages of BasicBlocks (two 3x3
convs with BatchNorm, identity or 1x1-conv shortcut), adaptive average pooling and one Linear classifier. Every
activation is its own module (`act1`, `act2` in each block, `stem_act`), built by `activation(channels)`, so a
k-WTA conversion can swap it for KWinners2d; every conv is an nn.Conv2d, so sparsify_/quantize_ reach it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from frugalnet.models._seed import build_seeded
from frugalnet.utils.validation import check_positive_int

Activation = Callable[[int], nn.Module]


def relu(channels: int) -> nn.Module:
    """The default activation factory: nn.ReLU (the channel count is for factories that need it, like k-WTA)."""
    return nn.ReLU()


@dataclass(frozen=True)
class ResNetConfig:
    """Shape of a CIFAR ResNet. blocks[i] BasicBlocks in stage i of widths[i] channels; stages after the first
    halve the resolution."""

    blocks: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        if len(self.blocks) == 0 or len(self.blocks) != len(self.widths):
            raise ValueError(f"blocks and widths must be non-empty and of equal length, got {self.blocks} and "
                             f"{self.widths}")
        for i, (b, w) in enumerate(zip(self.blocks, self.widths)):
            check_positive_int(f"blocks[{i}]", b)
            check_positive_int(f"widths[{i}]", w)
        check_positive_int("num_classes", self.num_classes)
        check_positive_int("in_channels", self.in_channels)


class BasicBlock(nn.Module):
    """conv3x3-BN-act-conv3x3-BN, plus the shortcut, then act. Shape: (B, cin, H, W) -> (B, cout, H/s, W/s)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, activation: Activation = relu) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = activation(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = activation(cout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 images. Shape: (B, in_channels, H, W) -> (B, num_classes) logits (any H, W >= 8)."""

    def __init__(self, config: ResNetConfig = ResNetConfig(), activation: Activation = relu) -> None:
        super().__init__()
        self.config = config
        w0 = config.widths[0]
        self.stem = nn.Conv2d(config.in_channels, w0, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w0)
        self.stem_act = activation(w0)
        stages, cin = [], w0
        for i, (n, w) in enumerate(zip(config.blocks, config.widths)):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, activation)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem_act(self.stem_bn(self.stem(x)))
        x = self.pool(self.stages(x))
        return self.fc(x.flatten(1))


def resnet18_cifar(num_classes: int = 10, *, width: int = 64, activation: Activation = relu,
                   seed: int | None = 0) -> CifarResNet:
    """CIFAR ResNet-18 (11.2 M parameters at width 64) with weights drawn from `seed`; `width` scales every stage
    (width 8 makes a tiny one for tests)."""
    check_positive_int("width", width)
    cfg = ResNetConfig(widths=(width, 2 * width, 4 * width, 8 * width), num_classes=num_classes)
    return build_seeded(seed, lambda: CifarResNet(cfg, activation))
