"""Autograd Functions for quantized Linear and Conv2d: every GEMM takes the operands its recipe names.

    forward      Y  = q_a(X) q_w(W)^T            (+ bias, FP32)
    grad_input   dX = q_g(dY; phase 0) q_w(W)    (then PACT's straight-through mask, or identity)
    grad_weight  dW = q_g(dY; phase 1)^T q_a(X)  (optionally both inputs through a random Hadamard transform first)

All products accumulate in FP32 and the master weights stay FP32; bias gradients use the FP32 dY (no GEMM). Block
formats (MXFP4, NVFP4) take blocks along the GEMM's reduction dimension for W (in_features in the forward GEMM,
out_features in the grad-input GEMM) and along the feature (channel) dimension for X and dY, so that each sample's
quantized values depend only on that sample: a batch split over processes gives the same numbers. With the Hadamard
transform on, the weight-gradient inputs are transformed and blocked along their true reduction dimension (tokens, or
the batch for convolutions), as in NVIDIA's NVFP4 recipe. Per-tensor statistics (gradient scale, activation amax,
PACT initial clip) are all-reduced with MAX when torch.distributed is initialised; since every scale rule here is a
power of two or a ratio of amaxes, a gradient that is 2^m times larger quantizes to exactly 2^m times the result.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd import Function

from frugalnet.lowbit import formats as F4
from frugalnet.lowbit.recipes import QuantSpec
from frugalnet.utils.distributed import is_distributed


def global_amax(x: Tensor, what: str = "input", reduce: bool = True) -> Tensor:
    """max|x|, all-reduced (MAX) over ranks when distributed and `reduce`; raises ValueError on NaN/Inf."""
    amax = x.detach().abs().amax() if x.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
    F4._check_finite_scalar(amax, what)
    if reduce and is_distributed():
        amax = amax.clone()
        dist.all_reduce(amax, op=dist.ReduceOp.MAX)
    return amax


def quantize_operand(x: Tensor, spec: QuantSpec, *, dim: int = -1, phase: int = 0,
                     generator: torch.Generator | None = None, amax: Tensor | None = None) -> Tensor:
    """Quantize one GEMM operand (not PACT, which needs its clip): returns FP32 values on the format's grid."""
    fmt, r = spec.format, spec.rounding
    if fmt == "fp32":
        return x
    if fmt == "int4-sawb":
        return F4.int4_sawb(x, r, generator)
    if fmt == "int8":
        return F4.int_max(x, 8, r, generator, amax=amax)
    if fmt == "fp4-radix4":
        return F4.radix4_fp4(x, phase, r, generator, amax=amax)
    if fmt == "mxfp4":
        return F4.mxfp4(x, dim, r, generator)
    if fmt == "nvfp4":
        return F4.nvfp4(x, dim, r, generator, amax=amax)
    if fmt == "fp8-e4m3":
        return F4.fp8(x, F4.E4M3, r, generator, amax=amax)
    if fmt == "fp8-e5m2":
        return F4.fp8(x, F4.E5M2, r, generator, amax=amax)
    raise ValueError(f"format {fmt!r} cannot quantize a plain operand (PACT needs a clip value)")


def _uses_amax(spec: QuantSpec) -> bool:
    return spec.format in ("int8", "fp4-radix4", "nvfp4", "fp8-e4m3", "fp8-e5m2")


class _Operands:
    """The quantization steps one layer's GEMMs share, bound to that layer's recipe and random streams."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.recipe = layer.lowbit

    # forward operands
    def activation(self, x: Tensor, alpha: Tensor | None, dim: int) -> Tensor:
        spec = self.recipe.activation
        gen = self.layer._generator("act", spec)
        if spec.format.startswith("pact"):
            return F4.pact_forward(x, alpha, spec.bits, bool(self.layer.pact_signed), spec.rounding, gen)
        # all-reduce only in training: evaluation may run on one rank alone
        amax = global_amax(x, reduce=self.layer.training) if _uses_amax(spec) else None
        return quantize_operand(x, spec, dim=dim, generator=gen, amax=amax)

    def activation_backward(self, grad: Tensor, x: Tensor, alpha: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if not self.recipe.activation.format.startswith("pact"):
            return grad, None
        gx, galpha = F4.pact_backward(grad, x, alpha, bool(self.layer.pact_signed))
        decay = getattr(self.layer, "pact_decay", 0.0)
        if decay:
            galpha = galpha + decay * alpha.detach()
        return gx, galpha

    def weight(self, w: Tensor, dim: int, role: str) -> Tensor:
        if getattr(self.layer, "prequantized", False):
            return w
        spec = self.recipe.weight
        return quantize_operand(w, spec, dim=dim, generator=self.layer._generator(role, spec))

    def weight_reusable(self) -> bool:
        """The forward's quantized W serves the grad-input GEMM too (per-tensor scale, deterministic rounding)."""
        spec = self.recipe.weight
        return spec.kind != "block" and spec.deterministic

    def grad(self, g: Tensor, dim: int, phase: int, amax: Tensor | None) -> Tensor:
        spec = self.recipe.grad
        return quantize_operand(g, spec, dim=dim, phase=phase, generator=self.layer._generator(f"g{phase}", spec),
                                amax=amax)

    def grad_amax(self, g: Tensor) -> Tensor | None:
        return global_amax(g, "gradient") if _uses_amax(self.recipe.grad) else None

    def grads_share_copy(self) -> bool:
        """Both backward GEMMs may use one quantized dY (no two-phase format, deterministic, blocks along features)."""
        spec = self.recipe.grad
        return spec.format != "fp4-radix4" and spec.deterministic and not self.recipe.hadamard

    def hadamard_signs(self) -> Tensor:
        return self.layer.hadamard_signs


