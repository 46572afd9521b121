"""Capture a model as a graph of aten ops with torch.export, keeping frugalnet's own layers whole.

torch.export flattens every module into aten ops. Three kinds of layer must instead reach the lowering intact:
  * KWinners / KWinners2d: their top-k + scatter is a pattern a lowering would have to recognise op by op; whole,
    they become the engine's k-WTA step.
  * ComplementaryGroup: N layers whose packed weights only the complementary step knows how to run.
  * quantized layers (frugalnet.lowbit quantize_): their forward quantizes activations with data-dependent checks
    torch.export cannot trace, and running their FP32 master weights instead would silently change the numbers.

The approach: for the duration of the export, each such module's `forward` is replaced (on the instance only) by a
call to one custom op, `frugalnet::leaf(x, slot)`, whose real implementation calls the module's original forward
and whose fake implementation gives the output shape from the module's type. The exported graph then holds one
`leaf` node per such module, with the slot naming the module; `lower` turns it into a step. This is robust to how a
module computes (no op patterns to match) and leaves every other module to torch.export.

The batch dimension (dim 0 of every input) is exported dynamic where the model allows it (Dim.AUTO), so one graph
serves every batch size; a model that fixes its batch size is exported for that size only.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

_LEAVES: dict[int, nn.Module] = {}       # slot -> module, valid during one capture (and the compile after it)
_ORIGINAL: dict[int, Any] = {}          # slot -> the module's own forward (bound method)
_LOCK = threading.Lock()
_NEXT = [0]


@torch.library.custom_op("frugalnet::leaf", mutates_args=())
def leaf(x: torch.Tensor, slot: int) -> torch.Tensor:
    """A frugalnet layer kept whole in the exported graph: runs the module's own forward (eval mode)."""
    fwd = _ORIGINAL.get(slot)
    if fwd is None:
        raise RuntimeError(f"frugalnet::leaf slot {slot} is not bound to a module (capture finished?)")
    with torch.no_grad():
        return fwd(x).clone()


