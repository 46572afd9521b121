"""BatchNorm2d (no affine) -> MaxPool2d(2) -> KWinners2d trained as one block (kernels.bn_pool), inside any
nn.Sequential that `fuse_blocks_` marks, or a `FusedSequential` built directly (frugalnet.models' sparse CNNs).

Training step of that block in PyTorch: batch norm writes its normalised output, the max-pool reads it and writes a
quarter, the k-WTA selects; backward, the k-WTA writes a dense gradient that is zero but at its winners, the
max-pool scatters it into a zeroed tensor four times larger, and the batch norm reads that back. Fused: one pass
takes the batch statistics and the pooled maxima of the raw input (a positive per-channel scale keeps the maxima),
the pooled quarter alone is normalised and selected, and backward one pass writes the batch norm's input gradient
from the winners' gradients (its per-channel sums run over the winners only). Measured in
benchmarks/train_step.py (CNN-2, whose two conv blocks are this pattern).

Equal to the unfused modules to float rounding: the batch statistics are summed in float64 (PyTorch sums in its own
order), so a normalised value can differ in its last bits, and where two scores of a sample lie that close the
k-WTA may pick the other one (a near-tie; the tests bound how close). Running statistics, num_batches_tracked and
the k-WTA's duty cycles are updated exactly as the modules do. Used only in training, with grad or without, for
float32 CPU inputs, when the three modules carry no hooks; everything else runs the modules one by one.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from frugalnet.nn.kwinners_functional import _run_chosen
from frugalnet.utils.buffers import POOL


def _nhwc(t: Tensor) -> np.ndarray:
    """A (B, C, H, W) float32 tensor as a (B, H, W, C)-indexed numpy view (no copy for either layout)."""
    return t.detach().permute(0, 2, 3, 1).numpy()


def _pool_ok(pool: nn.Module) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    stride = pool.stride if pool.stride is not None else pool.kernel_size
    return (type(pool) is nn.MaxPool2d and pair(pool.kernel_size) == (2, 2) and pair(stride) == (2, 2)
            and pair(pool.padding) == (0, 0) and pair(pool.dilation) == (1, 1) and not pool.ceil_mode
            and not pool.return_indices)


def _no_hooks(*modules: nn.Module) -> bool:
    from torch.nn.modules import module as M

    if M._global_forward_hooks or M._global_forward_pre_hooks or M._global_backward_hooks:
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                   for m in modules)


def fusable(bn: nn.Module, pool: nn.Module, act: nn.Module, x: Tensor) -> bool:
    """Whether (bn, pool, act) on input x can run as one fused block now."""
    from frugalnet.nn.kwinners import KWinners2d
    from frugalnet.nn.kwinners_functional import kernel_eligible

    if not (type(bn) is nn.BatchNorm2d and not bn.affine and bn.training and _pool_ok(pool)
            and type(act) is KWinners2d and not act.local and act.training
            and act.duty_cycle.dtype.is_floating_point):
        return False
    if x.dim() != 4 or x.shape[1] != bn.num_features or x.shape[1] != act.channels or x.shape[2] < 2 \
            or x.shape[3] < 2 or not kernel_eligible(x) or x.numel() < 4 * 4096:
        return False
    if bn.track_running_stats and (bn.running_mean is None or bn.running_mean.dtype != torch.float32):
        return False
    return _no_hooks(bn, pool, act)


def _batch_stats(bn: nn.BatchNorm2d, sums: np.ndarray, squares: np.ndarray, shift: np.ndarray,
                 count: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, invstd) float32 of the batch from the shifted sums, and bn's running statistics updated as
    BatchNorm2d does (unbiased variance, momentum or the cumulative average when momentum is None)."""
    mean64 = shift + sums / count
    var64 = np.maximum(squares / count - (sums / count) ** 2, 0.0)
    if bn.track_running_stats:
        with torch.no_grad():
            factor = bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if factor is None:
                    factor = 1.0 / float(bn.num_batches_tracked)
            unbiased = var64 * (count / max(count - 1, 1))
            bn.running_mean.lerp_(torch.from_numpy(mean64.astype(np.float32)), float(factor))
            bn.running_var.lerp_(torch.from_numpy(unbiased.astype(np.float32)), float(factor))
    invstd = (1.0 / np.sqrt(var64 + bn.eps)).astype(np.float32)
    return mean64.astype(np.float32), invstd


