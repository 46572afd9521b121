"""Real packed storage for quantized models: two 4-bit codes per byte plus their scales.

    save_packed(model, "model.fnp")          # a model converted by quantize_ (trained or not)
    state = load_packed("model.fnp")          # {name: tensor}: the weights exactly as the forward GEMMs saw them
    load_packed("model.fnp", model)           # ... loaded into a converted model, which then uses them as they are

Per weight format:
    int4-sawb  4-bit two's complement codes -7..7 (code -8 = negative zero), one FP32 step per tensor
    int8       int8 codes -127..127 (-128 = negative zero), one FP32 step per tensor
    mxfp4      E2M1 codes (sign bit + 3-bit magnitude index), one E8M0 byte per 32 values along the input dimension
    nvfp4      E2M1 codes, one E4M3 byte per 16 values, one FP32 tensor scale
    fp8-*      one byte per value (E4M3 / E5M2 bit patterns), one FP32 scale per tensor
    fp32       as is
Everything else in the state dict (biases, norms, embeddings, PACT clips) is stored as it is. Decoding repeats the
encoder's float32 products, so the reloaded weights are bit-identical (signs of zero included) to
`layer.quantized_weight()`.

The file is the torch.save of that record, by default compressed with LZMA (xz). Why: 4-bit codes of real weights
are far from uniform (most weights are small, so the small codes dominate), and entropy coding removes what the
fixed-width codes waste; the fixed scale overhead (one E4M3 byte per 16 NVFP4 values caps uncompressed NVFP4 at
32 / 4.5 = 7.1x) and the 8-bit first/last layers of ibm4 otherwise keep small models below 7x. `compress=False`
writes the plain container; `load_packed` reads both.
"""
from __future__ import annotations

import io
import lzma
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from frugalnet.lowbit import formats as F4
from frugalnet.lowbit.convert import quantized_layers
from frugalnet.utils.io import atomic_replace

MAGIC = "frugalnet-packed-v1"
_XZ_MAGIC = b"\xfd7zXZ\x00"


def _lzma(data: bytes) -> bytes:
    """The compression stage of save_packed (and of the like-for-like FP32 reference)."""
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)
MX_BLOCK, NV_BLOCK = 32, 16
_E2M1 = torch.tensor(F4.E2M1_GRID)


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


def minifloat_table(spec: F4.MinifloatSpec) -> Tensor:
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


def encode_minifloat(v: Tensor, spec: F4.MinifloatSpec) -> Tensor:
    """Bytes of values already on the `spec` grid (sign in bit 7)."""
    table = minifloat_table(spec)
    finite = table[~torch.isnan(table)]
    a = v.abs().reshape(-1)
    idx = torch.searchsorted(finite, a)
    if not torch.equal(finite[idx.clamp(max=len(finite) - 1)], a):
        raise ValueError(f"values are not on the {spec.name} grid")
    return (idx.to(torch.uint8) | (torch.signbit(v.reshape(-1)).to(torch.uint8) << 7)).reshape(v.shape)


def decode_minifloat(codes: Tensor, spec: F4.MinifloatSpec) -> Tensor:
    table = minifloat_table(spec)
    mag = table[(codes & 0x7F).long()]
    return torch.where((codes >> 7).bool(), -mag, mag)


def _e2m1_codes(v: Tensor) -> Tensor:
    idx = torch.searchsorted(_E2M1, v.abs().reshape(-1))
    return (idx.to(torch.uint8) | (torch.signbit(v.reshape(-1)).to(torch.uint8) << 3))


def _e2m1_values(codes: Tensor) -> Tensor:
    mag = _E2M1[(codes & 0x07).long()]
    return torch.where((codes >> 3).bool(), -mag, mag)


# --- per-format encoders ------------------------------------------------------------------------------------------
def _int_codes(w: Tensor, step: Tensor, qmax: int) -> Tensor:
    k = torch.clamp(torch.round(w / step), -qmax, qmax)
    return torch.where((k == 0) & torch.signbit(k), torch.full_like(k, -qmax - 1), k).to(torch.int8)


def _int_values(codes: Tensor, step: Tensor, qmax: int) -> Tensor:
    k = codes.to(torch.float32)
    negzero = codes == -qmax - 1
    return torch.where(negzero, torch.full_like(k, -0.0), k * step)


