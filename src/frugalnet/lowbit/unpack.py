"""Packed weight records (lowbit.codecs) -> the integer code matrices the engine's packed kernels read, without
ever making FP32 weights: 4-bit codes (as table indices) or INT8 codes, one float32 scale per tensor or per block.

Conv weights come out tap-major (column = (kh, kw, channel)), the order of their block scales; E2M1 codes index a
table of twice their values (integers -12..12), so a product of two E2M1 codes is an integer and the scales carry 1/2.
"""
from __future__ import annotations

import math

import numpy as np

INT4_LUT = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1], np.int8)   # code 8 = -0
E2M1_LUT = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)  # 2 x E2M1 values


def _scalar(t) -> float:
    return float(t.reshape(-1)[0])


def codes_from_record(rec: dict) -> dict:
    """A packed weight record (lowbit.codecs layout, validated) -> the step's code matrix, without FP32 weights:
    {"kind": "nib" | "i8", "codes": (n_out, R) uint8 nibbles or int8, "lut": int8 (16,), "scale": (n_out, n_blocks)
    float32, "blk": columns per scale block (0: one scale per tensor), "taps": kh * kw, "cin": channels per tap
    (padded to the block for block formats)}. Conv weights come out tap-major: column = (tap, channel)."""
    from frugalnet.lowbit.packing import check_record

    shape = check_record(rec)
    fmt = rec["format"]
    n_out, cin = shape[0], shape[1] if len(shape) > 1 else 1
    taps = math.prod(shape[2:])
    if fmt == "int4-sawb":
        n = math.prod(shape)
        packed = rec["codes"].numpy()
        nib = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:n].reshape(n_out, cin, taps)
        mat = np.ascontiguousarray(nib.transpose(0, 2, 1).reshape(n_out, taps * cin))
        scale = np.full((n_out, 1), _scalar(rec["step"]), np.float32)
        return {"kind": "nib", "codes": mat, "lut": INT4_LUT, "scale": scale, "blk": 0, "taps": taps, "cin": cin}
    if fmt == "int8":
        c = rec["codes"].numpy().reshape(n_out, cin, taps).transpose(0, 2, 1).reshape(n_out, taps * cin)
        c = np.where(c == -128, 0, c).astype(np.int8)       # -128 stands for -0
        scale = np.full((n_out, 1), _scalar(rec["step"]), np.float32)
        return {"kind": "i8", "codes": np.ascontiguousarray(c), "lut": INT4_LUT, "scale": scale, "blk": 0,
                "taps": taps, "cin": cin}
    if fmt in ("mxfp4", "nvfp4"):
        from frugalnet.lowbit.codecs import blocked_shape

        blk = 32 if fmt == "mxfp4" else 16
        bshape = blocked_shape(shape, blk)       # (out, *taps, n_blocks, blk): already tap-major
        n = math.prod(bshape)
        packed = rec["codes"].numpy()
        nib = np.stack([packed & 15, packed >> 4], 1).reshape(-1)[:n]
        cin_p = bshape[-2] * blk
        mat = np.ascontiguousarray(nib.reshape(n_out, taps * cin_p))
        raw = rec["scales"].numpy().reshape(n_out, taps * bshape[-2])
        if fmt == "mxfp4":
            scale = np.ldexp(np.float32(1.0), raw.astype(np.int32) - 127).astype(np.float32)
        else:
            from frugalnet.lowbit.codecs import decode_minifloat
            from frugalnet.lowbit.numerics import E4M3

            e4m3 = decode_minifloat(rec["scales"], E4M3).numpy().reshape(raw.shape)
            scale = (e4m3 * np.float32(_scalar(rec["tensor_scale"]))).astype(np.float32)
        scale = (scale * np.float32(0.5)).astype(np.float32)    # the table holds 2 x the E2M1 values
        return {"kind": "nib", "codes": mat, "lut": E2M1_LUT, "scale": scale, "blk": blk, "taps": taps,
                "cin": cin_p}
    # formats without a packed kernel (FP8, or weights already decoded): the quantized values themselves
    from frugalnet.lowbit.formats import FORMATS

    w = FORMATS[fmt].decode(rec, shape).numpy().reshape(n_out, cin, taps).transpose(0, 2, 1).reshape(n_out, -1)
    return {"kind": "f32", "codes": np.ascontiguousarray(w, np.float32), "lut": INT4_LUT,
            "scale": np.ones((n_out, 1), np.float32), "blk": 0, "taps": taps, "cin": cin}
