"""Real packed storage for quantized models: two 4-bit codes per byte plus their scales (codecs.py), with a checksum.

    save_packed(model, "model.fnp")          # a model converted by quantize_ (trained or not)
    state = load_packed("model.fnp")          # {name: tensor}: the weights exactly as the forward GEMMs saw them
    load_packed("model.fnp", model)           # ... loaded into a converted model, which then uses them as they are
    packed = read_packed("model.fnp")         # the validated records themselves, nothing decoded (the engine's
                                              # low-bit steps run from these without FP32 weights)

Everything besides the quantized weights (biases, norms, embeddings, PACT clips) is stored as it is. Decoding repeats
the encoder's float32 products, so the reloaded weights are bit-identical (signs of zero included) to
`layer.quantized_weight()`.

File layout: the line `frugalnet-packed-v2 sha256=<hex>\n`, then the body: the torch.save of the record, by default
compressed with LZMA (xz). The SHA-256 covers the body, so a damaged or edited file is refused before anything is
parsed. Why LZMA: 4-bit codes of real weights are far from uniform (most weights are small, so the small codes
dominate), and entropy coding removes what the fixed-width codes waste; the fixed scale overhead (one E4M3 byte per
16 NVFP4 values caps uncompressed NVFP4 at 32 / 4.5 = 7.1x) and the 8-bit first/last layers of ibm4 otherwise keep
small models below 7x. `compress=False` writes the plain container; `load_packed` reads both. Files of the first
version (no header, no checksum) still load, with a warning.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from frugalnet.lowbit.codecs import (MX_BLOCK, NV_BLOCK, decode_minifloat, encode_minifloat,  # noqa: F401
                                     minifloat_table, pack_nibbles, record_shape, unpack_nibbles)
from frugalnet.lowbit.convert import quantized_layers
from frugalnet.lowbit.formats import FORMATS
from frugalnet.utils.io import atomic_replace

MAGIC = "frugalnet-packed-v1"          # the record's tag (unchanged since v1)
HEADER = b"frugalnet-packed-v2 sha256="
_XZ_MAGIC = b"\xfd7zXZ\x00"


def _lzma(data: bytes) -> bytes:
    """The compression stage of save_packed (and of the like-for-like FP32 reference)."""
    return lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)


def encode_weight(w: Tensor, fmt: str) -> dict:
    """The packed record of one weight tensor in format `fmt` (nearest rounding, as the forward GEMM uses)."""
    nf = FORMATS.get(fmt)
    if nf is None or nf.encode is None:
        raise ValueError(f"cannot pack weight format {fmt!r}")
    w = w.detach().float().contiguous()
    return {"format": fmt, "shape": tuple(w.shape), **nf.encode(w)}


def check_record(rec: dict, what: str = "weight") -> tuple[int, ...]:
    """Validate one packed record (format known, shape sane, every array the size and type its shape needs, scales
    finite); returns its shape. Raises ValueError naming `what`."""
    if not isinstance(rec, dict):
        raise ValueError(f"packed record of {what} is a {type(rec).__name__}, not a dict")
    fmt = rec.get("format")
    nf = FORMATS.get(fmt) if isinstance(fmt, str) else None
    if nf is None or nf.check is None:
        raise ValueError(f"packed record of {what}: unknown weight format {fmt!r}")
    try:
        shape = record_shape(rec)
        nf.check(rec, shape)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return shape


def decode_weight(rec: dict) -> Tensor:
    """The FP32 weight a packed record stands for (the record is validated first)."""
    shape = check_record(rec)
    return FORMATS[rec["format"]].decode(rec, shape)


# --- save / load --------------------------------------------------------------------------------------------------
def packed_state(model: nn.Module) -> dict:
    """The object save_packed writes: packed quantized weights plus every other state entry as it is."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("model has no quantized layer: call frugalnet.lowbit.quantize_(model, recipe) first")
    packed = {}
    for name, layer in layers:
        key = f"{name}.weight" if name else "weight"
        if layer.prequantized and getattr(layer, "packed_record", None) is not None:
            packed[key] = layer.packed_record      # loaded from a packed file: its codes as they were
        else:
            fmt = "fp32" if layer.prequantized else layer.lowbit.weight.format
            packed[key] = encode_weight(layer.weight, fmt)
    rest = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in packed}
    return {"magic": MAGIC, "recipe": layers[0][1].recipe_name, "weights": packed, "state": rest}


def save_packed(model: nn.Module, path: str | Path, compress: bool = True) -> int:
    """Write the packed checkpoint atomically (LZMA-compressed unless compress=False) with its SHA-256; returns its
    size in bytes."""
    buffer = io.BytesIO()
    torch.save(packed_state(model), buffer)
    body = buffer.getvalue()
    if compress:
        body = _lzma(body)
    data = HEADER + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    atomic_replace(path, lambda handle: handle.write(data))
    return Path(path).stat().st_size


