"""Lower a captured graph to a Program: frugalnet steps where we have one, the aten op itself everywhere else.

Walks the exported graph once, in order:
  * parameters, buffers and constants become constant tensors; any op whose inputs are all constant (and that
    draws no random numbers) is evaluated here, once (masks applied to weights, position ids, ...);
  * aten.linear / aten.conv2d with constant weights become Linear / Conv2d steps (masked weights are plain weights
    with zeros: any mask, magnitude-pruned or fixed fan-in, is seen from the zeros); a BatchNorm in eval right after
    (its only user) is folded into the weights; a conv's ReLU (its only user) and then a max pool whose windows tile
    the map are fused into the step;
  * max/avg pooling, ReLU, flatten(1, -1) and a BatchNorm after no conv become steps of their own;
  * frugalnet::leaf nodes become the k-WTA or complementary step, or, for a quantized layer, the step the low-bit
    module gives (`lowbit_step_for`) or else the layer's own quantized forward;
  * every other op runs as itself (a fallback `aten` node), so any op torch.export emits compiles.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
import torch

from frugalnet.engine import steps as S
from frugalnet.engine.capture import Captured  # noqa: F401  (registers frugalnet::leaf)

LEAF = torch.ops.frugalnet.leaf.default
from frugalnet.engine.program import PY_OPS, Node, Program, op_name

A = torch.ops.aten
ALIASES = {A.dropout.default, A.alias.default, A.detach.default, A.clone.default, A.contiguous.default,
           A.feature_dropout.default, A.alpha_dropout.default}
RANDOM = ("rand", "bernoulli", "normal", "uniform", "multinomial", "poisson", "exponential", "randperm")


def lowbit_step(name: str, module) -> S.Step | None:
    """The one hook for quantized layers: the low-bit module's step factory, when it is installed."""
    try:
        from frugalnet.engine.steps.lowbit_factory import lowbit_step_for
    except ImportError:
        return None
    return lowbit_step_for(name, module)


