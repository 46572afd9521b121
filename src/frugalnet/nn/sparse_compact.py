"""Compact storage of a sparse layer's weights: only the mask's nonzero values are a Parameter.

`SparseLinear(..., compact=True)` (SparseConv2d likewise) or `layer.compact_()`: the Parameter `weight_values`
(nnz,) holds the weights at the mask's positions in row-major (CSR) order, the order of
`kernels.train.MaskLayout.csr_flat`. The sparse kernels
read these values directly and write their gradient as (nnz,) values (no dense gradient is formed), so the
optimizer's passes (gradient, momentum, Adam moments, weight decay) run over nnz floats instead of out x in, and
masked weights cannot move: they are not stored. The dense `weight` is built on demand (inspection, export, the
PyTorch fallback path), and `state_dict()` keeps the dense format (`weight`, `bias`, `weight_mask`), so a
checkpoint loads into either storage. Switch back (`compact_layers_(model, False)`) before `engine.compile`: an
exported compact layer's weight is a computed tensor, which the engine runs as a dense layer (a warning says so).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn


def _flat_index(mask: Tensor) -> Tensor:
    """Positions of the mask's nonzeros in the flattened weight, row-major (= CSR order of the (out, -1) view)."""
    return torch.nonzero(mask.reshape(-1), as_tuple=False).squeeze(1)


def values_of(module, weight: Tensor, mask: Tensor | None = None) -> Tensor:
    """The values of a dense `weight` at the module's (or the given) mask, in CSR order."""
    mask = module.weight_mask if mask is None else mask
    return weight.reshape(-1)[_flat_index(mask).to(weight.device)]


def dense_weight(module) -> Tensor:
    """The dense weight of a compact module, differentiable with respect to `weight_values`."""
    values = module.weight_values
    flat = _flat_index(module.weight_mask).to(values.device)
    dense = torch.zeros(module.weight_mask.numel(), dtype=values.dtype, device=values.device)
    return dense.index_put((flat,), values).view(module._weight_shape())


def positions(module) -> np.ndarray:
    """The flat positions (int64, row-major) of a compact module's mask, cached per mask version; refuses a mask
    written since the values were made for it (other positions: the values would land on the wrong weights)."""
    mask = module.weight_mask
    key = (getattr(module, "mask_version", 0), mask._version, mask.data_ptr(), tuple(mask.shape))
    cached = module.__dict__.get("_compact_positions")
    if cached is not None and cached[0] == key:
        return cached[1]
    flat = _flat_index(mask.detach().cpu()).numpy()
    same = (flat.shape[0] == module.weight_values.numel() if cached is None
            else np.array_equal(flat, cached[1]))
    if not same:
        raise ValueError("the mask of a compact layer was changed: its values no longer match the mask's positions; "
                         "change masks with compact_(False), set_mask_(mask), compact_(True), then rebuild the "
                         "optimizer")
    module.__dict__["_compact_positions"] = (key, flat)
    return flat


def to_compact(module) -> None:
    from frugalnet.nn import sparse as S
    from frugalnet.nn.sparse_functional import layout_of

    if not isinstance(module, S.SparseWeightMixin) or not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise ValueError(f"compact storage is implemented for SparseLinear and SparseConv2d, not "
                         f"{type(module).__name__}")
    weight = module._parameters["weight"]
    values = values_of(module, weight.detach()).clone()
    del module._parameters["weight"]
    module.compact = True
    module.register_parameter("weight_values", nn.Parameter(values, requires_grad=weight.requires_grad))
    for key in ("_train_layout", "_clean_weight", "_clean_state", "_compact_positions"):
        module.__dict__.pop(key, None)
    S._LIVE.discard(module)       # no mask hooks: nothing outside the mask is stored
    positions(module)             # the positions the values belong to (checked against later mask writes)
    if isinstance(module, nn.Linear) and module.weight_mask.device.type == "cpu":
        layout_of(module)


def to_dense(module) -> None:
    from frugalnet.nn import sparse as S

    values = module._parameters["weight_values"]
    dense = dense_weight(module).detach().clone()
    del module._parameters["weight_values"]
    module.compact = False
    module.weight = nn.Parameter(dense, requires_grad=values.requires_grad)
    module.__dict__.pop("_train_layout", None)
    module.__dict__.pop("_compact_positions", None)
    S._install_optimizer_hooks()
    S._LIVE.add(module)


def save_compact(module, save, destination, prefix: str, keep_vars: bool) -> None:
    """state_dict of a compact module in the dense format: `weight` (built from the values), then the rest."""
    w = dense_weight(module)
    destination[prefix + "weight"] = w if keep_vars else w.detach()
    save(destination, prefix, keep_vars)
    destination.pop(prefix + "weight_values", None)


def load_compact(module, load, state_dict, prefix: str, local_metadata, strict, missing_keys, unexpected_keys,
                 error_msgs) -> None:
    """Load a dense-format state dict (`weight`, `weight_mask`) into a compact module: the values are taken at the
    loaded mask's positions (a mask with a different number of nonzeros replaces the `weight_values` Parameter:
    rebuild the optimizer after such a load)."""
    wkey, mkey, vkey = prefix + "weight", prefix + "weight_mask", prefix + "weight_values"
    if wkey in state_dict and vkey not in state_dict:
        dense = state_dict.pop(wkey)
        mask = state_dict.get(mkey, module.weight_mask)
        shape = module._weight_shape()
        if not isinstance(dense, Tensor) or tuple(dense.shape) != shape:
            error_msgs.append(f"size mismatch for {wkey}: expected {shape}, got "
                              f"{tuple(getattr(dense, 'shape', ()))}")
            return
        if not isinstance(mask, Tensor) or tuple(mask.shape) != shape:
            error_msgs.append(f"size mismatch for {mkey}: expected {shape}, got {tuple(getattr(mask, 'shape', ()))}")
            return
        values = values_of(module, dense, mask.to(torch.bool))
        old = module.weight_values
        if values.numel() != old.numel():
            module._parameters["weight_values"] = nn.Parameter(
                torch.empty(values.numel(), dtype=old.dtype, device=old.device), requires_grad=old.requires_grad)
        state_dict[vkey] = values
    load(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
    module.__dict__.pop("_train_layout", None)   # values and mask were loaded together: a new pairing
    module.__dict__.pop("_compact_positions", None)


def warn_export(module) -> None:
    warnings.warn(f"exporting a compact {type(module).__name__}: its weight is computed from weight_values, so the "
                  "inference engine runs it as a dense layer; call compact_(False) (or "
                  "nn.sparse_compact.compact_layers_(model, False)) before export", stacklevel=3)


def compact_layers_(model: nn.Module, enabled: bool = True, convs: bool = False) -> list[str]:
    """Switch every SparseLinear in `model` (and SparseConv2d with `convs`) to compact storage (or back,
    `enabled=False`); returns their names. Build the optimizer after calling it."""
    from frugalnet.nn.sparse import SparseConv2d, SparseLinear

    kinds = (SparseLinear, SparseConv2d) if convs or not enabled else (SparseLinear,)
    names = []
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            module.compact_(enabled)
            names.append(name)
    return names
