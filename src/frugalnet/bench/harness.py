"""The measuring part of `frugalnet bench`: interleaved timing with spread, output checks against a reference, MAC
counts (dense and effective) and a description of the machine.

Every method of a case is timed in the same rounds (each round calls every method in a rotating order), so a load
change on this shared machine hits all methods alike; a case reports per method the median, the interquartile range
and min/max of the per-round times, and flags a method whose spread is wide (IQR > 20% of the median).
"""
from __future__ import annotations

import os
import platform
import statistics
from typing import Any

import numpy as np
import torch
from torch import nn

from frugalnet.engine.timing import interleaved_samples  # noqa: F401  (re-exported: the one timer)

WIDE_SPREAD = 0.2   # IQR / median above which a timing is flagged



# ---- timing --------------------------------------------------------------------------------------------------

def spread(samples: list[float]) -> dict[str, Any]:
    """Median, quartiles, min/max of a list of per-call times, and whether the spread is wide."""
    med = statistics.median(samples)
    q25, q75 = (float(v) for v in np.percentile(samples, [25, 75]))
    return {"median": med, "q25": q25, "q75": q75, "min": min(samples), "max": max(samples), "n": len(samples),
            "wide": bool(med > 0 and (q75 - q25) / med > WIDE_SPREAD)}


# ---- outputs -------------------------------------------------------------------------------------------------

def _leaves(out: Any) -> list[np.ndarray]:
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _leaves(o)]
    if isinstance(out, torch.Tensor):
        return [out.detach().float().numpy()]
    return [np.asarray(out, dtype=np.float32)]


def outputs_match(got: Any, ref: Any, rtol: float = 1e-4) -> tuple[bool, float]:
    """(every output close to the reference, largest abs difference). Outputs may be tensors, arrays or tuples of
    them; closeness is |got - ref| <= rtol * |ref| + rtol / 10 * max(1, max|ref|), as in the engine's own check."""
    a, b = _leaves(got), _leaves(ref)
    if len(a) != len(b):
        return False, float("inf")
    ok, worst = True, 0.0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False, float("inf")
        if y.size == 0:
            continue
        scale = max(1.0, float(np.abs(y).max()))
        diff = np.abs(x.astype(np.float64) - y)
        worst = max(worst, float(diff.max()))
        ok &= bool((diff <= rtol * np.abs(y) + rtol * 0.1 * scale).all())
    return ok, worst


def relative_error(got: Any, ref: Any) -> float:
    """||got - ref|| / ||ref|| (L2 over every output together); inf if the shapes differ."""
    a, b = _leaves(got), _leaves(ref)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    num = sum(float(((x.astype(np.float64) - y) ** 2).sum()) for x, y in zip(a, b))
    den = sum(float((y.astype(np.float64) ** 2).sum()) for y in b)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


# ---- MACs ----------------------------------------------------------------------------------------------------

def count_macs(model: nn.Module, inputs: tuple) -> tuple[float, float]:
    """(dense MACs, effective MACs) of one forward of `model` on `inputs`.

    Counted: every nn.Linear and nn.Conv2d (effective = products of a nonzero weight and a nonzero input, exact,
    from the layer's real input) and the two matmuls of each frugalnet SelfAttention (dense in both counts).
    """
    from frugalnet.models.transformer import SelfAttention

    totals = [0.0, 0.0]

    def linear_hook(m, args, out):
        x = args[0].detach()
        nz_w = (m.weight != 0).float()
        nz_x = (x != 0).float().reshape(-1, m.in_features)
        totals[0] += float(nz_x.shape[0] * m.in_features * m.out_features)
        totals[1] += float((nz_x @ nz_w.sum(0)).sum())

    def conv_hook(m, args, out):
        x = args[0].detach()
        totals[0] += float(out.numel() * m.weight[0].numel())
        ones = torch.nn.functional.conv2d((x != 0).float(), (m.weight != 0).float(), None, m.stride, m.padding,
                                          m.dilation, m.groups)
        totals[1] += float(ones.sum())

    def attn_hook(m, args, out):
        b, t, c = args[0].shape
        macs = 2.0 * b * t * out[1].shape[2] * c    # QK^T and AV over all heads
        totals[0] += macs
        totals[1] += macs

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, SelfAttention):
            hooks.append(mod.register_forward_hook(attn_hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return totals[0], totals[1]


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters as stored (dense, zeros included)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ---- machine -------------------------------------------------------------------------------------------------

_ISA_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "avx2", "fma")


def machine_info() -> dict[str, Any]:
    """CPU model, the vector-ISA flags that matter here, cores, threads and library versions."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [f for f in _ISA_FLAGS if f in flags]
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE/other"
    info = {"cpu": model, "isa": isa, "widest_isa": widest, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    for lib in ("onnxruntime", "openvino"):
        try:
            info[lib] = __import__(lib).__version__
        except Exception:
            info[lib] = None
    return info


def machine_summary() -> str:
    """One line for a benchmark's header: CPU model, widest vector ISA and the ISA flags that matter here."""
    info = machine_info()
    return f"{info['cpu']}; widest ISA {info['widest_isa']} ({', '.join(info['isa']) or 'none of ' + str(_ISA_FLAGS)})"
