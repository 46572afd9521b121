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

The Functions receive a `GemmState` (the recipe and the few numbers the quantizers need, snapshotted at the forward),
never the layer module: what a format does is looked up in `formats.FORMATS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.autograd import Function

from frugalnet.lowbit import formats as F4
from frugalnet.lowbit.recipes import LayerRecipe, QuantSpec
from frugalnet.utils.distributed import all_reduce_, is_distributed

# random stream of each quantized operand (one generator per layer, training step and role)
ROLES = {"act": 0, "w_fwd": 1, "w_dgrad": 2, "g0": 3, "g1": 4, "act_wgrad": 5}


def global_amax(x: Tensor, what: str = "input", reduce: bool = True) -> Tensor:
    """max|x|, all-reduced (MAX) over ranks when distributed and `reduce`; raises ValueError on NaN/Inf."""
    amax = x.detach().abs().amax() if x.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
    F4._check_finite_scalar(amax, what)
    if reduce and is_distributed():
        amax = all_reduce_(amax.clone(), op="max")
    return amax


def quantize_operand(x: Tensor, spec: QuantSpec, *, dim: int = -1, phase: int = 0,
                     generator: torch.Generator | None = None, amax: Tensor | None = None) -> Tensor:
    """Quantize one GEMM operand (not PACT, which needs its clip): returns FP32 values on the format's grid."""
    fmt = spec.number_format
    if fmt.quantize is None:
        raise ValueError(f"format {spec.format!r} cannot quantize a plain operand (PACT needs a clip value)")
    return fmt.quantize(x, spec.rounding, generator, dim, phase, amax)


@dataclass(frozen=True)
class GemmState:
    """What one quantized layer's GEMMs need besides their tensors, fixed at the forward (so the backward draws the
    random streams of its own forward step).

    Args:
        recipe: the layer's LayerRecipe.
        seed: the layer seed; with `step` and the operand's role it seeds stochastic rounding.
        step: training steps taken (the layer's `qstep`).
        training: per-tensor statistics are all-reduced across processes only in training.
        prequantized: the weight is already on its grid (loaded packed): used as it is.
        pact_signed: PACT clips to [-alpha, alpha] (else [0, alpha]).
        pact_decay: L2 coefficient added to PACT clip gradients.
        hadamard_signs: random signs of the Hadamard transform (recipes with hadamard=True), else None.
    """

    recipe: LayerRecipe
    seed: int = 0
    step: int = 0
    training: bool = False
    prequantized: bool = False
    pact_signed: bool = False
    pact_decay: float = 0.0
    hadamard_signs: Tensor | None = None
    device: torch.device = torch.device("cpu")

    def generator(self, role: str, spec: QuantSpec) -> torch.Generator | None:
        """The seeded generator of one operand (None for deterministic rounding)."""
        if spec.rounding != "stochastic":
            return None
        gen = torch.Generator(device=self.device)
        gen.manual_seed((self.seed * 1_000_003 + self.step * 8 + ROLES[role]) % (2**63))
        return gen

    # --- forward operands -------------------------------------------------------------------------------------
    def activation(self, x: Tensor, alpha: Tensor | None, dim: int) -> Tensor:
        spec = self.recipe.activation
        fmt = spec.number_format
        gen = self.generator("act", spec)
        if fmt.trainable_clip:
            return F4.pact_forward(x, alpha, fmt.bits, self.pact_signed, spec.rounding, gen)
        # all-reduce only in training: evaluation may run on one rank alone
        amax = global_amax(x, reduce=self.training) if fmt.uses_amax else None
        return quantize_operand(x, spec, dim=dim, generator=gen, amax=amax)

    def weight(self, w: Tensor, dim: int, role: str = "w_fwd") -> Tensor:
        if self.prequantized:
            return w
        spec = self.recipe.weight
        return quantize_operand(w, spec, dim=dim, generator=self.generator(role, spec))

    # --- backward operands ------------------------------------------------------------------------------------
    def activation_backward(self, grad: Tensor, x: Tensor, alpha: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if not self.recipe.activation.number_format.trainable_clip:
            return grad, None
        gx, galpha = F4.pact_backward(grad, x, alpha, self.pact_signed)
        if self.pact_decay:
            galpha = galpha + self.pact_decay * alpha.detach()
        return gx, galpha

    def grad(self, g: Tensor, dim: int, phase: int, amax: Tensor | None) -> Tensor:
        spec = self.recipe.grad
        return quantize_operand(g, spec, dim=dim, phase=phase, generator=self.generator(f"g{phase}", spec),
                                amax=amax)

    def grad_amax(self, g: Tensor) -> Tensor | None:
        return global_amax(g, "gradient") if self.recipe.grad.number_format.uses_amax else None

    def weight_reusable(self) -> bool:
        """The forward's quantized W serves the grad-input GEMM too (per-tensor scale, deterministic rounding)."""
        spec = self.recipe.weight
        return spec.kind != "block" and spec.deterministic

    def grads_share_copy(self) -> bool:
        """Both backward GEMMs may use one quantized dY (one grid, deterministic, blocks along features)."""
        spec = self.recipe.grad
        return not spec.number_format.two_phase and spec.deterministic and not self.recipe.hadamard

    def weight_grad_inputs(self, g: Tensor, x: Tensor, xq: Tensor, feature_dim: int, gq0: Tensor | None,
                           amax: Tensor | None) -> tuple[Tensor, Tensor]:
        """(dY, X) as the weight-gradient GEMM takes them: both through the random Hadamard transform along the
        reduction dimension (dim 0) and quantized along it, or the forward's q(X) and dY's phase-1 copy."""
        if not self.recipe.hadamard:
            gq1 = gq0 if (gq0 is not None and self.grads_share_copy()) else self.grad(g, feature_dim, 1, amax)
            return gq1, xq
        signs = self.hadamard_signs
        spec = self.recipe.activation
        pact = spec.number_format.trainable_clip
        gh = F4.random_hadamard(g, signs, dim=0)
        xh = F4.random_hadamard(xq if pact else x, signs, dim=0)
        gq1 = self.grad(gh, dim=0, phase=1, amax=self.grad_amax(gh))
        if pact:
            return gq1, xh
        amax_x = global_amax(xh) if spec.number_format.uses_amax else None
        return gq1, quantize_operand(xh, spec, dim=0, generator=self.generator("act_wgrad", spec), amax=amax_x)


def _backward(ctx, g: Tensor, feature_dim: int, dgrad: Callable[[Tensor, Tensor], Tensor],
              wgrad: Callable[[Tensor, Tensor], Tensor], bias_dims: tuple[int, ...]):
    """The backward both layer kinds share: dX = dgrad(q0(dY), W_q) through PACT's mask, dW = wgrad(q1(dY), X_q),
    db = sum of the FP32 dY. `g` is dY viewed as the GEMM sees it (features along `feature_dim`)."""
    x, weight, xq, wq, alpha = ctx.saved_tensors
    st: GemmState = ctx.state
    need_x, need_w, need_b, need_a = ctx.needs_input_grad[:4]
    amax = st.grad_amax(g)
    gq0 = grad_x = grad_w = grad_b = grad_a = None
    if need_x or need_a:
        gq0 = st.grad(g, dim=feature_dim, phase=0, amax=amax)
        wd = wq if st.weight_reusable() else st.weight(weight, dim=0, role="w_dgrad")
        grad_x, grad_a = st.activation_backward(dgrad(gq0, wd), x, alpha)
    if need_w:
        grad_w = wgrad(*st.weight_grad_inputs(g, x, xq, feature_dim, gq0, amax))
    if need_b and ctx.has_bias:
        grad_b = g.sum(bias_dims)
    return grad_x, grad_w, grad_b, grad_a


class QuantLinearFunction(Function):
    """y = x W^T + b with quantized operands (x: (*, in), W: (out, in)); `state` (GemmState) says how."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Tensor | None,
                state: GemmState) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        xq = state.activation(x2, alpha, dim=-1)
        wq = state.weight(weight, dim=1)
        # the output is a fresh tensor, never a view (a reshaped result would be one, and autograd then refuses an
        # in-place op on it, e.g. nn.ReLU(inplace=True) right after the layer)
        out = xq.new_empty((*x.shape[:-1], weight.shape[0]))
        flat = out.view(-1, weight.shape[0])
        if bias is not None:
            torch.addmm(bias, xq, wq.t(), out=flat)
        else:
            torch.mm(xq, wq.t(), out=flat)
        ctx.save_for_backward(x2, weight, xq, wq, alpha)
        ctx.state, ctx.x_shape, ctx.has_bias = state, x.shape, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x, grad_w, grad_b, grad_a = _backward(ctx, g2, -1, lambda gq, w: gq @ w, lambda gq, xw: gq.t() @ xw,
                                                   (0,))
        if grad_x is not None:
            grad_x = grad_x.reshape(ctx.x_shape)
        return grad_x, grad_w, grad_b, grad_a, None


class QuantConv2dFunction(Function):
    """2-D convolution with quantized operands; `conv` = (stride, padding, dilation, groups), padding numeric."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, alpha: Tensor | None, state: GemmState,
                conv: tuple) -> Tensor:
        stride, padding, dilation, groups = conv
        xq = state.activation(x, alpha, dim=1)
        wq = state.weight(weight, dim=1)
        out = torch.nn.functional.conv2d(xq, wq, bias, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight, xq, wq, alpha)
        ctx.state, ctx.conv, ctx.has_bias = state, conv, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        stride, padding, dilation, groups = ctx.conv
        x, weight, xq = ctx.saved_tensors[:3]

        def conv_backward(g: Tensor, inp: Tensor, w: Tensor, mask: list[bool]):
            return torch.ops.aten.convolution_backward(g, inp, w, None, list(stride), list(padding), list(dilation),
                                                       False, [0, 0], groups, mask)

        grads = _backward(ctx, grad_out, 1,
                          lambda gq, w: conv_backward(gq, xq, w, [True, False, False])[0],
                          lambda gq, xw: conv_backward(gq, xw, weight, [False, True, False])[1], (0, 2, 3))
        return (*grads, None, None)
