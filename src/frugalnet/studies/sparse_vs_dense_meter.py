"""Metering for the sparse-vs-dense study: each training epoch metered on its own (EpochMeter), and the warm-up step
that keeps a process's one-time setup (kernel loading or compiling, per-shape path choice) out of the metered
training of short runs."""
from __future__ import annotations

import torch
from torch import nn

from frugalnet.data.core import DataBundle, Split
from frugalnet.energy import Meter


class EpochMeter:
    """Meters each training epoch on its own (a Meter from the start of an epoch to its end, evaluation left out), so
    the energy lives in the epoch records that `fit` checkpoints: a resumed run still counts the epochs done before
    the interruption (one Meter around `fit` counted only the time after a resume)."""

    def __init__(self, meter_kwargs: dict) -> None:
        self.kwargs = meter_kwargs
        self.meter: Meter | None = None

    def start(self) -> None:
        self.meter = Meter(**self.kwargs).__enter__()

    def stop(self) -> dict:
        """{"energy_j", "cpu_s", "energy_estimated", "energy_source"} of the epoch just ended."""
        assert self.meter is not None, "EpochMeter.stop() before start()"
        self.meter.__exit__(None, None, None)
        r, self.meter = self.meter.result, None
        return {"energy_j": r.energy_j, "cpu_s": r.cpu_s, "energy_estimated": r.estimated, "energy_source": r.source}

    @staticmethod
    def total(history: list[dict]) -> dict:
        """Energy of all epochs in a fit history, as a JSON-able summary."""
        return {"energy_j": sum(h["energy_j"] for h in history), "cpu_s": sum(h["cpu_s"] for h in history),
                "estimated": any(h["energy_estimated"] for h in history),
                "source": history[-1]["energy_source"] if history else "", "epochs_metered": len(history)}


def warm_up(model: nn.Module, train: Split, bundle: DataBundle, cfg) -> float:
    """One training step on a throwaway copy of `model` (same batch size, first training batch), before the meter
    starts; returns its CPU seconds. It pays the one-time costs of a process: loading (or, on a fresh checkout,
    compiling) the numba kernels and timing each layer's candidate paths for these shapes (the sparse network's
    first step took 0.81 s of CPU against 0.04 s for its later steps, loaded 2-core machine), and PyTorch's
    own first-call setup for the dense network. Both networks get it, the model itself is untouched, and the
    seconds are reported beside the metered energy, so a short run does not charge setup to training."""
    import copy
    import time

    c0 = time.process_time()
    twin = copy.deepcopy(model).train()
    batch = min(cfg.batch_size, len(train))
    opt = torch.optim.SGD(twin.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(twin(bundle.normalize(train.x[:batch])), train.y[:batch]).backward()
    opt.step()
    del twin, opt
    return time.process_time() - c0