@leaf.register_fake
def _leaf_fake(x: torch.Tensor, slot: int) -> torch.Tensor:
    return x.new_empty(leaf_out_shape(_LEAVES[slot], tuple(x.shape)))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def leaf_out_shape(module: nn.Module, shape: tuple) -> tuple:
    """Output shape of a leaf module on an input of `shape` (entries may be symbolic)."""
    from frugalnet.nn.kwinners import KWinners, KWinners2d

    if isinstance(module, (KWinners, KWinners2d)):
        return shape
    if type(module).__name__ == "ComplementaryGroup":
        first = module.layers[0]
        return (shape[0], len(module.layers)) + tuple(leaf_out_shape(first, shape)[1:])
    if isinstance(module, nn.Linear):
        return tuple(shape[:-1]) + (module.out_features,)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        (sh, sw), (dh, dw) = _pair(module.stride), _pair(module.dilation)
        pad = module.padding
        if pad == "same":
            return (shape[0], module.out_channels, shape[2], shape[3])
        ph, pw = (0, 0) if pad == "valid" else _pair(pad)
        oh = (shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        ow = (shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
        return (shape[0], module.out_channels, oh, ow)
    raise TypeError(f"no output-shape rule for leaf module {type(module).__name__}")


def is_quantized(module: nn.Module) -> bool:
    """A layer converted by frugalnet.lowbit.quantize_ (it carries a low-bit recipe)."""
    return hasattr(module, "lowbit") and hasattr(module, "recipe_name")


def leaf_kind(module: nn.Module) -> str | None:
    """'kwinners', 'complementary', 'quantized' for a module captured whole, else None."""
    from frugalnet.nn.kwinners import KWinners, KWinners2d

    if isinstance(module, (KWinners, KWinners2d)):
        return "kwinners"
    if type(module).__name__ == "ComplementaryGroup":
        return "complementary"
    if is_quantized(module):
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            raise ValueError(f"engine.compile: quantized layer of type {type(module).__name__} is not supported "
                             "(QuantLinear/QuantConv2d and their sparse forms are); compile the model before "
                             "quantize_ or exclude this layer from quantize_")
        return "quantized"
    return None


@dataclass
class Captured:
    """An exported program plus the leaf modules its `frugalnet::leaf` nodes call, by slot."""
    program: Any                                   # torch.export.ExportedProgram
    leaves: dict[int, tuple[str, nn.Module]] = field(default_factory=dict)   # slot -> (module name, module)
    dynamic_batch: bool = True
    batch_dims: list[int] = field(default_factory=list)   # per flat input: the dim that is the batch (-1: none)

    def release(self) -> None:
        """Unbind the leaf slots (after compiling: the engine no longer calls the modules through them), except
        those whose modules the engine still runs itself."""
        for slot in self.leaves:
            _LEAVES.pop(slot, None)
            _ORIGINAL.pop(slot, None)


@contextlib.contextmanager
def _leaves_patched(model: nn.Module):
    """Replace the forward of every leaf module (on the instance) by a frugalnet::leaf call; restore after."""
    patched: dict[int, tuple[str, nn.Module]] = {}
    with _LOCK:
        for name, m in model.named_modules():
            if leaf_kind(m) is None or any(name.startswith(p + ".") for p, _ in patched.values()):
                continue
            slot = _NEXT[0]
            _NEXT[0] += 1
            _LEAVES[slot] = m
            _ORIGINAL[slot] = m.forward
            m.forward = (lambda s: (lambda x: leaf(x, s)))(slot)
            patched[slot] = (name, m)
    try:
        yield patched
    finally:
        for slot, (_, m) in patched.items():
            if "forward" in m.__dict__:
                del m.__dict__["forward"]


def _export(model: nn.Module, args: tuple, dynamic: str):
    """dynamic: 'all' (every dim Dim.AUTO: export keeps dynamic what the model allows, so a batch dim that is not
    dim 0, as in a (layers, 2, batch, ...) KV cache, is found), 'first' (dim 0 only) or 'none'."""
    dyn = None
    if dynamic != "none":
        auto = torch.export.Dim.AUTO

        def dims(a):
            if not isinstance(a, torch.Tensor) or a.dim() < 1:
                return None
            return {d: auto for d in range(a.dim() if dynamic == "all" else 1)}
        dyn = tuple(torch.utils._pytree.tree_map(dims, a) for a in args)
    return torch.export.export(model, args, dynamic_shapes=dyn, strict=False)


def capture(model: nn.Module, args: tuple) -> Captured:
    """Export `model` (in eval mode) on example `args`; frugalnet leaf layers become frugalnet::leaf nodes.

    Raises ValueError saying why when torch.export cannot capture the model, and what to change."""
    with _leaves_patched(model) as patched, torch.no_grad():
        try:
            cap = None
            for mode in ("all", "first"):
                try:
                    cap = Captured(_export(model, args, mode), dict(patched), True)
                    break
                except Exception:
                    pass
            if cap is None:   # some models fix their batch size (a view to a literal shape): export it as is
                cap = Captured(_export(model, args, "none"), dict(patched), False)
            _find_batch_dims(cap)
            return cap
        except Exception as e:
            for slot in patched:
                _LEAVES.pop(slot, None)
                _ORIGINAL.pop(slot, None)
            msg = str(e).strip().splitlines()
            head = "; ".join(line for line in msg[:3] if line)[:600]
            raise ValueError(
                f"engine.compile could not capture {type(model).__name__} with torch.export: {type(e).__name__}: "
                f"{head}. The engine runs any model torch.export can capture: make forward free of Python control "
                f"flow that depends on tensor values (use torch.where / torch.cond), of .item()/.tolist() and of "
                f"in-place changes to module state in eval mode, and check with "
                f"torch.export.export(model.eval(), example_inputs)") from e


def _find_batch_dims(cap: Captured) -> None:
    """Per input, the dim holding the same symbol as the first tensor input's dim 0 (the batch); -1 where none.
    Without a symbolic dim 0 the batch is fixed."""
    ep = cap.program
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    shapes = []
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            shapes.append(tuple(val.shape) if isinstance(val, torch.Tensor) else ())
    first = next((s[0] for s in shapes if s), None)
    if first is None or isinstance(first, int):
        cap.dynamic_batch = False
        cap.batch_dims = [-1] * len(shapes)
        return
    cap.batch_dims = [next((d for d, v in enumerate(s) if not isinstance(v, int) and str(v) == str(first)), -1)
                      for s in shapes]
