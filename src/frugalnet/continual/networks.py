"""The networks the strategies train, all called as `net(x, context, index)`.

`context` is a context vector (dim,) shared by the batch; `index` the integer id of that context (task id or
prototype id). Each network reads what it needs: the dense and k-WTA MLPs ignore both, XdG reads the index, the
dendritic network reads the vector.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from frugalnet.nn.dendrites import DendriticMLP, scale_feedforward_init_
from frugalnet.nn.kwinners import KWinners
from frugalnet.nn.sparse import SparseLinear
from frugalnet.utils.seeding import make_generator
from frugalnet.utils.validation import check_fraction


class DenseMLP(nn.Module):
    """input -> [Linear -> ReLU] x n -> Linear: the standard network of fine-tuning, EWC, SI and joint training."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        layers, n_in = [], input_size
        for h in hidden_sizes:
            layers += [nn.Linear(n_in, h), nn.ReLU()]
            n_in = h
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(n_in, output_size)

    def forward(self, x: Tensor, context: Tensor | None = None, index: int | None = None) -> Tensor:
        return self.classifier(self.body(x))


class XdGMLP(nn.Module):
    """Context-dependent gating (Masse, Grant & Freedman 2018, "Alleviating catastrophic forgetting using
    context-dependent gating and synaptic stabilization", PNAS): each context index owns a fixed random subset of
    (1 - gate_fraction) of the units of every hidden layer; the rest are multiplied by 0. The masks are buffers."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int, max_contexts: int,
                 gate_fraction: float = 0.8, seed: int = 0) -> None:
        super().__init__()
        check_fraction("gate_fraction", gate_fraction)
        self.linears = nn.ModuleList()
        gen = make_generator(seed + 7919)
        n_in = input_size
        for i, h in enumerate(hidden_sizes):
            self.linears.append(nn.Linear(n_in, h))
            keep = max(1, int(round((1.0 - gate_fraction) * h)))
            masks = torch.zeros(max_contexts, h)
            for c in range(max_contexts):
                masks[c, torch.randperm(h, generator=gen)[:keep]] = 1.0
            self.register_buffer(f"gates{i}", masks)
            n_in = h
        self.classifier = nn.Linear(n_in, output_size)

    def forward(self, x: Tensor, context: Tensor | None = None, index: int | None = None) -> Tensor:
        if index is None:
            raise ValueError("XdGMLP needs the context index (task or prototype id)")
        for i, lin in enumerate(self.linears):
            x = torch.relu(lin(x)) * getattr(self, f"gates{i}")[index]
        return self.classifier(x)


class SparseKWMLP(nn.Module):
    """input -> [SparseLinear -> k-WTA] x n -> Linear: the dendritic network without its dendrites (same
    initialisation as DendriticMLP, see `scale_feedforward_init_`)."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int, kw_percent_on: float,
                 weight_sparsity: float, seed: int = 0, init: str = "kwta", init_gain: float = 1.0) -> None:
        super().__init__()
        layers, n_in = [], input_size
        for i, h in enumerate(hidden_sizes):
            layers += [SparseLinear(n_in, h, weight_sparsity, seed=seed + 10 * i),
                       KWinners(h, kw_percent_on, k_inference_factor=1.0, boost_strength=0.0,
                                boost_strength_factor=1.0)]
            n_in = h
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(n_in, output_size)
        scale_feedforward_init_(layers[0::2], self.classifier, kw_percent_on, init, init_gain)

    def forward(self, x: Tensor, context: Tensor | None = None, index: int | None = None) -> Tensor:
        return self.classifier(self.body(x))


class DendriticNet(nn.Module):
    """DendriticMLP called with the shared context vector."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.mlp = DendriticMLP(**kwargs)

    def forward(self, x: Tensor, context: Tensor | None = None, index: int | None = None) -> Tensor:
        if context is None:
            raise ValueError("the dendritic network needs a context vector")
        return self.mlp(x, context)
