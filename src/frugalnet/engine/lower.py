"""Lower a PyTorch model to a flat list of engine steps: nested Sequentials flattened, BatchNorm folded into the
Linear/Conv2d before it, every other layer checked against the supported set (an error names the first one that
is not)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from frugalnet.engine import steps as S
from frugalnet.nn.kwinners import KWinners, KWinners2d

SUPPORTED = ("SparseLinear, SparseConv2d, KWinners, KWinners2d, ComplementaryGroup, Linear, Conv2d, ReLU, "
             "MaxPool2d, AvgPool2d, Flatten, BatchNorm1d/2d, Dropout, Identity, Sequential")


def leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of every layer in execution order; only Sequential containers can be flattened."""
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += leaves(child, f"{prefix}.{name}" if prefix else name)
        return out
    if len(list(model.children())) and not _is_leaf_type(model):
        raise ValueError(f"engine.compile cannot run layer {prefix or 'model'!r} of type {type(model).__name__}: "
                         f"only nn.Sequential containers are supported (layers: {SUPPORTED})")
    return [(prefix or type(model).__name__.lower(), model)]


def _is_leaf_type(m: nn.Module) -> bool:
    from frugalnet.sparsity.complementary_groups import ComplementaryGroup

    return isinstance(m, (ComplementaryGroup, nn.Linear, nn.Conv2d, KWinners, KWinners2d, nn.ReLU, nn.MaxPool2d,
                          nn.AvgPool2d,
                          nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Identity))


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("engine.compile needs BatchNorm with running statistics (track_running_stats=True)")
    with torch.no_grad():
        scale = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
    return scale.numpy(), shift.numpy()


def _conv_params(m: nn.Conv2d) -> tuple:
    if m.padding_mode != "zeros":
        raise ValueError(f"engine.compile supports Conv2d padding_mode='zeros' only, got {m.padding_mode!r}")
    pad = m.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # 'same' with stride 1: symmetric only when the total padding is even
            tot = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
            if any(t % 2 for t in tot):
                raise ValueError("engine.compile supports padding='same' only with symmetric padding")
            pad = tuple(t // 2 for t in tot)
    return m.stride, pad, m.dilation, m.groups


def _fusable_max_pool(m: nn.Module) -> int:
    """The window of a MaxPool2d whose windows tile its input (square, stride = window, no padding, dilation or
    ceil mode), which a Conv2d step can fuse; 0 for anything else."""
    if not isinstance(m, nn.MaxPool2d) or m.return_indices or m.ceil_mode:
        return 0

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    k = pair(m.kernel_size)
    s = pair(m.stride if m.stride is not None else m.kernel_size)
    if k[0] != k[1] or s != k or pair(m.padding) != (0, 0) or pair(m.dilation) != (1, 1):
        return 0
    return int(k[0]) if k[0] > 1 else 0


def lower(model: nn.Module) -> list[tuple[S.Step, list[nn.Module]]]:
    """Steps, each with the original modules it replaces (for reference outputs)."""
    layers = leaves(model)
    result: list[tuple[S.Step, list[nn.Module]]] = []
    i = 0
    while i < len(layers):
        name, m = layers[i]
        nxt = layers[i + 1][1] if i + 1 < len(layers) else None
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.detach().double()
            b = m.bias.detach().double() if m.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
            mods = [m]
            bn_type = nn.BatchNorm1d if isinstance(m, nn.Linear) else nn.BatchNorm2d
            if isinstance(nxt, bn_type):
                scale, shift = _bn_scale_shift(nxt)
                sc = torch.from_numpy(scale)
                w = w * sc.view(-1, *([1] * (w.dim() - 1)))
                b = b * sc + torch.from_numpy(shift)
                mods.append(nxt)
                i += 1
            w_np, b_np = w.float().numpy(), b.float().numpy()
            if isinstance(m, nn.Linear):
                step = S.LinearStep.build(name, w_np, b_np)
            else:
                step = S.ConvStep.build(name, w_np, b_np, *_conv_params(m))
                after = layers[i + 1] if i + 1 < len(layers) else None
                window = _fusable_max_pool(after[1]) if after else 0
                if window:   # conv -> max pool as one step: the fused kernels pool each window in registers
                    step.params["pool"] = window
                    step.name = f"{name}+{after[0]}"
                    mods.append(after[1])
                    i += 1
            result.append((step, mods))
        elif type(m).__name__ == "ComplementaryGroup":
            result.append((S.ComplementaryStep.build(name, m), [m]))
        elif isinstance(m, (KWinners, KWinners2d)):
            result.append((S.KWinnersStep.build(name, m), [m]))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            result.append((S.PoolStep.build(name, m), [m]))
        elif isinstance(m, nn.ReLU):
            result.append((S.ReLUStep(name, {}, {}), [m]))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"engine layer {name!r}: Flatten supported with start_dim=1, end_dim=-1 only")
            result.append((S.FlattenStep(name, {}, {}), [m]))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            scale, shift = _bn_scale_shift(m)
            result.append((S.AffineStep(name, {}, {"scale": scale.astype(np.float32),
                                                   "shift": shift.astype(np.float32)}), [m]))
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            pass  # no-ops in eval
        else:
            raise ValueError(f"engine.compile cannot run layer {name!r} of type {type(m).__name__}; "
                             f"supported: {SUPPORTED}")
        i += 1
    if not result:
        raise ValueError("engine.compile found no layers to run in the model")
    return result
