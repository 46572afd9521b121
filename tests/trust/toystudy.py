"""A tiny study for the trust tests: units that train with `fit` (checkpoints), are metered per part, and can be
interrupted at a chosen unit and epoch."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from frugalnet.data import Split
from frugalnet.experiment import FitConfig, StudyConfig, fit, register_study

STOP: dict = {}          # {"unit": i, "epoch": e}: raise KeyboardInterrupt there (a kill mid-run)
FAIL: dict = {}          # {"error": exc}: raise it at the start of the study (an early failure)


@dataclass
class TrustToyConfig(StudyConfig):
    units: int = 2
    epochs: int = 3
    lr: float = 0.1


def _data(seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(48, 4, generator=g)
    return Split(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


@register_study("trust-toy", TrustToyConfig, "a toy study for the trust tests")
def trust_toy(ctx) -> dict:
    if "error" in FAIL:
        raise FAIL["error"]
    cfg = ctx.config
    out = []
    for i in range(cfg.units):
        def work(i: int = i) -> dict:
            torch.manual_seed(100 + i)
            model = nn.Linear(4, 3)

            def stop(epoch: int, m: nn.Module) -> None:
                if STOP.get("unit") == i and STOP.get("epoch") == epoch:
                    raise KeyboardInterrupt

            with ctx.meter(f"unit{i}") as meter:
                r = fit(model, _data(i), FitConfig(epochs=cfg.epochs, batch_size=16, lr=cfg.lr), seed=i,
                        checkpoint=str(ctx.checkpoint_path(f"unit{i}")), on_epoch_end=stop, log=ctx.log,
                        desc=f"unit{i}")
            ctx.log(unit=f"unit{i}", energy_parts=meter.result.parts)
            return {"i": i, "loss": r["history"][-1]["train_loss"],
                    "weights": [float(v) for v in model.weight.detach().flatten()]}
        out.append(ctx.unit(f"unit{i}", work))
    return {"units": out}
