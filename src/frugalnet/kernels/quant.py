"""Packed low-bit kernels (numba): GEMV/GEMM straight from 4-bit (and 8-bit) codes, and the scalar rounding helpers
the low-bit quantizers share (so the engine quantizes activations with exactly the operations of the simulation).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from frugalnet.kernels._jit import JIT

f32 = np.float32


@nb.njit(inline="always", **JIT)
def minifloat_round(v, mant, emin, fmax, u, stochastic):
    """v (float32) onto a minifloat grid with subnormals, saturating; mirrors lowbit.quantizers.minifloat."""
    a = f32(abs(v))
    # the binade read from the float32 exponent field (no libm call, so the loop vectorises); below 2^emin, and for
    # float32 subnormals (field 0, far below any emin here), the subnormal step continues
    e = max(((a.view(np.int32) >> 23) & 0xFF) - 127, emin)
    ulp = np.int32((e - mant + 127) << 23).view(np.float32)     # 2^(e - mant), exact
    r = f32(a / ulp)
    if stochastic:
        k = math.floor(f32(r + u))
    else:
        k = np.rint(r)
    q = f32(f32(k) * ulp)
    if q > fmax:
        q = fmax
    return f32(math.copysign(q, v))


@nb.njit(inline="always", **JIT)
def e2m1_round(v, u, stochastic):
    """minifloat_round specialised to E2M1 (same operations, the ulp found by comparisons instead of frexp/ldexp):
    ulp 0.5 below 2, 1 below 4, 2 above (anything from 8 up saturates to 6 under either ulp)."""
    a = abs(v)
    ulp = f32(0.5) if a < 2.0 else (f32(1.0) if a < 4.0 else f32(2.0))
    r = f32(a / ulp)
    if stochastic:
        k = math.floor(f32(r + u))
    else:
        k = np.rint(r)
    q = f32(f32(k) * ulp)
    if q > 6.0:
        q = f32(6.0)
    return f32(math.copysign(q, v))


@nb.njit(inline="always", **JIT)
def block_scale(am, nv, tensor_scale):
    """(scale, safe divisor) of one E2M1 block with max |x| = am: NVFP4 (nv) e4m3(am / (6 ts)) * ts, or MX
    2^(floor(log2 am) - 2) clamped to [2^-127, 2^127]."""
    if nv:
        bs = minifloat_round(f32(am / f32(f32(6.0) * tensor_scale)), 3, -6, f32(448.0), f32(0.0), False)
        scale = f32(bs * tensor_scale)
        return scale, (scale if scale > 0 else f32(1.0))
    e = math.frexp(am)[1] - 3 if am > 0 else -127
    scale = f32(math.ldexp(1.0, min(max(e, -127), 127)))
    return scale, scale
