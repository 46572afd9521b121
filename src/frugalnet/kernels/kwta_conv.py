"""Numba kernels for the backward of a SparseConv2d whose input is a k-WTA output (CNN-2's conv2 after KWinners2d):
only the winners of the k-WTA carry gradient back, so the convolution's input gradient is needed at the winners'
positions alone, and the weight gradient reads only the input's nonzeros (which are winners). Both are computed in
one pass over those positions, each reading the output gradient's channel vector once for both products.

Layouts as in kernels.conv_train: x (B, C, H, W); the weight transposed to wt (C, KH, KW, O); the output gradient
channels-last, gy (B, OH, OW, O); the weight gradient gwt (C, KH, KW, O). Stride 1, no padding, no dilation.
"""
from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, KernelPair, parallel_jit

# The input gradient is a dot product per winner (over taps and output channels). Under strict IEEE semantics
# LLVM keeps its scalar sum in order and does not vectorise it: the fused kernel took 29.5 ms against 4.8 ms with
# reassociation allowed (CNN-2's conv2 shapes, 9.5% nonzero input, one thread, minimum of 15 interleaved runs, on
# the loaded 2-core machine); a per-channel accumulator vector instead stalls on its own store (8.0 ms). So these
# builds allow reassociation alone: the sum's order changes (results equal PyTorch's to float tolerance, tested),
# while inf and NaN keep IEEE semantics (no 'nnan'/'ninf').
_REASSOC = {"reassoc"}


class _ReassocPair(KernelPair):
    def __init__(self, fn) -> None:   # KernelPair's two builds, with fastmath=_REASSOC
        serial_fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                       fn.__closure__)
        serial_fn.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = njit(**dict(JIT, fastmath=_REASSOC))(serial_fn)
        self.parallel = njit(**dict(parallel_jit(), fastmath=_REASSOC))(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__


@_ReassocPair
def conv_grads_active(x, gy, wt, gwt, gx):
    """gwt (C, KH, KW, O) = the weight gradient (as conv_train.conv_gw_active), and gx (B, C, H, W) = the input
    gradient at x's nonzeros, 0 elsewhere. Parallel over input channels (each owns its weight-gradient slice and
    its gx planes)."""
    batch, n_c, h, w = x.shape
    kh_n, kw_n, n_o = wt.shape[1], wt.shape[2], wt.shape[3]
    oh, ow = gy.shape[1], gy.shape[2]
    for c in prange(n_c):
        gc = gwt[c]
        wc = wt[c]
        for kh in range(kh_n):
            for kw in range(kw_n):
                g = gc[kh, kw]
                for o in range(n_o):
                    g[o] = 0.0
        for b in range(batch):
            xc = x[b, c]
            gb = gy[b]
            gxc = gx[b, c]
            for iy in range(h):
                k0 = max(0, iy - oh + 1)
                k1 = min(kh_n, iy + 1)
                for ix in range(w):
                    v = xc[iy, ix]
                    if v == 0:
                        gxc[iy, ix] = 0.0
                        continue
                    j0 = max(0, ix - ow + 1)
                    j1 = min(kw_n, ix + 1)
                    s = np.float32(0.0)
                    for kh in range(k0, k1):
                        for kw in range(j0, j1):
                            g = gc[kh, kw]
                            r = gb[iy - kh, ix - kw]
                            wr = wc[kh, kw]
                            for o in range(n_o):
                                g[o] += v * r[o]
                            for o in range(n_o):
                                s += wr[o] * r[o]
                    gxc[iy, ix] = s


@_ReassocPair
def conv_gx_at_zero_winners(x, aidx, gy, wt, gx):
    """gx at the winners (flat indices aidx (B, k) into each sample's (C, H, W)) where x is 0: a winner of value 0
    still carries gradient, which conv_grads_active (nonzeros only) left at 0. Rare (a k-WTA input exactly 0 at a
    winning place); serial over samples."""
    batch, n_c, h, w = x.shape
    kh_n, kw_n, n_o = wt.shape[1], wt.shape[2], wt.shape[3]
    oh, ow = gy.shape[1], gy.shape[2]
    hw = h * w
    for b in prange(batch):
        for j in range(aidx.shape[1]):
            p = aidx[b, j]
            c = p // hw
            iy = (p - c * hw) // w
            ix = p - c * hw - iy * w
            if x[b, c, iy, ix] != 0:
                continue
            s = np.float32(0.0)
            for kh in range(max(0, iy - oh + 1), min(kh_n, iy + 1)):
                for kw in range(max(0, ix - ow + 1), min(kw_n, ix + 1)):
                    r = gy[b, iy - kh, ix - kw]
                    wr = wt[c, kh, kw]
                    for o in range(n_o):
                        s += wr[o] * r[o]
            gx[b, c, iy, ix] = s
