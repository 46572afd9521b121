"""sparsify_(model, config, filter_fn): make any model sparse in place, torchao-style.

    sparsify_(model, MagnitudeConfig(sparsity=0.9))                      # prune a trained model by |w|
    sparsify_(model, KWinnersConfig(percent_on=0.1), example_input=x)   # every ReLU/GELU/... becomes k-WTA
    sparsify_(model, weight_sparsity=0.7, activation_sparsity=0.85, exclude=["fc_out"])   # the keyword form

A handler table keyed by the config's type picks the masks; `targets` finds the weights (Linear, Conv2d, HF Conv1D,
attention projections, embeddings if asked) and `activations` the activation modules. Tied weights are refused
with an error naming both uses. The keyword form keeps its old meaning exactly (random fixed fan-in masks, layer i
from seed + i; k-WTA for a ReLU that follows a converted layer in an nn.Sequential).
"""
from __future__ import annotations

import difflib
import logging
import warnings
from typing import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from frugalnet.nn import masks as M
from frugalnet.nn.sparse import SparseConv2d, SparseLinear
from frugalnet.sparsity.activations import convert_activations, legacy_relu_to_kwinners
from frugalnet.sparsity.config import (GivenMasksConfig, KWinnersConfig, MagnitudeConfig, NMConfig,
                                       RandomFanInConfig)
from frugalnet.sparsity.targets import Target, attach_mask, find_targets, shared_parameters
from frugalnet.utils.seeding import mask_generator
from frugalnet.utils.validation import check_fraction

log = logging.getLogger("frugalnet.sparsity")
FilterFn = Callable[[nn.Module, str], bool]


# --- masks per config type (the handler table) -----------------------------------------------------------------

def _layer_sparsities(cfg, targets: list[Target]) -> dict[str, float]:
    base = {t.name: cfg.sparsity for t in targets}
    if getattr(cfg, "erk", False):
        dens = M.erk_densities({t.name: tuple(t.weight.shape) for t in targets}, 1.0 - cfg.sparsity)
        base = {k: min(1.0 - d, 1.0 - 1e-9) for k, d in dens.items()}
    base.update({k: v for k, v in cfg.per_layer.items() if k in base})
    return base


def _fan_in_view(t: Target) -> Tensor:
    return t.weight.detach().t() if t.transposed else t.weight.detach()


def _back(t: Target, mask: Tensor) -> Tensor:
    return mask.t().contiguous() if t.transposed else mask


def _magnitude_masks(cfg: MagnitudeConfig, targets: list[Target]) -> dict[str, Tensor]:
    if cfg.scope == "global":
        return M.global_magnitude({t.name: t.weight for t in targets}, cfg.sparsity)
    sp = _layer_sparsities(cfg, targets)
    return {t.name: M.magnitude(t.weight, sp[t.name]) for t in targets}


def _random_masks(cfg: RandomFanInConfig, targets: list[Target]) -> dict[str, Tensor]:
    sp = _layer_sparsities(cfg, targets)
    out, extra = {}, 0
    for t in targets:
        # plain Linear/Conv2d keep the seed of the keyword form (seed + their index); other kinds follow them
        offset = t.legacy_index if t.legacy_index >= 0 else 1_000_000 + extra
        extra += t.legacy_index < 0
        shape = tuple(_fan_in_view(t).shape)
        out[t.name] = _back(t, M.fixed_fan_in(shape, sp[t.name], mask_generator(cfg.seed + offset)))
    return out


def _nm_masks(cfg: NMConfig, targets: list[Target]) -> dict[str, Tensor]:
    return {t.name: _back(t, M.n_m(_fan_in_view(t), cfg.n, cfg.m)) for t in targets}


def _given_masks(cfg: GivenMasksConfig, targets: list[Target]) -> dict[str, Tensor]:
    by_name = {t.name: t for t in targets}
    _check_names("GivenMasksConfig.masks", cfg.masks, by_name)
    out = {}
    for name, mask in cfg.masks.items():
        mask = torch.as_tensor(mask).to(torch.bool)
        shape = tuple(by_name[name].weight.shape)
        if tuple(mask.shape) != shape:
            raise ValueError(f"GivenMasksConfig: mask for {name!r} has shape {tuple(mask.shape)}, the weight {shape}")
        out[name] = mask
    return out


MASK_HANDLERS: dict[type, Callable[..., dict[str, Tensor]]] = {
    MagnitudeConfig: _magnitude_masks, RandomFanInConfig: _random_masks, NMConfig: _nm_masks,
    GivenMasksConfig: _given_masks,
}


# --- applying masks ------------------------------------------------------------------------------------------

