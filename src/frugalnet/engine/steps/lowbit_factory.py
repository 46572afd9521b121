"""Low-bit steps built from quantized layers and from packed files.

    step = lowbit_step_for("fc1", model.fc1)              # after quantize_ (or load_packed)
    steps = lowbit_steps_from_file("m.fnp", skeleton)      # straight from a save_packed file; `skeleton` gives only
                                                           # the layer structure and may live on the meta device
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from frugalnet.engine.steps.base import Step
from frugalnet.engine.steps.lowbit import LowbitLinearStep
from frugalnet.engine.steps.lowbit_conv import LowbitConvStep
from frugalnet.lowbit.unpack import codes_from_record


# --- building steps from layers and from files --------------------------------------------------------------------
def _act_params(recipe, seed: int, step: int, pact_signed: bool) -> dict:
    spec = recipe.activation
    return {"format": spec.format, "rounding": spec.rounding, "seed": int(seed), "step": int(step),
            "pact_signed": bool(pact_signed)}


def _conv_geometry(module: nn.Conv2d) -> tuple:
    if module.groups != 1:
        raise ValueError(f"low-bit Conv2d steps support groups=1, got groups={module.groups}")
    if module.padding_mode != "zeros":
        raise ValueError(f"low-bit Conv2d steps support padding_mode='zeros', got {module.padding_mode!r}")
    pad = module.padding
    if isinstance(pad, str):
        tot = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        if pad == "same" and any(t % 2 for t in tot):
            raise ValueError("low-bit Conv2d steps support padding='same' only with symmetric padding")
        pad = tuple(t // 2 for t in tot) if pad == "same" else (0, 0)
    return module.in_channels, module.kernel_size, module.stride, pad, module.dilation


def _build(name: str, module: nn.Module, rec: dict, bias, alpha, seed: int, step: int, pact_signed: bool) -> Step:
    codes = codes_from_record(rec)
    act = _act_params(module.lowbit, seed, step, pact_signed)
    bias = None if bias is None else bias.detach().float().cpu().numpy()
    alpha = None if alpha is None else float(alpha.detach())
    if isinstance(module, nn.Conv2d):
        from frugalnet.engine.steps.lowbit_conv import LowbitConvStep

        return LowbitConvStep.build_conv(name, codes, bias, act, alpha, *_conv_geometry(module))
    return LowbitLinearStep.build(name, codes, bias, act, alpha, n_in=module.in_features)


def lowbit_step_for(name: str, module: nn.Module) -> Step | None:
    """The engine step of a layer converted by `lowbit.quantize_` (QuantLinear, QuantSparseLinear, QuantConv2d,
    QuantSparseConv2d; also after `load_packed`), or None for any other module.

    The weight is packed with the layer's format (the codes `save_packed` writes; a layer filled by `load_packed`
    uses the file's own records) and runs from those codes. Formats without a packed kernel (FP8) and recipes that
    round weights stochastically get a step holding the quantized values as float32 (reference variant only)."""
    from frugalnet.lowbit.layers import QUANTIZED_TYPES
    from frugalnet.lowbit.packing import encode_weight

    if not isinstance(module, QUANTIZED_TYPES):
        return None
    rec = getattr(module, "packed_record", None)
    if rec is None or not module.prequantized:
        if module.prequantized or module.lowbit.weight.rounding != "nearest":
            rec = encode_weight(module.quantized_weight(), "fp32")
        else:
            rec = encode_weight(module.weight, module.lowbit.weight.format)
    signed = hasattr(module, "pact_signed") and int(module.pact_signed) > 0
    return _build(name, module, rec, module.bias, getattr(module, "act_alpha", None), module.lowbit_seed,
                  int(module.qstep), signed)


def lowbit_steps_from_file(path: str | Path, model: nn.Module) -> dict[str, Step]:
    """{layer name: step} for every quantized layer of `model`, built from a `save_packed` file's codes and state
    alone: the model only tells the layer structure and recipe (it may live on the meta device, holding no weights),
    and no FP32 weight is ever made. The file's checksum and every record are verified first."""
    from frugalnet.lowbit.convert import quantized_layers
    from frugalnet.lowbit.packing import check_model_matches, read_packed

    packed = read_packed(path)
    check_model_matches(path, packed, model)
    state = packed["state"]
    steps = {}
    for name, layer in quantized_layers(model):
        key = f"{name}.weight" if name else "weight"
        prefix = f"{name}." if name else ""
        signed = state.get(prefix + "pact_signed")
        steps[name] = _build(name, layer, packed["weights"][key], state.get(prefix + "bias"),
                             state.get(prefix + "act_alpha"), layer.lowbit_seed,
                             int(state.get(prefix + "qstep", torch.zeros(()))),
                             signed is not None and int(signed) > 0)
    return steps
