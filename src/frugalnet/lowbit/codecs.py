"""Real codes for quantized weights: two 4-bit codes per byte plus scales, one encoder/decoder pair per format
family (the `NumberFormat` table in formats.py names which pair a format uses).

    int4-sawb  4-bit two's complement codes -7..7 (code -8 = negative zero), one FP32 step per tensor
    int8       int8 codes -127..127 (-128 = negative zero), one FP32 step per tensor
    mxfp4      E2M1 codes (sign bit + 3-bit magnitude index), one E8M0 byte per 32 values along the input dimension
    nvfp4      E2M1 codes, one E4M3 byte per 16 values, one FP32 tensor scale
    fp8-*      one byte per value (E4M3 / E5M2 bit patterns), one FP32 scale per tensor
    fp32       as is
Decoding repeats the encoder's float32 products, so decoded weights are bit-identical (signs of zero included) to
the quantizer's output. Every decoder validates its record first (`check_record`): a record read from a file may be
crafted, and the engine's kernels read these codes without bounds checks.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from frugalnet.lowbit import numerics as N
from frugalnet.lowbit import quantizers as Q

MX_BLOCK, NV_BLOCK = 32, 16
_E2M1 = torch.tensor(N.E2M1_GRID)


# --- nibbles and minifloat byte tables ----------------------------------------------------------------------------
def pack_nibbles(codes: Tensor) -> Tensor:
    """uint8 codes in [0, 15] (any shape) -> ceil(n / 2) bytes, first code in the low nibble."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() and int(flat.max()) > 15:
        raise ValueError("nibble codes must be in [0, 15]")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_nibbles(packed: Tensor, n: int) -> Tensor:
    """Inverse of pack_nibbles: the first n codes."""
    out = torch.stack([packed & 0x0F, packed >> 4], 1).reshape(-1)
    return out[:n]


def minifloat_table(spec: N.MinifloatSpec) -> Tensor:
    """Values of the 8-bit codes 0..127 (sign bit clear) of E4M3 / E5M2, +inf/NaN patterns set to NaN."""
    exp_bits = 7 - spec.mantissa
    bias = 1 - spec.emin
    values = []
    for code in range(128):
        e, m = code >> spec.mantissa, code & ((1 << spec.mantissa) - 1)
        if e == 0:
            v = m * 2.0 ** (spec.emin - spec.mantissa)
        else:
            v = (1 + m / 2 ** spec.mantissa) * 2.0 ** (e - bias)
        values.append(v if v <= spec.max and e < (1 << exp_bits) else math.nan)
    return torch.tensor(values, dtype=torch.float32)


def encode_minifloat(v: Tensor, spec: N.MinifloatSpec) -> Tensor:
    """Bytes of values already on the `spec` grid (sign in bit 7)."""
    table = minifloat_table(spec)
    finite = table[~torch.isnan(table)]
    a = v.abs().reshape(-1)
    idx = torch.searchsorted(finite, a)
    if not torch.equal(finite[idx.clamp(max=len(finite) - 1)], a):
        raise ValueError(f"values are not on the {spec.name} grid")
    return (idx.to(torch.uint8) | (torch.signbit(v.reshape(-1)).to(torch.uint8) << 7)).reshape(v.shape)


def decode_minifloat(codes: Tensor, spec: N.MinifloatSpec) -> Tensor:
    table = minifloat_table(spec)
    mag = table[(codes & 0x7F).long()]
    return torch.where((codes >> 7).bool(), -mag, mag)


def e2m1_codes(v: Tensor) -> Tensor:
    """4-bit E2M1 codes (sign in bit 3, magnitude index into E2M1_GRID below) of values on the E2M1 grid."""
    idx = torch.searchsorted(_E2M1, v.abs().reshape(-1))
    return (idx.to(torch.uint8) | (torch.signbit(v.reshape(-1)).to(torch.uint8) << 3))


def e2m1_values(codes: Tensor) -> Tensor:
    mag = _E2M1[(codes & 0x07).long()]
    return torch.where((codes >> 3).bool(), -mag, mag)


def int_codes(w: Tensor, step: Tensor, qmax: int) -> Tensor:
    """Symmetric integer codes of w / step (already on the grid); negative zero becomes -qmax - 1."""
    k = torch.clamp(torch.round(w / step), -qmax, qmax)
    return torch.where((k == 0) & torch.signbit(k), torch.full_like(k, -qmax - 1), k).to(torch.int8)


def int_values(codes: Tensor, step: Tensor, qmax: int) -> Tensor:
    k = codes.to(torch.float32)
    negzero = codes == -qmax - 1
    return torch.where(negzero, torch.full_like(k, -0.0), k * step)


def int4_from_nibbles(nib: Tensor) -> Tensor:
    """Two's complement 4-bit nibbles (uint8 0..15) -> int8 codes -8..7."""
    nib = nib.to(torch.int16)
    return torch.where(nib >= 8, nib - 16, nib).to(torch.int8)


