"""Modelled cost of a model on an input: MACs (dense and effective), bit widths, memory traffic, joules, per layer.

`model_cost(model, x)` runs one real forward pass (and, with `training=True`, one real backward pass) with hooks on
every nn.Linear and nn.Conv2d (subclasses included, so frugalnet's SparseLinear/SparseConv2d and quantized layers),
and counts every other matrix product (attention, F.linear on bare weights, matmul, other convolutions) at the aten
level (`frugalnet.energy.opcount`, FP32, one row per module and kind). For every hooked GEMM it counts:

- dense MACs: what a dense kernel multiplies (bias adds not counted, as in torch.utils.flop_counter);
- effective MACs: the multiplies whose operands are *both* nonzero, counted exactly from the zero patterns measured
  in that pass (e.g. for Linear, sum_i nnz(column i of x) * nnz(column i of W)): what an ideal sparse kernel does.
  forward pairs (input, weight); grad_input pairs (grad_output, weight); grad_weight pairs (grad_output, input)
  restricted to the weights a `weight_mask` buffer keeps (a masked weight needs no gradient). Training counts the
  forward and both backward GEMMs, each only where autograd runs it (no grad_input for a layer fed by data).
- bit widths: a layer with `gemm_bits = {"forward": (w, a), "grad_input": (g, w), "grad_weight": (g, a)}` uses
  them; any other layer is FP32.
- memory traffic: weights read at their width (nonzeros plus a ceil(log2(fan_in))-bit index each, when that is
  smaller than dense) from the table's weight level; activations and gradients (stored dense, as PyTorch does) at
  the activation level; weight gradients written in FP32 for the optimizer.

Energy = sum(effective MACs x E_mac(bits)) + sum(bytes x E_mem(level)), priced with an EnergyTable (default
Horowitz 45 nm, see `frugalnet.energy.tables`). These are *modelled* numbers, for comparing models, not a
measurement of this machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalnet.energy.gemmcount import FP32_BITS, GEMMS  # noqa: F401  (re-exported)
from frugalnet.energy.gemmcount import count_backward, count_forward, gemm_bits, index_bits
from frugalnet.energy.opcount import OpCounter, OpRecord, primary_output, tensors_in
from frugalnet.energy.tables import EnergyTable, resolve_table

_PJ = 1e-12


@dataclass
class GemmCost:
    dense_macs: int = 0
    effective_macs: int = 0
    bits: tuple[int, int] = (32, 32)


@dataclass
class LayerCost:
    """Counts of one layer, summed over every call in the pass."""

    name: str
    kind: str
    calls: int = 0
    weight_density: float = 1.0
    input_nonzeros: int = 0
    input_numel: int = 0
    grad_output_nonzeros: int = 0
    grad_output_numel: int = 0
    gemms: dict[str, GemmCost] = field(default_factory=dict)
    weight_bytes_dense: float = 0.0
    weight_bytes_effective: float = 0.0
    activation_bytes: float = 0.0
    compute_energy_j: float = 0.0
    dense_compute_energy_j: float = 0.0
    memory_energy_j: float = 0.0
    dense_memory_energy_j: float = 0.0

    @property
    def input_density(self) -> float:
        return self.input_nonzeros / self.input_numel if self.input_numel else float("nan")

    @property
    def grad_output_density(self) -> float:
        return self.grad_output_nonzeros / self.grad_output_numel if self.grad_output_numel else float("nan")

    @property
    def dense_macs(self) -> int:
        return sum(g.dense_macs for g in self.gemms.values())

    @property
    def effective_macs(self) -> int:
        return sum(g.effective_macs for g in self.gemms.values())

    @property
    def energy_j(self) -> float:
        return self.compute_energy_j + self.memory_energy_j

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "calls": self.calls, "weight_density": self.weight_density,
                "input_density": self.input_density, "grad_output_density": self.grad_output_density,
                "dense_macs": self.dense_macs, "effective_macs": self.effective_macs,
                "gemms": {k: {"dense_macs": g.dense_macs, "effective_macs": g.effective_macs, "bits": list(g.bits)}
                          for k, g in self.gemms.items()},
                "weight_bytes_dense": self.weight_bytes_dense, "weight_bytes_effective": self.weight_bytes_effective,
                "activation_bytes": self.activation_bytes, "compute_energy_j": self.compute_energy_j,
                "memory_energy_j": self.memory_energy_j, "energy_j": self.energy_j}


@dataclass
class ModelCost:
    """Per-layer costs and totals of one pass over `batch_size` samples (modelled, with `table`)."""

    layers: list[LayerCost]
    training: bool
    batch_size: int
    table: EnergyTable

    @property
    def dense_macs(self) -> int:
        return sum(r.dense_macs for r in self.layers)

    @property
    def effective_macs(self) -> int:
        return sum(r.effective_macs for r in self.layers)

    @property
    def bytes_dense(self) -> float:
        return sum(r.weight_bytes_dense + r.activation_bytes for r in self.layers)

    @property
    def bytes_effective(self) -> float:
        return sum(r.weight_bytes_effective + r.activation_bytes for r in self.layers)

    @property
    def compute_energy_j(self) -> float:
        return sum(r.compute_energy_j for r in self.layers)

    @property
    def memory_energy_j(self) -> float:
        return sum(r.memory_energy_j for r in self.layers)

    @property
    def energy_j(self) -> float:
        return self.compute_energy_j + self.memory_energy_j

    @property
    def dense_energy_j(self) -> float:
        """Energy of the same model and widths with nothing skipped (a dense kernel)."""
        return sum(r.dense_compute_energy_j + r.dense_memory_energy_j for r in self.layers)

    @property
    def energy_per_mac_j(self) -> float:
        """Compute energy per effective MAC: what low precision changes."""
        return self.compute_energy_j / self.effective_macs if self.effective_macs else float("nan")

    def bits_used(self) -> dict[str, list[str]]:
        """GEMM -> the distinct operand widths used, e.g. {"forward": ["32x32", "4x4"]}."""
        out: dict[str, set[str]] = {}
        for r in self.layers:
            for k, g in r.gemms.items():
                out.setdefault(k, set()).add(f"{g.bits[0]}x{g.bits[1]}")
        return {k: sorted(v) for k, v in out.items()}

    def to_dict(self) -> dict:
        return {"label": "modelled", "training": self.training, "batch_size": self.batch_size,
                "table": self.table.name, "table_source": self.table.source,
                "dense_macs": self.dense_macs, "effective_macs": self.effective_macs,
                "bytes_dense": self.bytes_dense, "bytes_effective": self.bytes_effective,
                "compute_energy_j": self.compute_energy_j, "memory_energy_j": self.memory_energy_j,
                "energy_j": self.energy_j, "dense_energy_j": self.dense_energy_j,
                "energy_per_mac_j": self.energy_per_mac_j, "bits": self.bits_used(),
                "layers": [r.to_dict() for r in self.layers]}

    def table_rows(self) -> list[list[Any]]:
        rows = []
        for r in self.layers:
            fwd = r.gemms.get("forward")
            rows.append([r.name, r.kind, f"{fwd.bits[0]}x{fwd.bits[1]}" if fwd else "-", r.weight_density,
                         r.input_density, r.dense_macs, r.effective_macs, r.weight_bytes_effective + r.activation_bytes,
                         r.energy_j * 1e6])
        rows.append(["total", "", "", "", "", self.dense_macs, self.effective_macs, self.bytes_effective,
                     self.energy_j * 1e6])
        return rows

    def add_to_report(self, report, name: str = "model") -> None:
        """Append the per-layer table to a frugalnet.report.Report."""
        what = "training step (forward + backward GEMMs)" if self.training else "inference (forward)"
        report.table(["layer", "type", "fwd bits (w x a)", "weight density", "input density", "dense MACs",
                      "effective MACs", "bytes moved", "energy (uJ), modelled"], self.table_rows(),
                     caption=f"{name}: modelled cost of one {what} on a batch of {self.batch_size}; "
                             f"energy table {self.table.name} ({self.table.source})")


class _Recorder:
    """Forward hooks that fill one LayerCost per Linear/Conv2d layer and hook the backward of each output."""

    def __init__(self, model: nn.Module, training: bool, table: EnergyTable, counter: OpCounter) -> None:
        self.training = training
        self.table = table
        self.counter = counter
        self.rows: dict[str, LayerCost] = {}
        self.handles = []
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                self.rows[name] = LayerCost(name or type(m).__name__, type(m).__name__)
                self.handles.append(m.register_forward_pre_hook(self._pre_hook))
                self.handles.append(m.register_forward_hook(self._forward_hook(name)))

    def _pre_hook(self, module: nn.Module, args: tuple) -> None:
        self.counter.skip_depth += 1     # this layer's GEMMs are counted by its hooks, not by the op counter

    def add_ops(self, records: list[OpRecord]) -> None:
        """One row per (module, kind) of the GEMM-like ops counted outside the hooked layers (FP32, no weights)."""
        for rec in records:
            key = f"{rec.module} ({rec.kind})"
            row = self.rows.setdefault(key, LayerCost(key, f"{rec.kind} (aten)"))
            row.calls += 1
            self._add_gemm(row, "forward", rec.dense_macs, rec.effective_macs, (32, 32))
            self._add_bytes(row, 0.0, 0.0, rec.bytes_forward)
            if self.training:
                for macs in rec.backward_macs:
                    self._add_gemm(row, "backward", macs, macs, (32, 32))
                    self._add_bytes(row, 0.0, 0.0, rec.bytes_forward)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def _forward_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, out: Tensor) -> None:
            try:
                self._count_call(module, name, inputs[0], out)
            finally:
                self.counter.skip_depth -= 1
        return hook

    def _count_call(self, module: nn.Module, name: str, x: Tensor, out: Tensor) -> None:
        row = self.rows[name]
        bits = gemm_bits(module)
        dense, eff, saved = count_forward(module, x, out)
        w = module.weight.detach()
        nnz_w = int((w != 0).sum())
        row.calls += 1
        row.weight_density = nnz_w / w.numel()
        row.input_nonzeros += int((x != 0).sum())
        row.input_numel += x.numel()
        self._add_gemm(row, "forward", dense, eff, bits["forward"])
        wb, ab = bits["forward"]
        w_dense = w.numel() * wb / 8
        w_eff = min(w_dense, nnz_w * (wb + index_bits(w[0].numel())) / 8)
        self._add_bytes(row, w_dense, w_eff, (x.numel() + out.numel()) * ab / 8)
        need_input = x.requires_grad
        need_weight = module.weight.requires_grad
        if self.training and out.requires_grad and (need_input or need_weight):
            out.register_hook(self._backward_hook(module, name, saved, need_input, need_weight, x.numel()))

    def _backward_hook(self, module: nn.Module, name: str, saved: Any, need_input: bool, need_weight: bool,
                       x_numel: int) -> Callable:
        def hook(g: Tensor) -> None:
            row = self.rows[name]
            bits = gemm_bits(module)
            row.grad_output_nonzeros += int((g != 0).sum())
            row.grad_output_numel += g.numel()
            (gi_d, gi_e), (gw_d, gw_e) = count_backward(module, saved, g, need_input, need_weight)
            w = module.weight.detach()
            nnz_w = int((w != 0).sum())
            if need_input:
                self._add_gemm(row, "grad_input", gi_d, gi_e, bits["grad_input"])
                gb, wb = bits["grad_input"]
                w_dense = w.numel() * wb / 8
                w_eff = min(w_dense, nnz_w * (wb + index_bits(w[0].numel())) / 8)
                self._add_bytes(row, w_dense, w_eff, (g.numel() + x_numel) * gb / 8)
            if need_weight:
                self._add_gemm(row, "grad_weight", gw_d, gw_e, bits["grad_weight"])
                gb, ab = bits["grad_weight"]
                mask = getattr(module, "weight_mask", None)
                kept = int((mask != 0).sum()) if isinstance(mask, Tensor) and mask.shape == w.shape else w.numel()
                # the weight gradient is written in FP32 for the optimizer
                self._add_bytes(row, w.numel() * 4, min(w.numel() * 4, kept * (32 + index_bits(w[0].numel())) / 8),
                                g.numel() * gb / 8 + x_numel * ab / 8)
            return None
        return hook

    def _add_gemm(self, row: LayerCost, gemm: str, dense: int, eff: int, bits: tuple[int, int]) -> None:
        cost = row.gemms.setdefault(gemm, GemmCost(bits=bits))
        cost.dense_macs += int(dense)
        cost.effective_macs += int(eff)
        cost.bits = bits
        pj = self.table.mac_pj(*bits)
        row.compute_energy_j += eff * pj * _PJ
        row.dense_compute_energy_j += dense * pj * _PJ

    def _add_bytes(self, row: LayerCost, w_dense: float, w_eff: float, act: float) -> None:
        row.weight_bytes_dense += w_dense
        row.weight_bytes_effective += w_eff
        row.activation_bytes += act
        wl, al = self.table.bytes_pj(self.table.weight_level), self.table.bytes_pj(self.table.activation_level)
        row.memory_energy_j += (w_eff * wl + act * al) * _PJ
        row.dense_memory_energy_j += (w_dense * wl + act * al) * _PJ


def model_cost(model: nn.Module, example_input: Tensor | Sequence[Tensor] | dict[str, Tensor], *,
               training: bool = False, energy_table: EnergyTable | str | dict | None = None,
               target: Tensor | None = None, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> ModelCost:
    """Modelled cost of one pass of `model` over `example_input` (a batch), counted in a real pass.

    Args:
        model: any nn.Module. Its Linear and Conv2d layers (and subclasses) are counted with their sparsity and bit
            widths; every other matrix product (attention's Q K^T and P V, F.linear on a bare weight as in
            nn.MultiheadAttention, matmul, einsum, bmm, other convolutions) is counted at the aten level, FP32
            (see `frugalnet.energy.opcount`). PyTorch's fused inference fast paths are switched off for the pass
            so that their products are seen.
        example_input: the input batch: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        training: False: one forward pass in eval mode under no_grad. True: a forward pass in train mode and a
            backward pass of `loss_fn(out, target)` (cross-entropy if only `target` is given, the sum of the
            outputs if neither), counting the forward and backward GEMMs. The output may be any structure
            (tensor, tuple, dict, HF ModelOutput): the loss takes its `logits`, else its first tensor. Parameters'
            .grad, buffers (k-WTA duty cycles, BatchNorm statistics), the train/eval mode and torch's RNG state
            are restored afterwards.
        energy_table: an EnergyTable, a dict or a JSON path in its format; default Horowitz 45 nm.
    Returns: ModelCost (per-layer rows, totals, `.to_dict()`, `.add_to_report(report, name)`).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = ((), dict(example_input)) if isinstance(example_input, dict) else (
        (tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)), {})
    first = next((t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)), None)
    if first is None or first.dim() == 0:
        raise ValueError("example_input must be a tensor (or a tuple or dict of tensors) holding one batch")
    table = resolve_table(energy_table)
    was_training = model.training
    buffers = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
               if not isinstance(v, nn.Parameter)}
    rng = torch.get_rng_state()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    counter = OpCounter(model)
    recorder = _Recorder(model, training, table, counter)
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        model.train(training)
        if training:
            with counter:
                out = model(*args, **kwargs)
            counter.active = False
            if loss_fn is not None:
                loss = loss_fn(primary_output(out), target)
            elif target is not None:
                loss = F.cross_entropy(primary_output(out), target)
            else:
                loss = sum(t.float().sum() for t in tensors_in(out) if t.requires_grad)
            params = [p for p in model.parameters() if p.requires_grad]
            if isinstance(loss, Tensor) and loss.requires_grad and params:
                torch.autograd.grad(loss, params, allow_unused=True)
        else:
            with torch.no_grad(), counter:
                model(*args, **kwargs)
    finally:
        recorder.remove()
        counter.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        with torch.no_grad():
            state = model.state_dict(keep_vars=True)
            for k, v in buffers.items():
                state[k].copy_(v)
        torch.set_rng_state(rng)
    recorder.add_ops(counter.records)
    rows = [r for r in recorder.rows.values() if r.calls]
    if not rows:
        raise ValueError(f"{type(model).__name__} ran no matrix product (Linear, Conv, matmul, attention) to count")
    return ModelCost(layers=rows, training=training, batch_size=int(first.shape[0]), table=table)
