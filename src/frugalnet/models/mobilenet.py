"""MobileNetV2-style net for CIFAR-size inputs (Sandler et al. 2018), built from a config, no pretrained weights.

Inverted residual blocks: 1x1 expansion conv, 3x3 depthwise conv (groups = channels), 1x1 linear projection, each
with BatchNorm, ReLU6 after the first two, and an identity shortcut when stride is 1 and the channels match. For
32x32 inputs the stem and the second stage use stride 1 (as CIFAR ports of MobileNetV2 do). Activations are modules
built by `activation(channels)` so they can be swapped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from frugalnet.models._seed import build_seeded
from frugalnet.utils.validation import check_fraction, check_positive_int

Activation = Callable[[int], nn.Module]

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2 with CIFAR strides
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def relu6(channels: int) -> nn.Module:
    return nn.ReLU6()


def _scaled(c: int, mult: float) -> int:
    """Channels scaled by the width multiplier, rounded to a multiple of 8 (at least 8), as MobileNets do."""
    v = max(8, int(c * mult + 4) // 8 * 8)
    return v + 8 if v < 0.9 * c * mult else v


@dataclass(frozen=True)
class MobileNetV2Config:
    settings: tuple[tuple[int, int, int, int], ...] = CIFAR_SETTINGS
    width_mult: float = 1.0
    stem_channels: int = 32
    last_channels: int = 1280
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        check_fraction("width_mult", self.width_mult, low_inclusive=False, high=4.0, high_inclusive=True)
        for name in ("stem_channels", "last_channels", "num_classes", "in_channels"):
            check_positive_int(name, getattr(self, name))
        if not self.settings:
            raise ValueError("settings must list at least one (t, c, n, s) stage")
        for i, row in enumerate(self.settings):
            if len(row) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in row):
                raise ValueError(f"settings[{i}] must be four integers >= 1 (t, c, n, s), got {row!r}")


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int, act: nn.Module | None) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act) if act is not None else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """expand (1x1) -> depthwise (3x3, stride) -> project (1x1, linear), + x when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int, activation: Activation = relu6) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers = [] if expansion == 1 else [_conv_bn(cin, hidden, 1, 1, 1, activation(hidden))]
        layers += [_conv_bn(hidden, hidden, 3, stride, hidden, activation(hidden)),
                   _conv_bn(hidden, cout, 1, 1, 1, None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """Shape: (B, in_channels, H, W) -> (B, num_classes) logits."""

    def __init__(self, config: MobileNetV2Config = MobileNetV2Config(), activation: Activation = relu6) -> None:
        super().__init__()
        self.config = config
        cin = _scaled(config.stem_channels, config.width_mult)
        layers: list[nn.Module] = [_conv_bn(config.in_channels, cin, 3, 1, 1, activation(cin))]
        for t, c, n, s in config.settings:
            cout = _scaled(c, config.width_mult)
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, s if j == 0 else 1, t, activation))
                cin = cout
        last = _scaled(config.last_channels, max(1.0, config.width_mult))
        layers.append(_conv_bn(cin, last, 1, 1, 1, activation(last)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def mobilenet_v2_cifar(num_classes: int = 10, *, width_mult: float = 1.0, last_channels: int = 1280,
                       activation: Activation = relu6, seed: int | None = 0) -> MobileNetV2:
    """MobileNetV2 for 32x32 inputs (2.2 M parameters at width 1.0) with weights drawn from `seed`."""
    cfg = MobileNetV2Config(width_mult=width_mult, last_channels=last_channels, num_classes=num_classes)
    return build_seeded(seed, lambda: MobileNetV2(cfg, activation))
