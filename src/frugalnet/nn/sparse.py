"""Linear and Conv2d layers whose weights stay sparse under a fixed mask the module enforces itself.

The mask is a bool buffer, enforced twice:
* at forward time: the output and the weight gradient depend only on the weights inside the mask (SparseLinear
  gathers them for the sparse kernels of `sparse_functional`, or multiplies by the mask on the dense path;
  SparseConv2d multiplies by the mask), so no update of the stored weights (any optimizer, one built before
  conversion, a manual `p -= lr * p.grad`, a loaded dense state dict) can make a masked weight matter;
* in storage: masked weights are exactly zero at construction and after `load_state_dict`; global torch.optim
  hooks zero their gradients before every optimizer step (so momentum and Adam moments stay zero there) and re-zero
  the weights after it, so state_dicts and the inference engine see exact zeros. Copies made by deepcopy or
  pickling register themselves too.
With compact storage (`compact=True` or `compact_()`, see nn.sparse_compact) only the mask's values are a
Parameter: nothing outside the mask is stored, so neither hook has anything to do for such a layer.
"""
from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from frugalnet.nn.masks import fixed_fan_in, nonzeros_per_unit
from frugalnet.nn.sparse_conv_functional import sparse_conv2d
from frugalnet.nn.sparse_functional import sparse_linear
from frugalnet.utils.seeding import mask_generator

_LIVE: "weakref.WeakSet[SparseWeightMixin]" = weakref.WeakSet()
_HOOK_HANDLE = None


def _owned_sparse_modules(optimizer: torch.optim.Optimizer) -> list:
    if not _LIVE:
        return []
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return [m for m in list(_LIVE) if id(m._parameters.get("weight")) in owned]


# Optimizers whose update keeps a weight at zero where its gradient, its value and its state are all zero (SGD with
# momentum, dampening, Nesterov, weight decay; Adam/AdamW with eps > 0, weight decay, amsgrad): after such a step
# the mask's gaps provably still hold zeros, so re-zeroing them (an O(out x in) write per layer) is skipped.
_ZERO_KEEPING = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def _zero_keeping(optimizer: torch.optim.Optimizer) -> bool:
    if type(optimizer) not in _ZERO_KEEPING:
        return False
    return all(not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) or g.get("eps", 0.0) > 0
               for g in optimizer.param_groups)


def _state_tensors(optimizer: torch.optim.Optimizer, weight: Tensor) -> list[tuple[str, Tensor]]:
    """The optimizer's per-element state of `weight` (momentum, moments): tensors shaped like it."""
    state = optimizer.state.get(weight, {})
    return [(k, t) for k, t in sorted(state.items()) if isinstance(t, Tensor) and t.shape == weight.shape]


def _state_print(optimizer: torch.optim.Optimizer, weight: Tensor) -> tuple:
    return (id(optimizer),) + tuple((k, t.data_ptr(), t._version) for k, t in _state_tensors(optimizer, weight))


def _weight_print(module) -> tuple:
    """Identity and version of the weight and of the mask: any in-place write or replacement of either (through
    PyTorch) changes it."""
    w, mask = module.weight, module.weight_mask
    return (w.data_ptr(), w._version, mask.data_ptr(), mask._version, getattr(module, "mask_version", 0))


def _mask_grads_before_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Zero the gradients outside the masks (unless the Function made them so), and note which layers are known
    to be clean (weight unchanged since we last zeroed or checked it, optimizer state made or zero-kept by this
    optimizer since), whose re-zeroing after the step can be skipped."""
    keeping = _zero_keeping(optimizer)
    skip = set()
    for module in _owned_sparse_modules(optimizer):
        w = module.weight
        grad = w.grad
        if grad is not None and not _grad_is_clean(module, grad):
            grad.mul_(module.weight_mask)
        if not keeping or module.__dict__.get("_clean_weight") != _weight_print(module):
            continue
        if optimizer.state.get(w) and module.__dict__.get("_clean_state") != _state_print(optimizer, w):
            continue
        skip.add(id(module))
    optimizer.__dict__["_frugalnet_clean"] = skip


def _grad_is_clean(module, grad: Tensor) -> bool:
    """True when `grad` is, untouched, the gradient SparseLinear's Function made (zero outside the mask already)."""
    cached = module.__dict__.get("_train_layout")
    return cached is not None and cached[1].clean_grad == (grad.data_ptr(), grad._version)


