"""The training loop every study shares: `fit` and `evaluate`.

`fit` trains a classifier on in-memory tensors with a seeded data order, checkpoints every epoch (atomically) and
resumes from the last checkpoint, shows progress, logs per-epoch metrics, decays k-WTA boost strengths, and runs
unchanged under torchrun: each rank takes a strided share of every global batch, the model is wrapped in
DistributedDataParallel, and the loss is scaled so that the averaged gradient equals the single-process gradient of
the same global batch (any batch size, any world size).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalnet.data.core import Split
from frugalnet.nn.kwinners import update_boost_strength
from frugalnet.utils import distributed as dist_utils
from frugalnet.utils.io import atomic_torch_save, load_checkpoint
from frugalnet.utils.seeding import epoch_order
from frugalnet.utils.progress import progress

OptimizerFactory = Callable[[list], torch.optim.Optimizer]


@dataclass
class FitConfig:
    epochs: int = 5
    batch_size: int = 64            # global batch size (split across ranks)
    lr: float = 0.01
    optimizer: str = "sgd"          # sgd | adam | adamw
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_gamma: float = 1.0           # per-epoch exponential learning-rate decay
    boost_decay: bool = True        # call update_boost_strength() on k-WTA modules after each epoch
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'epochs' else 1}, got {value!r}")
        if not _finite(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not _finite(self.lr_gamma) or not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma!r}")
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"optimizer must be one of sgd, adam, adamw; got {self.optimizer!r}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def make_optimizer(cfg: FitConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(model: nn.Module, train: Split, cfg: FitConfig, *, seed: int = 0, transform: Callable[[Tensor], Tensor] | None
        = None, checkpoint: str | None = None, log: Callable[..., None] | None = None, desc: str = "train",
        optimizer: torch.optim.Optimizer | None = None, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        on_epoch_end: Callable[[int, nn.Module], dict | None] | None = None, device: torch.device | str = "cpu",
        callbacks: list | tuple = ()) -> dict:
    """Train `model` on `train` and return {"history": [...], "train_seconds": float, "epochs": int}.

    Args:
        transform: applied to each input batch (e.g. normalisation) before the model.
        checkpoint: file to save after every epoch and resume from if it exists.
        log: called with per-epoch metrics (e.g. RunContext.log).
        optimizer: use this optimizer instead of building one from cfg.
        loss_fn: defaults to cross-entropy with mean reduction over the global batch.
        on_epoch_end: called with (epoch, model) after each epoch; a dict it returns (e.g. test accuracy) joins that
            epoch's record, so it is logged, checkpointed and survives a resume. The model is put back in train mode.
        callbacks: objects with `.step()`, called after every optimizer step (e.g. a GradualMagnitudePruner or
            RigL from frugalnet.sparsity); their `state_dict()` / `load_state_dict()`, if any, ride in the checkpoint.
    """
    cfg.validate()
    if len(train) == 0 and cfg.epochs > 0:
        raise ValueError("fit got an empty training split (0 samples): check the data set, its subset options "
                         "(e.g. --train-subset) and the split")
    device = torch.device(device)
    model.to(device)
    world, rank = dist_utils.world_size(), dist_utils.rank()
    core = model
    if world > 1:
        for name, buf in core.named_buffers():   # masks come from seeds: a rank that drew others would diverge
            if name.endswith("weight_mask"):
                dist_utils.check_same_on_all_ranks(f"sparse mask {name}", buf)
        from torch.nn.parallel import DistributedDataParallel as DDP

        from frugalnet.nn.sync_batchnorm import convert_to_distributed_batchnorm

        convert_to_distributed_batchnorm(core)   # batch statistics over the global batch, as in 1 process
        # k-WTA duty cycles are kept equal by reducing win counts, so buffers need no broadcast.
        model = DDP(model, broadcast_buffers=False, device_ids=None if device.type == "cpu" else [device])
    opt = optimizer if optimizer is not None else make_optimizer(cfg, core.parameters())
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_gamma)
    per_sample_loss = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="none"))

    start_epoch, history, train_seconds = 0, [], 0.0
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if ckpt.is_file():
            fix = "delete it to train this unit from the start"
            state = load_checkpoint(ckpt, map_location=device, fix=fix)
            try:
                core.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                torch.set_rng_state(state["rng"].cpu())
                start_epoch, history, train_seconds = state["epoch"], state["history"], state["train_seconds"]
                for cb, cb_state in zip(callbacks, state.get("callbacks", [])):
                    if cb_state is not None:
                        cb.load_state_dict(cb_state)
            except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as exc:
                raise ValueError(f"checkpoint {ckpt} does not fit this model and config "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                 f"{fix}") from None

    n = len(train)
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        t0 = time.perf_counter()
        order = epoch_order(n, seed, epoch)
        batches = range(0, n, cfg.batch_size)
        bar = progress(batches, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", total=len(batches)) \
            if rank == 0 else batches
        loss_sum, correct, seen = 0.0, 0.0, 0.0
        for start in bar:
            global_idx = order[start:start + cfg.batch_size]
            idx = global_idx[rank::world]
            x = train.x[idx].to(device)
            y = train.y[idx].to(device)
            if transform is not None:
                x = transform(x)
            out = model(x)
            losses = per_sample_loss(out, y)
            # Sum over this rank's share / global batch, times world (DDP averages): equals the global mean's grad.
            loss = losses.sum() * (world / len(global_idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for cb in callbacks:
                cb.step()
            loss_sum += float(losses.detach().sum())
            correct += float((out.detach().argmax(1) == y).sum())
            seen += len(idx)
        sched.step()
        if cfg.boost_decay:
            update_boost_strength(core)
        loss_sum, correct, seen = dist_utils.all_reduce_sum([loss_sum, correct, seen])
        train_seconds += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "samples": (epoch + 1) * n, "train_loss": loss_sum / max(seen, 1),
                  "train_acc": correct / max(seen, 1), "epoch_seconds": time.perf_counter() - t0}
        if on_epoch_end is not None:
            record.update(on_epoch_end(epoch, core) or {})
            core.train()
        history.append(record)
        if log is not None:
            log(unit=desc, **record)
        if checkpoint is not None and rank == 0:
            atomic_torch_save({"model": core.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                               "history": history, "train_seconds": train_seconds,
                               "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None
                                             for cb in callbacks]}, checkpoint)
        dist_utils.barrier()
    return {"history": history, "train_seconds": train_seconds, "epochs": cfg.epochs}


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512, transform: Callable[[Tensor], Tensor] | None = None,
            device: torch.device | str = "cpu") -> Tensor:
    """Model outputs for all of x, in eval mode, in batches."""
    model.eval()
    outs = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        if transform is not None:
            xb = transform(xb)
        outs.append(model(xb).cpu())
    return torch.cat(outs) if outs else torch.empty(0)


def evaluate(model: nn.Module, split: Split, batch_size: int = 512,
             transform: Callable[[Tensor], Tensor] | None = None, device: torch.device | str = "cpu") -> float:
    """Accuracy of `model` on `split`."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    out = predict(model, split.x, batch_size, transform, device)
    return float((out.argmax(1) == split.y).float().mean())
