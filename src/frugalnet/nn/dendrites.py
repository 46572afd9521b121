"""Active dendrites (Iyer et al. 2022, "Avoiding Catastrophe: Active Dendrites Enable Multi-Task Learning in Dynamic
Environments", Frontiers in Neurorobotics).

Each unit has a feed-forward weight vector (as in a Linear layer) and `num_segments` dendritic segments, each a
weight vector over a *context* signal. A segment's activation is d_j = segment_j . context. The gating rule picks one
segment per unit and sample and modulates the unit's feed-forward output y = Wx + b:

- ``abs_max`` (the paper's choice): j* = argmax_j |d_j|, output y * sigmoid(d_j*). The sign of d_j* is kept, so a
  strongly negative segment can silence a unit as much as a strongly positive one can turn it on.
- ``max``: j* = argmax_j d_j, output y * sigmoid(d_j*).
- ``bias``: j* = argmax_j d_j, output y + d_j* (additive modulation).

Followed by k-WTA, this turns the context into a choice of a sparse subnetwork, so tasks with different contexts
update mostly different weights and forget each other less. The gating rules are pure functions of tensors; the
modules hold weights and masks (registered buffers), and enforce their masks themselves through the same optimizer
hooks as `SparseLinear`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from frugalnet.nn.kwinners import KWinners
from frugalnet.nn.sparse import SparseLinear, SparseWeightMixin
from frugalnet.nn.masks import fixed_fan_in
from frugalnet.utils.seeding import make_generator
from frugalnet.utils.validation import check_fraction, check_positive_int


# --- gating rules: pure functions of (feed-forward output, segment activations) ----------------------------------
def _select(d: Tensor, j: Tensor) -> Tensor:
    return torch.gather(d, -1, j.unsqueeze(-1)).squeeze(-1)


def gate_abs_max(y: Tensor, d: Tensor) -> Tensor:
    """y * sigmoid(d[j*]) with j* = argmax_j |d_j|; y (..., units), d (..., units, segments)."""
    return y * torch.sigmoid(_select(d, d.abs().argmax(dim=-1)))


def gate_max(y: Tensor, d: Tensor) -> Tensor:
    """y * sigmoid(max_j d_j)."""
    return y * torch.sigmoid(d.max(dim=-1).values)


def gate_bias(y: Tensor, d: Tensor) -> Tensor:
    """y + max_j d_j (the dendrites shift the unit's activation instead of scaling it)."""
    return y + d.max(dim=-1).values


GATINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"abs_max": gate_abs_max, "max": gate_max,
                                                           "bias": gate_bias}


def _check_gating(gating: str) -> str:
    if gating not in GATINGS:
        raise ValueError(f"gating must be one of {sorted(GATINGS)}, got {gating!r}")
    return gating