def _rezero_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """Re-zero the weights outside the masks, except for layers the pre-step hook found clean (their zeros are
    provably kept, see _ZERO_KEEPING); for a zero-keeping optimizer the state outside the mask is zeroed too (it
    only ever moves weights that are re-zeroed), so from the next step on the layer is clean."""
    skip = optimizer.__dict__.pop("_frugalnet_clean", set())
    keeping = _zero_keeping(optimizer)
    for module in _owned_sparse_modules(optimizer):
        w = module.weight
        if id(module) in skip:
            module.__dict__["_clean_weight"] = _weight_print(module)
        else:
            module.apply_mask_()
            if not keeping:
                continue
            with torch.no_grad():
                for _, t in _state_tensors(optimizer, w):
                    module._zero_outside_(t)
        module.__dict__["_clean_state"] = _state_print(optimizer, w)


def _install_optimizer_hooks() -> None:
    global _HOOK_HANDLE
    if _HOOK_HANDLE is None:
        _HOOK_HANDLE = (register_optimizer_step_pre_hook(_mask_grads_before_step),
                        register_optimizer_step_post_hook(_rezero_after_step))


class SparseWeightMixin:
    weight_mask: Tensor
    compact: bool = False   # see compact_()

    @property
    def weight(self) -> Tensor:
        """The dense weight: the Parameter, or for a compact layer a tensor built from `weight_values` on each
        access (differentiable: gradients reach the values; writes to it are lost)."""
        p = self._parameters.get("weight")
        if p is not None:
            return p
        if "weight_values" in self._parameters:
            from frugalnet.nn.sparse_compact import dense_weight
            return dense_weight(self)
        raise AttributeError("weight")

    @weight.setter
    def weight(self, value) -> None:   # reached only for non-Parameters outside _parameters (Module.__setattr__)
        raise TypeError(f"cannot assign {type(value).__name__} as the weight of {type(self).__name__}: assign an "
                        "nn.Parameter" + (" after compact_(False)" if self.compact else ""))

    def _weight_shape(self) -> tuple[int, ...]:
        return tuple(self.weight_mask.shape)

    def compact_(self, enabled: bool = True):
        """Switch the trainable storage to the mask's nonzero values only (`enabled`), or back to a dense weight.

        Compact: the Parameter `weight_values` holds the nnz values in the mask's row-major (CSR) order; gradients
        and optimizer steps then touch only them (a tenth of the floats at 90% sparsity), and masks hold by
        construction (no hooks, no re-zeroing). `weight` is built on demand; `state_dict()` still holds the dense
        `weight` and `weight_mask` (loadable by either storage). Build the optimizer *after* switching (the
        Parameter is replaced). The mask cannot change while compact (set_mask_, RigL/SET): switch back first.
        Returns self."""
        from frugalnet.nn.sparse_compact import to_compact, to_dense
        if bool(enabled) != self.compact:
            (to_compact if enabled else to_dense)(self)
        return self

    def _setup_mask(self, mask: Tensor | None, sparsity: float, seed: int | None) -> None:
        if mask is None:
            gen = mask_generator(seed) if seed is not None else None
            mask = fixed_fan_in(tuple(self.weight.shape), sparsity, gen)
        else:
            mask = torch.as_tensor(mask).to(torch.bool)
            if tuple(mask.shape) != tuple(self.weight.shape):
                raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape "
                                 f"{tuple(self.weight.shape)}")
        self.register_buffer("weight_mask", mask.to(self.weight.device))
        _install_optimizer_hooks()
        _LIVE.add(self)

    def __getstate__(self):  # the cached kernel layout is rebuilt on demand, not pickled
        state = self.__dict__.copy()
        for key in ("_train_layout", "_clean_weight", "_clean_state"):
            state.pop(key, None)
        return state

    def __setstate__(self, state) -> None:  # deepcopy / unpickling: the copy enforces its mask too
        super().__setstate__(state)
        if not self.compact:
            _install_optimizer_hooks()
            _LIVE.add(self)

    def _sparse_init(self) -> None:
        """Kaiming-uniform scaled by the *sparse* fan-in, so activations keep the scale of a dense layer (a compact
        layer draws the same dense tensor and keeps its mask's values: the same numbers as a dense layer's)."""
        fan_in = max(1, int(self.weight_mask.view(self.weight_mask.shape[0], -1).sum(1).float().mean().item()))
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            if self.compact:
                from frugalnet.nn.sparse_compact import values_of
                w = torch.empty(self._weight_shape(), dtype=self.weight_values.dtype).uniform_(-bound, bound)
                self.weight_values.copy_(values_of(self, w))
            else:
                self.weight.uniform_(-bound, bound)
            if getattr(self, "bias", None) is not None:
                self.bias.uniform_(-bound, bound)
        self.apply_mask_()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zero the masked weights in place (the module does this itself after each optimizer step that could
        have moved them; a compact layer has no weights outside its mask)."""
        if self.compact:
            return
        self._zero_outside_(self.weight)
        self.__dict__["_clean_weight"] = _weight_print(self)

    @torch.no_grad()
    def _zero_outside_(self, t: Tensor) -> None:
        """Zero `t` (shaped like the weight) outside the mask. A 2-D float32 CPU tensor is zeroed by a kernel that
        writes only the gaps of the mask's rows (several times cheaper than the multiply, see
        kernels.train.zero_outside), others by a mask multiply."""
        if (t.dim() == 2 and t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
                and self.weight_mask.device.type == "cpu"):
            from frugalnet.kernels.train import zero_outside
            from frugalnet.nn.sparse_functional import layout_of

            lay = layout_of(self).layout
            zero_outside.serial(t.detach().numpy(), lay.csr_ptr, lay.csr_idx)
        else:
            t.mul_(self.weight_mask)

    @torch.no_grad()
    def set_mask_(self, mask: Tensor) -> None:
        """Replace the mask (pruning, dynamic sparse training): weights outside the new mask become zero, weights
        it newly admits keep their current value (zero after masking, so regrown weights start at zero).
        `mask_version` counts the changes, so anything derived from the mask (compressed layouts) knows when to
        rebuild."""
        if self.compact:
            raise ValueError(f"set_mask_ on a compact {type(self).__name__}: its values are tied to the mask's "
                             "positions; call compact_(False), set_mask_(mask), compact_(True), then rebuild the "
                             "optimizer")
        mask = torch.as_tensor(mask, device=self.weight_mask.device).to(torch.bool)
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(self.weight.shape)}")
        self.weight_mask.copy_(mask)
        self.sparsity = 1.0 - float(mask.float().mean())
        self.mask_version = getattr(self, "mask_version", 0) + 1
        self.__dict__.pop("_clean_state", None)   # optimizer state may be nonzero where the new mask has gaps
        self.apply_mask_()

    def reset_parameters(self) -> None:
        """Re-initialise as at construction: sparse-fan-in Kaiming-uniform, masked weights zero."""
        if hasattr(self, "weight_mask"):
            self._sparse_init()
        else:   # called by the base class's __init__, before the mask exists
            super().reset_parameters()

    @property
    def weight_density(self) -> float:
        return float(self.weight_mask.float().mean())

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        # writes that bypass PyTorch's version counter (through .data or a numpy view) escape the optimizer hooks'
        # bookkeeping; the saved weights hold exact zeros whatever wrote them
        if self.compact:   # the same format as a dense layer's: dense weight (built), bias, mask
            from frugalnet.nn.sparse_compact import save_compact
            save_compact(self, super()._save_to_state_dict, destination, prefix, keep_vars)
            return
        self.apply_mask_()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # keep the zeros exact after loading
        if self.compact:
            from frugalnet.nn.sparse_compact import load_compact
            load_compact(self, super()._load_from_state_dict, state_dict, prefix, *args, **kwargs)
            return
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.apply_mask_()


class SparseLinear(SparseWeightMixin, nn.Linear):
    """Linear layer in which each output unit has exactly round((1 - sparsity) * in_features) nonzero weights.

    Args:
        in_features, out_features, bias: as for nn.Linear.
        sparsity: fraction of zero weights per unit, in [0, 1).
        mask: optional bool mask of shape (out_features, in_features), e.g. from `masks.complementary`; overrides
            `sparsity`.
        seed: seed for the random mask (None draws from torch's global generator).
        compact: train only the mask's values (Parameter `weight_values`, see `compact_`): gradients and
            optimizer steps then scale with the nonzeros.

    Shape: (*, in_features) -> (*, out_features).

    Training and inference run on the sparse kernels where they are faster (see `sparse_functional`); set the
    attribute `kernel_mode` to 'dense', 'sparse' or 'auto' to override the process default for this layer.
    """

    kernel_mode: str | None = None

    def __init__(self, in_features: int, out_features: int, sparsity: float, bias: bool = True,
                 mask: Tensor | None = None, seed: int | None = None, device=None, dtype=None,
                 compact: bool = False) -> None:
        if mask is None:
            nonzeros_per_unit(in_features, sparsity)  # validate before allocating
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.sparsity = float(sparsity) if mask is None else 1.0 - float(torch.as_tensor(mask).float().mean())
        self._setup_mask(mask, sparsity, seed)
        self._sparse_init()
        self.compact_(compact)

    def _weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear(in_features={self.in_features}) expects input of shape "
                             f"(*, {self.in_features}), got {tuple(x.shape)}")
        return sparse_linear(self, x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sparsity={self.sparsity:.3g}" + (", compact" if self.compact else "")


class SparseConv2d(SparseWeightMixin, nn.Conv2d):
    """Conv2d in which each output channel has exactly round((1 - sparsity) * in/groups * kh * kw) nonzero weights.

    Takes nn.Conv2d's arguments plus `sparsity` in [0, 1), an optional `mask` shaped like the weight, a `seed` and
    `compact` (train only the mask's values, see `compact_`).
    Shape: (B, in_channels, H, W) -> (B, out_channels, H', W').

    Stride-1 unpadded float32 CPU convolutions train on the sparse-input kernels where they are faster (see
    `sparse_conv_functional`); `kernel_mode` overrides the process default as for SparseLinear.
    """

    kernel_mode: str | None = None

    def __init__(self, in_channels: int, out_channels: int, kernel_size, sparsity: float, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 mask: Tensor | None = None, seed: int | None = None, device=None, dtype=None,
                 compact: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        if mask is None:
            nonzeros_per_unit(self.weight[0].numel(), sparsity)
        self.sparsity = float(sparsity) if mask is None else 1.0 - float(torch.as_tensor(mask).float().mean())
        self._setup_mask(mask, sparsity, seed)
        self._sparse_init()
        self.compact_(compact)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SparseConv2d(in_channels={self.in_channels}) expects input of shape "
                             f"(batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if torch.compiler.is_exporting() or torch.jit.is_scripting():
            if self.compact:
                from frugalnet.nn.sparse_compact import warn_export
                warn_export(self)
            return super().forward(x)   # exported graphs keep the plain conv on the stored (masked) weight
        return sparse_conv2d(self, x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", sparsity={self.sparsity:.3g}" + (", compact" if self.compact else "")
