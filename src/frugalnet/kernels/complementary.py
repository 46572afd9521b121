"""Complementary sparsity (Hunter, Spracklen & Ahmad 2021): N sparse kernels with disjoint masks packed into one
dense structure. Each packed weight remembers which kernel owns it; a sparse input multiplies the packed structure
once, and every product is routed to (and summed into) the output of its owning kernel.

Linear: packed wt (in, out) and owner (in, out) int8 -> out (B, N, out).
Conv2d: packed wt (Cin, kh, kw, Cout) and owner of the same shape -> out (B, N, Cout, OH, OW).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from frugalnet.kernels._jit import kernel
from frugalnet.kernels.conv_active import tap_output, unflatten_chw


@kernel
def comp_linear_active(wt, owner, aidx, aval, counts, bias, out):
    """bias (N, out); active inputs (B, K) as in kernels.linear."""
    n_k, n_out = out.shape[1], out.shape[2]
    for b in prange(aidx.shape[0]):
        acc = np.zeros((n_out, n_k), dtype=np.float32)
        for t in range(counts[b]):
            v = aval[b, t]
            i = aidx[b, t]
            w = wt[i]
            o = owner[i]
            for r in range(n_out):
                acc[r, o[r]] += v * w[r]
        for n in range(n_k):
            for r in range(n_out):
                out[b, n, r] = acc[r, n] + bias[n, r]


@kernel
def comp_conv_active(aidx, aval, counts, in_h, in_w, wt, owner, bias, sh, sw, ph, pw, dh, dw, out):
    """Sparse-input conv of N packed kernels; bias (N, Cout); out (B, N, Cout, OH, OW)."""
    kh, kw, cout = wt.shape[1], wt.shape[2], wt.shape[3]
    n_k, oh, ow = out.shape[1], out.shape[3], out.shape[4]
    hw = in_h * in_w
    for b in prange(aidx.shape[0]):
        acc = np.zeros((oh, ow, cout, n_k), dtype=np.float32)
        for t in range(counts[b]):
            v = aval[b, t]
            ci, iy, ix = unflatten_chw(aidx[b, t], hw, in_w)
            for ky in range(kh):
                oy = tap_output(iy, ph, ky, dh, sh, oh)
                if oy < 0:
                    continue
                for kx in range(kw):
                    ox = tap_output(ix, pw, kx, dw, sw, ow)
                    if ox < 0:
                        continue
                    w = wt[ci, ky, kx]
                    o = owner[ci, ky, kx]
                    a = acc[oy, ox]
                    for co in range(cout):
                        a[co, o[co]] += v * w[co]
        for n in range(n_k):
            for co in range(cout):
                for oy in range(oh):
                    for ox in range(ow):
                        out[b, n, co, oy, ox] = acc[oy, ox, co, n] + bias[n, co]


def pack(weights, masks=None) -> tuple[np.ndarray, np.ndarray]:
    """Pack N weights (N, out, *fan_in) with disjoint supports into (dense, owner int8), both (out, *fan_in).

    `masks` (N, ...) bool gives the supports; without it the nonzeros are used. Raises ValueError on overlap.
    """
    w = np.asarray(weights.detach().cpu().numpy() if hasattr(weights, "detach") else weights, dtype=np.float32)
    m = (w != 0) if masks is None else np.asarray(masks.cpu().numpy() if hasattr(masks, "cpu") else masks, bool)
    if m.shape != w.shape:
        raise ValueError(f"masks shape {m.shape} does not match weights shape {w.shape}")
    n = w.shape[0]
    if n > 127:
        raise ValueError(f"at most 127 complementary kernels can be packed, got {n}")
    if (m.sum(0) > 1).any():
        raise ValueError("complementary masks overlap: each weight position may belong to one kernel only")
    owner = np.argmax(m, axis=0).astype(np.int8)
    dense = np.where(m, w, 0.0).sum(0).astype(np.float32)
    return dense, owner
