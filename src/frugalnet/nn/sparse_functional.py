"""Training SparseLinear on the sparse kernels: an autograd Function whose forward and both backward products
touch only the mask's weights (and skip zero inputs / zero output gradients), with the dense path kept where it is
faster.

Forward-time masking: the Function reads the weight only at the mask's positions (gathered through a fixed flat
index built once per mask version), and its weight gradient is exactly zero outside the mask. So whatever updates
the stored weights (any optimizer, built before or after conversion, a manual `p -= lr * p.grad`, a loaded dense
state dict), the weights outside the mask never reach the output or the gradient.

Per product (forward y = x W^T, input gradient gx = gy W, weight gradient gW = gy^T x at the mask) the path is
chosen by timing each candidate once for the layer's shape, batch and the measured density of the sparse operand
(rounded to a power-of-two bucket), like the inference engine's per-layer choice, and cached for the process:

  forward  dense (x @ (W * mask)^T) | csr (sparse W rows x dense x) | csc (sparse W columns x nonzero inputs)
                                     | csc_blk (the same per block of samples, each column read once a block)
  gx       dense (gy @ (W * mask))  | csc_t (W^T as rows x dense gy) | scatter (rows of W for nonzero gy only)
                                     | scatter_blk (per block of samples)
  gW       dense ((gy^T x) * mask)  | sddmm (dot products at the mask) | sddmm_gy (skips zero gy entries)
                                     | sddmm_both (skips zero gy and zero x entries)
                                     | sddmm_lists, sddmm_lists_both (gy as per-unit lists: no transpose of gy)

When x is a k-WTA output, or gy the gradient a k-WTA passed back, the tensor carries its per-sample winners
(nn.active_lists) and the kernels take them instead of scanning for nonzeros (the _blk candidates only then);
the choice keys record whether they did.

each kernel in a serial and a parallel (numba prange) build. A compact layer (SparseLinear(compact=True), see
nn.sparse_compact) passes its (nnz,) values instead of the dense weight: the kernels read them as they are and the
weight gradient comes back as (nnz,) values, so no dense (out, in) tensor is written or stepped.
`set_kernel_mode('dense' | 'sparse' | 'auto')`, or a module's `kernel_mode` attribute, forces the dense path, the
kernels, or the timed choice. Timed choices make runs differ in float rounding, so under
`torch.use_deterministic_algorithms(True)` 'auto' takes the dense path (bit-reproducible for a seed).

Results equal PyTorch's masked-dense ones to float rounding (summation order differs), with one exception by
design: paths that skip zero inputs or zero output gradients do not propagate a NaN/inf from the skipped side
(0 * inf is NaN in a dense product, absent here). Float64, CUDA, autocast and compiled/traced calls take the
PyTorch path.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from frugalnet.nn.sparse_linear_candidates import (  # noqa: F401  (sparse_conv_functional and tests use them here)
    _active, _forward_candidates, _grad_input_candidates, _grad_weight_candidates, _parallel_default,
    _parallel_options, _Transposed, _Values, expand)

MODES = ("auto", "sparse", "dense")


def _mode_from_environment() -> str:
    """FRUGALNET_KERNEL_MODE sets the process default (e.g. 'dense' to make every process of a distributed run take
    the same path: timed choices may differ between processes, and so may float summation order)."""
    mode = os.environ.get("FRUGALNET_KERNEL_MODE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"FRUGALNET_KERNEL_MODE must be one of {MODES}, got {mode!r}")
    return mode


_mode = _mode_from_environment()
_CHOICES: dict[tuple, str] = {}
_TIMINGS: dict[tuple, dict[str, float]] = {}
_TUNE_REPEATS = 3
REFINE_REPEATS = 4
# In 'auto', layers with less work than this (batch x out x in multiply-adds) take the dense path untimed: there
# PyTorch's call overhead (tens of microseconds) is the whole cost, and small models (tests, toy runs) never load
# numba.
MIN_KERNEL_WORK = 1 << 20


def set_kernel_mode(mode: str) -> None:
    """Process-wide default path for SparseLinear: 'auto' (timed choice), 'sparse' (kernels), 'dense' (PyTorch)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"kernel mode must be one of {MODES}, got {mode!r}")
    _mode = mode


