"""Numerics shared by every number format: rounding modes (nearest, seeded stochastic), the counter-based uniform
generator, minifloat specs, exact log2 / exp2 helpers and the finite checks. Pure functions of tensors.

Rounding modes (argument `rounding`):
    "nearest"     round to the nearest grid point, ties to the even code (torch.round is half-to-even);
    "stochastic"  round up with probability (x - lo) / (hi - lo) between the two neighbouring grid points, so
                  E[q(x)] = x inside the representable range; uniform draws come from `generator` (seeded).
"""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

Rounding = Literal["nearest", "stochastic"]
ROUNDING_MODES = ("nearest", "stochastic")

E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
SAWB_COEFFICIENTS = {4: (12.68, 12.80)}   # bits -> (c1, c2), Choi et al. 2018
RADIX4_LEVELS = 7                           # nonzero magnitudes per phase (3 exponent bits, one code for zero)
RADIX4_MAX_AMAX = 2.0 ** 126                # above it the phase-1 top level 2 * 2^ceil(log2 amax) overflows float32
_USE_KERNELS = True                         # fused numba kernels for CPU float32 tensors (bit-identical results)


def set_kernels(enabled: bool) -> bool:
    """Turn the fused CPU kernels on or off (off: the plain torch code below runs); returns the previous setting."""
    global _USE_KERNELS
    previous, _USE_KERNELS = _USE_KERNELS, bool(enabled)
    return previous


def _fast(x: Tensor) -> bool:
    return _USE_KERNELS and x.device.type == "cpu" and x.dtype == torch.float32


def _np(x: Tensor):
    return x.detach().contiguous().numpy()


_HASH_MASK = 0xFFFFFFFF


def hash_uniform(seed: int, n: int, device: torch.device | str = "cpu") -> Tensor:
    """n float32 draws in [0, 1) on a 2^-24 grid: u_i = fmix32(i * 0x9E3779B1 + seed) >> 8, times 2^-24.

    A counter-based generator (MurmurHash3's finaliser over a Weyl sequence): one seed gives the same numbers on
    every device and in the numba kernels (`_kernels.hash_uniform`), and generating them is one cheap parallel pass,
    several times faster than torch.rand on CPU. Statistical quality is ample for rounding noise."""
    i = torch.arange(n, dtype=torch.int64, device=device)
    h = (i * 0x9E3779B1 + (seed & _HASH_MASK)) & _HASH_MASK       # int64 products wrap; the low 32 bits are exact
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _HASH_MASK
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _HASH_MASK
    h = h ^ (h >> 16)
    return (h >> 8).to(torch.float32) * 2.0 ** -24


def uniform_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Uniform draws in [0, 1) of `shape` for stochastic rounding: one 32-bit seed taken from `generator` (or torch's
    global generator), expanded by `hash_uniform` (numba on CPU, torch elsewhere: identical numbers)."""
    gen_device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2 ** 32, (1,), generator=generator, device=gen_device))
    n = math.prod(shape)
    if _USE_KERNELS and torch.device(device).type == "cpu":
        from frugalnet.lowbit import _kernels

        out = torch.empty(n, dtype=torch.float32)
        _kernels.pick("hash_uniform", n)(np.uint64(seed), out.numpy())
    else:
        out = hash_uniform(seed, n, device)
    return out.reshape(shape).to(dtype)


def _noise(x: Tensor, rounding: str, generator: torch.Generator | None) -> Tensor | None:
    """Uniform draws in [0, 1) shaped like x for stochastic rounding (None for nearest)."""
    check_rounding(rounding)
    if rounding == "nearest":
        return None
    return uniform_noise(x.shape, generator, x.device, x.dtype)


def _kernel_noise(x: Tensor, noise: Tensor | None):
    return _np(noise).reshape(-1) if noise is not None else np.zeros(1, dtype=np.float32)


class MinifloatSpec:
    """A sign-exponent-mantissa format: `mantissa` bits, smallest normal exponent `emin`, largest finite `max`."""

    def __init__(self, name: str, mantissa: int, emin: int, max_value: float) -> None:
        self.name, self.mantissa, self.emin, self.max = name, mantissa, emin, float(max_value)

    def __repr__(self) -> str:
        return f"MinifloatSpec({self.name})"


E2M1 = MinifloatSpec("e2m1", 1, 0, 6.0)
E4M3 = MinifloatSpec("e4m3", 3, -6, 448.0)
E5M2 = MinifloatSpec("e5m2", 2, -14, 57344.0)


# --- helpers -------------------------------------------------------------------------------------------------------
def check_rounding(rounding: str) -> None:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")


def check_finite(x: Tensor, what: str = "input") -> None:
    """Raise ValueError if x holds NaN or Inf (the documented rule for every format here)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} contains NaN or Inf; low-bit formats have no encoding for them "
                         f"(check the learning rate / loss scale)")


def _check_finite_scalar(value: Tensor, what: str) -> None:
    # amax / mean of a tensor is non-finite iff the tensor holds a NaN or Inf: a one-element check, no extra pass.
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{what} contains NaN or Inf; low-bit formats have no encoding for them "
                         f"(check the learning rate / loss scale)")


def round_(v: Tensor, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
           noise: Tensor | None = None) -> Tensor:
    """Round to integers: half-to-even, or stochastically (floor(v + u), u ~ U[0, 1), or u = `noise`)."""
    if rounding == "nearest":
        return torch.round(v)
    if rounding == "stochastic":
        u = noise if noise is not None else uniform_noise(v.shape, generator, v.device, v.dtype)
        return torch.floor(v + u)
    raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")


def _amax(x: Tensor, what: str) -> Tensor:
    # abs().amax() propagates NaN and is ~5x faster on CPU than vector_norm(x, inf)
    amax = x.detach().abs().amax() if x.numel() else torch.zeros((), dtype=x.dtype, device=x.device)
    _check_finite_scalar(amax, what)
    return amax


def _div(t: Tensor, c: float) -> Tensor:
    """t / c, correctly rounded on every device: PyTorch on CUDA divides by a Python number as t * (1 / c), which
    can differ from t / c in the last bit, and the CPU kernels divide."""
    return t / torch.full_like(t, c)


def _exp2(e: Tensor) -> Tensor:
    return torch.ldexp(torch.ones_like(e, dtype=torch.float32), e.to(torch.int32))


def floor_log2(v: Tensor) -> Tensor:
    """floor(log2 v) for v > 0, exactly (from the float's exponent field, no log rounding); int32."""
    _, e = torch.frexp(v)
    return e - 1


def ceil_log2(v: Tensor) -> Tensor:
    """ceil(log2 v) for v > 0, exactly; int32."""
    m, e = torch.frexp(v)
    return torch.where(m == 0.5, e - 1, e)


