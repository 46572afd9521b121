"""Sparse 4-bit weights x sparse inputs in a "column segments" layout: only the columns of active inputs are read,
eight rows of a column at a time by vector work (one table lookup of eight 4-bit codes, one vector add into an
accumulator that stays in L1), instead of one scalar scatter per nonzero (quant.csc_nib).

Layout, per input column j: its nonempty 8-row segments (rows 8 s .. 8 s + 7 holding at least one nonzero code) in
row order, eight to a group: 32 bytes of codes, 32-bit lane l holding in nibble k the code of row 8 s_k + l (code 0
where a segment has no entry: its value is 0.0 in every 4-bit code table, INT4 SAWB and E2M1), and the eight
segment ids s_k (`seg`, uint16; a column's last group padded with zero segments repeating its last id). `split`
(width, nparts + 1) int64 gives each column's groups, per part of the rows; columns are contiguous, so a call
streams exactly the bytes of its active columns. Size: 6 bytes per segment; at 90% weight sparsity 57% of them are
nonempty (1 - 0.9^8), ~1.4 nonzeros each: ~4.3 bytes per nonzero, about dense 4-bit's size (kernels/quant_sparse.py's
windows, ~2 bytes per nonzero, stay the compact layout); it pays more the sparser the weights.

Kernel: for each active input (j, x_j), for each segment of column j: acc[8 s:8 s + 8] += lut[codes] * x_j (table
pre-multiplied by x_j once per column; per segment a shift, one vpermi2ps, the accumulator's load and store), or with
block scales along the input (MXFP4: 32 columns, NVFP4: 16) acc += (lut[codes] * bscale[block(j), 8 rows]) * x_j,
scales relaid block-major (float32, or MXFP4's powers of two as uint8 exponents: 8 bytes per segment, not 32; MXFP4
0.5x -> 1.1x our FP32 CSC kernel in lowbit_infer.py); one scale per row (INT4) multiplies each finished row once.
Why this shape, on AMD Zen 4 (4096 x 4096, 90% sparse weights and inputs, batch 1, one thread, min of repeats):
16-row segments of 8 bytes each had to spread the bytes to 16 lanes (vpmovzxbd, a shuffle like the lookup): 79 us;
eight segments' codes in one 64-byte word need only shifts: 76 us, then bound by the accumulator's 64-byte stores;
8-row segments store 30% fewer bytes: 65 us, against 88 us for our FP32 CSC kernel (csc_active_rows), same run.
Parallel over (sample, part of whole 16 rows): each thread reads its rows' groups of every active column and writes
only its own rows. Builds: `colseg_avx512` (vpermi2ps, AVX-512VL), `colseg_avx2` (two vpermps and a blend),
`colseg_scalar` (any CPU; the tests' second opinion); `colseg_kernels()`: those this host runs, best first.
`check_colseg` validates every layout array before a kernel may read it (no bounds checks there); the kernels skip
active indices outside the width and never read past the active lists or the scratch.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from frugalnet.kernels._jit import JIT, kernel
from frugalnet.kernels.quant_simd import _data_ptr, f32x16, isa, vfma16, vload16, vscale16, vstore16, vzero

LANES = 16          # accumulator vector width; parts of the rows are whole multiples of it
ROWS = 8            # rows per segment
GROUP = 8           # segments per group: their codes in 32 bytes
GROUP_BYTES = 4 * ROWS
_I64 = ir.IntType(64)
_V8 = ir.VectorType(ir.FloatType(), ROWS)
_I32x8 = ir.VectorType(ir.IntType(32), ROWS)


def _halves(builder, table):
    return [builder.shuffle_vector(table, table, ir.Constant(_I32x8, list(h))) for h in (range(8), range(8, 16))]


def _lookup8_512(builder, table, idx):
    """table[idx & 15] on 8 lanes: one vpermi2ps (AVX-512VL; bit 3 of the index picks the table's half)."""
    lo, hi = _halves(builder, table)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _I32x8, _V8]),
                                        "llvm.x86.avx512.vpermi2var.ps.256")
    return builder.call(fn, [lo, idx, hi])


def _lookup8_256(builder, table, idx):
    """table[idx & 15] on 8 lanes with AVX2: vpermps into each half of the table, bit 3 selects."""
    lo, hi = _halves(builder, table)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _I32x8]), "llvm.x86.avx2.permps")
    high = builder.icmp_unsigned("!=", builder.and_(idx, ir.Constant(_I32x8, [8] * 8)), ir.Constant(_I32x8, [0] * 8))
    return builder.select(high, builder.call(fn, [hi, idx]), builder.call(fn, [lo, idx]))


