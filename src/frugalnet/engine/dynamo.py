"""`torch.compile(model, backend="frugalnet")`: the engine as a TorchDynamo backend, for inference.

Dynamo hands a backend each captured graph with the module's parameters and buffers lifted to graph inputs; the
engine plans a layer from weights it can see, so they are bound back into the graph as constants, and the returned
callable passes the engine only the real inputs. The engine is compiled at the graph's first call (torch.export
nested inside Dynamo's own compile broke Dynamo's guards). It copies the weights when it compiles, so the callable
runs the graph as PyTorch captured it (same result, no engine speed) whenever the engine could give a stale or
unsupported answer: a parameter changed in place since the compile (its version counter moved: a training step, a
`load_state_dict`), or autograd would record the call (grad enabled and some input or parameter requires grad).
Installed as an entry point of the "torch_dynamo_backends" group (pyproject.toml), so `backend="frugalnet"` works
without importing frugalnet first; `frugalnet.engine.dynamo.frugalnet_backend` can be given directly, or through
functools.partial with `engine.compile` options (repeats, tie_margin, ...).

A batch size the graph was not compiled for makes Dynamo recompile; with `dynamic=False` each batch size gets its
own engine. A graph Dynamo made dynamic (symbolic sizes among its inputs) or one the engine refuses runs as captured,
with a warning that says why.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import torch
from torch import nn


def _is_state(node: torch.fx.Node, example: Any) -> bool:
    """A placeholder Dynamo lifted from the module's parameters or buffers (not a user input)."""
    name = str(node.target)
    return isinstance(example, nn.Parameter) or "_parameters_" in name or "_buffers_" in name


def _bind_state(gm: torch.fx.GraphModule, example_inputs: list) -> tuple[list[int], list[torch.Tensor]]:
    """Turn the lifted parameter/buffer placeholders of `gm` into attributes (in place). Returns the positions of
    the real inputs among Dynamo's arguments and the bound state tensors."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise ValueError(f"graph has {len(placeholders)} inputs but Dynamo gave {len(example_inputs)} examples")
    keep, state = [], []
    for i, (node, ex) in enumerate(zip(placeholders, example_inputs)):
        if not _is_state(node, ex):
            keep.append(i)
            continue
        attr = f"_frugalnet_state_{len(state)}"
        if isinstance(ex, nn.Parameter):
            gm.register_parameter(attr, ex)
        else:
            gm.register_buffer(attr, ex)
        with gm.graph.inserting_before(node):
            got = gm.graph.get_attr(attr)
        node.replace_all_uses_with(got)
        gm.graph.erase_node(node)
        state.append(ex)
    gm.recompile()
    return keep, state


def frugalnet_backend(gm: torch.fx.GraphModule, example_inputs: list, **compile_options) -> Callable:
    """TorchDynamo backend: compile the captured graph with `frugalnet.engine.compile` (options passed on)."""
    from frugalnet.engine.compiler import compile as compile_engine

    eager = gm.forward
    if any(not isinstance(x, torch.Tensor) for x in example_inputs):
        warnings.warn("frugalnet backend: Dynamo made this graph dynamic (symbolic sizes among its inputs), which the "
                      "engine does not plan for; it runs as captured. Use torch.compile(..., dynamic=False) to get "
                      "one engine per input shape.", stacklevel=2)
        return eager
    bound = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))   # gm itself keeps Dynamo's calling convention
    keep, state = _bind_state(bound, list(example_inputs))
    if not keep:
        return eager
    versions = [t._version for t in state]
    # The engine is compiled at the first call, outside Dynamo's own compile (a torch.export nested in a backend
    # call broke Dynamo's guards on the same frame).
    engine: list = []
    warned: list = []

    def run(*args):
        grad = torch.is_grad_enabled() and (any(t.requires_grad for t in state)
                                            or any(isinstance(a, torch.Tensor) and a.requires_grad for a in args))
        if grad or any(t._version != v for t, v in zip(state, versions)):
            if not warned:
                warned.append(True)
                warnings.warn("frugalnet backend: " + ("autograd is recording (use torch.no_grad() or "
                              "torch.inference_mode() for the engine)" if grad else "the model's weights changed "
                              "since the engine compiled (torch._dynamo.reset() and call again to recompile)") +
                              "; running the captured graph instead", stacklevel=2)
            return eager(*args)
        inputs = tuple(args[i] for i in keep)
        if not engine:
            try:
                with torch.no_grad():
                    engine.append(compile_engine(bound, inputs[0] if len(inputs) == 1 else inputs,
                                                 **compile_options))
            except Exception as exc:   # the engine's errors say what and why; the graph still runs
                warnings.warn("frugalnet backend: the engine did not compile this graph, it runs as captured: "
                              f"{exc}", stacklevel=2)
                engine.append(None)
            run.engine = engine[0]
        if engine[0] is None:
            return eager(*args)
        out = engine[0](*inputs)
        return out if isinstance(out, (tuple, list)) else (out,)
    run.engine = None
    return run