# --- record checks (files may be crafted) -------------------------------------------------------------------------
def _need(rec: dict, key: str, what: str) -> object:
    if key not in rec:
        raise ValueError(f"packed weight record lacks {key!r} ({what})")
    return rec[key]


def _tensor(rec: dict, key: str, dtype: torch.dtype, numel: int | None) -> Tensor:
    t = _need(rec, key, f"{dtype} tensor")
    if not isinstance(t, Tensor) or t.dtype != dtype:
        raise ValueError(f"packed weight record: {key!r} must be a {dtype} tensor, got "
                         f"{getattr(t, 'dtype', type(t).__name__)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"packed weight record: {key!r} holds {t.numel()} entries where its shape needs {numel}")
    return t


def _scalar(rec: dict, key: str, positive: bool = True) -> Tensor:
    t = _tensor(rec, key, torch.float32, 1)
    if not bool(torch.isfinite(t).all()) or (positive and not bool((t > 0).all())):
        raise ValueError(f"packed weight record: {key!r} must be a finite{' positive' if positive else ''} "
                         f"float32 scalar, got {float(t.reshape(-1)[0])}")
    return t.reshape(())


def record_shape(rec: dict) -> tuple[int, ...]:
    """The record's weight shape, checked: 1 to 4 non-negative dims of at most 2^31 entries in all."""
    shape = _need(rec, "shape", "the weight's shape")
    if not isinstance(shape, (tuple, list)) or not 1 <= len(shape) <= 4 or \
            not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 31 for s in shape):
        raise ValueError(f"packed weight record: shape must be 1 to 4 non-negative ints, got {shape!r}")
    if math.prod(shape) >= 2 ** 31:
        raise ValueError(f"packed weight record: shape {tuple(shape)} is too large")
    return tuple(int(s) for s in shape)


