"""A copy of a model whose k-WTA modules are written with torch.topk, so ONNX export (and hence ONNX Runtime and
OpenVINO) can take it: KWinners/KWinners2d pick winners with a stable sort and an in-place scatter, which neither
ONNX exporter translates. The copy computes the same function in eval mode (same k, same boost factors); only exact
ties among the boosted values may be broken differently, which the output check would reveal."""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from frugalnet.nn.kwinners import KWinners, KWinners2d


class TopKWinners(nn.Module):
    """Eval-mode k-WTA over the last dim with a fixed k: x * (top-k of x * factors)."""

    def __init__(self, k: int, factors: Tensor) -> None:
        super().__init__()
        self.k = int(k)
        self.register_buffer("factors", factors.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        idx = torch.topk(x * self.factors, self.k, dim=-1).indices
        return x * torch.zeros_like(x).scatter(-1, idx, 1.0)


class TopKWinners2d(nn.Module):
    """Eval-mode KWinners2d (global over each sample's C*H*W map, or local across channels) with a fixed k."""

    def __init__(self, k: int, factors: Tensor, local: bool) -> None:
        super().__init__()
        self.k, self.local = int(k), bool(local)
        self.register_buffer("factors", factors.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        boosted = x * self.factors
        if self.local:
            idx = torch.topk(boosted, self.k, dim=1).indices
            return x * torch.zeros_like(x).scatter(1, idx, 1.0)
        b = x.shape[0]
        idx = torch.topk(boosted.reshape(b, -1), self.k, dim=1).indices
        return x * torch.zeros_like(x).reshape(b, -1).scatter(1, idx, 1.0).reshape(x.shape)


def export_friendly(model: nn.Module, inputs: tuple) -> tuple[nn.Module, int]:
    """(model itself if it has no k-WTA, else an eval-mode copy with each KWinners/KWinners2d replaced by its topk
    form; the number replaced). `inputs` gives each KWinners2d's map size, hence its k."""
    kw = {name: m for name, m in model.named_modules() if isinstance(m, (KWinners, KWinners2d))}
    if not kw:
        return model, 0
    ks: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: ks.__setitem__(
        name, mod._k(mod.channels if mod.local else args[0][0].numel()) if isinstance(mod, KWinners2d)
        else mod._k(mod.n))) for name, m in kw.items()]
    try:
        with torch.no_grad():
            model.eval()(*inputs)
    finally:
        for h in hooks:
            h.remove()
    out = copy.deepcopy(model).eval()
    for name, m in kw.items():
        if name not in ks:
            continue   # never called on these inputs
        factors = m._boost_factors(m.duty_cycle)
        new = TopKWinners2d(ks[name], factors, m.local) if isinstance(m, KWinners2d) else TopKWinners(ks[name], factors)
        parent_name, _, attr = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, attr, new)
    return out, len(ks)