def _scales8(context, builder, arrty, bscale, offset):
    """bscale[offset:offset + 8] as 8 floats: float32 values, or uint8 exponents e standing for 2^(e - 127)
    (MXFP4's power-of-two scales in a quarter of the bytes; e > 0: built as float bits e << 23)."""
    if arrty.dtype == types.uint8:
        e = builder.load(_data_ptr(context, builder, arrty, bscale, offset, ir.VectorType(ir.IntType(8), ROWS)),
                         align=1)
        return builder.bitcast(builder.shl(builder.zext(e, _I32x8), ir.Constant(_I32x8, [23] * ROWS)), _V8)
    return builder.load(_data_ptr(context, builder, arrty, bscale, offset, _V8), align=4)


@intrinsic
def scale_at(typingctx, bscale, i):
    """bscale[i] as a float32 (uint8 exponents as in _scales8): the scalar build's reading of block scales."""
    if not (isinstance(bscale, types.Array) and bscale.ndim == 1 and bscale.dtype in (types.float32, types.uint8)):
        raise TypeError(f"scale_at takes a 1-D float32 or uint8 array, got {bscale}")

    def codegen(context, builder, sig, args):
        if sig.args[0].dtype == types.uint8:
            e = builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], ir.IntType(8)))
            bits = builder.shl(builder.zext(e, ir.IntType(32)), ir.Constant(ir.IntType(32), 23))
            return builder.bitcast(bits, ir.FloatType())
        return builder.load(_data_ptr(context, builder, sig.args[0], args[0], args[1], ir.FloatType()))
    return types.float32(bscale, types.intp), codegen


def _octet(lookup, scaled: bool):
    """The intrinsic adding one group of 8 segments into the accumulator (see group_add512)."""
    def typer(acc, seg, sidx, codes, coff, table):
        for arr, dt, what in ((acc, (types.float32,), "acc"), (seg, (types.uint16, types.uint32), "seg"),
                              (codes, (types.uint8,), "codes")):
            if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype in dt):
                raise TypeError(f"group_add: {what} must be 1-D {dt}, got {arr}")

    def codegen(context, builder, sig, args):
        acc, seg, sidx, codes, coff, table = args[:6]
        words = builder.load(_data_ptr(context, builder, sig.args[3], codes, coff, _I32x8), align=1)
        seg_ty = ir.IntType(sig.args[1].dtype.bitwidth)
        if scaled:
            bscale, soff, v = args[6:9]
            v = context.cast(builder, v, sig.args[8], types.float32)
            splat = builder.insert_element(ir.Constant(_V8, ir.Undefined), v, ir.Constant(ir.IntType(32), 0))
            splat = builder.shuffle_vector(splat, ir.Constant(_V8, ir.Undefined), ir.Constant(_I32x8, [0] * 8))
        for k in range(GROUP):
            # segment k's codes: nibble k of every 32-bit lane; the lookups read only the low 4 bits of the index
            idx = words if k == 0 else builder.lshr(words, ir.Constant(_I32x8, [4 * k] * ROWS))
            vals = lookup(builder, table, idx)
            sid = builder.load(_data_ptr(context, builder, sig.args[1], seg,
                                         builder.add(sidx, ir.Constant(_I64, k)), seg_ty))
            off = builder.mul(builder.zext(sid, _I64), ir.Constant(_I64, ROWS))
            ptr = _data_ptr(context, builder, sig.args[0], acc, off, _V8)
            old = builder.load(ptr, align=4)
            if scaled:
                bs = _scales8(context, builder, sig.args[6], bscale, builder.add(soff, off))
                fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8, _V8, _V8]),
                                                     "llvm.fma.v8f32")
                new = builder.call(fma, [builder.fmul(vals, bs), splat, old])
            else:
                new = builder.fadd(old, vals)
            builder.store(new, ptr, align=4)
        return context.get_dummy_value()

    if scaled:
        def impl(typingctx, acc, seg, sidx, codes, coff, table, bscale, soff, v):
            typer(acc, seg, sidx, codes, coff, table)
            if not (isinstance(bscale, types.Array) and bscale.ndim == 1
                    and bscale.dtype in (types.float32, types.uint8)):
                raise TypeError(f"group_add: bscale must be 1-D float32 or uint8, got {bscale}")
            return types.none(acc, seg, types.intp, codes, types.intp, f32x16, bscale, types.intp,
                              types.float32), codegen
    else:
        def impl(typingctx, acc, seg, sidx, codes, coff, table):
            typer(acc, seg, sidx, codes, coff, table)
            return types.none(acc, seg, types.intp, codes, types.intp, f32x16), codegen
    return intrinsic(impl)