class QuantLinearFunction(Function):
    """y = x W^T + b with quantized operands (x: (*, in), W: (out, in)); `layer` carries recipe and state."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Tensor | None, layer: Any) -> Tensor:
        ops = _Operands(layer)
        x2 = x.reshape(-1, x.shape[-1])
        xq = ops.activation(x2, alpha, dim=-1)
        wq = ops.weight(weight, dim=1, role="w_fwd")
        out = torch.addmm(bias, xq, wq.t()) if bias is not None else xq @ wq.t()
        ctx.save_for_backward(x2, weight, xq, wq, alpha)
        ctx.ops, ctx.x_shape, ctx.has_bias = ops, x.shape, bias is not None
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x2, weight, xq, wq, alpha = ctx.saved_tensors
        ops: _Operands = ctx.ops
        g2 = grad_out.reshape(-1, weight.shape[0])
        need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
        amax = ops.grad_amax(g2)
        share = ops.grads_share_copy()
        gq0 = None
        grad_x = grad_w = grad_b = grad_a = None
        if need_x or need_a:
            gq0 = ops.grad(g2, dim=-1, phase=0, amax=amax)
            wd = wq if ops.weight_reusable() else ops.weight(weight, dim=0, role="w_dgrad")
            grad_xq = gq0 @ wd
            grad_x, grad_a = ops.activation_backward(grad_xq, x2, alpha)
            grad_x = grad_x.reshape(ctx.x_shape)
        if need_w:
            if ops.recipe.hadamard:
                signs = ops.hadamard_signs()
                gh = F4.random_hadamard(g2, signs, dim=0)
                source = xq if ops.recipe.activation.format.startswith("pact") else x2
                xh = F4.random_hadamard(source, signs, dim=0)
                gq1 = ops.grad(gh, dim=0, phase=1, amax=ops.grad_amax(gh))
                xw = quantize_operand(xh, ops.recipe.activation, dim=0,
                                      generator=ops.layer._generator("act_wgrad", ops.recipe.activation),
                                      amax=global_amax(xh) if _uses_amax(ops.recipe.activation) else None) \
                    if not ops.recipe.activation.format.startswith("pact") else xh
            else:
                gq1 = gq0 if (share and gq0 is not None) else ops.grad(g2, dim=-1, phase=1, amax=amax)
                xw = xq
            grad_w = gq1.t() @ xw
        if need_b and ctx.has_bias:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, grad_a, None


class QuantConv2dFunction(Function):
    """2-D convolution with quantized operands; `conv` = (stride, padding, dilation, groups), padding numeric."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Tensor | None, layer: Any,
                conv: tuple) -> Tensor:
        ops = _Operands(layer)
        stride, padding, dilation, groups = conv
        xq = ops.activation(x, alpha, dim=1)
        wq = ops.weight(weight, dim=1, role="w_fwd")
        out = torch.nn.functional.conv2d(xq, wq, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight, xq, wq, alpha)
        ctx.ops, ctx.conv, ctx.has_bias = ops, conv, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, xq, wq, alpha = ctx.saved_tensors
        ops: _Operands = ctx.ops
        stride, padding, dilation, groups = ctx.conv
        need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
        amax = ops.grad_amax(grad_out)
        share = ops.grads_share_copy()
        gq0 = None
        grad_x = grad_w = grad_b = grad_a = None

        def conv_backward(g: Tensor, inp: Tensor, w: Tensor, mask: list[bool]):
            return torch.ops.aten.convolution_backward(g, inp, w, None, list(stride), list(padding), list(dilation),
                                                       False, [0, 0], groups, mask)

        if need_x or need_a:
            gq0 = ops.grad(grad_out, dim=1, phase=0, amax=amax)
            wd = wq if ops.weight_reusable() else ops.weight(weight, dim=0, role="w_dgrad")
            grad_xq = conv_backward(gq0, xq, wd, [True, False, False])[0]
            grad_x, grad_a = ops.activation_backward(grad_xq, x, alpha)
        if need_w:
            if ops.recipe.hadamard:
                signs = ops.hadamard_signs()
                gh = F4.random_hadamard(grad_out, signs, dim=0)
                source = xq if ops.recipe.activation.format.startswith("pact") else x
                xh = F4.random_hadamard(source, signs, dim=0)
                gq1 = ops.grad(gh, dim=0, phase=1, amax=ops.grad_amax(gh))
                xw = xh if ops.recipe.activation.format.startswith("pact") else quantize_operand(
                    xh, ops.recipe.activation, dim=0,
                    generator=ops.layer._generator("act_wgrad", ops.recipe.activation),
                    amax=global_amax(xh) if _uses_amax(ops.recipe.activation) else None)
            else:
                gq1 = gq0 if (share and gq0 is not None) else ops.grad(grad_out, dim=1, phase=1, amax=amax)
                xw = xq
            grad_w = conv_backward(gq1, xw, weight, [False, True, False])[1]
        if need_b and ctx.has_bias:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, grad_a, None, None
