"""sparsify_(model, ...): turn a dense model sparse in place.

Linear/Conv2d layers become SparseLinear/SparseConv2d (their current weights kept under a random fixed-fan-in mask),
and a ReLU that follows a converted layer in the same nn.Sequential (possibly after BatchNorm, pooling or dropout)
becomes k-WTA (KWinners / KWinners2d).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from frugalnet.nn.kwinners import KWinners, KWinners2d
from frugalnet.nn.sparse import SparseConv2d, SparseLinear
from frugalnet.nn.masks import fixed_fan_in
from frugalnet.utils.seeding import make_generator
from frugalnet.utils.validation import check_fraction

# Layers that may sit between a converted layer and the ReLU it feeds without changing the unit count.
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity)


def _per_layer(value: float | Mapping[str, float] | None, name: str) -> float | None:
    if isinstance(value, Mapping):
        return value.get(name)
    return value


def _excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def _to_sparse(layer: nn.Module, sparsity: float, seed: int) -> nn.Module:
    mask = fixed_fan_in(tuple(layer.weight.shape), sparsity, make_generator(seed))
    if isinstance(layer, nn.Linear):
        new = SparseLinear(layer.in_features, layer.out_features, sparsity, bias=layer.bias is not None, mask=mask)
    else:
        new = SparseConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, sparsity, stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                           bias=layer.bias is not None, padding_mode=layer.padding_mode, mask=mask)
    with torch.no_grad():
        new.weight.copy_(layer.weight * new.weight_mask)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new.to(layer.weight.device)


def sparsify_(model: nn.Module, weight_sparsity: float | Mapping[str, float] | None = 0.5,
              activation_sparsity: float | Mapping[str, float] | None = None, exclude: Iterable[str] = (),
              *, k_inference_factor: float = 1.5, boost_strength: float = 1.5, boost_strength_factor: float = 0.85,
              duty_cycle_period: int = 1000, local: bool = False, seed: int = 0) -> nn.Module:
    """Convert `model` in place and return it.

    Args:
        weight_sparsity: fraction of zero weights in [0, 1) for every Linear/Conv2d, or a {layer name: sparsity}
            mapping (layers not named stay dense); None keeps weights dense.
        activation_sparsity: fraction of inactive units in (0, 1) for the ReLU after each converted layer (k-WTA with
            percent_on = 1 - activation_sparsity), or a mapping by layer name; None keeps the ReLUs.
        exclude: layer names (as in `model.named_modules()`) to leave untouched, e.g. the output layer.
        seed: masks are drawn from this seed (layer i uses seed + i), so every process builds the same masks.
    """
    for value, label in ((weight_sparsity, "weight_sparsity"), (activation_sparsity, "activation_sparsity")):
        for v in (value.values() if isinstance(value, Mapping) else [value]):
            if v is not None:
                check_fraction(label, v, low_inclusive=(label == "weight_sparsity"))
    exclude = tuple(exclude)
    names = {name for name, _ in model.named_modules()}
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise ValueError(f"exclude names layers that are not in the model: {unknown}")

    counter = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if type(child) in (nn.Linear, nn.Conv2d) and not _excluded(full, exclude):
                ws = _per_layer(weight_sparsity, full)
                if ws is not None:
                    setattr(parent, child_name, _to_sparse(child, ws, seed + counter))
                counter += 1
        if isinstance(parent, nn.Sequential):
            _relu_to_kwinners(parent, parent_name, activation_sparsity, exclude, k_inference_factor,
                              boost_strength, boost_strength_factor, duty_cycle_period, local)
    return model


def _relu_to_kwinners(seq: nn.Sequential, seq_name: str, activation_sparsity, exclude, k_inference_factor,
                      boost_strength, boost_strength_factor, duty_cycle_period, local) -> None:
    if activation_sparsity is None:
        return
    last_layer, last_name = None, None
    for idx, (child_name, child) in enumerate(list(seq.named_children())):
        full = f"{seq_name}.{child_name}" if seq_name else child_name
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            last_layer, last_name = child, full
        elif isinstance(child, nn.ReLU) and last_layer is not None and not _excluded(last_name, exclude):
            sparsity = _per_layer(activation_sparsity, last_name)
            if sparsity is not None:
                kw = dict(percent_on=1.0 - sparsity, k_inference_factor=k_inference_factor,
                          boost_strength=boost_strength, boost_strength_factor=boost_strength_factor,
                          duty_cycle_period=duty_cycle_period)
                if isinstance(last_layer, nn.Linear):
                    seq[idx] = KWinners(last_layer.out_features, **kw)
                else:
                    seq[idx] = KWinners2d(last_layer.out_channels, local=local, **kw)
            last_layer = None
        elif not isinstance(child, _PASS_THROUGH):
            last_layer = None