group_add512 = _octet(_lookup8_512, False)
group_add512.__doc__ = ("For k in 0..7: acc[8 s:8 s + 8] += table[nibble k of each 32-bit lane of "
                        "codes[coff:coff + 32]], s = seg[sidx + k], table 16 float lanes: one load of the codes, per "
                        "segment a shift, one vpermi2ps and the accumulator's load and store (AVX-512VL only)")
group_add512s = _octet(_lookup8_512, True)
group_add512s.__doc__ = ("group_add512 with block scales: acc += (table[code] * bscale[soff + 8 s:... + 8]) * v "
                         "(one rounding for the weight, as the simulated layer)")
group_add256 = _octet(_lookup8_256, False)
group_add256.__doc__ = "As group_add512 on AVX2 (each lookup two vpermps and a blend)"
group_add256s = _octet(_lookup8_256, True)
group_add256s.__doc__ = "As group_add512s on AVX2"


@njit(**JIT, inline="always")
def _extent(split, out, aidx, aval, counts, acc_all):
    """Sizes every build takes from its arguments; samples clamped so that no array is used past its end."""
    n_out = out.shape[1]
    nrb = (n_out + LANES - 1) // LANES
    lanes = nrb * LANES
    batch = min(out.shape[0], aidx.shape[0], aval.shape[0], counts.shape[0], (acc_all.shape[0] - LANES) // lanes)
    return split.shape[0], split.shape[1] - 1, n_out, nrb, lanes, batch, min(aidx.shape[1], aval.shape[1])


@njit(**JIT, inline="always")
def _part_rows(part, nparts, nrb):
    """The rows [r0, r1) of one part: whole multiples of 16 rows."""
    return (part * nrb // nparts) * LANES, ((part + 1) * nrb // nparts) * LANES


def _colseg_source(group_add, group_add_s):
    def colseg(split, seg, codes, lutf, row_scale, bias, bscale, shift, aidx, aval, counts, acc_all, out):
        """out[b, r] = row_scale[r] * sum over active t of sample b of w(r, aidx[b, t]) * aval[b, t] + bias[r],
        w(r, j) = lutf[code of (r, j)] (* bscale[(j >> shift) * L + r] where bscale is not empty; L = n_out rounded
        up to 16). split (width, nparts + 1) int64: groups of column j, part p; seg (8 n_groups,) uint16/uint32
        8-row block ids; codes (32 n_groups,) uint8; lutf (16,) float32 code values; row_scale, bias (n_out,)
        float32; aidx, aval (B, K) int32 / float32 and counts (B,) int32: the inputs to add (zeros skipped: a dense
        row with every index also works); acc_all: float32 scratch of at least B * L + 16 (`scratch`; used 64-byte
        aligned: a vector split over two cache lines costs ~2x); out (B, n_out). Vector-read arrays: C-contiguous."""
        if not (seg.flags.c_contiguous and codes.flags.c_contiguous and lutf.flags.c_contiguous
                and row_scale.flags.c_contiguous and bias.flags.c_contiguous and bscale.flags.c_contiguous
                and acc_all.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError("colseg kernels take C-contiguous seg, codes, lutf, row_scale, bias, bscale, scratch, out")
        width, nparts, n_out, nrb, lanes, batch, kmax = _extent(split, out, aidx, aval, counts, acc_all)
        blocked = bscale.shape[0] > 0
        lut = vload16(lutf, 0)
        a0 = (-(acc_all.ctypes.data >> 2)) & (LANES - 1)       # first 64-byte aligned float
        for p in prange(batch * nparts):
            b = p // nparts
            part = p % nparts
            r0, r1 = _part_rows(part, nparts, nrb)
            acc = acc_all[a0 + b * lanes:a0 + (b + 1) * lanes]
            for r in range(r0, r1, LANES):
                vstore16(acc, r, vzero())
            for t in range(min(np.intp(counts[b]), kmax)):
                j = np.intp(aidx[b, t])
                v = aval[b, t]
                if v == 0 or j < 0 or j >= width:
                    continue
                lo = split[j, part]
                hi = split[j, part + 1]
                if blocked:
                    so = (j >> shift) * lanes
                    for e in range(lo, hi):
                        group_add_s(acc, seg, e * GROUP, codes, e * GROUP_BYTES, lut, bscale, so, v)
                else:
                    lx = vscale16(lut, v)
                    for e in range(lo, hi):
                        group_add(acc, seg, e * GROUP, codes, e * GROUP_BYTES, lx)
            o_b = out[b]
            r = r0
            while r + LANES <= min(r1, n_out):
                vstore16(o_b, r, vfma16(vload16(acc, r), vload16(row_scale, r), vload16(bias, r)))
                r += LANES
            for q in range(r, min(r1, n_out)):
                o_b[q] = acc[q] * row_scale[q] + bias[q]
    return colseg


colseg_avx512 = kernel(_colseg_source(group_add512, group_add512s))     # where quant.isa()["avx512"]
colseg_avx2 = kernel(_colseg_source(group_add256, group_add256s))       # where quant.isa()["avx2"]


@kernel
def colseg_scalar(split, seg, codes, lutf, row_scale, bias, bscale, shift, aidx, aval, counts, acc_all, out):
    """The column-segments kernel in plain loops, one lane at a time: the portable build."""
    if not bscale.flags.c_contiguous:
        raise ValueError("colseg kernels take a C-contiguous bscale")      # (scale_at reads it by pointer)
    width, nparts, n_out, nrb, lanes, batch, kmax = _extent(split, out, aidx, aval, counts, acc_all)
    blocked = bscale.shape[0] > 0
    for p in prange(batch * nparts):
        b = p // nparts
        part = p % nparts
        r0, r1 = _part_rows(part, nparts, nrb)
        acc = acc_all[b * lanes:(b + 1) * lanes]
        acc[r0:r1] = 0.0
        for t in range(min(np.intp(counts[b]), kmax)):
            j = np.intp(aidx[b, t])
            v = aval[b, t]
            if v == 0 or j < 0 or j >= width:
                continue
            for e in range(split[j, part], split[j, part + 1]):
                for k in range(GROUP):
                    o = np.intp(seg[np.uint64(e * GROUP + k)]) * ROWS
                    for lane in range(ROWS):
                        c = (codes[np.uint64(e * GROUP_BYTES + 4 * lane + (k >> 1))] >> ((k & 1) << 2)) & 15
                        w = lutf[c] * scale_at(bscale, (j >> shift) * lanes + o + lane) if blocked else lutf[c]
                        acc[o + lane] += w * v
        o_b = out[b]
        for r in range(r0, min(r1, n_out)):
            o_b[r] = acc[r] * row_scale[r] + bias[r]


COLSEG_ISA = {"avx512": colseg_avx512, "avx2": colseg_avx2}


def colseg_kernels() -> dict:
    """{build name: kernel pair} of the builds this host can run (quant.isa()), fastest first; "scalar" last."""
    has = isa()
    return {**{name: k for name, k in COLSEG_ISA.items() if has[name]}, "scalar": colseg_scalar}


def scratch(batch: int, n_out: int) -> np.ndarray:
    """The accumulator scratch the kernels take for `batch` samples of n_out outputs (any contents)."""
    return np.empty(batch * -(-int(n_out) // LANES) * LANES + LANES, np.float32)


# --- the layout: integer codes only -----------------------------------------------------------------------------
def _part_bounds(n_out: int, nparts: int) -> np.ndarray:
    """Segment ids (8-row blocks) where the parts of the rows start: whole multiples of 16 rows, so that each
    part zeroes and finishes its rows with 16-lane vectors."""
    n16 = -(-int(n_out) // LANES)
    return np.array([(p * n16 // nparts) * (LANES // ROWS) for p in range(nparts + 1)], np.int64)


def to_colseg(ptr: np.ndarray, idx: np.ndarray, codes: np.ndarray, zero: np.ndarray, n_out: int, width: int,
              nparts: int = 1):
    """(split, seg, group_codes) of a sparse 4-bit code matrix given as CSR (ptr (n_out + 1,), idx column indices
    below width, codes one 4-bit code per entry), leaving out entries whose code is zero (zero[code] True). Each
    column's nonempty segments, cut into `nparts` parts of whole row blocks, are taken eight to a group (a part's
    last group is padded with segments of zero codes repeating its last id). Group g's codes: 64 bytes, the 32-bit
    lane l (little-endian) holding in nibble k the code of row 16 seg[8 g + k] + l. Pure function of integer codes."""
    ptr = np.asarray(ptr, np.int64)
    idx = np.asarray(idx, np.int64)
    if len(ptr) != n_out + 1 or ptr[0] != 0 or ptr[-1] != len(idx) or (np.diff(ptr) < 0).any() \
            or len(codes) < len(idx) or (len(idx) and (idx.min() < 0 or idx.max() >= width)) or nparts < 1:
        raise ValueError("to_colseg takes a valid CSR pattern with column indices below the width, nparts >= 1")
    code = np.asarray(codes, np.uint8)[:len(idx)] & 15
    rows = np.repeat(np.arange(n_out, dtype=np.int64), np.diff(ptr))
    keep = ~np.asarray(zero, np.bool_)[code]
    rows, cols, code = rows[keep], idx[keep], code[keep]
    nrb = -(-int(n_out) // ROWS)
    keys, which = np.unique(cols * nrb + rows // ROWS, return_inverse=True)     # segments in (column, row block)
    rb = keys % nrb
    part = (keys // nrb) * nparts + np.searchsorted(_part_bounds(n_out, nparts), rb, side="right") - 1
    count = np.bincount(part, minlength=width * nparts)
    group_start = np.zeros(width * nparts + 1, np.int64)
    np.cumsum(-(-count // GROUP), out=group_start[1:])
    seg_start = np.cumsum(count) - count
    slot = GROUP * group_start[part] + np.arange(len(keys)) - seg_start[part]
    n_slots = GROUP * int(group_start[-1])
    seg = np.zeros(n_slots, np.uint16 if nrb <= 65536 else np.uint32)
    seg[slot] = rb
    pad = np.ones(n_slots, np.bool_)
    pad[slot] = False
    owner = np.repeat(np.arange(width * nparts), GROUP * np.diff(group_start))          # the (column, part) of a slot
    seg[pad] = seg[(GROUP * group_start[:-1] + count - 1)[owner[pad]]]                # its last real id again
    lane = rows % ROWS
    s_of = slot[which]
    group_codes = np.zeros(GROUP_BYTES * int(group_start[-1]), np.uint8)
    np.bitwise_or.at(group_codes, (s_of // GROUP) * GROUP_BYTES + 4 * lane + (s_of % GROUP) // 2,
                     (code << ((s_of % 2) << 2)).astype(np.uint8))
    split = np.empty((width, nparts + 1), np.int64)
    split[:, :nparts] = group_start[:-1].reshape(width, nparts)
    split[:, nparts] = group_start[nparts::nparts]
    return split, seg, group_codes


def colseg_from_csr(ptr, idx, packed, zero, n_out: int, width: int, wscale, blk: int, bias, nparts: int = 1):
    """(split, seg, codes, row_scale, bias, bscale, shift): the kernels' weight arguments, from 4-bit CSR codes
    (quant.compress_codes: two codes per byte), for `nparts` row parts, validated by check_colseg. wscale (n_out,
    n_blocks) float32, blk columns per block (a power of two, n_blocks * blk >= width; blk 0 or one block: one scale
    per row, applied to each row's sum)."""
    n_blocks = wscale.shape[1] if wscale.ndim == 2 else 0
    blocked = bool(blk) and n_blocks > 1
    if wscale.ndim != 2 or wscale.shape[0] != n_out or (blocked and (blk & (blk - 1) or n_blocks * blk < width)):
        raise ValueError(f"colseg_from_csr: wscale must be (n_out={n_out}, n_blocks) with blk={blk} a power of two "
                         f"and n_blocks * blk >= width={width}")
    codes = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:len(idx)]
    split, seg, group_codes = to_colseg(ptr, idx, codes, zero, n_out, width, nparts)
    lanes = -(-int(n_out) // LANES) * LANES
    bscale = np.zeros(0, np.float32)
    if blocked:
        full = np.zeros((n_blocks, lanes), np.float32)
        full[:, :n_out] = wscale.T
        bscale = full.reshape(-1)
        # every scale a nonzero code meets a normal power of two (MXFP4): exponents only; entry-less blocks' -> 0
        rows = np.repeat(np.arange(n_out, dtype=np.int64), np.diff(np.asarray(ptr, np.int64)))
        keep = ~np.asarray(zero, np.bool_)[codes & 15]
        met = np.ascontiguousarray(wscale[rows[keep], np.asarray(idx, np.int64)[keep] >> (blk.bit_length() - 1)])
        if (met.view(np.uint32) & 0x807FFFFF == 0).all() and (met.view(np.uint32) >> 23 > 0).all():
            fb = bscale.view(np.uint32)
            bscale = np.where(fb & 0x807FFFFF == 0, fb >> 23, 0).astype(np.uint8)
        row_scale = np.ones(n_out, np.float32)
    else:
        row_scale = np.ascontiguousarray(wscale[:, 0], np.float32)
    shift = blk.bit_length() - 1 if blocked else 0
    bias = np.ascontiguousarray(bias, np.float32)
    check_colseg(split, seg, group_codes, n_out, width, row_scale, bias, bscale, shift)
    return split, seg, group_codes, row_scale, bias, bscale, shift


def check_colseg(split, seg, codes, n_out: int, width: int, row_scale, bias, bscale, shift: int,
                 lutf=None) -> None:
    """ValueError unless the arrays are a valid column-segments layout of n_out rows and `width` input columns
    (every pointer, segment id, part boundary and block-scale row in range): the kernels may then read them with any
    active lists, any `out` of n_out columns and a scratch from `scratch`."""
    def bad(what):
        raise ValueError(f"column-segments layout: {what}")
    n_out, width = int(n_out), int(width)
    nrb = -(-n_out // ROWS)
    lanes = -(-n_out // LANES) * LANES
    if n_out < 1 or width < 1:
        bad(f"n_out={n_out} and width={width} must be positive")
    if not isinstance(split, np.ndarray) or split.dtype != np.int64 or split.ndim != 2 or split.shape[0] != width \
            or split.shape[1] < 2:
        bad(f"split must be int64 of shape ({width}, nparts + 1)")
    if not isinstance(seg, np.ndarray) or seg.dtype not in (np.uint16, np.uint32) or seg.ndim != 1 or len(seg) % GROUP:
        bad(f"seg must be a 1-D uint16/uint32 array, {GROUP} ids per group")
    n_groups = len(seg) // GROUP
    if split[0, 0] != 0 or split[-1, -1] != n_groups or (split[1:, 0] != split[:-1, -1]).any() \
            or (np.diff(split, axis=1) < 0).any():
        bad(f"split must rise from 0 to the number of groups {n_groups}, each column starting where the last ended")
    if n_groups and int(seg.max()) >= nrb:
        bad(f"every segment id must be below ceil(n_out / {ROWS}) = {nrb}")
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.shape != (GROUP_BYTES * n_groups,):
        bad(f"codes must be uint8 of shape ({GROUP_BYTES * n_groups},)")
    nparts = split.shape[1] - 1
    part = np.repeat(np.tile(np.arange(nparts), width), np.diff(split, axis=1).reshape(-1) * GROUP)
    bounds = _part_bounds(n_out, nparts)
    if n_groups and ((seg < bounds[part]) | (seg >= bounds[part + 1])).any():
        bad("split must give each part only the segments of its own row blocks")
    for name, a in (("row_scale", row_scale), ("bias", bias)):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != (n_out,):
            bad(f"{name} must be float32 of shape ({n_out},)")
    if not isinstance(bscale, np.ndarray) or bscale.dtype not in (np.float32, np.uint8) or bscale.ndim != 1:
        bad("bscale must be a 1-D float32 array, or uint8 exponents (empty: no block scales)")
    if len(bscale) and (not 0 <= shift < 32 or len(bscale) % lanes
                        or (((width - 1) >> shift) + 1) * lanes > len(bscale)):
        bad(f"block scales must hold {lanes} lanes for every block (column >> {shift}) of the width")
    if lutf is not None and (not isinstance(lutf, np.ndarray) or lutf.dtype != np.float32 or lutf.shape != (16,)):
        bad("lutf must be float32 of shape (16,)")


def colseg_nbytes(split, seg, codes) -> int:
    """Bytes of the layout (scales and bias aside)."""
    return int(split.nbytes + seg.nbytes + codes.nbytes)
