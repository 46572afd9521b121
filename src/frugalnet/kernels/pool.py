"""2-D max and average pooling on NCHW float32 arrays (no dilation, floor mode; average counts padding as torch's
default count_include_pad=True does)."""
from __future__ import annotations

import numpy as np
from numba import prange

from frugalnet.kernels._jit import kernel


@kernel
def max_pool(x, kh, kw, sh, sw, ph, pw, out):
    b_, c_, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for p in prange(b_ * c_):
        b = p // c_
        c = p % c_
        plane = x[b, c]
        for oy in range(oh):
            for ox in range(ow):
                m = -np.inf
                for ky in range(kh):
                    y = oy * sh - ph + ky
                    if y < 0 or y >= h:
                        continue
                    for kx in range(kw):
                        xx = ox * sw - pw + kx
                        if xx < 0 or xx >= w:
                            continue
                        v = plane[y, xx]
                        if v > m or v != v:
                            m = v
                out[b, c, oy, ox] = m


@kernel
def avg_pool(x, kh, kw, sh, sw, ph, pw, out):
    b_, c_, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    inv = np.float32(1.0 / (kh * kw))
    for p in prange(b_ * c_):
        b = p // c_
        c = p % c_
        plane = x[b, c]
        for oy in range(oh):
            for ox in range(ow):
                s = np.float32(0.0)
                for ky in range(kh):
                    y = oy * sh - ph + ky
                    if y < 0 or y >= h:
                        continue
                    for kx in range(kw):
                        xx = ox * sw - pw + kx
                        if 0 <= xx < w:
                            s += plane[y, xx]
                out[b, c, oy, ox] = s * inv


@kernel
def max_pool_2x2(x, out):
    """The common 2x2, stride 2, unpadded max pool: two input rows per output row, branch-free, vectorisable; NaN
    propagates as in torch. out (B, C, H // 2, W // 2)."""
    b_, c_ = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for p in prange(b_ * c_):
        plane = x[p // c_, p % c_]
        o = out[p // c_, p % c_]
        for oy in range(oh):
            r0 = plane[2 * oy]
            r1 = plane[2 * oy + 1]
            d = o[oy]
            for ox in range(ow):
                a = r0[2 * ox]
                v = r0[2 * ox + 1]
                a = v if (v > a or v != v) else a
                v = r1[2 * ox]
                a = v if (v > a or v != v) else a
                v = r1[2 * ox + 1]
                a = v if (v > a or v != v) else a
                d[ox] = a


def pool_fn(mode: str, kh: int, kw: int, sh: int, sw: int, ph: int, pw: int, parallel: bool):
    """(x, out) -> None running one pooling configuration: the branch-free 2x2 kernel for the plain 2x2 / stride 2 /
    unpadded max pool, the general max or average kernel otherwise. Chosen once, where a step is bound."""
    if mode == "max" and (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        return max_pool_2x2.pick(parallel)
    k = (max_pool if mode == "max" else avg_pool).pick(parallel)
    return lambda x, out: k(x, kh, kw, sh, sw, ph, pw, out)
