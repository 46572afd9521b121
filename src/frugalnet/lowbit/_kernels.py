"""Fused CPU kernels (numba) for the quantizers in formats.py: one pass over memory instead of ten torch ops.

Each kernel performs exactly the float32 operations of its torch reference in formats.py (same divisions, same
round-half-even, same order), so the two give bit-identical results; tests check this. Stochastic rounding takes its
uniform draws `u` from the caller (torch, seeded), laid out like x. Kernels that could meet NaN/Inf without a prior
amax check count them in `bad` so the caller can raise. Every kernel comes in a serial and a parallel build
(`kernels._jit.kernel`); `pick(name, n)` chooses by size, since starting threads costs more than it saves on small
tensors. The scalar rounding helpers live in `kernels/quant.py`, shared with the engine's packed low-bit kernels.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch

from frugalnet.kernels._jit import kernel
from frugalnet.kernels.quant import block_scale as _block_scale, e2m1_round as _e2m1, minifloat_round as _minifloat

f32 = np.float32


@kernel
def _minifloat_scaled(x, out, u, scale, mant, emin, fmax, stochastic):
    """out = minifloat(x / scale) * scale, elementwise over flat arrays (scale = 1 for plain minifloat)."""
    for i in nb.prange(x.size):
        ui = u[i] if stochastic else f32(0.0)
        out[i] = f32(_minifloat(f32(x[i] / scale), mant, emin, fmax, ui, stochastic) * scale)


@kernel
def _int_uniform(x, out, u, step, lo, hi, stochastic):
    """out = clamp(round(x / step), lo, hi) * step."""
    for i in nb.prange(x.size):
        r = f32(x[i] / step)
        k = math.floor(f32(r + u[i])) if stochastic else np.rint(r)
        if k < lo:
            k = lo
        elif k > hi:
            k = hi
        out[i] = f32(f32(k) * step)


@kernel
def _pact(x, out, u, alpha, step, signed, stochastic, bad):
    """out = round(clip(x, 0 or -alpha, alpha) / step) * step; counts non-finite inputs in bad[0]."""
    n_bad = 0
    for i in nb.prange(x.size):
        v = x[i]
        if not math.isfinite(v):
            n_bad += 1
        y = min(v, alpha)
        y = max(y, -alpha) if signed else max(y, f32(0.0))
        r = f32(y / step)
        k = math.floor(f32(r + u[i])) if stochastic else np.rint(r)
        out[i] = f32(f32(k) * step)
    bad[0] = n_bad


@kernel
def _radix4(x, out, u, top, smallest, stochastic):
    """Radix-4 FP4 (mirrors formats.radix4_fp4): levels top * 4^-j, j = 0..6, and 0."""
    for i in nb.prange(x.size):
        v = f32(abs(x[i]) / top)
        if v < smallest:
            lo = f32(0.0)
            step = smallest
        else:
            e = ((v.view(np.int32) >> 23) & 0xFF) - 127           # floor(log2 v); v >= 4^-6 is normal
            lo = np.int32((((e // 2) * 2) + 127) << 23).view(np.float32)
            step = f32(f32(3.0) * lo)
        r = f32(f32(v - lo) / step)
        k = math.floor(f32(r + u[i])) if stochastic else np.rint(r)
        k = min(max(k, 0.0), 1.0)
        q = f32(lo + f32(f32(k) * step))
        out[i] = f32(f32(math.copysign(q, x[i])) * top)


@kernel
def _block_e2m1(x3, out3, u3, block, nv, tensor_scale, stochastic, bad):
    """E2M1 blocks of `block` along axis 1 of (outer, n, inner) arrays.

    nv=False: MX, scale 2^(floor(log2 amax) - 2) clamped to [2^-127, 2^127] (2^-127 for a zero block).
    nv=True: NVFP4, scale = e4m3(amax / (6 * tensor_scale)) * tensor_scale (a zero scale gives zeros).
    With inner > 1 (blocks across rows) each pass runs along contiguous rows, so the loops vectorise; non-finite
    input is detected by a NaN-propagating sum (a - a is NaN exactly for NaN and Inf).
    """
    n_outer, n, n_inner = x3.shape
    n_blocks = (n + block - 1) // block
    total = n_outer * n_blocks
    flags = np.zeros(total, dtype=np.int64)
    for t in nb.prange(total):
        o = t // n_blocks
        start = (t % n_blocks) * block
        end = min(n, start + block)
        if n_inner == 1:
            am = f32(0.0)
            chk = f32(0.0)
            for j in range(start, end):
                a = abs(x3[o, j, 0])
                chk += a - a
                am = max(am, a)
            if chk != chk:
                flags[t] = 1
            scale, safe = _block_scale(am, nv, tensor_scale)
            for j in range(start, end):
                ui = u3[o, j, 0] if stochastic else f32(0.0)
                out3[o, j, 0] = f32(_e2m1(f32(x3[o, j, 0] / safe), ui, stochastic) * scale)
            continue
        amax = np.zeros(n_inner, dtype=np.float32)
        chk = np.zeros(n_inner, dtype=np.float32)
        for j in range(start, end):
            row = x3[o, j]
            for i in range(n_inner):
                a = abs(row[i])
                chk[i] += a - a
                amax[i] = max(amax[i], a)
        scales = np.empty(n_inner, dtype=np.float32)
        safes = np.empty(n_inner, dtype=np.float32)
        for i in range(n_inner):
            if chk[i] != chk[i]:
                flags[t] = 1
            scales[i], safes[i] = _block_scale(amax[i], nv, tensor_scale)
        for j in range(start, end):
            row = x3[o, j]
            dst = out3[o, j]
            if stochastic:
                noise = u3[o, j]
                for i in range(n_inner):
                    dst[i] = f32(_e2m1(f32(row[i] / safes[i]), noise[i], True) * scales[i])
            else:
                for i in range(n_inner):
                    dst[i] = f32(_e2m1(f32(row[i] / safes[i]), f32(0.0), False) * scales[i])
    bad[0] = flags.sum()


@kernel
def _hash_uniform(seed, out):
    """out[i] = fmix32(i * 0x9E3779B1 + seed) >> 8, times 2^-24: mirrors formats.hash_uniform bit for bit."""
    mask = np.uint64(0xFFFFFFFF)
    s = seed & mask
    for i in nb.prange(out.size):
        h = (np.uint64(i) * np.uint64(0x9E3779B1) + s) & mask
        h = h ^ (h >> np.uint64(16))
        h = (h * np.uint64(0x85EBCA6B)) & mask
        h = h ^ (h >> np.uint64(13))
        h = (h * np.uint64(0xC2B2AE35)) & mask
        h = h ^ (h >> np.uint64(16))
        out[i] = f32(h >> np.uint64(8)) * f32(5.9604644775390625e-08)


PARALLEL_MIN = 1 << 17      # elements from which the parallel build is used
_KERNELS = {"minifloat_scaled": _minifloat_scaled, "int_uniform": _int_uniform, "pact": _pact, "radix4": _radix4,
            "block_e2m1": _block_e2m1, "hash_uniform": _hash_uniform}


def pick(name: str, n: int):
    """The compiled kernel `name` for a tensor of n elements: serial for small tensors or when torch is limited to
    one thread; otherwise the parallel build on as many numba threads as torch uses (so `torch.set_num_threads`
    governs the quantizers too, and they never oversubscribe the cores torch was given)."""
    threads = torch.get_num_threads()
    if n < PARALLEL_MIN or threads < 2:
        return _KERNELS[name].serial
    nb.set_num_threads(min(threads, nb.config.NUMBA_NUM_THREADS))
    return _KERNELS[name].parallel
