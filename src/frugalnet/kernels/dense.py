"""Dense Linear at small batches, memory-bound: y = x W^T + b with W (out, in) read once, row by row.

Why: at batch 1 a dense Linear reads every weight once and does one multiply-add with it, so its speed is the rate
W streams from memory. PyTorch's `F.linear(x, W)` on a (1, in) input goes through a GEMM with W transposed and on
the AMD EPYC of our CI machines reached 9-12 GB/s on a GPT-2 LM head (50257 x 768, 154 MB, 2 threads), where a
plain pass over the same bytes runs at 25+ GB/s (measured with /tmp-style side-by-side timings; see
benchmarks/engine_steps.py for the engine's own figure). This kernel reads each row once for all samples of the
batch (the row stays in L1 across samples), sixteen lanes at a time with four independent fused multiply-add
chains (kernels.quant_simd's vector intrinsics: one AVX-512 register, or two AVX2 ones, per chain).

Float order: each output is summed in 16-lane partial sums then halved pairwise, not left to right, so results
differ from PyTorch's in the last bits (relative 1e-6 on sums of hundreds of terms); the engine checks each variant
against PyTorch's output before it may be chosen.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from frugalnet.kernels._jit import kernel
from frugalnet.kernels.quant_simd import vadd, vfma16, vload16, vsum, vzero

LANES = 16


@kernel
def gemv_rows(w, x, bias, out):
    """out[b, r] = sum_j w[r, j] x[b, j] + bias[r]; w (out, in), x (B, in), bias (out,), all C-contiguous float32.
    Parallel over output rows (contiguous chunks: each thread streams its own part of W)."""
    n_out, n_in = w.shape
    batch = x.shape[0]
    wflat = w.reshape(-1)
    xflat = x.reshape(-1)
    body = n_in - n_in % 64
    vec = n_in - n_in % LANES
    for r in prange(n_out):
        base = r * n_in
        for b in range(batch):
            xb = b * n_in
            a0 = vzero()
            a1 = vzero()
            a2 = vzero()
            a3 = vzero()
            j = 0
            while j < body:
                a0 = vfma16(vload16(wflat, base + j), vload16(xflat, xb + j), a0)
                a1 = vfma16(vload16(wflat, base + j + 16), vload16(xflat, xb + j + 16), a1)
                a2 = vfma16(vload16(wflat, base + j + 32), vload16(xflat, xb + j + 32), a2)
                a3 = vfma16(vload16(wflat, base + j + 48), vload16(xflat, xb + j + 48), a3)
                j += 64
            while j < vec:
                a0 = vfma16(vload16(wflat, base + j), vload16(xflat, xb + j), a0)
                j += LANES
            s = vsum(vadd(vadd(a0, a1), vadd(a2, a3)))
            while j < n_in:
                s += wflat[base + j] * xflat[xb + j]
                j += 1
            out[b, r] = s + bias[r]


def check_gemv(w: np.ndarray, x: np.ndarray, bias: np.ndarray, out: np.ndarray) -> None:
    """Shapes, dtypes and layout gemv_rows relies on (it does no bounds checks)."""
    for name, a, nd in (("w", w, 2), ("x", x, 2), ("bias", bias, 1), ("out", out, 2)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != nd or not a.flags.c_contiguous:
            raise ValueError(f"gemv_rows: {name} must be a C-contiguous {nd}-D float32 array, got "
                             f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if x.shape[1] != w.shape[1] or bias.shape[0] != w.shape[0] or out.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"gemv_rows: shapes do not fit: w {w.shape}, x {x.shape}, bias {bias.shape}, out {out.shape}")