def kernel_mode() -> str:
    return _mode


def resolve_mode(module) -> str:
    """The path a sparse layer takes now: its `kernel_mode`, else the process default; 'auto' becomes 'dense' under
    `torch.use_deterministic_algorithms(True)`, because timed choices (and with them float summation order) can
    differ from run to run, so the same seed would not give the same weights (measured: a 90% sparse char
    Transformer, 40 steps, five runs, four different weight hashes). 'sparse', asked for explicitly, stays."""
    mode = getattr(module, "kernel_mode", None) or _mode
    if mode not in MODES:
        raise ValueError(f"kernel_mode must be one of {MODES}, got {mode!r}")
    return "dense" if mode == "auto" and torch.are_deterministic_algorithms_enabled() else mode


def clear_choices() -> None:
    """Forget the timed choices (e.g. after changing the number of threads)."""
    from frugalnet.nn.sparse_linear_candidates import _GATHER_BUILDS

    _CHOICES.clear()
    _TIMINGS.clear()
    _GATHER_BUILDS.clear()


def choices() -> dict[tuple, str]:
    """The timed choices so far: key (product, out, in, batch, density bucket, ...) -> path name."""
    return dict(_CHOICES)


def timings() -> dict[tuple, dict[str, float]]:
    """For each timed choice, every candidate's fastest time in seconds."""
    return {k: dict(v) for k, v in _TIMINGS.items()}


def density_bucket(t: Tensor, rows: int = 32) -> int:
    """ceil(log2(256 * density)) in [0, 8] (0: at most 1/256 nonzero, 8: more than half), the density estimated
    from the first `rows` rows of the 2-D tensor (rows of a batch are alike; counting all of them cost more than
    some of the products it chooses for)."""
    from frugalnet.kernels.train import count_nonzero

    a = t[:rows].detach().numpy()
    n = a.size
    d = count_nonzero.serial(a) / n if n else 0.0
    return 0 if d <= 1 / 256 else min(8, math.ceil(math.log2(d * 256)))


def _bucket(t: Tensor, lists) -> tuple[int, bool]:
    """The choice key of an operand: its density bucket (from k-WTA's lists when it has them: B x k entries of
    B x n, no scan) and whether it has them."""
    if lists is None:
        return density_bucket(t), False
    d = lists[0].shape[1] / max(1, t.shape[1])
    return (0 if d <= 1 / 256 else min(8, math.ceil(math.log2(d * 256)))), True


def _pick(key: tuple, candidates: dict[str, Callable[[], object]], operands: tuple = (), refine: bool = False):
    """Run the cached choice for `key`, or time every candidate (one untimed call each, then interleaved repeats;
    the lowest minimum wins) and remember it. The minimum, not the median: on a shared machine other work only
    adds time, and with three repeats one descheduled call moved the median enough to flip choices between runs
    (CNN-2's conv1 forward went to a kernel 3x slower than PyTorch's in one run of train_step.py). Before each call
    the `operands` (_Transposed) go back to what they held on entry, so each candidate pays for the transposes or
    lists it makes itself (made once, they had been free to every later candidate and repeat). `refine` times the
    two fastest some more when they are close (SparseLinear's products)."""
    name = _CHOICES.get(key)
    if name is not None and name in candidates:
        return candidates[name]()
    if len(candidates) == 1:
        return next(iter(candidates.values()))()
    snaps = [op.snapshot() for op in operands]

    def fresh():
        for op, snap in zip(operands, snaps):
            op.restore(snap)
    times: dict[str, list[float]] = {n: [] for n in candidates}
    for fn in candidates.values():
        fresh()
        fn()
    for _ in range(_TUNE_REPEATS):
        for n, fn in candidates.items():
            fresh()
            t0 = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t0)
    if refine:
        # the two fastest, when within 25% of each other, get REFINE_REPEATS more interleaved calls each: on the
        # shared machine, with three repeats, the MLP's second-layer weight gradient went to sddmm_lists in some
        # runs of train_step.py and to sddmm_lists_both (2.2 against 2.6 ms one thread) in others
        ranked = sorted(times, key=lambda n: min(times[n]))
        if len(ranked) > 1 and min(times[ranked[1]]) < 1.25 * min(times[ranked[0]]):
            for _ in range(REFINE_REPEATS):
                for n in ranked[:2]:
                    fresh()
                    t0 = time.perf_counter()
                    candidates[n]()
                    times[n].append(time.perf_counter() - t0)
    _TIMINGS[key] = {n: float(np.min(t)) for n, t in times.items()}
    best = min(_TIMINGS[key], key=_TIMINGS[key].get)
    _CHOICES[key] = best
    fresh()
    return candidates[best]()


