"""The quantizers: each returns the *dequantized* values (FP32 numbers on the format's grid), so any torch op can
consume them; `codecs.py` turns the same values into real codes. Formats and their rules are described in
`formats.py`; the fused numba kernels in `_kernels.py` give bit-identical results for CPU float32 tensors."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from frugalnet.lowbit import numerics as N
from frugalnet.lowbit.numerics import (E2M1, E4M3, RADIX4_LEVELS, RADIX4_MAX_AMAX, SAWB_COEFFICIENTS,
                                       MinifloatSpec, Rounding, _amax, _check_finite_scalar, _div, _exp2,
                                       _kernel_noise, _noise, _np, ceil_log2, check_finite, floor_log2, round_)

# --- integers ------------------------------------------------------------------------------------------------------
def int_symmetric(x: Tensor, bits: int, alpha: Tensor | float, rounding: Rounding = "nearest",
                  generator: torch.Generator | None = None) -> Tensor:
    """Symmetric INT-`bits`: clip to [-alpha, alpha], 2^(bits-1)-1 levels a side (INT4: -7..7), zero exact."""
    if bits < 2 or bits > 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    qmax = 2 ** (bits - 1) - 1
    alpha = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
    step = torch.where(alpha > 0, _div(alpha, qmax), torch.ones_like(alpha))
    noise = _noise(x, rounding, generator)
    if N._fast(x):
        from frugalnet.lowbit import _kernels

        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        _kernels.pick("int_uniform", x.numel())(_np(x).reshape(-1), out.numpy().reshape(-1), _kernel_noise(x, noise),
                             np.float32(step), -qmax, qmax, noise is not None)
        return out
    return torch.clamp(round_(x / step, rounding, generator, noise), -qmax, qmax) * step


def sawb_alpha(w: Tensor, bits: int = 4) -> Tensor:
    """SAWB clip (Choi et al. 2018): alpha = c1 sqrt(E[w^2]) - c2 E[|w|], at most max|w|; max|w| when <= 0.

    Coefficients are fitted for a given bit width; only 4 bits (c1 = 12.68, c2 = 12.80) is tabulated here.
    """
    if bits not in SAWB_COEFFICIENTS:
        raise ValueError(f"SAWB coefficients are known for bits in {sorted(SAWB_COEFFICIENTS)}, got {bits}")
    c1, c2 = SAWB_COEFFICIENTS[bits]
    w = w.detach()
    amax = w.abs().amax()
    _check_finite_scalar(amax, "weight")
    wd = w.double()                # float64 moments: E[w^2] of weights near the float32 limit must not overflow
    alpha = c1 * torch.sqrt((wd * wd).mean()) - c2 * wd.abs().mean()
    # a clip beyond max|w| clips nothing and only coarsens the grid (and may not fit the float type)
    alpha = torch.minimum(alpha, amax.double()).to(w.dtype)
    return torch.where(alpha > 0, alpha, amax)


def int4_sawb(w: Tensor, rounding: Rounding = "nearest", generator: torch.Generator | None = None) -> Tensor:
    return int_symmetric(w, 4, sawb_alpha(w, 4), rounding, generator)


def int_max(x: Tensor, bits: int, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
            amax: Tensor | None = None) -> Tensor:
    """Symmetric INT with alpha = max|x| (no clipping): INT8 weights, activations and gradients."""
    amax = _amax(x, "input") if amax is None else amax
    return int_symmetric(x, bits, amax, rounding, generator)


def pact_forward(x: Tensor, alpha: Tensor, bits: int, signed: bool = False, rounding: Rounding = "nearest",
                 generator: torch.Generator | None = None) -> Tensor:
    """PACT (Choi et al. 2018): y = clip(x, 0, alpha) (or [-alpha, alpha]), quantized to 2^bits - 1 uniform steps
    (2^(bits-1) - 1 a side when signed). Gradients are in `pact_backward`."""
    alpha = alpha.detach().to(x.dtype)
    if not bool(alpha > 0):
        raise ValueError(f"PACT clip alpha must be > 0, got {float(alpha)}")
    levels = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
    step = _div(alpha, levels)
    noise = _noise(x, rounding, generator)
    if N._fast(x):
        from frugalnet.lowbit import _kernels

        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        bad = np.zeros(1, dtype=np.int64)
        _kernels.pick("pact", x.numel())(_np(x).reshape(-1), out.numpy().reshape(-1), _kernel_noise(x, noise),
                                         np.float32(alpha), np.float32(step), bool(signed), noise is not None, bad)
        if bad[0]:
            raise ValueError("activation contains NaN or Inf; low-bit formats have no encoding for them "
                             "(check the learning rate / loss scale)")
        return out
    check_finite(x, "activation")
    if signed:
        y = torch.maximum(torch.minimum(x, alpha), -alpha)
    else:
        y = torch.minimum(torch.relu(x), alpha)
    return round_(y / step, rounding, generator, noise) * step


def pact_backward(grad: Tensor, x: Tensor, alpha: Tensor, signed: bool = False) -> tuple[Tensor, Tensor]:
    """PACT's straight-through gradients: dq/dx = 1 inside the clip range, 0 outside;
    dq/dalpha = 1 where x >= alpha (and -1 where x <= -alpha when signed), 0 elsewhere."""
    alpha = alpha.detach().to(x.dtype)
    upper = x >= alpha
    if signed:
        lower = x <= -alpha
        grad_x = grad.masked_fill(upper | lower, 0.0)
        grad_alpha = grad.masked_fill(~upper, 0.0).sum() - grad.masked_fill(~lower, 0.0).sum()
    else:
        grad_x = grad.masked_fill(upper | (x < 0), 0.0)
        grad_alpha = grad.masked_fill(~upper, 0.0).sum()
    return grad_x, grad_alpha.reshape(alpha.shape)


# --- radix-4 FP4 for gradients --------------------------------------------------------------------------------------
def radix4_scale(amax: Tensor) -> Tensor:
    """Per-layer gradient scale s = 2^ceil(log2 amax) (1 when amax = 0): a power of two with amax <= s."""
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    return _exp2(ceil_log2(safe.float())).to(amax.dtype)


def radix4_fp4(x: Tensor, phase: int = 0, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
               amax: Tensor | None = None) -> Tensor:
    """Radix-4 FP4 (Sun et al. 2020): 1 sign bit, 3 exponent bits, no mantissa; zero and +-t * 4^-j, j = 0..6.

    Phase 0 (the copy for dX = dY W): top level t = s, grid s * {1, 4^-1, ..., 4^-6} (even powers of two times s).
    Phase 1 (the copy for dW = dY^T X): t = 2s, grid 2s * {1, 4^-1, ..., 4^-6} (odd powers of two times s).
    s = radix4_scale(amax) with amax = max|x| unless given (e.g. all-reduced over ranks). Between two neighbouring
    levels (or between 0 and the smallest one) rounding is linear: nearest picks the closer value (a tie, exactly
    halfway, goes down to the smaller magnitude: round(0.5) = 0), stochastic is unbiased. Nothing saturates, since
    |x| <= s <= t.
    """
    if phase not in (0, 1):
        raise ValueError(f"phase must be 0 (even powers) or 1 (odd powers), got {phase}")
    amax = _amax(x, "gradient") if amax is None else amax
    if float(amax) > RADIX4_MAX_AMAX:
        raise ValueError(f"gradient magnitude {float(amax):.3g} is beyond radix-4 FP4's range (its power-of-two scale "
                         f"2s must stay a finite float32, so max|x| <= 2^126); training has likely diverged: lower "
                         f"the learning rate or the loss scale")
    top = radix4_scale(amax) * (2.0 if phase else 1.0)
    smallest = 4.0 ** -(RADIX4_LEVELS - 1)
    noise = _noise(x, rounding, generator)
    if N._fast(x):
        from frugalnet.lowbit import _kernels

        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        _kernels.pick("radix4", x.numel())(_np(x).reshape(-1), out.numpy().reshape(-1), _kernel_noise(x, noise),
                                           np.float32(top), np.float32(smallest), noise is not None)
        return out
    v = x.abs() / top                                     # in [0, 1]
    # lower neighbour lo = 4^floor(log4 v) (exact via the exponent field), step to the next level = 3 lo.
    safe = torch.clamp(v, min=smallest)
    lo = _exp2(torch.div(floor_log2(safe), 2, rounding_mode="floor") * 2)
    below = v < smallest
    lo = torch.where(below, torch.zeros_like(lo), lo)
    step = torch.where(below, torch.full_like(lo, smallest), 3.0 * lo)
    q = lo + round_((v - lo) / step, rounding, generator, noise).clamp(0, 1) * step
    return torch.copysign(q, x) * top


# --- minifloats: E2M1, FP8 ----------------------------------------------------------------------------------------
def minifloat(x: Tensor, spec: MinifloatSpec, rounding: Rounding = "nearest",
              generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """Round x to a sign-exponent-mantissa format with subnormals, saturating at +-spec.max.

    Within a binade [2^e, 2^(e+1)) the grid step is 2^(e - mantissa); below 2^emin the subnormal step 2^(emin -
    mantissa) continues to zero. Nearest ties go to the even mantissa (e.g. E2M1: 2.5 -> 2, 5 -> 4)."""
    check_finite(x)
    if noise is None:
        noise = _noise(x, rounding, generator)
    if N._fast(x):
        return _minifloat_kernel(x, spec, noise, torch.ones(()))
    a = x.abs()
    e = torch.clamp(floor_log2(torch.clamp(a, min=2.0 ** spec.emin)), min=spec.emin)
    ulp = _exp2(e - spec.mantissa).to(x.dtype)
    q = torch.clamp(round_(a / ulp, rounding, generator, noise) * ulp, max=spec.max)
    return torch.copysign(q, x)


def _minifloat_kernel(x: Tensor, spec: MinifloatSpec, noise: Tensor | None, scale: Tensor) -> Tensor:
    from frugalnet.lowbit import _kernels

    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    _kernels.pick("minifloat_scaled", x.numel())(_np(x).reshape(-1), out.numpy().reshape(-1), _kernel_noise(x, noise),
                              np.float32(scale), spec.mantissa, spec.emin, np.float32(spec.max), noise is not None)
    return out


def e2m1(x: Tensor, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
         noise: Tensor | None = None) -> Tensor:
    """E2M1 elements: +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}."""
    return minifloat(x, E2M1, rounding, generator, noise)


def fp8(x: Tensor, spec: MinifloatSpec = E4M3, rounding: Rounding = "nearest",
        generator: torch.Generator | None = None, amax: Tensor | None = None) -> Tensor:
    """FP8 with a per-tensor FP32 scale amax / max (current scaling), so the largest value maps to the top code."""
    amax = _amax(x, "input") if amax is None else amax
    scale = torch.where(amax > 0, _div(amax, spec.max), torch.ones_like(amax))
    noise = _noise(x, rounding, generator)
    if N._fast(x):
        return _minifloat_kernel(x, spec, noise, scale)
    return minifloat(x / scale, spec, rounding, generator, noise) * scale


# --- block-scaled 4-bit formats ----------------------------------------------------------------------------------
def _blocked(x: Tensor, dim: int, block: int) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """View x as (..., nblocks, block) along `dim` (zero padded) and return the inverse map."""
    dim = dim % x.dim() if x.dim() else 0
    moved = x.movedim(dim, -1)
    n = moved.shape[-1]
    pad = (-n) % block
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad))
    shape = moved.shape
    blocks = moved.reshape(*shape[:-1], shape[-1] // block, block)

    def restore(b: Tensor) -> Tensor:
        out = b.reshape(shape)
        if pad:
            out = out[..., :n]
        return out.movedim(-1, dim)

    return blocks, restore


def mx_block_scales(block_amax: Tensor) -> Tensor:
    """E8M0 shared scales 2^(floor(log2 amax) - 2) (2 = E2M1's largest exponent), exponent clamped to [-127, 127];
    an all-zero block gets 2^-127."""
    safe = torch.where(block_amax > 0, block_amax, torch.ones_like(block_amax))
    e = torch.where(block_amax > 0, floor_log2(safe) - 2, torch.full_like(floor_log2(safe), -127))
    return _exp2(torch.clamp(e, -127, 127))


def mxfp4(x: Tensor, dim: int = -1, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
          block: int = 32) -> Tensor:
    """OCP MXFP4: blocks of `block` (32) E2M1 elements along `dim` sharing an E8M0 power-of-two scale.

    Elements x / scale lie in [0, 8); those in (6, 8) saturate to 6 (the OCP conversion rule)."""
    if x.numel() == 0:
        return x.clone()
    noise = _noise(x, rounding, generator)
    if N._fast(x):
        return _block_kernel(x, dim, block, noise, None)
    blocks, restore = _blocked(x, dim, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    _check_finite_scalar(amax.amax(), "input")
    scale = mx_block_scales(amax)
    noise = _blocked(noise, dim, block)[0] if noise is not None else None
    return restore(minifloat(blocks / scale, E2M1, rounding, generator, noise) * scale)


def _block_kernel(x: Tensor, dim: int, block: int, noise: Tensor | None, tensor_scale: Tensor | None) -> Tensor:
    """MX (tensor_scale None) or NVFP4 blocks through the fused kernel, on an (outer, n, inner) view of x."""
    from frugalnet.lowbit import _kernels

    dim = dim % x.dim()
    shape = x.shape
    view = (math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:]))
    out = torch.empty(shape, dtype=x.dtype)
    u3 = _np(noise).reshape(view) if noise is not None else np.zeros((1, 1, 1), dtype=np.float32)
    bad = np.zeros(1, dtype=np.int64)
    _kernels.pick("block_e2m1", x.numel())(_np(x).reshape(view), out.numpy().reshape(view), u3, block,
                                           tensor_scale is not None,
                                           np.float32(tensor_scale if tensor_scale is not None else 1.0),
                                           noise is not None, bad)
    if bad[0]:
        raise ValueError("input contains NaN or Inf; low-bit formats have no encoding for them "
                         "(check the learning rate / loss scale)")
    return out


def nvfp4_tensor_scale(amax: Tensor) -> Tensor:
    """NVFP4's FP32 per-tensor scale amax / (448 * 6), so block scales fit E4M3; 1 for an all-zero tensor."""
    return torch.where(amax > 0, _div(amax, E4M3.max * E2M1.max), torch.ones_like(amax))


def nvfp4(x: Tensor, dim: int = -1, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
          amax: Tensor | None = None, block: int = 16) -> Tensor:
    """NVFP4: blocks of 16 E2M1 elements along `dim`, each with an E4M3 scale (rounded to nearest), times an FP32
    tensor scale from amax (max|x| unless given, e.g. all-reduced). A block whose E4M3 scale underflows to 0 is 0."""
    if x.numel() == 0:
        return x.clone()
    amax = _amax(x, "input") if amax is None else amax
    tensor_scale = nvfp4_tensor_scale(amax)
    noise = _noise(x, rounding, generator)
    if N._fast(x):
        return _block_kernel(x, dim, block, noise, tensor_scale)
    blocks, restore = _blocked(x, dim, block)
    block_scale = minifloat(blocks.abs().amax(-1, keepdim=True) / (E2M1.max * tensor_scale), E4M3)
    scale = block_scale * tensor_scale
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    noise = _blocked(noise, dim, block)[0] if noise is not None else None
    q = minifloat(blocks / safe, E2M1, rounding, generator, noise) * scale
    return restore(q)


# --- the random Hadamard transform (NVFP4 recipe, weight-gradient GEMM) -------------------------------------------
def hadamard_matrix(n: int) -> Tensor:
    """Orthonormal Sylvester Hadamard matrix of size n (a power of two)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def random_hadamard(x: Tensor, signs: Tensor, dim: int = 0) -> Tensor:
    """Apply R = H diag(signs) blockwise (block = len(signs)) along `dim`; that dimension is zero padded to a multiple
    of the block and stays padded, so two operands transformed alike keep the GEMM exact: (R A)^T (R B) = A^T B.
    Only the quantization error changes (outliers are spread over the block)."""
    n = signs.numel()
    mat = hadamard_matrix(n).to(x) * signs.to(x).unsqueeze(0)
    moved = x.movedim(dim, 0)
    pad = (-moved.shape[0]) % n
    if pad:
        moved = torch.cat([moved, moved.new_zeros((pad, *moved.shape[1:]))])
    shape = moved.shape
    blocks = moved.contiguous().view(shape[0] // n, n, -1)
    return torch.matmul(mat, blocks).view(shape).movedim(0, dim)
