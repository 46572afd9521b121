"""The matrix products that run outside nn.Linear / nn.Conv2d modules, counted at the aten level for `model_cost`.

Attention multiplies activations by activations (Q K^T and P V, as bmm or one scaled_dot_product_attention op),
nn.MultiheadAttention applies its projection weights with F.linear, HF's GPT-2 `Conv1D` calls addmm, and einsum,
matmul and F.conv1d lower to mm/bmm/convolution: none of them passes through a Linear/Conv2d forward hook. A
TorchDispatchMode sees every aten op; `OpCounter` counts the GEMM-like ones (mm, addmm, bmm, baddbmm, the
scaled-dot-product-attention kernels, convolution) issued while no hooked layer is running, attributes each to the
innermost module that issued it, and records which operands need a gradient, so that a training pass adds one
GEMM of the same size per operand that autograd differentiates (two for each attention product).

Forward effective MACs of mm/bmm are counted exactly from the operands' zero patterns (sum over k of
nnz(A[:, k]) * nnz(B[k, :])); attention and convolution ops, and every backward product, are counted dense.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


@dataclass
class OpRecord:
    """One GEMM-like op: where it ran, its forward MACs, and the sizes of the backward products it implies."""

    module: str
    kind: str
    dense_macs: int
    effective_macs: int
    backward_macs: list[int] = field(default_factory=list)   # one entry per operand that needs a gradient
    bytes_forward: float = 0.0


def _mm_effective(a: Tensor, b: Tensor) -> int:
    """sum_k nnz(a[..., :, k]) * nnz(b[..., k, :]), over the batch dims too."""
    na = (a != 0).sum(dim=-2, dtype=torch.float64)   # (..., k)
    nb = (b != 0).sum(dim=-1, dtype=torch.float64)   # (..., k)
    return int(round(float((na * nb).sum())))


def _numel(shape) -> int:
    return int(math.prod(shape))


class OpCounter(TorchDispatchMode):
    """Counts GEMM-like aten ops issued outside the hooked layers (see the module docstring)."""

    _SDPA = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
             "_scaled_dot_product_fused_attention_overrideable"}

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.records: list[OpRecord] = []
        self.skip_depth = 0          # > 0 while a hooked Linear/Conv2d runs (its GEMMs are counted by its hooks)
        self.active = True           # False during backward: backward products come from the forward records
        self._stack: list[str] = []
        self._handles = []
        for name, m in model.named_modules():
            self._handles.append(m.register_forward_pre_hook(self._enter(name)))
            self._handles.append(m.register_forward_hook(self._leave))

    def _enter(self, name: str):
        def hook(module, args):
            self._stack.append(name or type(module).__name__)
        return hook

    def _leave(self, module, args, out):
        if self._stack:
            self._stack.pop()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.active and self.skip_depth == 0:
            record = self._count(func, args)
            if record is not None:
                self.records.append(record)
        return func(*args, **kwargs)

    def _count(self, func, args) -> OpRecord | None:
        name = func._overloadpacket.__name__
        where = self._stack[-1] if self._stack else "model"
        if func in (aten.mm.default, aten.bmm.default):
            a, b = args[0], args[1]
        elif func in (aten.addmm.default, aten.baddbmm.default):
            a, b = args[1], args[2]
        elif name in self._SDPA:
            q, k, v = args[0], args[1], args[2]
            macs = _numel(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
            grads = [macs, macs] if any(t.requires_grad for t in (q, k, v)) else []
            moved = (q.numel() + k.numel() + 2 * v.numel()) * q.element_size()
            return OpRecord(where, "attention", macs, macs, grads, moved)
        elif func is aten.convolution.default:
            x, w, transposed, groups = args[0], args[1], bool(args[6]), int(args[8])
            if transposed:
                macs = _numel(x.shape) * w.shape[1] * _numel(w.shape[2:])
            else:
                out_spatial = _conv_out_shape(x.shape[2:], w.shape[2:], args[3], args[4], args[5])
                macs = x.shape[0] * w.shape[0] * _numel(out_spatial) * (x.shape[1] // groups) * _numel(w.shape[2:])
            grads = [macs for t in (x, w) if t.requires_grad]
            return OpRecord(where, "conv", macs, macs, grads, (x.numel() + w.numel()) * x.element_size())
        else:
            return None
        macs = _numel(a.shape[:-1]) * b.shape[-1] * a.shape[-1]
        grads = [macs for t in (a, b) if t.requires_grad]
        out_numel = _numel(a.shape[:-1]) * b.shape[-1]
        return OpRecord(where, "matmul", macs, _mm_effective(a, b), grads,
                        (a.numel() + b.numel() + out_numel) * a.element_size())


def _conv_out_shape(spatial, kernel, stride, padding, dilation) -> list[int]:
    n = len(spatial)

    def pick(v, i):
        return v[i] if isinstance(v, (list, tuple)) and len(v) > 1 else (v[0] if isinstance(v, (list, tuple)) else v)

    return [(spatial[i] + 2 * pick(padding, i) - pick(dilation, i) * (kernel[i] - 1) - 1) // pick(stride, i) + 1
            for i in range(n)]


def tensors_in(out: Any) -> list[Tensor]:
    """Every tensor in a model's output, whatever its structure (tensor, tuple/list, dict, HF ModelOutput,
    dataclass), in order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):                       # HF ModelOutput is an OrderedDict
        return [t for v in out.values() for t in tensors_in(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in tensors_in(v)]
    if hasattr(out, "__dataclass_fields__"):
        return [t for k in out.__dataclass_fields__ for t in tensors_in(getattr(out, k, None))]
    return []


def primary_output(out: Any) -> Tensor:
    """The tensor a loss applies to: `logits` when the output has them (HF), else its first tensor."""
    if isinstance(out, dict) and isinstance(out.get("logits"), Tensor):
        return out["logits"]
    found = tensors_in(out)
    if not found:
        raise ValueError(f"the model's output ({type(out).__name__}) holds no tensor to take a loss of")
    return found[0]
