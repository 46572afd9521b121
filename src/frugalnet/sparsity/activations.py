"""Activation modules anywhere in a module tree become k-WTA (KWinners per token, KWinners2d over feature maps).

The unit count comes from the module tree where it tells (the Linear/Conv before the activation in an
nn.Sequential, through BatchNorm/pooling/dropout) or from a shape probe: one forward pass of `example_input` with
hooks that record each activation's input shape. Activations called as functions in a forward (F.relu, F.gelu,
torch.relu) cannot be swapped; they are found by scanning the forward's source and named in the summary and a
warning.
"""
from __future__ import annotations

import inspect
import re
import warnings

import torch
from torch import nn

from frugalnet.nn.kwinners import KWinners, KWinners2d
from frugalnet.sparsity.config import KWinnersConfig

# Layers that may sit between a converted layer and the ReLU it feeds without changing the unit count.
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity,
                 nn.LayerNorm)
_FUNCTIONAL = re.compile(r"\b(?:F|functional|torch|nn\.functional)\.(relu6?|gelu|silu|hardswish|mish|leaky_relu|elu)"
                         r"\s*\(|\.(relu|gelu|silu)_?\(\s*\)")


def _excluded(name: str, exclude) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def _units_from_tree(model: nn.Module, name: str) -> tuple[str, int] | None:
    """('2d'|'1d', units) from the layer before `name` in its nn.Sequential parent, or None."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.Sequential):
        return None
    before = None
    for cname, c in parent.named_children():
        if cname == child:
            break
        if isinstance(c, (nn.Linear, nn.Conv2d)) or type(c).__name__ == "Conv1D":
            before = c
        elif not isinstance(c, _PASS_THROUGH):
            before = None
    if isinstance(before, nn.Conv2d):
        return "2d", before.out_channels
    if isinstance(before, nn.Linear):
        return "1d", before.out_features
    if before is not None:          # HF Conv1D: weight (in, out)
        return "1d", int(before.weight.shape[1])
    return None


@torch.no_grad()
def probe_shapes(model: nn.Module, modules: dict[str, nn.Module], example_input) -> dict[str, set[tuple]]:
    """Input shapes each module sees on one eval forward of `example_input` (tensor, tuple of args, dict of kwargs)."""
    seen: dict[str, set[tuple]] = {name: set() for name in modules}
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: seen[name].add(tuple(args[0].shape)))
               for name, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        if isinstance(example_input, dict):
            model(**example_input)
        elif isinstance(example_input, (tuple, list)):
            model(*example_input)
        else:
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def functional_activations(model: nn.Module) -> list[str]:
    """'Class.forward: F.gelu' for every activation a forward calls as a function (cannot be swapped)."""
    found = []
    for cls in {type(m) for m in model.modules()}:
        if cls.__module__.startswith("torch.nn"):
            continue
        try:
            src = inspect.getsource(cls.forward)
        except (OSError, TypeError):
            continue
        calls = sorted({m.group(0).strip("( ") for m in _FUNCTIONAL.finditer(src)})
        if calls:
            found.append(f"{cls.__name__}.forward: {', '.join(calls)}")
    return sorted(found)


def _make(kind: str, units: int, percent_on: float, cfg: KWinnersConfig) -> nn.Module:
    if kind == "2d":
        return KWinners2d(units, percent_on, local=cfg.local, **cfg.module_kwargs())
    return KWinners(units, percent_on, **cfg.module_kwargs())


def convert_activations(model: nn.Module, cfg: KWinnersConfig, filter_fn, exclude, example_input) -> dict:
    """Swap every matching activation for k-WTA; returns {"activations", "skipped", "functional"}."""
    candidates = {name: m for name, m in model.named_modules()
                  if name and type(m).__name__ in cfg.activations and not _excluded(name, exclude)
                  and (filter_fn is None or filter_fn(m, name))}
    unknown = [n for n in cfg.per_layer if n not in candidates]
    if unknown:
        raise ValueError(f"KWinnersConfig.per_layer names no activation of the model: {unknown}; "
                         f"activations found: {sorted(candidates)[:20]}")
    shapes = probe_shapes(model, candidates, example_input) if example_input is not None else {}
    done, skipped = {}, {}
    for name, act in candidates.items():
        found = shapes.get(name)
        if found:
            if len(found) > 1:
                skipped[name] = f"called with several shapes {sorted(found)}; one k-WTA cannot serve them all"
                continue
            shape = next(iter(found))
            spec = ("2d", shape[1]) if len(shape) == 4 else ("1d", shape[-1])
        elif example_input is not None:
            skipped[name] = "not called by the example input"
            continue
        else:
            spec = _units_from_tree(model, name)
            if spec is None:
                skipped[name] = "unit count unknown: pass example_input= so a forward pass can measure it"
                continue
        p_on = cfg.per_layer.get(name, cfg.percent_on)
        kw = _make(spec[0], spec[1], p_on, cfg).train(act.training)   # an eval model stays in eval
        new = nn.Sequential(act, kw) if cfg.keep_activation and not isinstance(act, nn.ReLU) else kw
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        done[name] = {"from": type(act).__name__, "to": type(kw).__name__, "units": spec[1], "percent_on": p_on}
    functional = functional_activations(model)
    if functional:
        warnings.warn("sparsify_: activations called as functions cannot become k-WTA (make them modules): "
                      + "; ".join(functional), stacklevel=3)
    if skipped:
        warnings.warn(f"sparsify_: activations left as they were: {skipped}", stacklevel=3)
    return {"activations": done, "skipped": skipped, "functional": functional}


def legacy_relu_to_kwinners(seq: nn.Sequential, seq_name: str, activation_sparsity, exclude, kw: dict,
                            local: bool) -> dict:
    """The keyword form's rule: a ReLU after a (converted or not excluded) Linear/Conv2d in the same Sequential,
    its sparsity by that layer's name when a mapping."""
    from collections.abc import Mapping

    done = {}
    last_layer, last_name = None, None
    for idx, (child_name, child) in enumerate(list(seq.named_children())):
        full = f"{seq_name}.{child_name}" if seq_name else child_name
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            last_layer, last_name = child, full
        elif isinstance(child, nn.ReLU) and last_layer is not None and not _excluded(last_name, exclude):
            sparsity = activation_sparsity.get(last_name) if isinstance(activation_sparsity, Mapping) \
                else activation_sparsity
            if sparsity is not None:
                if isinstance(last_layer, nn.Linear):
                    seq[idx] = KWinners(last_layer.out_features, 1.0 - sparsity, **kw)
                else:
                    seq[idx] = KWinners2d(last_layer.out_channels, 1.0 - sparsity, local=local, **kw)
                seq[idx].train(child.training)
                done[full] = {"from": "ReLU", "to": type(seq[idx]).__name__, "percent_on": 1.0 - sparsity}
            last_layer = None
        elif not isinstance(child, _PASS_THROUGH):
            last_layer = None
    return done
