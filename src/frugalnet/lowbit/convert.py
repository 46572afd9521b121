"""quantize_(model, recipe): make every Linear / Conv2d (dense or sparse) train and run with low-bit GEMMs, in place.

The layers keep their objects, parameters, buffers and masks: only their class changes (nn.Linear -> QuantLinear,
SparseLinear -> QuantSparseLinear, ...), so sparse layers stay sparse and anything holding a reference to a layer
still holds it. Build the optimizer *after* converting: PACT recipes add a trainable clip (`act_alpha`) per layer.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from frugalnet.lowbit.layers import QUANTIZED_CLASS, QUANTIZED_TYPES
from frugalnet.lowbit.recipes import Recipe, get_recipe


def _excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def quantizable_layers(model: nn.Module, exclude: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every layer quantize_ would convert, in `named_modules()` order."""
    exclude = tuple(exclude)
    return [(name, m) for name, m in model.named_modules()
            if type(m) in QUANTIZED_CLASS and not _excluded(name, exclude)]


def quantize_(model: nn.Module, recipe: str | Recipe, exclude: Iterable[str] = ()) -> nn.Module:
    """Convert `model` in place and return it.

    Args:
        recipe: a Recipe or a name ("ibm4", "mxfp4", "nvfp4", "fp8", "int8", "fp32").
        exclude: layer names (as in `model.named_modules()`) to leave in FP32.

    The first and last converted layers take `recipe.first_last` (8 bits in the 4-bit recipes) when it is set.
    Layer i (in order) seeds its stochastic rounding and Hadamard signs with recipe.seed + i.
    """
    recipe = get_recipe(recipe)
    exclude = tuple(exclude)
    names = {name for name, _ in model.named_modules()}
    unknown = [e for e in exclude if e not in names]
    if unknown:
        raise ValueError(f"exclude names layers that are not in the model: {unknown}")
    already = [name for name, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)]
    if already:
        raise ValueError(f"model is already quantized (layers {already[:3]}...); quantize a fresh copy instead")
    layers = quantizable_layers(model, exclude)
    if not layers:
        raise ValueError("model has no nn.Linear / nn.Conv2d / SparseLinear / SparseConv2d layer to quantize")
    last = len(layers) - 1
    for i, (_, layer) in enumerate(layers):
        layer.__class__ = QUANTIZED_CLASS[type(layer)]
        layer._init_lowbit(recipe.for_layer(boundary=i in (0, last)), recipe.name, recipe.seed + i,
                           recipe.pact_decay)
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every quantized layer in the model."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QUANTIZED_TYPES)]
