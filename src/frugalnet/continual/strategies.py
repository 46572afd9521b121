"""Continual-learning strategies: a network, a weight penalty and whether the network is fed a context.

| name             | what                                                     | paper                                      |
|------------------|----------------------------------------------------------|--------------------------------------------|
| finetune         | dense MLP trained task after task (lower bound)           | -                                          |
| joint            | dense MLP trained on all tasks at once (upper bound)      | -                                          |
| ewc              | dense MLP + online EWC penalty                            | Kirkpatrick et al. 2017, PNAS              |
| si               | dense MLP + Synaptic Intelligence penalty                 | Zenke, Poole & Ganguli 2017, ICML          |
| xdg              | dense MLP, hidden units gated per context index           | Masse, Grant & Freedman 2018, PNAS         |
| kwta             | sparse weights + k-WTA, no context (the ablation)         | Ahmad & Scheinkman 2019                    |
| dendrites        | sparse weights + k-WTA + active dendrites on the context  | Iyer et al. 2022, Front. Neurorobotics     |
| dendrites-si     | the dendritic network + SI                                | Iyer et al. 2022 (section on combining SI) |

New strategies register with `register_strategy`; the study picks them by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from frugalnet.continual.networks import DendriticNet, DenseMLP, SparseKWMLP, XdGMLP
from frugalnet.continual.regularizers import EWC, SI, Regularizer


@dataclass(frozen=True)
class Hyper:
    """Everything a strategy needs to build its network and penalty."""

    input_size: int
    output_size: int
    hidden_sizes: tuple[int, ...]
    max_tasks: int
    dim_context: int
    num_segments: int
    kw_percent_on: float = 0.05
    weight_sparsity: float = 0.5
    dendrite_sparsity: float = 0.0
    gating: str = "abs_max"
    init: str = "kwta"             # feed-forward init of the k-WTA networks (see nn.dendrites.scale_feedforward_init_)
    init_gain: float = 1.0
    xdg_gate_fraction: float = 0.8
    ewc_lambda: float = 1000.0
    si_c: float = 1.0
    si_xi: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    paper: str
    build_net: Callable[[Hyper], nn.Module]
    build_regularizer: Callable[[nn.Module, Hyper], Regularizer]
    uses_context: bool = False     # the network reads the context (so the context provider matters)
    joint: bool = False            # trained on all tasks at once instead of in sequence


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
    return STRATEGIES[name]


def _dense(h: Hyper) -> nn.Module:
    return DenseMLP(h.input_size, h.hidden_sizes, h.output_size)


def _dendritic(h: Hyper) -> nn.Module:
    return DendriticNet(input_size=h.input_size, hidden_sizes=h.hidden_sizes, output_size=h.output_size,
                        num_segments=h.num_segments, dim_context=h.dim_context, kw_percent_on=h.kw_percent_on,
                        weight_sparsity=h.weight_sparsity, dendrite_sparsity=h.dendrite_sparsity, gating=h.gating,
                        init=h.init, init_gain=h.init_gain, seed=h.seed)


def _none(net: nn.Module, h: Hyper) -> Regularizer:
    return Regularizer()


def _si(net: nn.Module, h: Hyper) -> Regularizer:
    return SI(net, c=h.si_c, xi=h.si_xi)


for _s in (
    Strategy("finetune", "dense MLP, tasks in sequence, nothing against forgetting (lower bound)", "-", _dense, _none),
    Strategy("joint", "dense MLP trained on all tasks at once (upper bound)", "-", _dense, _none, joint=True),
    Strategy("ewc", "dense MLP + online elastic weight consolidation", "Kirkpatrick et al. 2017, PNAS", _dense,
             lambda net, h: EWC(net, lam=h.ewc_lambda)),
    Strategy("si", "dense MLP + synaptic intelligence", "Zenke, Poole & Ganguli 2017, ICML", _dense, _si),
    Strategy("xdg", "dense MLP, 80% of hidden units gated off per context", "Masse, Grant & Freedman 2018, PNAS",
             lambda h: XdGMLP(h.input_size, h.hidden_sizes, h.output_size, h.max_tasks, h.xdg_gate_fraction,
                              h.seed), _none, uses_context=True),
    Strategy("kwta", "sparse weights + k-WTA, no context (ablation of the dendrites)",
             "Ahmad & Scheinkman 2019, arXiv:1903.11257",
             lambda h: SparseKWMLP(h.input_size, h.hidden_sizes, h.output_size, h.kw_percent_on, h.weight_sparsity,
                                   h.seed, h.init, h.init_gain), _none),
    Strategy("dendrites", "sparse weights + k-WTA + active dendrites (abs-max gating) on the context",
             "Iyer et al. 2022, Front. Neurorobot. 16:846219", _dendritic, _none, uses_context=True),
    Strategy("dendrites-si", "the dendritic network + synaptic intelligence",
             "Iyer et al. 2022 + Zenke et al. 2017", _dendritic, _si, uses_context=True),
):
    register_strategy(_s)
