"""Sparse 4-bit weights x dense input at small batches, in a "windows" layout: sixteen rows side by side (one SIMD
lane each), their entries taken sixteen at a time from a 16-column window of x held in a register.

Why: a sparse batch-1 GEMV is bound by the work per nonzero, not by memory: 4096 x 4096 at 90% sparsity, FP32
CSR's 10 MB stay in L3 and its kernel reads them at about half the rate of a plain read of the same bytes
(benchmarks/lowbit_infer.py, GB/s column). The CSR kernels (kernels.linear.csr_rows on FP32 values, quant.csr_nib on
4-bit codes) do three scalar loads per nonzero (index, value or code, x[index]), so fewer bytes alone win nothing:
4-bit CSR (2.4 bytes per nonzero against FP32's 6) ran 0.5x FP32 CSR, its nibble shifts and table lookups scalar
too. Gathering x for sixteen rows at once (one vgatherdps per sixteen entries, 1.5 bytes per nonzero: delta-coded
uint8 columns and 4-bit codes, SELL-16) only matched FP32 CSR (1.0x): on AMD Zen 4 a 16-lane gather costs about as
much as sixteen scalar loads. Register table lookups do not: x[base:base + 16] is one vector load, and `vpermps`
picks each lane's entry from it, another picks its code's value: 3.2-3.8x FP32 CSR, one core, same mask (measured
in interleaved runs on a loaded 2-core EPYC znver4; serial builds, as the parallel ones were swamped by the load).

Layout: rows are grouped sixteen to a slice (row 16 s + lane). A step of a slice has one window base (the smallest
column any lane still has to do, at most width - 16) and one byte per lane: (column - base) in the low nibble, the
4-bit code in the high one; a lane with no entry in the window gets byte 0 (code 0, whose value is 0.0 in every code
table). Steps are made greedily, so a lane takes at most one entry per step; at 90% sparsity that is about 1.8 slots
per nonzero, i.e. about 2.1 bytes per quantized nonzero with the 2-byte bases (`windows_nbytes`). Per step: one
scalar load (the base), one 64-byte load of x, one 16-byte load of entries, two vpermps and one fused multiply-add,
for sixteen slots. One scale per row (INT4 SAWB's per-tensor step) multiplies each row's finished sum once; with
block scales (MXFP4: 32 columns, NVFP4: 16) no window straddles a block, and each step multiplies its code values by
the lanes' scales of its block (one more vector load and multiply; 16-column blocks pad more: NVFP4 ~2.8 bytes per
nonzero).

Builds: `window_rows_avx512` (vpermps on 16 lanes), `window_rows_avx2` (each lookup as four 8-lane vpermps and two
blends; runs on any AVX2 CPU) and `window_rows_scalar` (plain loops: any CPU, and the tests' second opinion). The
engine offers the first two where `quant.isa()` reports the ISA, and times them. `check_windows` validates every
array (shapes, dtypes, pointers, every base against the width) before a kernel may read it: they do no bounds checks.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.quant_simd import (vadd, vfma16, vlane, vload16, vzero, window_fma256, window_fma256s,
                                          window_fma512, window_fma512s)

LANES = 16


def _window_rows_source(window_fma, window_fma_s):
    def window_rows(sptr, base, ent, lutf, lane_scale, lane_bias, bscale, shift, x, out):
        """out[b, 16 s + l] = lane_scale[16 s + l] * sum over steps t of slice s of
        w(t, l) * x[b, base[t] + (ent[16 t + l] & 15)] + lane_bias[16 s + l], with w(t, l) = lutf[ent[16 t + l] >> 4]
        (times bscale[(base[t] >> shift) * L + 16 s + l] where bscale is not empty: block scales, L = 16 n_slices,
        each window inside one block). sptr (n_slices + 1,) int64 step offsets; base (steps,) uint16/uint32;
        ent (16 steps,) uint8; lutf (16,) float32 code values; lane_scale, lane_bias (L,) float32; x (B, width)
        with every base + 16 <= width. Four independent sums (two with block scales); parallel over slices."""
        n_slices = sptr.shape[0] - 1
        n_out = out.shape[1]
        batch = x.shape[0]
        lanes = n_slices * LANES
        blocked = bscale.shape[0] > 0
        lut = vload16(lutf, 0)
        for s in prange(n_slices):
            t0 = sptr[s]
            t1 = sptr[s + 1]
            sc = vload16(lane_scale, s * LANES)
            bi = vload16(lane_bias, s * LANES)
            for b in range(batch):
                xb = x[b]
                a0 = vzero()
                a1 = vzero()
                a2 = vzero()
                a3 = vzero()
                t = t0
                if blocked:
                    while t < t1:
                        w0 = np.intp(base[np.uint64(t)])
                        a0 = window_fma_s(a0, ent, t * LANES, xb, w0, lut,
                                          vload16(bscale, (w0 >> shift) * lanes + s * LANES))
                        t += 1
                        if t < t1:
                            w1 = np.intp(base[np.uint64(t)])
                            a1 = window_fma_s(a1, ent, t * LANES, xb, w1, lut,
                                              vload16(bscale, (w1 >> shift) * lanes + s * LANES))
                            t += 1
                while t + 4 <= t1:
                    e = t * LANES
                    a0 = window_fma(a0, ent, e, xb, np.intp(base[np.uint64(t)]), lut)
                    a1 = window_fma(a1, ent, e + LANES, xb, np.intp(base[np.uint64(t + 1)]), lut)
                    a2 = window_fma(a2, ent, e + 2 * LANES, xb, np.intp(base[np.uint64(t + 2)]), lut)
                    a3 = window_fma(a3, ent, e + 3 * LANES, xb, np.intp(base[np.uint64(t + 3)]), lut)
                    t += 4
                while t < t1:
                    a0 = window_fma(a0, ent, t * LANES, xb, np.intp(base[np.uint64(t)]), lut)
                    t += 1
                res = vfma16(vadd(vadd(a0, a1), vadd(a2, a3)), sc, bi)
                o = out[b]
                for lane in range(min(LANES, n_out - s * LANES)):
                    o[s * LANES + lane] = vlane(res, lane)
    return window_rows


window_rows_avx512 = kernel(_window_rows_source(window_fma512, window_fma512s))  # where quant.isa()["avx512"]
window_rows_avx2 = kernel(_window_rows_source(window_fma256, window_fma256s))
WINDOW_ISA = {"win512": "avx512", "win256": "avx2"}      # variant name -> the ISA its build needs


def window_kernels() -> dict:
    """{variant name: kernel pair} of the window builds this host can run (quant.isa())."""
    from frugalnet.kernels.quant import isa

    has = isa()
    builds = {"win512": window_rows_avx512, "win256": window_rows_avx2}
    return {name: builds[name] for name, need in WINDOW_ISA.items() if has[need]}


@kernel
def window_rows_scalar(sptr, base, ent, lutf, lane_scale, lane_bias, bscale, shift, x, out):
    """window_rows in plain loops, one lane at a time: the portable build."""
    n_slices = sptr.shape[0] - 1
    n_out = out.shape[1]
    batch = x.shape[0]
    lanes = n_slices * LANES
    blocked = bscale.shape[0] > 0
    for s in prange(n_slices):
        for lane in range(min(LANES, n_out - s * LANES)):
            q = s * LANES + lane
            for b in range(batch):
                xb = x[b]
                acc = np.float32(0.0)
                for t in range(sptr[s], sptr[s + 1]):
                    e = ent[t * LANES + lane]
                    w0 = np.intp(base[np.uint64(t)])
                    w = lutf[e >> 4] * bscale[(w0 >> shift) * lanes + q] if blocked else lutf[e >> 4]
                    acc += w * xb[w0 + (e & 15)]
                out[b, q] = acc * lane_scale[q] + lane_bias[q]


# --- the layout: integer codes only ---------------------------------------------------------------------------------
@nb.njit(**JIT)
def _greedy_windows(ptr, idx, code, zero, n_out, width, blk, sptr, base, ent, write):
    """Steps of every slice into sptr; with `write`, also their bases and entries (run once to count, once to fill,
    so the arrays are allocated at their exact size). blk > 0: no window takes entries from two blocks of blk
    columns (one block scale per lane and step)."""
    n_slices = sptr.shape[0] - 1
    pos = np.zeros(LANES, np.int64)
    end = np.zeros(LANES, np.int64)
    t = 0
    for s in range(n_slices):
        for lane in range(LANES):
            r = s * LANES + lane
            pos[lane] = ptr[r] if r < n_out else 0
            end[lane] = ptr[r + 1] if r < n_out else 0
        while True:
            m = width
            for lane in range(LANES):
                while pos[lane] < end[lane] and zero[code[pos[lane]]]:     # entries whose value is 0 (padding)
                    pos[lane] += 1
                if pos[lane] < end[lane] and idx[pos[lane]] < m:
                    m = idx[pos[lane]]
            if m == width:
                break
            b0 = min(m, width - LANES)
            stop = b0 + LANES
            if blk > 0:
                first = (m // blk) * blk
                b0 = max(b0, first)
                stop = min(b0 + LANES, first + blk)
            if write:
                base[t] = b0
            for lane in range(LANES):
                p = pos[lane]
                if p < end[lane] and idx[p] < stop:
                    if write:
                        ent[t * LANES + lane] = np.uint8((idx[p] - b0) | (code[p] << 4))
                    pos[lane] = p + 1
            t += 1
        sptr[s + 1] = t


def to_windows(ptr: np.ndarray, idx: np.ndarray, codes: np.ndarray, zero: np.ndarray, n_out: int, width: int,
               blk: int = 0):
    """(sptr, base, ent) of a sparse 4-bit code matrix given as CSR (ptr (n_out + 1,), idx column indices below
    width, codes one 4-bit code per entry, uint8 0..15), leaving out entries whose code is zero (zero[code] True).
    width: the row length of the x the kernel will read (at least 16); blk: columns per scale block (0: one scale
    per row), a multiple of 16 dividing the width. Pure function of integer codes."""
    if width < LANES:
        raise ValueError(f"to_windows needs a width of at least {LANES} columns, got {width}")
    if blk < 0 or (blk and (blk % LANES or width % blk)):
        raise ValueError(f"to_windows: blk={blk} must be 0 or a multiple of {LANES} dividing the width {width}")
    ptr = np.asarray(ptr, np.int64)
    idx = np.asarray(idx, np.int64)
    if len(ptr) != n_out + 1 or ptr[0] != 0 or ptr[-1] != len(idx) or (np.diff(ptr) < 0).any() \
            or len(codes) < len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= width)):
        raise ValueError("to_windows takes a valid CSR pattern with column indices below the width")
    args = (ptr, idx, np.asarray(codes, np.uint8) & 15, np.asarray(zero, np.bool_), int(n_out), int(width), int(blk))
    sptr = np.zeros(-(-int(n_out) // LANES) + 1, np.int64)
    _greedy_windows(*args, sptr, np.zeros(0, np.int64), np.zeros(0, np.uint8), False)
    base, ent = np.empty(int(sptr[-1]), np.int64), np.zeros(LANES * int(sptr[-1]), np.uint8)
    _greedy_windows(*args, sptr, base, ent, True)
    return sptr, base.astype(np.uint16 if width <= 65536 else np.uint32), ent


def windows_from_csr(ptr, idx, packed, zero, n_out: int, width: int, wscale, blk: int, bias):
    """(sptr, base, ent, lane_scale, lane_bias, bscale, shift): the kernels' arguments, from 4-bit CSR codes
    (quant.compress_codes: two codes per byte), validated by check_windows. wscale (n_out, n_blocks) float32 with
    blk columns per block (a power of two; blk 0 or one block: one scale per row, applied to each row's sum)."""
    n_blocks = 1 if not blk else width // blk
    if blk and (blk & (blk - 1) or blk < LANES or width % blk) or wscale.shape != (n_out, n_blocks):
        raise ValueError(f"windows_from_csr: blk={blk} must be 0 or a power of two >= {LANES} dividing the width "
                         f"{width}, with wscale of shape ({n_out}, width / blk)")
    codes = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:len(idx)]
    blocked = n_blocks > 1
    sptr, base, ent = to_windows(ptr, idx, codes, zero, n_out, width, blk if blocked else 0)
    lanes = (len(sptr) - 1) * LANES
    lane_scale, lane_bias = np.ones(lanes, np.float32), np.zeros(lanes, np.float32)
    lane_bias[:n_out] = bias
    bscale = np.zeros(0, np.float32)
    if blocked:
        full = np.zeros((n_blocks, lanes), np.float32)
        full[:, :n_out] = wscale.T
        bscale = full.reshape(-1)
    else:
        lane_scale[:n_out] = wscale[:, 0]
    shift = blk.bit_length() - 1 if blocked else 0
    check_windows(sptr, base, ent, n_out, width, bscale, shift)
    return sptr, base, ent, lane_scale, lane_bias, bscale, shift


