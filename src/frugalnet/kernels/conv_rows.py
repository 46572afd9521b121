"""Sparse-weight x dense-input convolution, stride 1, with each output row summed in vector registers.

Each output channel's nonzero taps are a list of (flat offset into the padded input sample, value); an output row of
OW positions is held in up to four 8-lane registers while every nonzero tap adds its scaled input row segment (a
contiguous load: stride 1), and is stored once. kernels.conv.conv_dense_input does the same arithmetic tap by tap
with the output row read and written for every tap (a store-bound loop the compiler does not vectorise: CIFAR
ResNet-18's 64-channel 3x3 convs at 32 x 32, 90% sparse, took 2.2 ms there against 0.44 ms for oneDNN's dense).
The taps are summed in list order per position, as a left-to-right dot product would (float rounding differs from
PyTorch's only in order; the engine checks every variant against PyTorch before choosing it).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.simd import LANES, vfma, vload, vstore


def tap_offsets(ptr: np.ndarray, taps: np.ndarray, padded_hw: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """Flat offsets (int64) into one padded (Cin, Hp, Wp) sample of each nonzero tap (ci, ky, kx) of
    layouts.conv_nonzero_taps, at output position (0, 0)."""
    hp, wp = padded_hw
    t = taps.astype(np.int64)
    return np.ascontiguousarray(t[:, 0] * hp * wp + t[:, 1] * dilation[0] * wp + t[:, 2] * dilation[1])


def check_conv_rows(xflat: np.ndarray, wp: int, ptr: np.ndarray, off: np.ndarray, val: np.ndarray,
                    bias: np.ndarray, out: np.ndarray) -> None:
    """Shapes and offsets conv_rows_sparse_w may read, checked before it runs (numba does no bounds checks)."""
    batch, cout, oh, ow = out.shape
    if xflat.ndim != 2 or xflat.shape[0] != batch or xflat.dtype != np.float32 or not xflat.flags.c_contiguous:
        raise ValueError(f"conv_rows: input must be C-contiguous float32 (batch={batch}, n), got {xflat.shape}")
    if ptr.shape != (cout + 1,) or bias.shape != (cout,) or off.shape != val.shape or int(ptr[-1]) != off.size \
            or np.any(np.diff(ptr.astype(np.int64)) < 0):
        raise ValueError("conv_rows: tap lists do not match the output channels")
    if off.size and (int(off.min()) < 0 or int(off.max()) + (oh - 1) * wp + ow > xflat.shape[1]):
        raise ValueError("conv_rows: a tap reaches outside the padded input")


@njit(**JIT, inline="always")
def _four_chains(xf, off, val, lo, hi, seed, d0, d1, d2, d3, dst0, c0, dst1, c1, dst2, c2, dst3, c3):
    """dst_i[c_i:c_i + 8] = seed + sum over taps t of val[t] * xf[off[t] + d_i : + 8], four independent chains of
    FMAs held in registers (so the taps' loads and FMAs overlap), each stored once."""
    a0 = vload(seed, 0)
    a1 = vload(seed, 0)
    a2 = vload(seed, 0)
    a3 = vload(seed, 0)
    for t in range(lo, hi):
        v = val[t]
        o = off[t]
        a0 = vfma(xf, o + d0, v, a0)
        a1 = vfma(xf, o + d1, v, a1)
        a2 = vfma(xf, o + d2, v, a2)
        a3 = vfma(xf, o + d3, v, a3)
    vstore(dst0, c0, a0)
    vstore(dst1, c1, a1)
    vstore(dst2, c2, a2)
    vstore(dst3, c3, a3)


@njit(**JIT, inline="always")
def _tap_sum(xf, off, val, lo, hi, bias, d):
    """bias + sum over taps of val[t] * xf[off[t] + d]: one output position, scalar (a row's last few columns)."""
    s = bias
    for t in range(lo, hi):
        s += val[t] * xf[off[t] + d]
    return s


@kernel
def conv_rows_sparse_w(xflat, wp, ptr, off, val, bias, out):
    """out (B, Cout, OH, OW) = bias + stride-1 convolution of the padded input samples xflat (B, Cin * Hp * Wp; Wp
    the padded width) with the nonzero taps (ptr (Cout + 1), off, val; see tap_offsets). Parallel over
    (sample, output channel). Four register chains per pass over the taps: a row's 32 columns, or two rows' 16, or
    four rows' 8; then any rows left one at a time, 32, 16 (two chains) and 8 columns at a time, scalar after."""
    batch, cout, oh, ow = out.shape
    for p in prange(batch * cout):
        b = p // cout
        co = p - b * cout
        xf = xflat[b]
        o = out[b, co]
        lo, hi = ptr[co], ptr[co + 1]
        bv = bias[co]
        seed = np.full(LANES, bv, np.float32)
        oy0 = 0
        if 2 * LANES <= ow < 4 * LANES:       # two rows of two registers: four chains of FMAs, not two
            while oy0 + 2 <= oh:
                r0 = oy0 * wp
                r1 = r0 + wp
                _four_chains(xf, off, val, lo, hi, seed, r0, r0 + LANES, r1, r1 + LANES,
                             o[oy0], 0, o[oy0], LANES, o[oy0 + 1], 0, o[oy0 + 1], LANES)
                for rr in range(2):
                    for cc in range(2 * LANES, ow):
                        o[oy0 + rr, cc] = _tap_sum(xf, off, val, lo, hi, bv, r0 + rr * wp + cc)
                oy0 += 2
        elif LANES <= ow < 2 * LANES:         # four rows of one register each
            while oy0 + 4 <= oh:
                r0 = oy0 * wp
                _four_chains(xf, off, val, lo, hi, seed, r0, r0 + wp, r0 + 2 * wp, r0 + 3 * wp,
                             o[oy0], 0, o[oy0 + 1], 0, o[oy0 + 2], 0, o[oy0 + 3], 0)
                for rr in range(4):
                    for cc in range(LANES, ow):
                        o[oy0 + rr, cc] = _tap_sum(xf, off, val, lo, hi, bv, r0 + rr * wp + cc)
                oy0 += 4
        for oy in range(oy0, oh):
            dst = o[oy]
            row = oy * wp
            c = 0
            while c + 4 * LANES <= ow:
                _four_chains(xf, off, val, lo, hi, seed, row + c, row + c + LANES, row + c + 2 * LANES,
                             row + c + 3 * LANES, dst, c, dst, c + LANES, dst, c + 2 * LANES, dst, c + 3 * LANES)
                c += 4 * LANES
            while c + 2 * LANES <= ow:
                a0 = vload(seed, 0)
                a1 = vload(seed, 0)
                for t in range(lo, hi):
                    base = off[t] + row + c
                    v = val[t]
                    a0 = vfma(xf, base, v, a0)
                    a1 = vfma(xf, base + LANES, v, a1)
                vstore(dst, c, a0)
                vstore(dst, c + LANES, a1)
                c += 2 * LANES
            while c + LANES <= ow:
                a0 = vload(seed, 0)
                for t in range(lo, hi):
                    a0 = vfma(xf, off[t] + row + c, val[t], a0)
                vstore(dst, c, a0)
                c += LANES
            for cc in range(c, ow):
                dst[cc] = _tap_sum(xf, off, val, lo, hi, bv, row + cc)