def _module_name(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        return str(path).replace("L['self'].", "").replace("L__self___", "") or node.name
    return node.name


def _full_args(node) -> dict[str, Any]:
    """The node's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    out: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    out.setdefault("input", out.get("self"))
    return out


def _pair(v) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return [int(v[0]), int(v[-1])]


class _Lowering:
    def __init__(self, cap: Captured) -> None:
        self.cap = cap
        ep = cap.program
        self.const: dict[Any, torch.Tensor] = {}    # fx node -> constant value
        self.slot: dict[Any, int] = {}              # fx node -> value slot
        self.nodes: list[Node] = []
        self.steps: list[S.Step] = []
        self.consts: dict[str, torch.Tensor] = {}
        self.modules: dict[str, Any] = {}
        self.done: set = set()
        self.fresh: set = set()    # fx nodes whose value is a buffer a step allocated on this call (see inplace)
        self.n_inputs = 0
        kinds = {s.arg.name: s for s in ep.graph_signature.input_specs}
        for node in ep.graph.nodes:
            if node.op != "placeholder":
                continue
            spec = kinds[node.name]
            if spec.kind.name == "USER_INPUT":
                self.slot[node] = self.n_inputs
                self.n_inputs += 1
            elif spec.kind.name in ("PARAMETER", "BUFFER"):
                self.const[node] = ep.state_dict[spec.target].detach() if spec.target in ep.state_dict \
                    else ep.constants[spec.target].detach()
            elif spec.kind.name in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
                self.const[node] = ep.constants[spec.target]
            else:
                raise ValueError(f"engine.compile: unsupported graph input {node.name!r} of kind {spec.kind.name}")
        self.next_slot = self.n_inputs

    # ---- encoding ---------------------------------------------------------------------------------------------
    def enc(self, a) -> Any:
        if isinstance(a, torch.fx.Node):
            if a in self.const:
                name = a.name
                self.consts[name] = self.const[a]
                return {"c": name}
            return {"v": self.slot[a]}
        if isinstance(a, (list, tuple)):
            return [self.enc(x) for x in a]
        if isinstance(a, torch.dtype):
            return {"dtype": str(a).removeprefix("torch.")}
        if isinstance(a, torch.device):
            return {"device": "cpu"}
        if isinstance(a, torch.layout):
            return {"layout": "strided"}
        if isinstance(a, torch.memory_format):
            return {"memory_format": str(a).removeprefix("torch.")}
        if a is None or isinstance(a, (bool, int, float, str)):
            return a
        raise ValueError(f"engine.compile: cannot represent argument {a!r} of type {type(a).__name__}")

    def new_slot(self, node) -> int:
        s = self.next_slot
        self.next_slot += 1
        self.slot[node] = s
        return s

    def add_step(self, step: S.Step, src, out_node, rows: bool = False) -> None:
        self.steps.append(step)
        self.nodes.append(Node("step", len(self.steps) - 1, [self.enc(src)], self.new_slot(out_node), step.name,
                               rows))
        if step.kind in ("conv2d", "linear"):   # these allocate their output on every call
            self.fresh.add(out_node)

    # ---- patterns ---------------------------------------------------------------------------------------------
    def is_const(self, a) -> bool:
        return not isinstance(a, torch.fx.Node) or a in self.const

    def only_user(self, node, target):
        users = list(node.users)
        return users[0] if len(users) == 1 and users[0].target in target else None

    def bn_fold(self, node):
        """(bn node, scale, shift) when node's only user is an eval BatchNorm with constant statistics."""
        bn = self.only_user(node, (A.batch_norm.default, A._native_batch_norm_legit_no_training.default))
        if bn is None:
            return None
        a = _full_args(bn)
        if a.get("training") or not all(self.is_const(a[k]) for k in ("weight", "bias", "running_mean",
                                                                          "running_var")):
            return None
        scale, shift = self.bn_scale_shift(a)
        if bn.target is A._native_batch_norm_legit_no_training.default:
            get = [u for u in bn.users if u.target is operator.getitem and u.args[1] == 0]
            if len(get) != 1 or len(bn.users) != 1:
                return None
            self.done.add(bn)
            bn = get[0]
        return bn, scale, shift

    def bn_scale_shift(self, a):
        mean, var = self.const[a["running_mean"]].double(), self.const[a["running_var"]].double()
        scale = 1.0 / torch.sqrt(var + a["eps"])
        if a["weight"] is not None:
            scale = scale * self.const[a["weight"]].double()
        shift = -mean * scale
        if a["bias"] is not None:
            shift = shift + self.const[a["bias"]].double()
        return scale, shift

    def weight_layer(self, node, a: dict, conv: bool) -> bool:
        w = a["weight"]
        if not (isinstance(w, torch.fx.Node) and w in self.const and self.is_const(a["bias"])):
            return False
        wt = self.const[w]
        if wt.dtype != torch.float32 or (conv and wt.dim() != 4) or (not conv and wt.dim() != 2):
            return False
        if conv and isinstance(a["padding"], str):
            return False
        x = a["input"]
        val = x.meta.get("val")
        if val is None or val.dtype != torch.float32 or (conv and val.dim() != 4):
            return False
        name = _module_name(node)
        w64 = wt.double()
        b64 = self.const[a["bias"]].double() if a["bias"] is not None else torch.zeros(w64.shape[0],
                                                                                       dtype=torch.float64)
        out = node
        fold = self.bn_fold(node)
        if fold is not None and (conv or val.dim() == 2):
            bn, scale, shift = fold
            w64 = w64 * scale.view(-1, *([1] * (w64.dim() - 1)))
            b64 = b64 * scale + shift
            self.done.add(out)
            out = bn
        wn, bn_ = w64.float().numpy(), b64.float().numpy()
        if not conv:
            self.done.add(node)
            self.add_step(S.LinearStep.build(name, wn, bn_), x, out, rows=val.dim() != 2)
            return True
        step = S.ConvStep.build(name, wn, bn_, _pair(a["stride"]), _pair(a["padding"]), _pair(a["dilation"]),
                                int(a["groups"]))
        relu = self.only_user(out, (A.relu.default, A.relu_.default))
        if relu is not None:   # ReLU fused in: oneDNN runs it as a post-op, the numba variants in place after
            step.params["relu"] = True
            step.name = f"{step.name}+{_module_name(relu)}"
            self.done.add(out)
            out = relu
        pool = self.only_user(out, (A.max_pool2d.default,))
        if pool is not None:
            p = _full_args(pool)
            k, s = _pair(p["kernel_size"]), _pair(p["stride"] or p["kernel_size"])
            if k[0] == k[1] > 1 and s == k and _pair(p["padding"]) == [0, 0] and _pair(p["dilation"]) == [1, 1] \
                    and not p["ceil_mode"]:
                step.params["pool"] = k[0]
                step.name = f"{step.name}+{_module_name(pool)}"
                self.done.add(out)
                out = pool
        self.done.add(node)
        self.add_step(step, x, out)
        return True

    def pool(self, node) -> bool:
        a = _full_args(node)
        mx = node.target is A.max_pool2d.default
        val = a["input"].meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() != 4 or val.dtype != torch.float32:
            return False
        params = {"mode": "max" if mx else "avg", "kernel": _pair(a["kernel_size"]),
                  "stride": _pair(a["stride"] or a["kernel_size"]), "padding": _pair(a["padding"]),
                  "ceil_mode": bool(a["ceil_mode"])}
        numba_ok = not params["ceil_mode"]
        if mx:
            params["dilation"] = _pair(a["dilation"])
            numba_ok = numba_ok and params["dilation"] == [1, 1]
        else:
            params["count_include_pad"] = bool(a["count_include_pad"])
            params["divisor_override"] = a["divisor_override"]
            numba_ok = numba_ok and params["count_include_pad"] and a["divisor_override"] is None
        params["numba_ok"] = bool(numba_ok)
        self.add_step(S.PoolStep(_module_name(node), params, {}), a["input"], node)
        return True

    def leaf(self, node) -> None:
        from frugalnet.engine.capture import leaf_kind

        x, slot = node.args
        name, module = self.cap.leaves[slot]
        kind = leaf_kind(module)
        if kind == "kwinners":
            step = S.KWinnersStep.build(name, module)
            self.add_step(step, x, node, rows=not step.params["two_d"])
        elif kind == "complementary":
            self.add_step(S.ComplementaryStep.build(name, module), x, node)
        else:
            step = lowbit_step(name, module)
            if step is not None:
                self.add_step(step, x, node, rows=isinstance(module, torch.nn.Linear))
            else:   # the layer's own quantized forward (its simulated low-bit weights and activations)
                self.modules[name] = module
                self.nodes.append(Node("module", name, [self.enc(x)], self.new_slot(node), name))

    # ---- the walk ---------------------------------------------------------------------------------------------
    def fold(self, node) -> bool:
        """Evaluate an op on constants only, once."""
        if node.target is LEAF or not callable(node.target):
            return False
        if any(r in str(node.target) for r in RANDOM):
            return False
        flat = [a for a in torch.utils._pytree.tree_leaves((node.args, node.kwargs)) if isinstance(a, torch.fx.Node)]
        if not flat or not all(a in self.const for a in flat):
            return False
        args, kwargs = torch.utils._pytree.tree_map(lambda a: self.const[a] if isinstance(a, torch.fx.Node) else a,
                                                    (node.args, node.kwargs))
        with torch.no_grad():
            val = node.target(*args, **kwargs)
        if not isinstance(val, torch.Tensor):
            return False
        self.const[node] = val
        return True

    def run(self) -> tuple[Program, list[S.Step]]:
        ep = self.cap.program
        out_args = None
        for node in ep.graph.nodes:
            if node.op == "placeholder" or node in self.done or node in self.slot:
                continue
            if node.op == "output":
                out_args = node.args[0]
                break
            if node.op != "call_function":
                raise ValueError(f"engine.compile: unsupported graph node {node.op} {node.target}")
            t = node.target
            if t is LEAF:
                self.leaf(node)
                continue
            if self.fold(node):
                continue
            if t is operator.getitem:
                self.nodes.append(Node("getitem", None, [self.enc(node.args[0]), int(node.args[1])],
                                       self.new_slot(node), node.name))
                continue
            if getattr(t, "__name__", None) in PY_OPS and getattr(t, "__module__", None) in ("_operator",
                                                                                               "operator"):
                self.nodes.append(Node("py", t.__name__, [self.enc(a) for a in node.args], self.new_slot(node),
                                       node.name))
                continue
            if not isinstance(t, torch._ops.OpOverload):
                raise ValueError(f"engine.compile: the captured graph calls {t!r}, which the engine cannot run; "
                                 f"only aten ops and size arithmetic are supported")
            if t in ALIASES and len(node.args) >= 1 and isinstance(node.args[0], torch.fx.Node) \
                    and (t is not A.dropout.default or not node.args[2]):
                self.slot[node] = self.slot[node.args[0]]
                continue
            if self.lower_op(node):
                continue
            self.nodes.append(Node("aten", op_name(t), self.enc(list(node.args)), self.new_slot(node),
                                   _module_name(node), kwargs={k: self.enc(v) for k, v in node.kwargs.items()}))
        outputs = [self.enc(a) for a in torch.utils._pytree.tree_leaves(out_args)]
        prog = Program(self.n_inputs, self.nodes, outputs, self.consts, self.modules)
        return prog, self.steps

    def inplace(self, node) -> bool:
        """Residual adds and the ReLU after them run in place (no new buffer, one pass less over memory at batch
        64): add(a, b) as a.add_(b) when a (or b) is a conv/linear step's fresh output used by this add only and of
        the sum's shape; relu(s) as s.relu_() when s is such an add's result used by this relu only."""
        t = node.target
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dtype != torch.float32:
            return False
        if t is A.relu.default:
            src = node.args[0]
            if isinstance(src, torch.fx.Node) and src.target in (A.add.Tensor, A.add_.Tensor) \
                    and len(src.users) == 1 and src in self.slot:
                self.nodes.append(Node("aten", "aten::relu_.default", [self.enc(src)], self.new_slot(node),
                                       _module_name(node)))
                return True
            return False
        if t is not A.add.Tensor or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            return False

        def owned(a):
            v = a.meta.get("val") if isinstance(a, torch.fx.Node) else None
            return a in self.fresh and len(a.users) == 1 and isinstance(v, torch.Tensor) \
                and v.dtype == torch.float32 and tuple(v.shape) == tuple(val.shape)
        a, b = node.args
        if not owned(a):
            if not owned(b):
                return False
            a, b = b, a
        self.nodes.append(Node("aten", "aten::add_.Tensor", [self.enc(a), self.enc(b)], self.new_slot(node),
                               _module_name(node)))
        return True

    def lower_op(self, node) -> bool:
        t = node.target
        if self.inplace(node):
            return True
        if t in (A.linear.default, A.conv2d.default):
            return self.weight_layer(node, _full_args(node), conv=t is A.conv2d.default)
        if t in (A.max_pool2d.default, A.avg_pool2d.default):
            return self.pool(node)
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dtype != torch.float32:
            return False
        if t is A.relu.default:
            self.add_step(S.ReLUStep(_module_name(node), {}, {}), node.args[0], node)
            return True
        if t is A.flatten.using_ints and val.dim() == 2 and _full_args(node)["start_dim"] == 1 \
                and _full_args(node)["end_dim"] == -1:
            self.add_step(S.FlattenStep(_module_name(node), {}, {}), node.args[0], node)
            return True
        if t is A.batch_norm.default and val.dim() in (2, 4):
            a = _full_args(node)
            if not a["training"] and all(self.is_const(a[k]) for k in ("weight", "bias", "running_mean",
                                                                         "running_var")):
                scale, shift = self.bn_scale_shift(a)
                self.add_step(S.AffineStep(_module_name(node), {}, {"scale": scale.float().numpy(),
                                                                    "shift": shift.float().numpy()}),
                              a["input"], node)
                return True
        return False


def lower(cap: Captured) -> tuple[Program, list[S.Step]]:
    """The program for a captured model, and its steps (in program order)."""
    prog, steps = _Lowering(cap).run()
    if not prog.nodes and not steps:
        raise ValueError("engine.compile found nothing to run in the model (its output is an input or constant)")
    return prog, steps
