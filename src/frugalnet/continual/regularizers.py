"""Weight-consolidation penalties that slow down learning on weights earlier tasks rely on.

- EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks", PNAS): after each task,
  the diagonal of the Fisher information F at the task's solution theta* measures each weight's importance; the
  penalty is (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2. Here the "online" form (Schwarz et al. 2018) is used:
  one running Fisher (sum over tasks) anchored at the latest solution, so memory does not grow with the task count.
- SI, Synaptic Intelligence (Zenke, Poole & Ganguli 2017, "Continual Learning Through Synaptic Intelligence",
  ICML): importance is accumulated online during training as the path integral omega_i = sum over steps of
  -g_i * delta theta_i; at the end of a task, Omega_i += omega_i / (Delta_i^2 + xi) with Delta_i the weight's total
  change over the task. The penalty is c * sum_i Omega_i (theta_i - theta*_i)^2.

Both keep their state in registered buffers (one per parameter), so it lives in state_dict and checkpoints.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _key(name: str) -> str:
    return name.replace(".", "__")


class _WeightedSquaredDistance(torch.autograd.Function):
    """sum(w * (p - a)^2) with gradient 2 w (p - a) for p only: the same numbers as the autograd expression, in
    about half the passes over memory (it matters on the dendritic network's millions of segment weights)."""

    @staticmethod
    def forward(ctx, p: Tensor, w: Tensor, a: Tensor) -> Tensor:
        d = p.detach() - a
        wd = w * d
        ctx.save_for_backward(wd)
        return torch.dot(wd.reshape(-1), d.reshape(-1))

    @staticmethod
    def backward(ctx, grad: Tensor):
        (wd,) = ctx.saved_tensors
        return wd * (2.0 * grad), None, None


class Regularizer(nn.Module):
    """No penalty (plain fine-tuning). Subclasses override the hooks they need."""

    def penalty(self, model: nn.Module) -> Tensor | float:
        return 0.0

    def begin_task(self, model: nn.Module) -> None:
        """Called before training on a task."""

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step, while parameter gradients are still in place."""

    def end_task(self, model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor) -> None:
        """Called after a task, with a function mapping inputs to logits and the task's training inputs."""


class _PerParameter(Regularizer):
    def __init__(self, model: nn.Module, *names: str) -> None:
        super().__init__()
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        for prefix in names:
            for n, p in model.named_parameters():
                if p.requires_grad:
                    self.register_buffer(f"{prefix}_{_key(n)}", torch.zeros_like(p, memory_format=torch.contiguous_format))

    def _buf(self, prefix: str, name: str) -> Tensor:
        return getattr(self, f"{prefix}_{_key(name)}")

    def _params(self, model: nn.Module):
        params = dict(model.named_parameters())
        return [(n, params[n]) for n in self._names]

    def _anchored_quadratic(self, model: nn.Module, weight: str) -> Tensor | float:
        """sum over parameters of weight * (p - anchor)^2: the penalty EWC and SI share (0 before the first task)."""
        if int(self.tasks) == 0:
            return 0.0
        total = 0.0
        for n, p in self._params(model):
            total = total + _WeightedSquaredDistance.apply(p, self._buf(weight, n), self._buf("anchor", n))
        return total


class EWC(_PerParameter):
    """Online EWC with strength `lam`; the Fisher is estimated on `fisher_samples` inputs with labels sampled from
    the model's own predictive distribution (the true Fisher, not the empirical one)."""

    def __init__(self, model: nn.Module, lam: float = 100.0, fisher_samples: int = 500, gamma: float = 1.0) -> None:
        super().__init__(model, "fisher", "anchor")
        if not lam >= 0:
            raise ValueError(f"EWC lam must be >= 0, got {lam}")
        self.lam, self.fisher_samples, self.gamma = float(lam), int(fisher_samples), float(gamma)
        self.register_buffer("tasks", torch.tensor(0))

    def penalty(self, model: nn.Module) -> Tensor | float:
        return 0.5 * self.lam * self._anchored_quadratic(model, "fisher")

    def end_task(self, model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor) -> None:
        gen = torch.Generator().manual_seed(int(self.tasks) + 1)
        idx = torch.randperm(len(x), generator=gen)[: self.fisher_samples]
        params = self._params(model)
        fisher = {n: torch.zeros_like(p) for n, p in params}
        # Per-sample gradients, in chunks: the Fisher needs squared gradients of single samples, not of batch means.
        for start in range(0, len(idx), 64):
            xb = x[idx[start:start + 64]]
            for i in range(len(xb)):
                logits = forward(xb[i:i + 1])
                with torch.no_grad():
                    y = torch.multinomial(F.softmax(logits, 1), 1, generator=gen).view(-1)
                loss = F.cross_entropy(logits, y)
                grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
                for (n, _), g in zip(params, grads):
                    if g is not None:
                        fisher[n] += g.detach() ** 2
        with torch.no_grad():
            for n, p in params:
                f = self._buf("fisher", n)
                f.mul_(self.gamma).add_(fisher[n] / max(1, len(idx)))
                self._buf("anchor", n).copy_(p.detach())
        self.tasks.add_(1)


class SI(_PerParameter):
    """Synaptic Intelligence with strength `c` and damping `xi`."""

    def __init__(self, model: nn.Module, c: float = 0.1, xi: float = 0.1) -> None:
        super().__init__(model, "omega", "importance", "anchor", "prev")
        if not c >= 0:
            raise ValueError(f"SI c must be >= 0, got {c}")
        if not xi > 0:
            raise ValueError(f"SI xi must be > 0, got {xi}")
        self.c, self.xi = float(c), float(xi)
        self.register_buffer("tasks", torch.tensor(0))

    def penalty(self, model: nn.Module) -> Tensor | float:
        return self.c * self._anchored_quadratic(model, "importance")

    @torch.no_grad()
    def begin_task(self, model: nn.Module) -> None:
        for n, p in self._params(model):
            self._buf("omega", n).zero_()
            self._buf("prev", n).copy_(p)
            if int(self.tasks) == 0:
                self._buf("anchor", n).copy_(p)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for n, p in self._params(model):
            prev = self._buf("prev", n)
            if p.grad is not None:
                self._buf("omega", n).addcmul_(p.grad, prev.sub_(p))   # omega += -g * (p - prev)
            prev.copy_(p)

    @torch.no_grad()
    def end_task(self, model: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor) -> None:
        for n, p in self._params(model):
            anchor = self._buf("anchor", n)
            delta = p - anchor
            self._buf("importance", n).add_(self._buf("omega", n).clamp_min(0) / (delta ** 2 + self.xi))
            anchor.copy_(p)
        self.tasks.add_(1)