# ---- the layout of the module's mask, rebuilt when the mask changes --------------------------------------------

class _Layout:
    """MaskLayout of one mask version, and which weight gradient the Function made last (for the optimizer hook)."""

    def __init__(self, mask: Tensor) -> None:
        from frugalnet.kernels.train import mask_layout

        self.layout = mask_layout(mask.detach().cpu().numpy())
        self.clean_grad: tuple[int, int] | None = None   # (data_ptr, version) of the last weight grad we made


def layout_of(module) -> _Layout:
    """The module's compressed mask layout; rebuilt when `set_mask_` bumped `mask_version` or the mask buffer was
    written in place (its tensor version counter) or replaced (its storage)."""
    mask = module.weight_mask
    shape = module._weight_shape()
    if tuple(mask.shape) != shape or mask.dim() != 2:
        raise ValueError(f"weight_mask shape {tuple(mask.shape)} does not match weight shape {shape}; change masks "
                         "with set_mask_(mask)")
    key = (getattr(module, "mask_version", 0), mask._version, mask.data_ptr(), tuple(mask.shape))
    cached = module.__dict__.get("_train_layout")
    if cached is None or cached[0] != key:
        new = (key, _Layout(mask))
        if module.compact:
            _check_compact_mask(module, None if cached is None else cached[1], new[1])
        cached = new
        module.__dict__["_train_layout"] = cached
    return cached[1]


def _check_compact_mask(module, old: _Layout | None, new: _Layout) -> None:
    """A compact layer's values belong to the mask positions they were made for: a mask written since (in place
    or replaced) must keep exactly those positions."""
    same = (new.layout.nnz == module.weight_values.numel() if old is None
            else np.array_equal(old.layout.csr_flat, new.layout.csr_flat))
    if not same:
        raise ValueError("the mask of a compact layer was changed: its values no longer match the mask's positions; "
                         "change masks with compact_(False), set_mask_(mask), compact_(True), then rebuild the "
                         "optimizer")


# ---- the autograd Function ---------------------------------------------------------------------------------------

