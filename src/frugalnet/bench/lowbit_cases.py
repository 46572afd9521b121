"""Low-bit cases of `frugalnet bench` (issue 19 item 4): Linear 4096x4096 at batch 1 and 64, dense and 90% sparse,
and one GPT-shaped decode step, each with PyTorch FP32 (the reference), ONNX Runtime and OpenVINO FP32, PyTorch
dynamic INT8, ORT INT8 and 4-bit (MatMulNBits, fp32 and int8-activation compute), OpenVINO INT8/INT4 weight
compression; per method the weights it holds (bytes read per call for a memory-bound GEMV) and, for the case, the
energy model's figure for the FP32 pass.

frugalnet's own packed low-bit engine registers itself in `LOWBIT_ENGINES` (name -> builder(model, inputs, threads)
-> Runner) and then appears beside the baselines.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from frugalnet.bench.baselines import Runner, onnx_export, onnxruntime, openvino, torch_eager
from frugalnet.bench.compare import RunSettings, compare
from frugalnet.bench.harness import count_macs, weight_bytes
from frugalnet.bench.layer_cases import _masked_weight
from frugalnet.bench.lowbit_baselines import lowbit_runtimes
from frugalnet.bench.model_cases import ModelCase, gpt_case
from frugalnet.nn.sparse import SparseLinear

LOWBIT_ENGINES: dict[str, Callable[[nn.Module, tuple, int], Runner]] = {}


def linear_case(batch: int, sparsity: float = 0.0, n: int = 4096, seed: int = 0) -> ModelCase:
    """One Linear n x n (bias on); sparsity > 0 keeps round((1 - sparsity) * n) random weights per output unit in a
    SparseLinear. Input dense normal."""
    rng = np.random.default_rng(seed)
    if sparsity > 0:
        w = torch.from_numpy(_masked_weight(n, n, sparsity, rng))
        layer = SparseLinear(n, n, sparsity, mask=w != 0)
    else:
        w = torch.from_numpy(rng.uniform(-1, 1, (n, n)).astype(np.float32) / np.sqrt(n))
        layer = nn.Linear(n, n)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(torch.from_numpy(rng.uniform(-0.1, 0.1, n).astype(np.float32)))
    x = torch.from_numpy(rng.standard_normal((batch, n)).astype(np.float32))
    tag = "dense" if sparsity == 0 else f"{sparsity:.0%} sparse"
    return ModelCase(f"lowbit linear{n} {tag} b={batch}", "lowbit-linear", nn.Sequential(layer).eval(), (x,), batch,
                     {"model": f"Linear {n}x{n}, {tag} weights, dense normal input, batch {batch}"})


def gpt_lowbit_case(hidden: int = 768, layers: int = 12, heads: int = 12, kv: int = 128, vocab: int = 50257,
                    seed: int = 0) -> ModelCase:
    """One decode step of the dense GPT-shaped decoder (GELU), KV cache of `kv` tokens, batch 1."""
    case = gpt_case(1, hidden, 4 * hidden, layers, heads, kv, vocab, ffn_sparsity=0.0, attn_sparsity=0.0,
                    kwta=False, seed=seed)
    case.group = "lowbit-gpt"
    case.name = "lowbit " + case.name
    return case


def _modelled_energy(model: nn.Module, inputs: tuple) -> dict:
    try:
        from frugalnet.energy.costmodel import model_cost

        cost = model_cost(model, inputs)
        return {"modelled_energy_j_fp32": cost.energy_j, "modelled_bytes_fp32": cost.bytes_effective}
    except Exception as exc:   # the figure is extra; never fail the bench for it
        return {"modelled_energy_note": f"{type(exc).__name__}: {exc}"[:200]}


def run_lowbit_case(case: ModelCase, settings: RunSettings) -> dict:
    """A low-bit case: the FP32 runtimes, the low-bit baselines and any registered frugalnet low-bit engine."""
    onnx_bytes, note = onnx_export(case.model, case.inputs)
    runners: dict[str, Runner] = {"torch_fp32": torch_eager(case.model, case.inputs)}
    if onnx_bytes is None:
        runners["onnxruntime_fp32"] = runners["openvino_f32"] = Runner(None, note)
    else:
        runners["onnxruntime_fp32"] = onnxruntime(case.model, case.inputs, settings.threads, onnx_bytes, note)
        runners["openvino_f32"] = openvino(case.model, case.inputs, settings.threads, "f32", onnx_bytes)
    runners.update(lowbit_runtimes(case.model, case.inputs, settings.threads))
    for name, build in LOWBIT_ENGINES.items():
        runners[name] = build(case.model, case.inputs, settings.threads)
    dense, eff = count_macs(case.model, case.inputs)
    wb = weight_bytes(case.model)
    extra = {"kind": "lowbit", "group": case.group, "batch": case.batch, "table": "lowbit", "notes": case.notes,
             **_modelled_energy(case.model, case.inputs)}
    result = compare(case.name, runners, case.inputs, settings, reference="torch_fp32", dense_macs=dense,
                     effective_macs=eff, memory={"torch_fp32": wb, "onnxruntime_fp32": wb, "openvino_f32": wb},
                     extra=extra)
    return result


LOWBIT_GROUPS: dict[str, list[Callable[[], ModelCase]]] = {
    "lowbit-linear": [lambda b=b, s=s: linear_case(b, s) for s in (0.0, 0.9) for b in (1, 64)],
    "lowbit-gpt": [lambda: gpt_lowbit_case()],
}