def _forward(bn: nn.BatchNorm2d, act: nn.Module, x: Tensor):
    """The block's forward: (output tensor, winners' indices, their values, pool offsets, mean, invstd, count)."""
    from frugalnet.kernels import bn_pool as K

    b, c, h, w = x.shape
    hp, wp = h // 2, w // 2
    y = _nhwc(x)
    shift = y[0, 0, 0].astype(np.float64)     # sums of (y - shift): no cancellation for a large mean
    pooled = POOL.empty((b, hp, wp, c), np.float32)
    arg = POOL.empty((b, hp, wp, c), np.uint8)
    sums, squares = np.empty(c, np.float64), np.empty(c, np.float64)
    _run_chosen(("stats_pool2",) + y.shape, y.size,
                lambda par: K.stats_pool2.pick(par)(y, shift, pooled, arg, sums, squares))
    count = b * h * w
    mean, invstd = _batch_stats(bn, sums, squares, shift, count)
    n = c * hp * wp
    rows = POOL.empty((b, n), np.float32)
    _run_chosen(("normalize_rows",) + pooled.shape, pooled.size,
                lambda par: K.normalize_rows.pick(par)(pooled, mean, invstd, rows))
    out, aidx, aval = act._fused_select(rows, n, hp * wp)
    return torch.from_numpy(out).view(b, c, hp, wp), aidx, aval, arg, mean, invstd, count


class BNPoolKWTAFunction(torch.autograd.Function):
    """KWinners2d(MaxPool2d(2)(BatchNorm2d(affine=False)(x))) in training, as one block (see the module
    docstring). Its backward node carries the winners (aidx, n, shape) as KWTAFunction's does, so a SparseConv2d
    after it computes its input gradient at the winners alone."""

    @staticmethod
    def forward(ctx, x: Tensor, bn: nn.Module, act: nn.Module):
        out, aidx, aval, arg, mean, invstd, count = _forward(bn, act, x)
        ctx.save_for_backward(x)
        ctx.aidx, ctx.aval, ctx.arg, ctx.mean, ctx.invstd, ctx.count = aidx, aval, arg, mean, invstd, count
        ctx.n, ctx.shape = out[0].numel(), tuple(out.shape)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        from frugalnet.kernels import bn_pool as K

        (x,) = ctx.saved_tensors
        cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        b, c, h, w = x.shape
        dx = (torch.from_numpy(POOL.empty((b, h, w, c), np.float32)).permute(0, 3, 1, 2) if cl
              else torch.from_numpy(POOL.empty((b, c, h, w), np.float32)))
        gn, xn, dxn = g.detach().view(ctx.shape).numpy(), _nhwc(x), _nhwc(dx)
        a, beta = _coefficients(ctx, gn)
        _run_chosen(("bn_pool_kwta_grad",) + xn.shape + (ctx.aidx.shape[1],), xn.size,
                    lambda par: K.bn_pool_kwta_grad.pick(par)(gn, ctx.aidx, ctx.arg, xn, ctx.mean, ctx.invstd, a,
                                                               beta, dxn))
        return dx, None, None