class SparseLinearFunction(torch.autograd.Function):
    """y = x (W * mask)^T + b for 2-D float32 CPU x, on the sparse kernels or dense ops as chosen per product.
    `weight` is the dense (out, in) parameter, or a compact layer's (nnz,) values in the layout's CSR order (its
    gradient is then the (nnz,) values' gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor, lay: _Layout, mode: str,
                x_lists=None):
        vals = _Values(weight, lay)
        n_out, n_in = lay.layout.shape
        xkey = _bucket(x, x_lists) if mode != "dense" else -1
        # x's transpose / lists, made once for the forward and the weight gradient
        xp = _Transposed(x.detach().numpy(), x_lists)
        y = _pick(("fwd", n_out, n_in, x.shape[0], xkey, mode, vals.compact),
                  _forward_candidates(x, xp, vals, mask, bias, mode), (xp,), refine=True)
        ctx.save_for_backward(x, weight, mask)
        ctx.lay, ctx.mode, ctx.has_bias, ctx.xkey = lay, mode, bias is not None, xkey
        ctx.compact = vals.compact
        ctx.vals = vals   # reuses gathered values / masked weight in backward
        ctx.xp = xp       # and x's transpose
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        from frugalnet.nn.active_lists import lists_of

        x, weight, mask = ctx.saved_tensors
        gy_lists = lists_of(gy)   # k-WTA's winners, when gy is the gradient it passed back
        gy = gy.contiguous()
        vals, mode, lay = ctx.vals, ctx.mode, ctx.lay
        n_out, n_in = lay.layout.shape
        gykey = _bucket(gy, gy_lists) if mode != "dense" else -1
        gyp = _Transposed(gy.detach().numpy(), gy_lists)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _pick(("gx", n_out, n_in, gy.shape[0], gykey, mode, ctx.compact),
                       _grad_input_candidates(gy, gyp, vals, mask, mode), (gyp,), refine=True)
        if ctx.needs_input_grad[1]:
            gw = _pick(("gw", n_out, n_in, gy.shape[0], gykey, ctx.xkey, mode, ctx.compact),
                       _grad_weight_candidates(gy, gyp, x, ctx.xp, lay, mask, mode, ctx.compact), (gyp, ctx.xp),
                       refine=True)
            if not ctx.compact:   # zero outside the mask: the optimizer hook may skip it
                lay.clean_grad = (gw.data_ptr(), gw._version)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            from frugalnet.kernels.train import column_sums
            from frugalnet.kernels.train_active import unit_sums

            gb = torch.empty(n_out, dtype=gy.dtype)
            if gyp.tagged:   # the sums of gy's per-unit lists: the same terms in the same (sample) order
                unit_sums(gyp.units[0], gyp.units[2], gb.numpy())
            else:
                column_sums.serial(gyp.a, gb.numpy())
        return gx, gw, gb, None, None, None, None


def _kernel_eligible(x: Tensor, weight: Tensor) -> bool:
    return (x.dtype == torch.float32 and weight.dtype == torch.float32 and x.device.type == "cpu"
            and weight.device.type == "cpu" and x.numel() > 0 and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


def sparse_linear(module, x: Tensor) -> Tensor:
    """SparseLinear's forward: the Function on the kernels where eligible (float32 on CPU, not under
    compile/export/tracing), else F.linear with the weight masked at forward time (autograd then masks its
    gradient; a compact layer's weight is built from its values); under torch.export the plain F.linear on the
    stored (zero-outside-mask) weight, so exported graphs keep the form the inference engine lowers."""
    bias, mask, compact = module.bias, module.weight_mask, module.compact
    if torch.compiler.is_exporting() or torch.jit.is_scripting():
        if compact:
            from frugalnet.nn.sparse_compact import warn_export
            warn_export(module)
        return torch.nn.functional.linear(x, module.weight, bias)
    params = module.weight_values if compact else module.weight
    if tuple(mask.shape) != (module.out_features, module.in_features):
        raise ValueError(f"weight_mask shape {tuple(mask.shape)} does not match weight shape "
                         f"{(module.out_features, module.in_features)}; change masks with set_mask_(mask)")
    mode = resolve_mode(module)
    small = mode == "auto" and x.numel() // max(1, x.shape[-1]) * mask.numel() < MIN_KERNEL_WORK
    if mode == "dense" or small or not _kernel_eligible(x, params):
        return torch.nn.functional.linear(x, module.weight if compact else params * mask, bias)
    from frugalnet.nn.active_lists import lists_of

    lead = x.shape[:-1]
    if x.dim() == 2:
        # no reshape views around the Function: a view's backward would hand the gradient on as a new tensor,
        # without the active lists k-WTA attached to it (nn.active_lists)
        x_lists = lists_of(x)   # k-WTA's winners, when x is its unchanged output
        return SparseLinearFunction.apply(x.contiguous(), params, bias, mask, layout_of(module), mode, x_lists)
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    y = SparseLinearFunction.apply(x2, params, bias, mask, layout_of(module), mode, None)
    return y.reshape(*lead, y.shape[-1])