def _swap(t: Target, mask: Tensor) -> nn.Module:
    layer = t.module
    sparsity = 1.0 - float(mask.float().mean())
    if t.kind == "linear":
        new = SparseLinear(layer.in_features, layer.out_features, sparsity, bias=layer.bias is not None, mask=mask)
    else:
        new = SparseConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, sparsity, stride=layer.stride,
                           padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                           bias=layer.bias is not None, padding_mode=layer.padding_mode, mask=mask)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    # The new layer takes over the old Parameter objects (masked in place), so an optimizer built before the
    # conversion still updates it, and tied or shared references keep pointing at the live weight.
    with torch.no_grad():
        layer.weight.mul_(new.weight_mask)
    new.weight = layer.weight
    if layer.bias is not None:
        new.bias = layer.bias
    new.train(layer.training)
    return new


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _apply(model: nn.Module, t: Target, mask: Tensor) -> None:
    if t.kind in ("linear", "conv2d"):
        _set_module(model, t.name, _swap(t, mask))
    elif t.kind == "sparse":
        t.module.set_mask_(mask)
    else:
        attach_mask(t, mask)


def _check_names(label: str, names: Iterable[str], known: Iterable[str]) -> None:
    known = list(known)
    bad = [n for n in names if n not in known]
    if bad:
        hints = {n: difflib.get_close_matches(n, known, n=3) for n in bad}
        raise ValueError(f"{label} names layers that are not in the model: "
                         + "; ".join(f"{n!r} (close: {h})" if h else repr(n) for n, h in hints.items())
                         + f". Layers that can be made sparse: {known[:20]}{' ...' if len(known) > 20 else ''}")


def _excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


def _normalize_exclude(exclude) -> tuple[str, ...]:
    if exclude is None:
        return ()
    if isinstance(exclude, str):       # one name, not its characters
        return (exclude,)
    return tuple(exclude)


def _check_ties(model: nn.Module, chosen: list[Target]) -> None:
    shared = shared_parameters(model)
    for t in chosen:
        names = shared.get(id(t.weight))
        if names:
            raise ValueError(f"{t.name}.{t.param} is tied to {[n for n in names if n != f'{t.name}.{t.param}']}: "
                             f"making one use sparse would break the tie. Exclude it (exclude=[{t.name!r}]), or "
                             f"untie the weights first (e.g. model.config.tie_word_embeddings=False)")


def _sparsify_weights(model: nn.Module, cfg, filter_fn: FilterFn | None, exclude: tuple[str, ...]) -> dict:
    handler = MASK_HANDLERS.get(type(cfg))
    if handler is None:
        raise TypeError(f"no sparsify_ handler for {type(cfg).__name__}; configs: "
                        f"{[c.__name__ for c in MASK_HANDLERS]} and KWinnersConfig")
    targets = find_targets(model, embeddings=cfg.embeddings)
    names = [t.name for t in targets]
    _check_names("per_layer", cfg.per_layer, names)
    chosen = [t for t in targets if not _excluded(t.name, exclude) and (filter_fn is None or
                                                                         filter_fn(t.module, t.name))]
    if isinstance(cfg, GivenMasksConfig):
        chosen = [t for t in targets if t.name in cfg.masks]
    _check_ties(model, chosen)
    masks = handler(cfg, chosen)
    for t in chosen:
        _apply(model, t, masks[t.name])
    return {t.name: {"kind": t.kind, "sparsity": 1.0 - float(masks[t.name].float().mean())} for t in chosen}


