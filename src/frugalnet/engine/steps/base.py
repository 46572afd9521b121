"""The Step interface every engine step implements, and helpers the steps share."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from frugalnet.engine.act import Act


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


def _flavours(base: str, batch: int, split: bool) -> list[str]:
    """Serial (":s") and/or parallel (":p") builds worth trying: at batch 1 a kernel that only splits the batch
    gains nothing from threads; at larger batches the parallel build is the one to use."""
    if batch > 1:
        return [f"{base}:p"]
    return [f"{base}:s", f"{base}:p"] if split else [f"{base}:s"]


class Step:
    kind: ClassVar[str] = ""

    def __init__(self, name: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.name = name
        self.params = params
        self.arrays = arrays
        self._cache: dict[str, Any] = {}

    def variants(self, act: Act) -> list[str]:
        return ["torch"]

    def run(self, act: Act, variant: str) -> Act:
        raise NotImplementedError

    def bind(self, variant: str, shape: tuple[int, ...]):
        """A fast callable act -> act for one variant and input shape, with all lookups done up front (the engine
        calls these at inference; `run` is the readable, general path used while compiling)."""
        return lambda act: self.run(act, variant)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def macs(self, act: Act) -> tuple[float, float]:
        """(dense MACs, effective MACs: nonzero weight x nonzero input pairs) for this input."""
        return 0.0, 0.0

    def weight_bytes(self, variant: str) -> int:
        return 0

    def prepared(self, key: str, build) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]
