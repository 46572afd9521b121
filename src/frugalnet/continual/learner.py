"""Training on one task, joint training on all tasks, and evaluation with inferred contexts.

The shared `frugalnet.experiment.training.fit` trains `model(x)` with a per-sample loss. Continual learning needs three
things it does not have: a context passed with every batch, a weight penalty that is not a per-sample loss, and a
hook after every optimizer step (SI's path integral). So this module has its own short loop; it reuses `fit`'s
seeded data order (`epoch_order`) and progress bars, and the study checkpoints after every task.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalnet.continual.contexts import ContextProvider
from frugalnet.continual.regularizers import Regularizer
from frugalnet.continual.streams import TaskStream
from frugalnet.data.core import Split
from frugalnet.utils.seeding import epoch_order
from frugalnet.utils.progress import progress


@dataclass(frozen=True)
class TrainSetup:
    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    adam_eps: float = 1e-8          # Adam's epsilon (torch's default); see `make_adam`

    def validate(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {self.adam_eps}")


def make_adam(net: nn.Module, lr: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam (the paper's optimizer); the fused kernel where this torch build has it (several times faster on the
    large dendritic weight tensors).

    `eps` matters for continual learning: Adam's step is lr * m / (sqrt(v) + eps), so with the default 1e-8 a
    weight whose gradient is tiny (a unit that barely takes part in the new task, but matters to an old one) still
    moves by about lr per step. A larger eps (1e-3) makes such steps proportional to the gradient, as in SGD, while
    weights with large gradients keep Adam's normalised steps."""
    params = [p for p in net.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps)


def train_task(net: nn.Module, reg: Regularizer, provider: ContextProvider | None, split: Split, t: int,
               setup: TrainSetup, seed: int = 0, desc: str = "", optimizer: torch.optim.Optimizer | None = None
               ) -> dict:
    """Train `net` on task t and return {"loss": last epoch's mean loss, "samples": training samples processed
    (counted over all epochs), "epochs": epochs run}.

    Adam with fresh state per task, unless `optimizer` is given (its moments then carry over between tasks)."""
    setup.validate()
    if provider is not None:
        provider.begin_task(t, split.x)
    reg.begin_task(net)
    opt = optimizer if optimizer is not None else make_adam(net, setup.lr, setup.adam_eps)
    n, idx, ctx = len(split), t, None
    loss_sum, processed = 0.0, 0
    for epoch in range(setup.epochs):
        net.train()
        order = epoch_order(n, seed * 1009 + t, epoch)
        loss_sum = 0.0
        for start in progress(range(0, n, setup.batch_size), desc=f"{desc} epoch {epoch + 1}/{setup.epochs}"):
            b = order[start:start + setup.batch_size]
            xb, yb = split.x[b], split.y[b]
            if provider is not None:
                idx = provider.train_context(t, xb)
                ctx = provider.table()[idx]
            out = net(xb, ctx, idx)
            loss = F.cross_entropy(out, yb)
            total = loss + reg.penalty(net)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            reg.after_step(net)
            loss_sum += float(loss.detach()) * len(b)
            processed += len(b)
    net.eval()
    reg.end_task(net, lambda x: net(x, ctx, idx), split.x)
    return {"loss": loss_sum / max(n, 1), "samples": processed, "epochs": setup.epochs}


def train_joint(net: nn.Module, stream: TaskStream, setup: TrainSetup, seed: int = 0, desc: str = "joint") -> dict:
    """Train `net` on batches mixed from every task of the stream (same epochs over each task as in sequence);
    returns {"loss", "samples": training samples processed (counted), "epochs"}."""
    setup.validate()
    sizes = torch.tensor(stream.train_sizes())
    offsets = torch.cumsum(sizes, 0) - sizes
    total = int(sizes.sum())
    opt = make_adam(net, setup.lr, setup.adam_eps)
    loss_sum, processed = 0.0, 0
    for epoch in range(setup.epochs):
        net.train()
        order = epoch_order(total, seed, epoch)
        loss_sum = 0.0
        for start in progress(range(0, total, setup.batch_size), desc=f"{desc} epoch {epoch + 1}/{setup.epochs}"):
            flat = order[start:start + setup.batch_size]
            tasks = torch.searchsorted(offsets, flat, right=True) - 1
            xb, yb = stream.train_batch(tasks, flat - offsets[tasks])
            loss = F.cross_entropy(net(xb, None, None), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(flat)
            processed += len(flat)
    net.eval()
    return {"loss": loss_sum / max(total, 1), "samples": processed, "epochs": setup.epochs}


@torch.no_grad()
def evaluate_task(net: nn.Module, provider: ContextProvider | None, split: Split, t: int,
                  batch_size: int = 1024) -> dict:
    """Accuracy on task t's test split. With a provider, each sample gets its inferred context (samples that share
    one are run together); also returns how often the inferred context index equals the true task."""
    net.eval()
    if provider is None:
        preds = torch.cat([net(split.x[s:s + batch_size], None, None).argmax(1)
                           for s in range(0, len(split), batch_size)])
        return {"acc": float((preds == split.y).float().mean()), "context_acc": None}
    index = provider.infer(split.x, t)
    table = provider.table()
    preds = torch.empty(len(split), dtype=torch.long)
    for i in torch.unique(index).tolist():
        sel = torch.nonzero(index == i).flatten()
        for s in range(0, len(sel), batch_size):
            part = sel[s:s + batch_size]
            preds[part] = net(split.x[part], table[i], i).argmax(1)
    return {"acc": float((preds == split.y).float().mean()),
            "context_acc": float((index == t).float().mean())}