def _body(path: Path, data: bytes) -> bytes:
    """The verified body of a packed file (checksum checked, decompressed)."""
    if data.startswith(HEADER):
        end = data.find(b"\n", len(HEADER))
        digest = data[len(HEADER):end] if end > 0 else b""
        body = data[end + 1:] if end > 0 else b""
        if len(digest) != 64 or hashlib.sha256(body).hexdigest().encode() != digest:
            raise ValueError(f"{path} is a damaged packed checkpoint: its SHA-256 checksum does not match its "
                             f"contents (the file was truncated or changed after it was written); save it again")
    elif data.startswith(_XZ_MAGIC) or data.startswith(b"PK"):
        body = data     # version 1: no checksum (read_packed warns once it knows the file is a packed checkpoint)
    else:
        raise ValueError(f"{path} is not a frugalnet packed checkpoint ({MAGIC})")
    if body.startswith(_XZ_MAGIC):
        try:
            body = lzma.decompress(body)
        except lzma.LZMAError as exc:
            raise ValueError(f"{path} is a damaged compressed packed checkpoint: {exc}") from exc
    return body


def read_packed(path: str | Path) -> dict:
    """The validated contents of a packed file without decoding anything: {"recipe": name, "weights": {key:
    record}, "state": {key: tensor}}. Every record's format, shape, array sizes and scales are checked here."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed checkpoint {path} not found")
    data = path.read_bytes()
    body = _body(path, data)
    try:
        obj = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a frugalnet packed checkpoint ({MAGIC}): {exc}") from exc
    if not isinstance(obj, dict) or obj.get("magic") != MAGIC:
        raise ValueError(f"{path} is not a frugalnet packed checkpoint ({MAGIC})")
    if not data.startswith(HEADER):
        warnings.warn(f"{path} is a version-1 packed checkpoint without a checksum: damage cannot be detected; "
                      f"save it again with save_packed", UserWarning, stacklevel=2)
    weights, state, recipe = obj.get("weights"), obj.get("state"), obj.get("recipe")
    if not isinstance(weights, dict) or not isinstance(state, dict) or not isinstance(recipe, str):
        raise ValueError(f"{path}: packed checkpoint lacks its weights, state or recipe name")
    if not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: packed checkpoint state must map names to tensors")
    for key, rec in weights.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: packed weight names must be strings, got {key!r}")
        try:
            check_record(rec, key)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return {"recipe": recipe, "weights": weights, "state": state}


def check_model_matches(path: str | Path, packed: dict, model: nn.Module) -> None:
    """ValueError naming both recipes (or the keys) when `model` cannot take the packed file's state."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError(f"{path} holds a model quantized with recipe {packed['recipe']!r}; the model given is "
                         f"not quantized: call frugalnet.lowbit.quantize_(model, {packed['recipe']!r}) first")
    mine = layers[0][1].recipe_name
    if mine != packed["recipe"]:
        raise ValueError(f"{path} was saved from a model quantized with recipe {packed['recipe']!r}, but the model "
                         f"given uses recipe {mine!r}; quantize a fresh model with {packed['recipe']!r} to load it")
    expected = set(model.state_dict())
    stored = set(packed["state"]) | set(packed["weights"])
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        raise ValueError(f"{path} (recipe {packed['recipe']!r}) does not fit this model's layers: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}; was it saved from another architecture?")


def load_packed(path: str | Path, model: nn.Module | None = None) -> dict[str, Tensor]:
    """Read a packed checkpoint: {state-dict key: FP32 tensor}, quantized weights decoded bit-exactly.

    With `model` (converted by quantize_ with the same recipe), the state is loaded into it and its quantized layers
    use the stored weights as they are (`layer.prequantized = True`; set it back to False before training further).
    """
    packed = read_packed(path)
    if model is not None:
        check_model_matches(path, packed, model)
    state = dict(packed["state"])
    for key, rec in packed["weights"].items():
        state[key] = FORMATS[rec["format"]].decode(rec, tuple(rec["shape"]))
    if model is not None:
        model.load_state_dict(state)
        names = {k[:-len(".weight")] if k.endswith(".weight") else "" for k in packed["weights"]}
        for name, layer in quantized_layers(model):
            if name in names:
                layer.prequantized = True
                # the file's codes, for the engine's low-bit steps (re-encoding decoded weights would not give them
                # back: SAWB's clip of already-quantized weights differs)
                layer.packed_record = packed["weights"][f"{name}.weight" if name else "weight"]
    return state


def fp32_checkpoint_bytes(model: nn.Module, compress: bool = False) -> int:
    """Size of torch.save(state_dict) with every floating tensor in FP32: the reference for the packed size
    (compress=True: that file after the same LZMA stage save_packed uses, for a like-for-like comparison)."""
    state = {k: (v.detach().float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    return len(_lzma(data) if compress else data)