def _block_scales(w: Tensor, fmt: str) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(elements on the E2M1 grid, per-block scale, shape info) exactly as formats.mxfp4 / nvfp4 compute them."""
    block = MX_BLOCK if fmt == "mxfp4" else NV_BLOCK
    blocks, _ = F4._blocked(w, 1, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    prev = F4.set_kernels(False)
    try:
        if fmt == "mxfp4":
            scale, tensor_scale = F4.mx_block_scales(amax), None
            safe = scale
        else:
            tensor_scale = F4.nvfp4_tensor_scale(F4._amax(w, "weight"))
            block_scale = F4.minifloat(amax / (F4.E2M1.max * tensor_scale), F4.E4M3)
            scale = block_scale
            full = block_scale * tensor_scale
            safe = torch.where(full > 0, full, torch.ones_like(full))
        elements = F4.minifloat(blocks / safe, F4.E2M1)
    finally:
        F4.set_kernels(prev)
    return elements, scale, blocks.shape, tensor_scale


def encode_weight(w: Tensor, fmt: str) -> dict:
    """The packed record of one weight tensor in format `fmt` (nearest rounding, as the forward GEMM uses)."""
    w = w.detach().float().contiguous()
    rec: dict = {"format": fmt, "shape": tuple(w.shape)}
    if fmt == "int4-sawb":
        step = F4.sawb_alpha(w, 4) / 7
        step = torch.where(step > 0, step, torch.ones_like(step))
        rec.update(step=step, codes=pack_nibbles(_int_codes(w, step, 7).to(torch.uint8) & 0x0F))
    elif fmt == "int8":
        amax = F4._amax(w, "weight")
        step = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
        rec.update(step=step, codes=_int_codes(w, step, 127))
    elif fmt in ("mxfp4", "nvfp4"):
        elements, scale, bshape, tensor_scale = _block_scales(w, fmt)
        rec["codes"] = pack_nibbles(_e2m1_codes(elements))
        rec["blocked_shape"] = tuple(bshape)
        if fmt == "mxfp4":
            exps = F4.floor_log2(scale.reshape(-1)) + 127
            rec["scales"] = exps.to(torch.uint8)
        else:
            rec["scales"] = encode_minifloat(scale.reshape(-1), F4.E4M3)
            rec["tensor_scale"] = tensor_scale
    elif fmt in ("fp8-e4m3", "fp8-e5m2"):
        spec = F4.E4M3 if fmt == "fp8-e4m3" else F4.E5M2
        amax = F4._amax(w, "weight")
        scale = torch.where(amax > 0, amax / spec.max, torch.ones_like(amax))
        prev = F4.set_kernels(False)
        try:
            v = F4.minifloat(w / scale, spec)
        finally:
            F4.set_kernels(prev)
        rec.update(scale=scale, codes=encode_minifloat(v, spec))
    elif fmt == "fp32":
        rec["values"] = w.clone()
    else:
        raise ValueError(f"cannot pack weight format {fmt!r}")
    return rec


def decode_weight(rec: dict) -> Tensor:
    """The FP32 weight a packed record stands for."""
    fmt, shape = rec["format"], tuple(rec["shape"])
    n = math.prod(shape)
    if fmt == "int4-sawb":
        nib = unpack_nibbles(rec["codes"], n).to(torch.int16)
        codes = torch.where(nib >= 8, nib - 16, nib).to(torch.int8)
        return _int_values(codes, rec["step"], 7).reshape(shape)
    if fmt == "int8":
        return _int_values(rec["codes"], rec["step"], 127).reshape(shape)
    if fmt in ("mxfp4", "nvfp4"):
        bshape = tuple(rec["blocked_shape"])
        elements = _e2m1_values(unpack_nibbles(rec["codes"], math.prod(bshape))).reshape(bshape)
        if fmt == "mxfp4":
            scale = F4._exp2(rec["scales"].to(torch.int32) - 127)
        else:
            scale = decode_minifloat(rec["scales"], F4.E4M3) * rec["tensor_scale"]
        q = elements * scale.reshape(*bshape[:-1], 1)
        moved = q.reshape(*bshape[:-2], bshape[-2] * bshape[-1])[..., :shape[1]]
        return moved.movedim(-1, 1).contiguous()
    if fmt in ("fp8-e4m3", "fp8-e5m2"):
        spec = F4.E4M3 if fmt == "fp8-e4m3" else F4.E5M2
        return decode_minifloat(rec["codes"], spec) * rec["scale"]
    if fmt == "fp32":
        return rec["values"]
    raise ValueError(f"unknown packed weight format {fmt!r}")


# --- save / load --------------------------------------------------------------------------------------------------
def packed_state(model: nn.Module) -> dict:
    """The object save_packed writes: packed quantized weights plus every other state entry as it is."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model has no quantized layer: call frugalnet.lowbit.quantize_(model, recipe) first")
    packed = {}
    for name, layer in layers:
        fmt = "fp32" if layer.prequantized else layer.lowbit.weight.format
        packed[f"{name}.weight" if name else "weight"] = encode_weight(layer.weight, fmt)
    rest = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in packed}
    return {"magic": MAGIC, "recipe": layers[0][1].recipe_name, "weights": packed, "state": rest}


def save_packed(model: nn.Module, path: str | Path, compress: bool = True) -> int:
    """Write the packed checkpoint atomically (LZMA-compressed unless compress=False); returns its size in bytes."""
    buffer = io.BytesIO()
    torch.save(packed_state(model), buffer)
    data = buffer.getvalue()
    if compress:
        data = _lzma(data)
    atomic_replace(path, lambda handle: handle.write(data))
    return Path(path).stat().st_size


def load_packed(path: str | Path, model: nn.Module | None = None) -> dict[str, Tensor]:
    """Read a packed checkpoint: {state-dict key: FP32 tensor}, quantized weights decoded bit-exactly.

    With `model` (converted by quantize_ with the same recipe), the state is loaded into it and its quantized layers
    use the stored weights as they are (`layer.prequantized = True`; set it back to False before training further).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed checkpoint {path} not found")
    data = path.read_bytes()
    if data.startswith(_XZ_MAGIC):
        try:
            data = lzma.decompress(data)
        except lzma.LZMAError as exc:
            raise ValueError(f"{path} is a damaged compressed packed checkpoint: {exc}") from exc
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a frugalnet packed checkpoint ({MAGIC}): {exc}") from exc
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise ValueError(f"{path} is not a frugalnet packed checkpoint ({MAGIC})")
    state = dict(obj["state"])
    for key, rec in obj["weights"].items():
        state[key] = decode_weight(rec)
    if model is not None:
        model.load_state_dict(state)
        names = {k[:-len(".weight")] if k.endswith(".weight") else "" for k in obj["weights"]}
        for name, layer in quantized_layers(model):
            if name in names:
                layer.prequantized = True
    return state


def fp32_checkpoint_bytes(model: nn.Module, compress: bool = False) -> int:
    """Size of torch.save(state_dict) with every floating tensor in FP32: the reference for the packed size
    (compress=True: that file after the same LZMA stage save_packed uses, for a like-for-like comparison)."""
    state = {k: (v.detach().float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return len(_lzma(data) if compress else data)
