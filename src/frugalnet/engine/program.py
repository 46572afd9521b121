"""The engine's program: a list of nodes over numbered value slots, each a frugalnet step or an op run by PyTorch.

Node kinds:
  step     one frugalnet Step (engine/steps), input slot -> output slot; `rows`: its input (..., n) is run as
           (rows, n) and the output reshaped back (Linear and k-WTA on (batch, tokens, features))
  aten     a fallback op: a torch.ops.aten overload called on the decoded arguments (any op without a step)
  py       a Python operator on sizes (operator.mul, ...), as torch.export emits for dynamic shapes
  getitem  element of a tuple-valued slot
  module   a quantized layer run by its own forward (in-session only: such an engine cannot be saved)

Arguments are JSON-able: {"v": slot} for a value, {"c": name} for a constant tensor, {"dtype": ...},
{"device": ...}, {"layout": ...}, {"memory_format": ...}, lists and plain scalars. Values in slots are torch
tensors or Acts (a step's output, dense and/or as active indices; converted to a tensor only when an aten op
needs one, so k-WTA output reaches the next sparse step without a dense round trip).
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from frugalnet.engine.act import Act

PY_OPS: dict[str, Callable] = {n: getattr(operator, n) for n in
                               ("add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne", "lt",
                                "le", "gt", "ge")}
DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                                     torch.int64, torch.int32, torch.int16, torch.int8,
                                                     torch.uint8, torch.bool)}
MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "channels_last": torch.channels_last,
                  "preserve_format": torch.preserve_format}
# aten ops a program file may not name: they read or write memory by caller-given strides/offsets or files
FORBIDDEN_ATEN = ("as_strided", "set_", "from_file", "resize", "_unsafe", "unsafe_", "storage", "_efficientzerotensor",
                  "to_mkldnn", "_nested", "record_stream", "data_ptr", "empty_strided")


@dataclass
class Node:
    op: str
    target: Any           # step index (step), "aten::name.overload" (aten), operator name (py), None otherwise
    args: list
    out: int
    name: str = ""
    rows: bool = False
    kwargs: dict = field(default_factory=dict)   # aten nodes: keyword-only arguments (device=, dtype=, ...)

    def to_json(self) -> dict:
        return {"op": self.op, "target": self.target, "args": self.args, "out": self.out, "name": self.name,
                "rows": self.rows, "kwargs": self.kwargs}


_A = torch.ops.aten
# aten overloads -> torch functions with the same positional signature and kernel (see _fast_op)
FAST_OPS = {_A.view.default: torch.Tensor.view, _A.reshape.default: torch.reshape,
            _A.transpose.int: torch.transpose, _A.select.int: torch.select, _A.unsqueeze.default: torch.unsqueeze,
            _A.squeeze.dim: torch.squeeze, _A.permute.default: torch.permute, _A.cat.default: torch.cat,
            _A.stack.default: torch.stack, _A.layer_norm.default: torch.layer_norm, _A.add.Tensor: torch.add,
            _A.add_.Tensor: torch.Tensor.add_, _A.mul.Tensor: torch.mul, _A.relu_.default: torch.relu_,
            _A.gelu.default: torch._C._nn.gelu, _A.embedding.default: torch.embedding,
            _A.scaled_dot_product_attention.default: torch._C._nn.scaled_dot_product_attention,
            _A.matmul.default: torch.matmul, _A.softmax.int: torch.softmax,
            _A.contiguous.default: torch.Tensor.contiguous}


def aten_op(target: str):
    """torch.ops.aten overload from 'aten::name.overload'; ValueError for anything else or a forbidden op."""
    if not isinstance(target, str) or not target.startswith("aten::"):
        raise ValueError(f"op {target!r} is not an aten op")
    name, _, overload = target[len("aten::"):].partition(".")
    if any(f in name for f in FORBIDDEN_ATEN):
        raise ValueError(f"op {target!r} is not allowed in an engine program")
    try:
        return getattr(getattr(torch.ops.aten, name), overload or "default")
    except AttributeError:
        raise ValueError(f"unknown aten op {target!r}") from None


def op_name(op) -> str:
    return f"aten::{op._schema.name.split('::', 1)[1]}.{op._overloadname}"


def as_tensor(v):
    """A slot value as PyTorch sees it (Acts become tensors sharing their memory)."""
    return v.tensor() if type(v) is Act else v


def as_act(v) -> Act:
    if type(v) is Act:
        return v
    if not isinstance(v, torch.Tensor) or v.dtype != torch.float32:
        raise TypeError(f"a frugalnet step needs a float32 tensor, got {type(v).__name__}")
    t = v.detach()
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return Act(tuple(t.shape), tensor=t)    # kept channels_last for a oneDNN conv (dense() converts lazily)
    t = t.contiguous()
    return Act(tuple(t.shape), dense=t.numpy())


def resolver(a, consts: dict[str, torch.Tensor]) -> Callable[[list], Any]:
    """vals -> the decoded argument (slot values as tensors)."""
    if isinstance(a, dict):
        if "v" in a:
            s = a["v"]
            return lambda vals: as_tensor(vals[s])
        c = decode_const(a, consts)
        return lambda vals: c
    if isinstance(a, list):
        parts = [resolver(x, consts) for x in a]
        if all(not isinstance(x, (dict, list)) for x in a):
            fixed = list(a)
            return lambda vals: fixed
        return lambda vals: [p(vals) for p in parts]
    return lambda vals: a


def decode_const(a: dict, consts: dict[str, torch.Tensor]):
    if "c" in a:
        return consts[a["c"]]
    if "dtype" in a:
        return DTYPES[a["dtype"]]
    if "device" in a:
        return torch.device("cpu")
    if "layout" in a:
        return torch.strided
    if "memory_format" in a:
        return MEMORY_FORMATS[a["memory_format"]]
    raise ValueError(f"unknown argument encoding {a!r}")


def slots_in(a) -> list[int]:
    if isinstance(a, dict):
        return [a["v"]] if "v" in a else []
    if isinstance(a, list):
        return [s for x in a for s in slots_in(x)]
    return []


@dataclass
class Program:
    n_inputs: int
    nodes: list[Node]
    outputs: list               # encoded args (usually {"v": slot})
    consts: dict[str, torch.Tensor] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)   # module nodes: name -> nn.Module (not saveable)
    out_spec: Any = None        # pytree spec of the model's output (None: a tuple of the flat outputs, or one)
    input_dtypes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.n_slots = max([self.n_inputs] + [n.out + 1 for n in self.nodes])
        self._static = [None if n.op == "step" else self._static_fn(n) for n in self.nodes]
        self._outs = [resolver(o, self.consts) for o in self.outputs]

    def _static_fn(self, n: Node) -> Callable[[list], None]:
        o = n.out
        if n.op == "aten":
            op = _fast_op(aten_op(n.target))
            getters = [resolver(a, self.consts) for a in n.args]
            if n.kwargs:
                kw = {k: resolver(a, self.consts) for k, a in n.kwargs.items()}

                def f(vals):
                    vals[o] = op(*[g(vals) for g in getters], **{k: g(vals) for k, g in kw.items()})
                return f

            def f(vals):
                vals[o] = op(*[g(vals) for g in getters])
            return f
        if n.op == "py":
            fn = PY_OPS[n.target]
            getters = [resolver(a, self.consts) for a in n.args]

            def f(vals):
                vals[o] = fn(*[g(vals) for g in getters])
            return f
        if n.op == "getitem":
            (src,), idx = slots_in(n.args[0]), n.args[1]

            def f(vals):
                vals[o] = vals[src][idx]
            return f
        if n.op == "module":
            mod = self.modules[n.target]
            src = slots_in(n.args[0])[0]

            def f(vals):
                vals[o] = mod(as_tensor(vals[src]))
            return f
        raise ValueError(f"unknown node op {n.op!r}")

    def walk(self, inputs: list, on_step: Callable[[Node, Act], Act]) -> tuple[list, list]:
        """Run the program, calling on_step(node, act) -> act for every step node (with the rows reshaping done
        around it); returns (flat outputs, the final value slots)."""
        vals: list = [None] * self.n_slots
        vals[:self.n_inputs] = inputs
        for n, f in zip(self.nodes, self._static):
            if f is not None:
                f(vals)
                continue
            src = n.args[0]["v"]
            act = as_act(vals[src])
            if n.rows and len(act.shape) != 2:
                lead = act.shape[:-1]
                out = on_step(n, act.reshaped((int(np.prod(lead)), act.shape[-1])))
                vals[n.out] = out.reshaped(tuple(lead) + (out.shape[-1],))
            else:
                vals[n.out] = on_step(n, act)
        return [g(vals) for g in self._outs], vals

    def bind(self, steps: list, variants: list[str], inputs: list) -> tuple[list, list[Callable]]:
        """(outputs of this call, the per-node callables that repeat it for inputs of the same shapes)."""
        step_fns: list[Callable] = []

        def on_step(n: Node, act: Act) -> Act:
            bound = steps[n.target].bind(variants[n.target], act.shape)
            step_fns.append(_step_fn(n, bound, act.shape))
            return bound(act)

        outs, _ = self.walk(inputs, on_step)
        it = iter(step_fns)
        return outs, [f if f is not None else next(it) for f in self._static]

    def runner(self, fns: list[Callable]) -> Callable[[list], list]:
        """One straight-line Python function for a bound plan (what `run_bound(fns, .)` computes): every node a
        direct call on local variables, each value dropped after its last use. Against the per-node closures over
        a list of slots, this takes the argument lookups and the list out of every node (about 2 us per op, which
        is most of the fallback ops' time in a GPT decode step) and frees buffers as soon as they are dead.

        The source holds only names this function makes up (v<slot>, f<node>, k<n>); every op, constant and
        scalar argument is an object in the function's namespace, never text from an engine file."""
        ns: dict[str, Any] = {}
        tensor_slots = set(range(self.n_inputs))   # slots known to hold tensors (not Acts)
        last: dict[int, int] = {}
        for i, n in enumerate(self.nodes):
            for sl in slots_in(n.args) + slots_in(list(n.kwargs.values())):
                last[sl] = i
        keep = set(slots_in(self.outputs))

        def const(obj) -> str:
            name = f"k{len(ns)}"
            ns[name] = obj
            return name

        def expr(a) -> str:
            if isinstance(a, dict):
                if "v" in a:
                    s_ = int(a["v"])
                    return f"v{s_}" if s_ in tensor_slots else f"T(v{s_})"
                return const(decode_const(a, self.consts))
            if isinstance(a, list) and slots_in(a):
                return "[" + ", ".join(expr(x) for x in a) + "]"
            return const(resolver(a, self.consts)(None))   # scalars, and lists of them or of constants

        ns["T"] = as_tensor
        lines = [f"def run(inputs):"]
        if self.n_inputs:
            lines.append("    " + "".join(f"v{i}, " for i in range(self.n_inputs)) + "= inputs")
        for i, (n, f) in enumerate(zip(self.nodes, fns)):
            o = int(n.out)
            if n.op == "aten":
                ns[f"f{i}"] = _fast_op(aten_op(n.target))
                args = [expr(a) for a in n.args] + [f"{k}={expr(a)}" for k, a in n.kwargs.items()]
                lines.append(f"    v{o} = f{i}({', '.join(args)})")
                tensor_slots.add(o)
            elif n.op == "py":
                ns[f"f{i}"] = PY_OPS[n.target]
                lines.append(f"    v{o} = f{i}({', '.join(expr(a) for a in n.args)})")
                tensor_slots.add(o)
            elif n.op == "getitem":
                src = slots_in(n.args[0])[0]
                lines.append(f"    v{o} = v{src}[{const(n.args[1])}]")
                tensor_slots.add(o)
            elif n.op == "step":
                ns[f"f{i}"] = f.call
                lines.append(f"    v{o} = f{i}(v{n.args[0]['v']})")
                tensor_slots.discard(o)
            else:   # module nodes (and anything else): the node's own callable on a one-slot-per-value list
                ns[f"f{i}"] = f
                lines.append(f"    _vals = [None] * {self.n_slots}")
                for sl in slots_in(n.args):
                    lines.append(f"    _vals[{sl}] = v{sl}")
                lines.append(f"    f{i}(_vals)")
                lines.append(f"    v{o} = _vals[{o}]")
                tensor_slots.add(o)
            dead = sorted(sl for sl, j in last.items() if j == i and sl not in keep and sl != o)
            if dead:
                lines.append("    del " + ", ".join(f"v{sl}" for sl in dead))
        lines.append("    return [" + ", ".join(expr(a) for a in self.outputs) + "]")
        code = compile("\n".join(lines), "<frugalnet engine plan>", "exec")
        exec(code, ns)   # noqa: S102 (source made above from generated names only)
        return ns["run"]

    def run_bound(self, fns: list[Callable], inputs: list) -> list:
        vals: list = [None] * self.n_slots
        vals[:self.n_inputs] = inputs
        for f in fns:
            f(vals)
        return [g(vals) for g in self._outs]


def _fast_op(op):
    """The aten overload itself, or the torch function that calls the same kernel with less argument parsing
    (an OpOverload call parses its schema on every call: 2.8 vs 1.7 us for a view, 4.5 vs 2.6 us for layer_norm)."""
    return FAST_OPS.get(op, op)


def _step_fn(n: Node, bound: Callable, in_shape: tuple) -> Callable[[list], None]:
    """vals-list form of a bound step (f(vals)), with `.call` its value -> value form (for the generated runner)."""
    src, o = n.args[0]["v"], n.out
    if n.rows:
        # in_shape is the (rows, n) shape the step was bound for; recover the leading dims at call time
        def call(v):
            act = as_act(v)
            if len(act.shape) == 2:
                return bound(act)
            lead = act.shape[:-1]
            out = bound(act.reshaped(in_shape))
            return out.reshaped(tuple(lead) + (out.shape[-1],))
    else:
        def call(v):
            return bound(v if type(v) is Act else as_act(v))

    def f(vals):
        vals[o] = call(vals[src])
    f.call = call
    return f
