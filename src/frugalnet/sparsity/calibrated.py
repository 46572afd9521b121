"""One-shot pruning from calibration data, without a single gradient step.

Magnitude pruning looks at the weights alone. These two look at what each Linear layer receives on a few batches of
calibration inputs (training data, no labels), and neither trains:

- `prune_activation_magnitude_` (the idea of Wanda, Sun et al. 2023, in our own code): score |W_ij| * ||x_j||_2,
  where ||x_j|| is the norm of input feature j over the calibration tokens, and keep the top (1 - sparsity) scores
  of every output row. Weights are left as they are.
- `prune_reconstruct_`: the same per-row mask, then each row's kept weights and its bias are refitted by ridge
  least squares so that the pruned layer reproduces the dense layer's output on the calibration inputs (the
  Optimal Brain Surgeon / SparseGPT idea in its simplest closed form: one small solve per row). Layers go in
  forward order; each is fitted on the inputs the layers before it (already pruned) produce, to the dense model's
  output for the dense model's inputs, so errors do not pile up from layer to layer.

Measured (benchmarks/prune_char_transformer.py, char Transformer of the lowbit study trained 400 steps to 50.9%
next-character accuracy, 90% of its blocks' Linear weights, seeds 0-2, 8 calibration batches of 32 x 64
characters, no fine-tuning): magnitude 16.5%, Wanda-style 28.2%, least-squares reconstruction 38.9% ± 0.5, random
masks 25.5%, every block matrix zeroed 25.1%; at 80%: 29.4 / 34.7 / 46.3 / random 20.8.

Only plain nn.Linear layers are pruned (not nn.MultiheadAttention's packed projections); they are returned as
SparseLinear with their masks, like `sparsify_`. Statistics are accumulated in float64 over the batches, batch by
batch, so memory stays at one (fan_in + 1)^2 matrix per layer whatever the calibration size; the price is two
forward passes over the calibration batches per pruned layer (the pruned-so-far model and the dense copy).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import Tensor, nn

from frugalnet.nn import masks as M
from frugalnet.sparsity.config import GivenMasksConfig
from frugalnet.sparsity.convert import sparsify_
from frugalnet.utils.validation import check_fraction


def _batches(inputs) -> list[Tensor]:
    batches = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if not batches or not all(isinstance(b, Tensor) for b in batches):
        raise ValueError("calibration inputs must be a tensor or a non-empty sequence of tensors (batches the model "
                         f"takes), got {type(inputs).__name__}")
    return batches


def _linears(model: nn.Module, filter_fn: Callable | None) -> dict[str, nn.Linear]:
    found = {name: m for name, m in model.named_modules()
             if type(m) is nn.Linear and (filter_fn is None or filter_fn(m, name))}
    if not found:
        raise ValueError("no dense nn.Linear layer to prune (filter_fn chose none, or the model is already sparse): "
                         "calibrated pruning takes a dense model")
    return found


@torch.no_grad()
def _run(model: nn.Module, batches: list[Tensor], layer: nn.Module, fn: Callable[[Tensor], None]) -> None:
    """Forward every batch through `model`, handing `layer`'s 2-D input to fn."""
    handle = layer.register_forward_hook(lambda m, args, out: fn(args[0].reshape(-1, args[0].shape[-1])))
    was_training = model.training
    model.eval()
    try:
        for b in batches:
            model(b)
    finally:
        handle.remove()
        model.train(was_training)


def _layer_input(model: nn.Module, layer: nn.Module, batch: Tensor) -> Tensor:
    got: list[Tensor] = []
    _run(model, [batch], layer, lambda x: got.append(x.double().cpu()))
    if not got:
        raise ValueError(f"the calibration forward pass never reached layer {layer!r}: pass inputs that run it")
    return got[0]


def _input_norms(model: nn.Module, batches: list[Tensor], layer: nn.Module) -> Tensor:
    acc = torch.zeros(layer.in_features, dtype=torch.float64)

    def add(x: Tensor) -> None:
        acc.add_((x.double() ** 2).sum(0).cpu())
    _run(model, batches, layer, add)
    return acc.sqrt()


def _row_mask(weight: Tensor, norms: Tensor, sparsity: float) -> Tensor:
    """Keep the largest |W_ij| * ||x_j|| of every output row (the same count in each row)."""
    scores = weight.detach().abs().double().cpu() * norms[None, :]
    keep = M.keep_count(weight.shape[1], sparsity)
    mask = torch.zeros(weight.shape, dtype=torch.bool)
    mask.scatter_(1, scores.topk(keep, dim=1).indices, True)
    return mask.to(weight.device)