def sparsify_(model: nn.Module, config=None, filter_fn: FilterFn | None = None, *,
              weight_sparsity: float | Mapping[str, float] | None = None,
              activation_sparsity: float | Mapping[str, float] | None = None, exclude: Iterable[str] | str = (),
              example_input=None, return_summary: bool = False, k_inference_factor: float = 1.5,
              boost_strength: float = 1.5, boost_strength_factor: float = 0.85, duty_cycle_period: int = 1000,
              local: bool = False, seed: int = 0):
    """Make `model` sparse in place and return it (and a summary of what changed when `return_summary`).

    Args:
        config: a weight config (MagnitudeConfig, RandomFanInConfig, NMConfig, GivenMasksConfig), a
            KWinnersConfig, or a list/tuple of them applied in order. A float is the keyword form's
            `weight_sparsity` (so `sparsify_(model, 0.5)` keeps working).
        filter_fn: `filter_fn(module, name) -> bool` chooses which layers (or activations) to convert.
        weight_sparsity, activation_sparsity, seed, k_inference_factor, boost_strength, boost_strength_factor,
            duty_cycle_period, local: the keyword form: random fixed-fan-in masks for every Linear/Conv2d (or a
            {layer name: sparsity} mapping: only the named layers) and k-WTA (percent_on = 1 - activation_sparsity)
            for a ReLU that follows a converted layer in an nn.Sequential.
        exclude: layer names to leave untouched (a str is one name); unknown names are an error.
        example_input: an input (tensor, tuple of args, or dict of kwargs) run once to find each activation's unit
            count where the module tree does not tell (k-WTA outside an nn.Sequential).
    """
    exclude = _normalize_exclude(exclude)
    known = [n for n, _ in model.named_modules() if n]
    _check_names("exclude", exclude, known)
    if isinstance(config, (int, float)) and not isinstance(config, bool):
        if weight_sparsity is not None:
            raise TypeError("give the weight sparsity once: sparsify_(model, 0.5) or weight_sparsity=0.5")
        weight_sparsity, config = config, None
    legacy = weight_sparsity is not None or activation_sparsity is not None
    if legacy and config is not None:
        raise TypeError("use either a config (sparsify_(model, MagnitudeConfig(...))) or the keyword form "
                        "(weight_sparsity=..., activation_sparsity=...), not both")
    if not legacy and config is None:
        weight_sparsity = 0.5   # the keyword form's default
        legacy = True
    summary = {"weights": {}, "activations": {}, "skipped": {}, "functional": []}
    if legacy:
        _keyword_form(model, weight_sparsity, activation_sparsity, exclude, seed, summary,
                      dict(k_inference_factor=k_inference_factor, boost_strength=boost_strength,
                           boost_strength_factor=boost_strength_factor, duty_cycle_period=duty_cycle_period),
                      local)
    else:
        for cfg in (config if isinstance(config, (list, tuple)) else [config]):
            if isinstance(cfg, KWinnersConfig):
                part = convert_activations(model, cfg, filter_fn, exclude, example_input)
                summary["activations"].update(part["activations"])
                summary["skipped"].update(part["skipped"])
                summary["functional"] += part["functional"]
                if not part["activations"]:
                    warnings.warn(f"sparsify_: KWinnersConfig converted no activation ({cfg.activations} not found"
                                  f"{'; skipped: ' + str(part['skipped']) if part['skipped'] else ''})",
                                  stacklevel=2)
            else:
                summary["weights"].update(_sparsify_weights(model, cfg, filter_fn, exclude))
                if not summary["weights"]:
                    warnings.warn(f"sparsify_: {type(cfg).__name__} found no layer to make sparse", stacklevel=2)
    for name, info in summary["weights"].items():
        log.info("sparse weight %s (%s): sparsity %.3f", name, info["kind"], info["sparsity"])
    for name, info in summary["activations"].items():
        log.info("k-WTA at %s: %s", name, info)
    return (model, summary) if return_summary else model


def _keyword_form(model, weight_sparsity, activation_sparsity, exclude, seed, summary, kw, local) -> None:
    for value, label in ((weight_sparsity, "weight_sparsity"), (activation_sparsity, "activation_sparsity")):
        for v in (value.values() if isinstance(value, Mapping) else [value]):
            if v is not None:
                check_fraction(label, v, low_inclusive=(label == "weight_sparsity"))
    plain = [t.name for t in find_targets(model) if t.kind in ("linear", "conv2d")]
    for value, label in ((weight_sparsity, "weight_sparsity"), (activation_sparsity, "activation_sparsity")):
        if isinstance(value, Mapping):
            _check_names(label, value, plain)
    if weight_sparsity is not None:
        chosen = [t for t in find_targets(model) if t.kind in ("linear", "conv2d") and not _excluded(t.name, exclude)]
        if isinstance(weight_sparsity, Mapping):
            chosen = [t for t in chosen if t.name in weight_sparsity]
        _check_ties(model, chosen)
        for t in chosen:
            ws = weight_sparsity[t.name] if isinstance(weight_sparsity, Mapping) else weight_sparsity
            shape = tuple(t.weight.shape)
            mask = M.fixed_fan_in(shape, ws, mask_generator(seed + t.legacy_index))
            _apply(model, t, mask)
            summary["weights"][t.name] = {"kind": t.kind, "sparsity": 1.0 - float(mask.float().mean())}
    if activation_sparsity is not None:
        for parent_name, parent in list(model.named_modules()):
            if isinstance(parent, nn.Sequential):
                summary["activations"].update(legacy_relu_to_kwinners(parent, parent_name, activation_sparsity,
                                                                      exclude, kw, local))
        if not summary["activations"]:
            warnings.warn("sparsify_: activation_sparsity converted no activation (the keyword form converts a "
                          "ReLU that follows a Linear/Conv2d in an nn.Sequential); use "
                          "sparsify_(model, KWinnersConfig(...), example_input=x) for activations anywhere",
                          stacklevel=3)