class DendriteSegments(SparseWeightMixin, nn.Module):
    """`num_segments` dendritic segments per unit, each a (sparse) weight vector over a context of `dim_context`.

    Args:
        num_units: number of units the segments belong to.
        num_segments: segments per unit (the paper uses one per task).
        dim_context: length of the context vector.
        sparsity: fraction of zero weights in each segment, in [0, 1); every segment keeps exactly
            round((1 - sparsity) * dim_context) weights, placed at random and enforced after every optimizer step.
        seed: seed of the random mask (None draws from torch's global generator).

    Shape: context (dim_context,) shared by the whole batch, or (B, dim_context) -> activations
    (num_units, num_segments) or (B, num_units, num_segments). A shared context is computed once, which is what
    makes training (one context per task) and prototype-grouped inference cheap.
    """

    def __init__(self, num_units: int, num_segments: int, dim_context: int, sparsity: float = 0.0,
                 seed: int | None = None) -> None:
        super().__init__()
        self.num_units = check_positive_int("num_units", num_units)
        self.num_segments = check_positive_int("num_segments", num_segments)
        self.dim_context = check_positive_int("dim_context", dim_context)
        check_fraction("sparsity", sparsity)
        self.sparsity = float(sparsity)
        self.weight = nn.Parameter(torch.empty(num_units, num_segments, dim_context))
        if sparsity > 0.0:
            gen = make_generator(seed) if seed is not None else None
            mask = fixed_fan_in((num_units * num_segments, dim_context), sparsity, gen).view(self.weight.shape)
            self._setup_mask(mask, sparsity, None)   # the optimizer hooks of SparseLinear enforce it
        else:
            # Dense segments (the paper's setting): no mask to enforce, so no per-step masking cost.
            self.register_buffer("weight_mask", torch.ones(self.weight.shape, dtype=torch.bool))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Uniform in +-1/sqrt(nonzeros per segment): a segment's activation starts at the scale of a unit's input."""
        nnz = max(1, int(round((1.0 - self.sparsity) * self.dim_context)))
        bound = 1.0 / math.sqrt(nnz)
        self.weight.uniform_(-bound, bound)
        self.apply_mask_()

    def forward(self, context: Tensor) -> Tensor:
        if context.shape[-1] != self.dim_context or context.dim() not in (1, 2):
            raise ValueError(f"DendriteSegments(dim_context={self.dim_context}) expects a context of shape "
                             f"({self.dim_context},) or (batch, {self.dim_context}), got {tuple(context.shape)}")
        flat = self.weight.reshape(-1, self.dim_context)
        return (context @ flat.t()).reshape(*context.shape[:-1], self.num_units, self.num_segments)

    def extra_repr(self) -> str:
        return (f"num_units={self.num_units}, num_segments={self.num_segments}, dim_context={self.dim_context}, "
                f"sparsity={self.sparsity:.3g}")


class DendriticLinear(nn.Module):
    """A sparse Linear layer whose units are modulated by their dendritic segments.

    Args:
        in_features, out_features: as for nn.Linear.
        num_segments, dim_context: see DendriteSegments.
        weight_sparsity: fraction of zero feed-forward weights per unit, in [0, 1) (0 gives a dense layer).
        dendrite_sparsity: fraction of zero weights per dendritic segment, in [0, 1).
        gating: "abs_max" (default, the paper's), "max" or "bias"; see the module docstring.
        seed: seed for both masks.

    Shape: x (B, in_features), context (dim_context,) or (B, dim_context) -> (B, out_features).
    """

    def __init__(self, in_features: int, out_features: int, num_segments: int, dim_context: int,
                 weight_sparsity: float = 0.5, dendrite_sparsity: float = 0.0, gating: str = "abs_max",
                 bias: bool = True, seed: int | None = None) -> None:
        super().__init__()
        self.gating = _check_gating(gating)
        self.linear = SparseLinear(in_features, out_features, weight_sparsity, bias=bias, seed=seed)
        self.segments = DendriteSegments(out_features, num_segments, dim_context, dendrite_sparsity,
                                         seed=None if seed is None else seed + 1)

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"DendriticLinear expects x of shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if context.dim() == 2 and context.shape[0] != x.shape[0]:
            raise ValueError(f"DendriticLinear got {x.shape[0]} inputs but {context.shape[0]} contexts; pass one "
                             f"context per sample or a single shared context of shape ({self.segments.dim_context},)")
        return GATINGS[self.gating](self.linear(x), self.segments(context))

    def extra_repr(self) -> str:
        return f"gating={self.gating!r}"


INITS = ("fan_in", "kwta")


def _check_init(init: str, gain: float) -> None:
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    if not gain > 0:
        raise ValueError(f"init_gain must be > 0, got {gain}")


@torch.no_grad()
def scale_feedforward_init_(layers: Sequence[nn.Module], classifier: nn.Linear, kw_percent_on: float,
                            init: str = "kwta", gain: float = 1.0) -> None:
    """Rescale freshly initialised feed-forward weights of an MLP whose hidden layers end in k-WTA.

    Every layer starts from kaiming-uniform over its *nonzero* fan-in (+-1/sqrt(nnz)), which keeps the activation scale
    of a dense layer for a dense input. With ``init="kwta"`` the layers that read a k-WTA output (hidden layers after
    the first, and the classifier) are scaled by 1/sqrt(kw_percent_on), since only that fraction of their inputs is
    nonzero (the "modified" initialisation of Numenta's reference DendriticMLP, nupic.research). ``gain`` multiplies
    all of them. Masked weights stay zero (a multiplication keeps them so).

    Why it matters for continual learning: Adam moves every weight by about lr per step whatever its size, so the
    smaller the weights, the larger the relative change a new task makes to the weights it shares with old tasks.
    """
    _check_init(init, gain)
    kw_scale = 1.0 / math.sqrt(kw_percent_on) if init == "kwta" else 1.0
    for i, layer in enumerate(layers):
        weight = layer.linear.weight if isinstance(layer, DendriticLinear) else layer.weight
        weight.mul_(gain * (kw_scale if i > 0 else 1.0))
        if hasattr(layer, "apply_mask_"):
            layer.apply_mask_()
    bound = gain * kw_scale / math.sqrt(classifier.in_features)
    classifier.weight.uniform_(-bound, bound)


class DendriticMLP(nn.Module):
    """input -> [DendriticLinear -> k-WTA] x len(hidden_sizes) -> Linear -> logits (the paper's network).

    Args:
        input_size, hidden_sizes, output_size: layer widths.
        num_segments: dendritic segments per hidden unit (the paper: one per task).
        dim_context: length of the context vector (784 for prototypes of MNIST images).
        kw_percent_on: fraction of hidden units k-WTA keeps on, in (0, 1) (the paper: 0.05).
        weight_sparsity: fraction of zero feed-forward weights in the hidden layers (the paper: 0.5).
        dendrite_sparsity: fraction of zero dendritic weights (the paper: 0.0).
        gating: "abs_max", "max" or "bias".
        k_inference_factor, boost_strength: passed to KWinners (the paper: 1.0 and 0.0, no boosting).
        init: "kwta" (default: layers fed by k-WTA scaled by 1/sqrt(kw_percent_on), as in Numenta's reference code)
            or "fan_in" (kaiming-uniform over each layer's nonzero fan-in only); see `scale_feedforward_init_`.
        init_gain: multiplies every feed-forward initial weight (1.0 = the rule above unchanged).
        seed: seed for the masks.

    Shape: x (B, input_size), context (dim_context,) or (B, dim_context) -> (B, output_size).
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int, num_segments: int,
                 dim_context: int, kw_percent_on: float = 0.05, weight_sparsity: float = 0.5,
                 dendrite_sparsity: float = 0.0, gating: str = "abs_max", k_inference_factor: float = 1.0,
                 boost_strength: float = 0.0, init: str = "kwta", init_gain: float = 1.0,
                 seed: int | None = None) -> None:
        super().__init__()
        _check_init(init, init_gain)
        if not hidden_sizes:
            raise ValueError("hidden_sizes must name at least one hidden layer, got an empty sequence")
        check_positive_int("input_size", input_size)
        check_positive_int("output_size", output_size)
        self.input_size, self.output_size = input_size, output_size
        self.dim_context = check_positive_int("dim_context", dim_context)
        layers, kws, n_in = [], [], input_size
        for i, h in enumerate(hidden_sizes):
            check_positive_int(f"hidden_sizes[{i}]", int(h))
            layers.append(DendriticLinear(n_in, int(h), num_segments, dim_context, weight_sparsity,
                                          dendrite_sparsity, gating, seed=None if seed is None else seed + 10 * i))
            kws.append(KWinners(int(h), kw_percent_on, k_inference_factor=k_inference_factor,
                                boost_strength=boost_strength, boost_strength_factor=1.0))
            n_in = int(h)
        self.layers = nn.ModuleList(layers)
        self.kwinners = nn.ModuleList(kws)
        self.classifier = nn.Linear(n_in, output_size)
        scale_feedforward_init_(self.layers, self.classifier, kw_percent_on, init, init_gain)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.input_size:
            raise ValueError(f"DendriticMLP(input_size={self.input_size}) got input of shape {tuple(x.shape)}")
        for layer, kw in zip(self.layers, self.kwinners):
            x = kw(layer(x, context))
        return self.classifier(x)