def _forward_order(model: nn.Module, batches: list[Tensor], layers: dict[str, nn.Linear]) -> list[str]:
    order, handles = [], []
    for name, m in layers.items():
        handles.append(m.register_forward_hook(lambda mod, a, o, name=name: name in order or order.append(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(batches[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order + [n for n in layers if n not in order]     # layers the forward never reached: last


def prune_activation_magnitude_(model: nn.Module, sparsity: float, inputs, filter_fn: Callable | None = None
                                ) -> nn.Module:
    """Prune each chosen Linear to `sparsity` by |W| x input-feature norm per output row (Wanda-style), in place.

    Args:
        model: a dense model; `inputs` are passed to it as `model(batch)`.
        sparsity: fraction of each chosen layer's weights set to zero, in [0, 1).
        inputs: a tensor or a sequence of tensors (calibration batches, no labels needed).
        filter_fn: `(module, name) -> bool` choosing the Linear layers (default: all).
    """
    check_fraction("sparsity", sparsity, high_inclusive=False)
    batches = _batches(inputs)
    layers = _linears(model, filter_fn)
    masks = {name: _row_mask(m.weight, _input_norms(model, batches, m), sparsity) for name, m in layers.items()}
    return sparsify_(model, GivenMasksConfig(masks=masks), lambda m, n: n in masks)


@torch.no_grad()
def _refit(layer: nn.Linear, mask: Tensor, gram: Tensor, cross: Tensor, damping: float) -> None:
    """Ridge least squares per output row over its kept inputs plus the bias column."""
    n_in = layer.in_features
    gram = gram + damping * gram.diagonal().mean() * torch.eye(n_in + 1, dtype=gram.dtype)
    mask = mask.cpu()
    keep = int(mask.sum(1)[0])
    idx = mask.nonzero()[:, 1].view(mask.shape[0], keep)                 # every row keeps `keep` inputs
    idx = torch.cat([idx, torch.full((mask.shape[0], 1), n_in)], 1)       # + the bias column
    weight = torch.zeros(layer.weight.shape, dtype=torch.float64)
    bias = torch.zeros(layer.out_features, dtype=torch.float64)
    for start in range(0, mask.shape[0], 256):                            # batched solves, bounded memory
        rows = torch.arange(start, min(start + 256, mask.shape[0]))
        sub = idx[rows]
        a = gram[sub[:, :, None], sub[:, None, :]]
        rhs = cross[sub, rows[:, None]]
        sol = torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)
        weight[rows[:, None], sub[:, :-1]] = sol[:, :-1]
        bias[rows] = sol[:, -1]
    layer.weight.copy_(weight.to(layer.weight))
    if layer.bias is not None:
        layer.bias.copy_(bias.to(layer.bias))


def prune_reconstruct_(model: nn.Module, sparsity: float, inputs, filter_fn: Callable | None = None,
                       damping: float = 0.01) -> nn.Module:
    """Prune each chosen Linear to `sparsity` (activation-magnitude mask per row) and refit its kept weights and
    bias by least squares to the dense layer's outputs on the calibration inputs, layer by layer in forward order.

    Args:
        model, sparsity, inputs, filter_fn: as `prune_activation_magnitude_`.
        damping: ridge term, as a fraction of the mean diagonal of each layer's input Gram matrix (> 0).

    A layer without a bias keeps none: its rows are fitted with the bias column fixed at zero.
    """
    check_fraction("sparsity", sparsity, high_inclusive=False)
    if not isinstance(damping, (int, float)) or isinstance(damping, bool) or not damping > 0:
        raise ValueError(f"damping must be a number > 0 (a fraction of the mean input energy), got {damping!r}")
    batches = _batches(inputs)
    layers = _linears(model, filter_fn)
    dense = copy.deepcopy(model)
    dense_layers = dict(dense.named_modules())
    masks = {}
    for name in _forward_order(model, batches, layers):
        layer, ref = layers[name], dense_layers[name]
        n_in = layer.in_features
        gram = torch.zeros(n_in + 1, n_in + 1, dtype=torch.float64)
        cross = torch.zeros(n_in + 1, layer.out_features, dtype=torch.float64)
        sq = torch.zeros(n_in, dtype=torch.float64)
        for b in batches:                    # this batch's inputs in the pruned-so-far model and in the dense one
            x, x_dense = _layer_input(model, layer, b), _layer_input(dense, ref, b)
            xa = torch.cat([x, torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
            with torch.no_grad():
                y = ref(x_dense.to(ref.weight)).double().cpu()
            gram.add_(xa.T @ xa)
            cross.add_(xa.T @ y)
            sq.add_((x ** 2).sum(0))
        if layer.bias is None:               # no bias column: pin it to zero
            gram[n_in, :], gram[:, n_in], cross[n_in, :] = 0.0, 0.0, 0.0
            gram[n_in, n_in] = 1.0
        mask = _row_mask(layer.weight, sq.sqrt(), sparsity)
        _refit(layer, mask, gram, cross, damping)
        masks[name] = mask
    return sparsify_(model, GivenMasksConfig(masks=masks), lambda m, n: n in masks)