def _coefficients(ctx, gn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from frugalnet.kernels import bn_pool as K

    c = ctx.mean.shape[0]
    a, beta = np.empty(c, np.float32), np.empty(c, np.float32)
    K.bn_grad_coefficients.serial(gn, ctx.aidx, ctx.aval, ctx.invstd, ctx.count, ctx.arg.shape[2], a, beta)
    return a, beta


def fusable_1d(bn: nn.Module, act: nn.Module, x: Tensor) -> bool:
    """Whether BatchNorm1d(affine=False) -> KWinners on (batch, features) input x can run as one fused block now."""
    from frugalnet.nn.kwinners import KWinners
    from frugalnet.nn.kwinners_functional import kernel_eligible

    if not (type(bn) is nn.BatchNorm1d and not bn.affine and bn.training and type(act) is KWinners
            and act.training and act.duty_cycle.dtype.is_floating_point):
        return False
    if x.dim() != 2 or x.shape[1] != bn.num_features or x.shape[1] != act.n or x.shape[0] < 2 \
            or not kernel_eligible(x):
        return False
    if bn.track_running_stats and (bn.running_mean is None or bn.running_mean.dtype != torch.float32):
        return False
    return _no_hooks(bn, act)


def _forward_1d(bn: nn.Module, act: nn.Module, x: Tensor):
    from frugalnet.kernels import bn_pool as K

    xn = x.detach().contiguous().numpy()
    b, n = xn.shape
    shift = xn[0].astype(np.float64)
    sums, squares = np.empty(n, np.float64), np.empty(n, np.float64)
    K.column_stats.serial(xn, shift, sums, squares)
    mean, invstd = _batch_stats(bn, sums, squares, shift, b)
    rows = np.empty((b, n), np.float32)
    K.normalize_columns.serial(xn, mean, invstd, rows)
    out, aidx, aval = act._fused_select(rows, n, 1)
    return xn, out, aidx, aval, mean, invstd


class BNKWTAFunction(torch.autograd.Function):
    """KWinners(BatchNorm1d(affine=False)(x)) in training for (batch, features) x, as one block: the statistics,
    normalisation and selection on numpy rows (PyTorch's batch norm on CNN-2's (64, 700) hidden layer cost about
    0.3 ms a call, mostly thread wake-ups), and a backward reading the gradient at the winners only. The output
    carries its winners' lists (nn.active_lists) as KWinners' does."""

    @staticmethod
    def forward(ctx, x: Tensor, bn: nn.Module, act: nn.Module):
        from frugalnet.nn.kwinners_functional import _output

        xn, out, aidx, aval, mean, invstd = _forward_1d(bn, act, x)
        ctx.save_for_backward(x)
        ctx.xn, ctx.aidx, ctx.aval, ctx.mean, ctx.invstd = xn, aidx, aval, mean, invstd
        return _output(out, tuple(x.shape), aidx, aval)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        from frugalnet.kernels import bn_pool as K

        gn = g.detach().contiguous().numpy()
        b, n = gn.shape
        a, beta = np.empty(n, np.float32), np.empty(n, np.float32)
        K.bn_grad_coefficients.serial(gn.reshape(b, n, 1, 1), ctx.aidx, ctx.aval, ctx.invstd, b, 1, a, beta)
        dx = np.empty((b, n), np.float32)
        K.bn_kwta_grad_rows.serial(gn, ctx.aidx, ctx.xn, ctx.mean, ctx.invstd, a, beta, dx)
        return torch.from_numpy(dx), None, None


def bn_kwta(bn: nn.Module, act: nn.Module, x: Tensor) -> Tensor:
    """BatchNorm1d -> KWinners fused (see fusable_1d)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return BNKWTAFunction.apply(x, bn, act)
    from frugalnet.nn.kwinners_functional import _output

    _, out, aidx, aval, _, _ = _forward_1d(bn, act, x)
    return _output(out, tuple(x.shape), aidx, aval)


def bn_pool_kwta(bn: nn.Module, act: nn.Module, x: Tensor) -> Tensor:
    """The fused block's output (autograd through BNPoolKWTAFunction when x requires grad)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return BNPoolKWTAFunction.apply(x, bn, act)
    return _forward(bn, act, x)[0]


class FusedSequential(nn.Sequential):
    """nn.Sequential that, in training, runs each BatchNorm2d(affine=False) -> MaxPool2d(2) -> KWinners2d run of
    its children as one fused block (nn.fused_blocks). Same children, state_dict and results (to float
    rounding) as nn.Sequential; eval, export and every other layer run as nn.Sequential does."""

    def forward(self, x):
        if not self.training or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return super().forward(x)
        mods = list(self._modules.values())
        i = 0
        while i < len(mods):
            if i + 2 < len(mods) and isinstance(x, Tensor) and fusable(mods[i], mods[i + 1], mods[i + 2], x):
                x = bn_pool_kwta(mods[i], mods[i + 2], x)
                i += 3
            elif i + 1 < len(mods) and isinstance(x, Tensor) and fusable_1d(mods[i], mods[i + 1], x):
                x = bn_kwta(mods[i], mods[i + 1], x)
                i += 2
            else:
                x = mods[i](x)
                i += 1
        return x


def fuse_blocks_(model: nn.Module) -> list[str]:
    """Make every plain nn.Sequential in `model` (itself included) a FusedSequential in place when it holds a
    BatchNorm2d(affine=False) -> MaxPool2d(2) -> KWinners2d run; returns their names. Parameters, buffers and
    state_dict keys are unchanged."""
    from frugalnet.nn.kwinners import KWinners, KWinners2d

    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_blocks_ expects a torch.nn.Module, got {type(model).__name__}")
    names = []
    for name, module in model.named_modules():
        if type(module) is not nn.Sequential:
            continue
        mods = list(module)
        if any(type(a) is nn.BatchNorm2d and not a.affine and _pool_ok(p) and type(k) is KWinners2d
               for a, p, k in zip(mods, mods[1:], mods[2:])) or \
                any(type(a) is nn.BatchNorm1d and not a.affine and type(k) is KWinners for a, k in zip(mods, mods[1:])):
            module.__class__ = FusedSequential
            names.append(name)
    return names
