"""Number formats: one frozen `NumberFormat` per format in one table (`FORMATS`), which recipes, the autograd
Functions, packing and the engine's low-bit steps all look up. Adding a format means adding one entry here (with its
quantizer in quantizers.py and, to pack it, a codec in codecs.py).

Formats (quantizers return the *dequantized* values, FP32 numbers on the format's grid):
    int4-sawb   INT4 levels -7..7 times alpha / 7, alpha from SAWB (`sawb_alpha`); weights
    int8        INT8 levels -127..127 times max|x| / 127
    pact4/8     PACT activations: clip to [0, alpha] (or [-alpha, alpha] when signed), uniform levels, alpha trained
    fp4-radix4  1 sign bit, 3 exponent bits, no mantissa. Exponent code 0 is zero; codes 1..7 are the seven
                magnitudes t * 4^-j, j = 6..0. Phase 0 ("even" powers of two relative to s): t = s, grid
                {0, s 4^-6, ..., s/4, s}; phase 1 ("odd" powers): t = 2s, grid {0, s 2^-11, ..., s/2, 2s}.
                Per-layer scale s = 2^ceil(log2 amax(dY)) (amax all-reduced when distributed). Why: a power of
                two makes scaling exact and q(2^m x) = 2^m q(x) bit for bit (loss scaling, DDP's world-size
                factor); ceil means |x| <= s, so nothing saturates; the two phases interleave (together they
                cover every power of two from 2^-12 s to s), so the errors of the two backward GEMMs' copies
                are not the same. Between neighbouring levels rounding is linear: nearest takes the nearer value,
                and a tie (exactly halfway) goes DOWN to the smaller magnitude, since round(0.5) = 0 -- not to an
                "even" code; stochastic is unbiased. Phase 1's top level 2s is reachable only by stochastic rounding.
    minifloat   E2M1 (max 6), FP8 E4M3 (OCP, max 448), FP8 E5M2 (max 57344), IEEE-like subnormals, saturating.
    mxfp4       OCP MX: blocks of 32 E2M1 values sharing an E8M0 scale 2^(floor(log2 amax) - 2).
    nvfp4       blocks of 16 E2M1 values with an E4M3 block scale and an FP32 per-tensor scale amax / (448 * 6).

Non-finite input: every quantizer raises ValueError("... contains NaN or Inf ...") -- a quantized GEMM has no
encoding for them, and silently propagating them would hide a diverged run. Blocks run along `dim` (the GEMM's
reduction dimension or the feature dimension, as the caller decides); a last block shorter than the block size is
padded with zeros, which changes no block maximum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from frugalnet.lowbit import codecs as C
from frugalnet.lowbit.numerics import (E2M1, E2M1_GRID, E4M3, E5M2, RADIX4_LEVELS, RADIX4_MAX_AMAX,  # noqa: F401
                                       ROUNDING_MODES, SAWB_COEFFICIENTS, MinifloatSpec, Rounding, _amax,
                                       _check_finite_scalar, _div, _exp2, ceil_log2, check_finite, check_rounding,
                                       floor_log2, hash_uniform, round_, set_kernels, uniform_noise)
from frugalnet.lowbit.quantizers import (_blocked, e2m1, fp8, hadamard_matrix, int4_sawb, int_max,  # noqa: F401
                                         int_symmetric, minifloat, mx_block_scales, mxfp4, nvfp4, nvfp4_tensor_scale,
                                         pact_backward, pact_forward, radix4_fp4, radix4_scale, random_hadamard,
                                         sawb_alpha)

# quantize(x, rounding, generator, dim, phase, amax) -> values on the grid
Quantizer = Callable[[Tensor, str, "torch.Generator | None", int, int, "Tensor | None"], Tensor]


@dataclass(frozen=True)
class NumberFormat:
    """What one number format is, in one place.

    Args:
        name: the key recipes use ("int4-sawb", "mxfp4", ...).
        bits: bits per element (32 for "fp32", which quantizes nothing).
        kind: "none" (no quantization), "tensor" (one scale per tensor: the quantized copy does not depend on the
            block direction) or "block" (per-block scales along a dimension).
        use: "weight" (needs the whole tensor's statistics, e.g. SAWB), "activation" (PACT: needs a trained clip)
            or "any".
        quantize: the quantizer; None for PACT, which needs its clip (`pact_forward`).
        uses_amax: takes a per-tensor max|x| that callers may all-reduce across processes.
        two_phase: two interleaved grids (radix-4 FP4: one per backward GEMM).
        block: block size along the blocked dimension (block kinds), else 0.
        encode / decode / check: the packed-storage codec (codecs.py): record from weight, weight from record, and
            the validation of a record read from a file; None where the format cannot be stored packed.
    """

    name: str
    bits: int
    kind: str
    use: str = "any"
    quantize: Quantizer | None = None
    uses_amax: bool = False
    two_phase: bool = False
    block: int = 0
    encode: Callable[[Tensor], dict] | None = None
    decode: Callable[[dict, tuple[int, ...]], Tensor] | None = None
    check: Callable[[dict, tuple[int, ...]], None] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("none", "tensor", "block"):
            raise ValueError(f"NumberFormat.kind must be 'none', 'tensor' or 'block', got {self.kind!r}")
        if self.use not in ("weight", "activation", "any"):
            raise ValueError(f"NumberFormat.use must be 'weight', 'activation' or 'any', got {self.use!r}")
        if (self.kind == "block") != (self.block > 0):
            raise ValueError(f"NumberFormat {self.name!r}: block size > 0 exactly for kind 'block'")

    @property
    def trainable_clip(self) -> bool:
        """PACT: quantized against a trained clip value, not by `quantize`."""
        return self.quantize is None and self.kind != "none"


FORMATS: dict[str, NumberFormat] = {f.name: f for f in (
    NumberFormat("fp32", 32, "none", quantize=lambda x, r, g, dim, phase, amax: x,
                 encode=C.encode_fp32, decode=C.decode_fp32, check=C.check_fp32),
    NumberFormat("int4-sawb", 4, "tensor", use="weight",
                 quantize=lambda x, r, g, dim, phase, amax: int4_sawb(x, r, g),
                 encode=C.encode_int4, decode=C.decode_int4, check=C.check_int4),
    NumberFormat("pact4", 4, "tensor", use="activation"),
    NumberFormat("pact8", 8, "tensor", use="activation"),
    NumberFormat("int8", 8, "tensor", uses_amax=True,
                 quantize=lambda x, r, g, dim, phase, amax: int_max(x, 8, r, g, amax=amax),
                 encode=C.encode_int8, decode=C.decode_int8, check=C.check_int8),
    NumberFormat("fp4-radix4", 4, "tensor", uses_amax=True, two_phase=True,
                 quantize=lambda x, r, g, dim, phase, amax: radix4_fp4(x, phase, r, g, amax=amax)),
    NumberFormat("mxfp4", 4, "block", block=C.MX_BLOCK,
                 quantize=lambda x, r, g, dim, phase, amax: mxfp4(x, dim, r, g),
                 encode=C.encode_mxfp4, decode=C.decode_mxfp4, check=C.check_mxfp4),
    NumberFormat("nvfp4", 4, "block", uses_amax=True, block=C.NV_BLOCK,
                 quantize=lambda x, r, g, dim, phase, amax: nvfp4(x, dim, r, g, amax=amax),
                 encode=C.encode_nvfp4, decode=C.decode_nvfp4, check=C.check_nvfp4),
    NumberFormat("fp8-e4m3", 8, "tensor", uses_amax=True,
                 quantize=lambda x, r, g, dim, phase, amax: fp8(x, E4M3, r, g, amax=amax),
                 encode=C.encode_fp8_e4m3, decode=C.decode_fp8_e4m3, check=C.check_fp8_e4m3),
    NumberFormat("fp8-e5m2", 8, "tensor", uses_amax=True,
                 quantize=lambda x, r, g, dim, phase, amax: fp8(x, E5M2, r, g, amax=amax),
                 encode=C.encode_fp8_e5m2, decode=C.decode_fp8_e5m2, check=C.check_fp8_e5m2),
)}


def get_format(name: str) -> NumberFormat:
    """The NumberFormat called `name`; ValueError listing the known ones otherwise."""
    if not isinstance(name, str) or name not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {name!r}")
    return FORMATS[name]