def blocked_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    """The (dim-0, rest..., n_blocks, block) view `_blocked(w, 1, block)` gives a weight of `shape`."""
    if len(shape) < 2:
        raise ValueError(f"block formats pack weights of 2 or more dims, got shape {shape}")
    moved = (shape[0], *shape[2:])
    return (*moved, -(-shape[1] // block), block)


# --- per-format encoders and decoders -----------------------------------------------------------------------------
def encode_int4(w: Tensor) -> dict:
    step = Q.sawb_alpha(w, 4) / 7
    step = torch.where(step > 0, step, torch.ones_like(step))
    return {"step": step, "codes": pack_nibbles(int_codes(w, step, 7).to(torch.uint8) & 0x0F)}


def check_int4(rec: dict, shape: tuple[int, ...]) -> None:
    _tensor(rec, "codes", torch.uint8, (math.prod(shape) + 1) // 2)
    _scalar(rec, "step")


def decode_int4(rec: dict, shape: tuple[int, ...]) -> Tensor:
    check_int4(rec, shape)
    codes = int4_from_nibbles(unpack_nibbles(rec["codes"], math.prod(shape)))
    return int_values(codes, _scalar(rec, "step"), 7).reshape(shape)


def encode_int8(w: Tensor) -> dict:
    amax = N._amax(w, "weight")
    step = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return {"step": step, "codes": int_codes(w, step, 127)}


def check_int8(rec: dict, shape: tuple[int, ...]) -> None:
    _tensor(rec, "codes", torch.int8, math.prod(shape))
    _scalar(rec, "step")


def decode_int8(rec: dict, shape: tuple[int, ...]) -> Tensor:
    check_int8(rec, shape)
    return int_values(rec["codes"], _scalar(rec, "step"), 127).reshape(shape)


def block_elements(w: Tensor, block: int, nv: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """(elements on the E2M1 grid (..., n_blocks, block), per-block scale, NVFP4 tensor scale or None) exactly as
    quantizers.mxfp4 / nvfp4 compute them along dim 1."""
    blocks, _ = Q._blocked(w, 1, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    prev = N.set_kernels(False)
    try:
        if not nv:
            scale, tensor_scale = Q.mx_block_scales(amax), None
            safe = scale
        else:
            tensor_scale = Q.nvfp4_tensor_scale(N._amax(w, "weight"))
            scale = Q.minifloat(amax / (N.E2M1.max * tensor_scale), N.E4M3)
            full = scale * tensor_scale
            safe = torch.where(full > 0, full, torch.ones_like(full))
        elements = Q.minifloat(blocks / safe, N.E2M1)
    finally:
        N.set_kernels(prev)
    return elements, scale, tensor_scale


def _encode_e2m1_blocks(w: Tensor, block: int, nv: bool) -> dict:
    elements, scale, tensor_scale = block_elements(w, block, nv)
    rec = {"codes": pack_nibbles(e2m1_codes(elements)), "blocked_shape": tuple(elements.shape)}
    if not nv:
        rec["scales"] = (N.floor_log2(scale.reshape(-1)) + 127).to(torch.uint8)
    else:
        rec["scales"] = encode_minifloat(scale.reshape(-1), N.E4M3)
        rec["tensor_scale"] = tensor_scale
    return rec


def _check_e2m1_blocks(rec: dict, shape: tuple[int, ...], block: int, nv: bool) -> tuple[int, ...]:
    bshape = blocked_shape(shape, block)
    stored = rec.get("blocked_shape")
    if stored is not None and (not isinstance(stored, (tuple, list)) or tuple(stored) != bshape):
        raise ValueError(f"packed weight record: blocked_shape {stored!r} does not match shape {shape}")
    n = math.prod(bshape)
    _tensor(rec, "codes", torch.uint8, (n + 1) // 2)
    scales = _tensor(rec, "scales", torch.uint8, n // block)
    if not nv and bool((scales == 255).any()):
        raise ValueError("packed weight record: E8M0 scale byte 255 (NaN) is not a valid MXFP4 block scale")
    if nv:
        if bool(((scales & 0x7F) == 0x7F).any()) or bool((scales >= 0x80).any()):
            raise ValueError("packed weight record: NVFP4 block scales must be non-negative finite E4M3 bytes")
        _scalar(rec, "tensor_scale")
    return bshape


def _decode_e2m1_blocks(rec: dict, shape: tuple[int, ...], block: int, nv: bool) -> Tensor:
    bshape = _check_e2m1_blocks(rec, shape, block, nv)
    elements = e2m1_values(unpack_nibbles(rec["codes"], math.prod(bshape))).reshape(bshape)
    if not nv:
        scale = N._exp2(rec["scales"].to(torch.int32) - 127)
    else:
        scale = decode_minifloat(rec["scales"], N.E4M3) * _scalar(rec, "tensor_scale")
    q = elements * scale.reshape(*bshape[:-1], 1)
    moved = q.reshape(*bshape[:-2], bshape[-2] * bshape[-1])[..., :shape[1]]
    return moved.movedim(-1, 1).contiguous()


def encode_mxfp4(w: Tensor) -> dict:
    return _encode_e2m1_blocks(w, MX_BLOCK, nv=False)


def check_mxfp4(rec: dict, shape: tuple[int, ...]) -> None:
    _check_e2m1_blocks(rec, shape, MX_BLOCK, nv=False)


def decode_mxfp4(rec: dict, shape: tuple[int, ...]) -> Tensor:
    return _decode_e2m1_blocks(rec, shape, MX_BLOCK, nv=False)


def encode_nvfp4(w: Tensor) -> dict:
    return _encode_e2m1_blocks(w, NV_BLOCK, nv=True)


def check_nvfp4(rec: dict, shape: tuple[int, ...]) -> None:
    _check_e2m1_blocks(rec, shape, NV_BLOCK, nv=True)


def decode_nvfp4(rec: dict, shape: tuple[int, ...]) -> Tensor:
    return _decode_e2m1_blocks(rec, shape, NV_BLOCK, nv=True)


def _fp8_codec(spec: N.MinifloatSpec):
    def encode(w: Tensor) -> dict:
        amax = N._amax(w, "weight")
        scale = torch.where(amax > 0, amax / spec.max, torch.ones_like(amax))
        prev = N.set_kernels(False)
        try:
            v = Q.minifloat(w / scale, spec)
        finally:
            N.set_kernels(prev)
        return {"scale": scale, "codes": encode_minifloat(v, spec)}

    def check(rec: dict, shape: tuple[int, ...]) -> None:
        codes = _tensor(rec, "codes", torch.uint8, math.prod(shape))
        if bool(torch.isnan(minifloat_table(spec)[(codes & 0x7F).long()]).any()):
            raise ValueError(f"packed weight record: {spec.name} NaN/Inf pattern among the codes")
        _scalar(rec, "scale")

    def decode(rec: dict, shape: tuple[int, ...]) -> Tensor:
        check(rec, shape)
        return (decode_minifloat(rec["codes"], spec) * _scalar(rec, "scale")).reshape(shape)
    return encode, check, decode


encode_fp8_e4m3, check_fp8_e4m3, decode_fp8_e4m3 = _fp8_codec(N.E4M3)
encode_fp8_e5m2, check_fp8_e5m2, decode_fp8_e5m2 = _fp8_codec(N.E5M2)


def encode_fp32(w: Tensor) -> dict:
    return {"values": w.clone()}


def check_fp32(rec: dict, shape: tuple[int, ...]) -> None:
    _tensor(rec, "values", torch.float32, math.prod(shape))


def decode_fp32(rec: dict, shape: tuple[int, ...]) -> Tensor:
    check_fp32(rec, shape)
    return rec["values"].reshape(shape)