def check_windows(sptr, base, ent, n_out: int, width: int, bscale=None, shift: int = 0) -> None:
    """ValueError unless (sptr, base, ent) is a valid windows layout for n_out rows and inputs `width` wide, and
    bscale (block scales, flat; empty: none) has a row of lanes for every window's block base >> shift: the kernels
    may then read them with any x of exactly `width` columns."""
    n_slices = -(-int(n_out) // LANES)
    if not isinstance(sptr, np.ndarray) or sptr.dtype != np.int64 or sptr.shape != (n_slices + 1,):
        raise ValueError(f"windows layout: sptr must be int64 of shape ({n_slices + 1},)")
    if not isinstance(base, np.ndarray) or base.dtype not in (np.uint16, np.uint32) or base.ndim != 1:
        raise ValueError("windows layout: base must be a 1-D uint16/uint32 array")
    if sptr[0] != 0 or sptr[-1] != len(base) or (np.diff(sptr) < 0).any():
        raise ValueError(f"windows layout: sptr must rise from 0 to len(base) = {len(base)}")
    if not isinstance(ent, np.ndarray) or ent.dtype != np.uint8 or ent.shape != (LANES * len(base),):
        raise ValueError(f"windows layout: ent must be uint8 of shape ({LANES * len(base)},)")
    if width < LANES or (len(base) and int(base.max()) > width - LANES):
        raise ValueError(f"windows layout: every window base must be at most width - 16 = {width - LANES}")
    lanes = n_slices * LANES
    if bscale is not None and len(bscale):
        if not isinstance(bscale, np.ndarray) or bscale.dtype != np.float32 or bscale.ndim != 1 \
                or not 0 <= shift < 32 or len(bscale) % lanes \
                or (len(base) and ((int(base.max()) >> shift) + 1) * lanes > len(bscale)):
            raise ValueError(f"windows layout: block scales must be float32, {lanes} per block, one block for "
                             f"every window (base >> {shift})")


def windows_nbytes(sptr, base, ent) -> int:
    """Bytes of the layout (what a call reads for the weights, scales and bias aside)."""
    return int(sptr.nbytes + base.nbytes + ent.nbytes)
