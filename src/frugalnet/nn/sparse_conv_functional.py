"""Training SparseConv2d on the sparse-input kernels (kernels.conv_train) where they are faster, PyTorch's
convolution where it is, chosen per product by timing as for SparseLinear (sparse_functional._pick).

Per product (y = conv(x, W * mask) + b; gx and gW its gradients):

  forward  dense (F.conv2d on the masked weight)  | active/0|1 (scatter of x's nonzeros, channels-last output)
  gW       dense (PyTorch's weight gradient x mask) | active/0|1 (x's nonzeros times gy's channel vectors)
           | im2col (gy^T @ patches, one GEMM: CNN-2's one-channel conv1, where PyTorch's own is slow)
  gx       dense (PyTorch's input gradient)        | gemm (gy x W as one matrix product, then a numba fold)
  gx + gW  when x is, unchanged, a KWinners2d output (CNN-2's conv2): fused/0|1 (kernels.kwta_conv: gx at the
           winners only, in the same pass as gW) | split/0|1 (PyTorch's gx, active gW) | dense (PyTorch's both).
           Only the winners carry gradient back through the k-WTA, so gx elsewhere is never read.

The dense paths run oneDNN with every operand channels-last (mixed layouts cost it a reorder). Outputs are
channels-last tensors on every path (the kernels' a permuted view, no copy): PyTorch's CPU max-pool is several
times faster on them (max_pool2d of (64, 32, 24, 24), 2 threads, one interleaved run on the loaded machine:
14.7 ms NCHW, 3.0 ms channels-last), batch norm keeps the layout, and the gradients then come back channels-last, which the kernels read without a copy (that layout gain is
not sparsity's: benchmarks/train_step.py shows a channels-last dense CNN-2 beside it). The weight gradient is
exactly zero outside the mask on every path, and results equal PyTorch's masked-dense ones to float rounding
(summation order differs; zero inputs are skipped, so an inf/NaN in gy does not reach the weight gradient through
zero inputs).
Only stride 1, no padding, no dilation, one group, float32 CPU take the kernels; everything else is PyTorch's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from frugalnet.nn import sparse_functional as SF
from frugalnet.utils.buffers import POOL


def _conv_backward(gy: Tensor, ops: "_Operands", which: tuple[bool, bool, bool]):
    """PyTorch's convolution backward with every operand channels-last (gx then comes back channels-last): oneDNN
    reorders mixed layouts first (CNN-2's conv2, batch 64, 20% nonzero input, one thread, CPU time, loaded
    machine: both gradients 9.4 ms all channels-last against 10.4 ms for a channels-last gy with NCHW x and
    weight; the input gradient alone 5.1 against 6.2 ms)."""
    cl = torch.channels_last
    return torch.ops.aten.convolution_backward(gy.contiguous(memory_format=cl), ops.x_cl(), ops.wm_cl(), None,
                                               [1, 1], [0, 0], [1, 1], False, [0, 0], 1, list(which))


def _channels_last(gy: Tensor) -> np.ndarray:
    """gy (B, O, OH, OW) as a C-contiguous (B, OH, OW, O) array (a view when gy is channels-last already)."""
    return gy.permute(0, 2, 3, 1).contiguous().numpy()


def _masked(t: Tensor, mask: Tensor) -> Tensor:
    """t where the bool mask is set, exactly 0 elsewhere, contiguous, in one pass (t * mask first converts the
    bool mask to float: a second pass and an allocation per call)."""
    return torch.where(mask, t, _ZERO, out=torch.empty(tuple(t.shape), dtype=t.dtype))


_ZERO = torch.zeros((), dtype=torch.float32)


def _dense_channels_last(x: Tensor, wm: Tensor, bias: Tensor | None, ops: "_Operands | None" = None) -> Tensor:
    """PyTorch's convolution with a channels-last output. A one-channel input is the same memory in either layout:
    given channels-last strides (and weight) the convolution writes channels-last itself, instead of an NCHW
    output and a copy (CNN-2's conv1, batch 64, CPU time, 2 threads: 0.85 ms against 1.67 ms)."""
    cl = torch.channels_last
    if x.shape[1] == 1:
        _, _, h, w = x.shape
        return F.conv2d(x.as_strided(tuple(x.shape), (h * w, 1, w, 1)), wm.contiguous(memory_format=cl),
                        bias).contiguous(memory_format=cl)
    ops = ops or _Operands(x, wm)
    return F.conv2d(ops.x_cl(), ops.wm_cl(), bias).contiguous(memory_format=cl)   # oneDNN's native layout: its
    # output is channels-last already (no copy)


class _Operands:
    """The other layouts of one call's x and masked weight that its candidate paths use, each made on first use
    and kept for the backward: the kernels' transposed weight (C, KH, KW, O), and channels-last copies of x and
    the weight for oneDNN (made once per step instead of once in the forward and again in the backward)."""

    def __init__(self, x: Tensor, wm: Tensor) -> None:
        self.x, self.wm = x, wm
        self._wt: np.ndarray | None = None
        self._x_cl: Tensor | None = None
        self._wm_cl: Tensor | None = None

    def wt(self) -> np.ndarray:
        if self._wt is None:
            self._wt = np.ascontiguousarray(self.wm.numpy().transpose(1, 2, 3, 0))
        return self._wt

    def x_cl(self) -> Tensor:
        if self._x_cl is None:
            self._x_cl = self.x.detach().contiguous(memory_format=torch.channels_last)
        return self._x_cl

    def wm_cl(self) -> Tensor:
        if self._wm_cl is None:
            self._wm_cl = self.wm.contiguous(memory_format=torch.channels_last)
        return self._wm_cl


class SparseConv2dFunction(torch.autograd.Function):
    """y = conv2d(x, W * mask) + b (stride 1, no padding) on the kernels or PyTorch as chosen per product."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor, mode: str,
                flat: Tensor | None = None):
        from frugalnet.kernels import conv_train as CT

        if flat is not None:   # a compact layer's (nnz,) values at the flat positions `flat` of the mask
            wm = torch.zeros(mask.numel(), dtype=weight.dtype).index_put_((flat,), weight.detach()).view(mask.shape)
        else:
            wm = _masked(weight.detach(), mask)
        b, c, h, w = x.shape
        n_o, _, kh, kw = wm.shape
        oh, ow = h - kh + 1, w - kw + 1
        xkey = SF.density_bucket(x.reshape(b, -1)) if mode != "dense" else -1
        winners = _kwta_winners(x) if mode != "dense" else None
        x = x.contiguous()
        ops = _Operands(x, wm)
        cands = {}
        if mode != "sparse":
            cands["dense"] = lambda: _dense_channels_last(x, wm, bias, ops)
        if mode != "dense":
            xn = x.detach().numpy()
            bn = np.zeros(n_o, np.float32) if bias is None else bias.detach().numpy()

            def active(par):
                out = POOL.empty((b, oh, ow, n_o), np.float32)
                CT.conv_fwd_active.pick(par)(xn, ops.wt(), bn, out)
                return torch.from_numpy(out).permute(0, 3, 1, 2)
            for par in SF._parallel_options():
                cands[f"active/{int(par)}"] = lambda par=par: active(par)
        y = SF._pick(("conv_fwd", tuple(x.shape), tuple(wm.shape), xkey, mode), cands)
        ctx.save_for_backward(x, mask)
        ctx.flat = flat
        ctx.wm, ctx.mode, ctx.xkey, ctx.has_bias = wm, mode, xkey, bias is not None
        ctx.ops, ctx.winners = ops, winners
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        from frugalnet.kernels import conv_train as CT

        x, mask = ctx.saved_tensors
        wm, mode = ctx.wm, ctx.mode
        shapes = (tuple(x.shape), tuple(wm.shape))
        def gy_cl() -> np.ndarray:          # made by each candidate that needs it, so timings charge it fairly
            return _channels_last(gy)
        gx = gw = gb = None
        if ctx.winners is not None and ctx.needs_input_grad[0] and ctx.needs_input_grad[1]:
            gx, gw = _winner_grads(ctx, gy, x, mask, shapes)
        elif ctx.needs_input_grad[0]:
            cands = {}
            if mode != "sparse":
                cands["dense"] = lambda: _conv_backward(gy, ctx.ops, (True, False, False))[0]
            if mode != "dense":
                def gemm():
                    n_o, c, kh, kw = wm.shape
                    g = gy_cl()
                    cols = torch.from_numpy(g.reshape(-1, n_o)) @ wm.view(n_o, -1)
                    out = np.empty(tuple(x.shape), np.float32)
                    CT.col2im_add.pick(SF._parallel_default())(
                        cols.numpy().reshape(g.shape[0], g.shape[1], g.shape[2], c, kh, kw), out)
                    return torch.from_numpy(out)
                cands["gemm"] = gemm
            gx = SF._pick(("conv_gx",) + shapes + (mode,), cands)
        if ctx.needs_input_grad[1] and gw is None:
            cands = {}
            if mode != "sparse":
                cands["dense"] = lambda: _masked(_conv_backward(gy, ctx.ops, (False, True, False))[1], mask)
            if mode != "dense":
                xn = x.detach().numpy()

                def active(par):
                    n_o, c, kh, kw = wm.shape
                    gwt = np.empty((c, kh, kw, n_o), np.float32)
                    CT.conv_gw_active.pick(par)(xn, gy_cl(), gwt)
                    return _masked(torch.from_numpy(gwt).permute(3, 0, 1, 2), mask)
                for par in SF._parallel_options():
                    cands[f"active/{int(par)}"] = lambda par=par: active(par)

                def im2col():
                    n_o, c, kh, kw = wm.shape
                    g = gy_cl()
                    cols = POOL.empty((g.shape[0] * g.shape[1] * g.shape[2], c * kh * kw), np.float32)
                    CT.im2col_rows.pick(SF._parallel_default())(xn, kh, kw, cols)
                    # cols^T @ gy, transposed after: 0.66 ms against 0.91 for gy^T @ cols (CNN-2's conv1, 2
                    # threads, one interleaved run; the product's (K, O) orientation suits the GEMM's blocking)
                    gw = (torch.from_numpy(cols).t() @ torch.from_numpy(g.reshape(-1, n_o))).t()
                    return _masked(gw.reshape(tuple(wm.shape)), mask)
                cands["im2col"] = im2col
            gw = SF._pick(("conv_gw",) + shapes + (ctx.xkey, mode), cands)
        if gw is not None and ctx.flat is not None:
            gw = gw.reshape(-1)[ctx.flat]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = gy.reshape(gy.shape[0], gy.shape[1], -1).sum(2).sum(0)   # inner dim first: 3x faster than
            # gy.sum((0, 2, 3)) on (64, 32, 24, 24) (that reduction is strided in PyTorch)
        return gx, gw, gb, None, None, None


def _kwta_winners(x: Tensor) -> np.ndarray | None:
    """The winners' flat indices (B, k) into each sample's (C, H, W) when x is, unchanged, the output of a k-WTA
    (KWinners2d on the selection kernel, or a fused block ending in one: nn.fused_blocks; either backward reads
    the gradient at its winners only); else None.

    Then the input gradient this convolution returns is consumed only at those winners (x's sole gradient consumer
    is that k-WTA's backward, which zeroes the rest), so it is computed there alone: the gradients of every
    parameter and of the k-WTA's input equal PyTorch's. Not taken when x carries a tensor hook or retains its
    gradient (either would see the gradient at the losers too) or was written in place since the k-WTA made it.
    (torch.autograd.grad asked for x itself would still get the losers' entries as 0.)"""
    from frugalnet.nn.fused_blocks import BNPoolKWTAFunction
    from frugalnet.nn.kwinners_functional import KWTAFunction

    try:
        node = x.grad_fn
    except RuntimeError:    # a view written in place: autograd refuses it (and so will the convolution)
        return None
    classes = tuple(c for c in (getattr(KWTAFunction, "_backward_cls", None),
                                getattr(BNPoolKWTAFunction, "_backward_cls", None)) if c is not None)
    if not classes or not isinstance(node, classes) or x._version != 0 or x._backward_hooks or x.retains_grad:
        return None
    aidx, n, shape = getattr(node, "aidx", None), getattr(node, "n", None), getattr(node, "shape", None)
    b, c, h, w = x.shape
    if (not isinstance(aidx, np.ndarray) or aidx.dtype != np.int32 or aidx.ndim != 2 or aidx.shape[0] != b
            or n != c * h * w or tuple(shape or ()) != tuple(x.shape) or not x.is_contiguous()):
        return None
    return aidx


def _winner_grads(ctx, gy: Tensor, x: Tensor, mask: Tensor, shapes: tuple) -> tuple[Tensor, Tensor]:
    """(gx at the k-WTA winners and 0 elsewhere, masked weight gradient) of a convolution whose input came from a
    k-WTA: one fused kernel pass over the input's nonzeros (kernels.kwta_conv), against PyTorch's input gradient
    with the active weight-gradient kernel, and PyTorch's backward of both, chosen by timing. Measured (conv2 of
    CNN-2, batch 64, one thread, CPU time, loaded machine): at 9.5% nonzero input fused 5.3 ms against 3.0 + 2.5
    split; at 20% 8.8 against 5.4 + 2.7: oneDNN's dense input gradient runs near peak, so the winners-only one
    pays only at low density."""
    from frugalnet.kernels import conv_train as CT, kwta_conv as KC

    wm, mode = ctx.wm, ctx.mode
    cands = {}
    if mode != "sparse":
        def dense():
            gx, gw, _ = _conv_backward(gy, ctx.ops, (True, True, False))
            return gx, _masked(gw, mask)
        cands["dense"] = dense
    if mode != "dense":
        xn, aidx = x.detach().numpy(), ctx.winners

        def fused(par):
            n_o, c, kh, kw = wm.shape
            g = _channels_last(gy)
            gwt = np.empty((c, kh, kw, n_o), np.float32)
            gx = POOL.empty(tuple(x.shape), np.float32)
            KC.conv_grads_active.pick(par)(xn, g, ctx.ops.wt(), gwt, gx)
            KC.conv_gx_at_zero_winners.serial(xn, aidx, g, ctx.ops.wt(), gx)
            return torch.from_numpy(gx), _masked(torch.from_numpy(gwt).permute(3, 0, 1, 2), mask)
        def split(par):   # PyTorch's input gradient (all positions), the active weight-gradient kernel
            n_o, c, kh, kw = wm.shape
            gwt = np.empty((c, kh, kw, n_o), np.float32)
            CT.conv_gw_active.pick(par)(xn, _channels_last(gy), gwt)
            return (_conv_backward(gy, ctx.ops, (True, False, False))[0],
                    _masked(torch.from_numpy(gwt).permute(3, 0, 1, 2), mask))
        for par in SF._parallel_options():
            cands[f"fused/{int(par)}"] = lambda par=par: fused(par)
            if mode != "sparse":
                cands[f"split/{int(par)}"] = lambda par=par: split(par)
    return SF._pick(("conv_grads_winners",) + shapes + (ctx.xkey, mode), cands)


def kernel_applies(module, x: Tensor) -> bool:
    """Whether SparseConv2d's configuration and input can take the kernels at all."""
    return (tuple(module.stride) == (1, 1) and tuple(module.dilation) == (1, 1) and module.groups == 1
            and not isinstance(module.padding, str) and tuple(module.padding) == (0, 0)
            and module.padding_mode == "zeros" and x.dim() == 4
            and SF._kernel_eligible(x, module.weight_values if module.compact else module.weight))


def sparse_conv2d(module, x: Tensor) -> Tensor:
    """SparseConv2d's forward outside export: the Function where the kernels apply and the work is large enough
    (in 'auto'), else the convolution of the weight masked at forward time (a compact layer's weight built from its
    values)."""
    mode = SF.resolve_mode(module)
    mask = module.weight_mask
    if mode == "dense" or not kernel_applies(module, x):
        return module._conv_forward(x, _masked_weight(module), module.bias)
    oh, ow = x.shape[2] - mask.shape[2] + 1, x.shape[3] - mask.shape[3] + 1
    if oh < 1 or ow < 1 or (mode == "auto" and x.shape[0] * oh * ow * mask.numel() < SF.MIN_KERNEL_WORK):
        return module._conv_forward(x, _masked_weight(module), module.bias)
    if module.compact:
        from frugalnet.nn.sparse_compact import positions

        return SparseConv2dFunction.apply(x, module.weight_values, module.bias, mask, mode,
                                          torch.from_numpy(positions(module)))
    return SparseConv2dFunction.apply(x, module.weight, module.bias, mask, mode)


def _masked_weight(module) -> Tensor:
    return module.weight if module.compact else module.weight * module.weight_mask
