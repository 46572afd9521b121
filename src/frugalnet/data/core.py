"""The data-set bundle every study consumes, and the registry behind `frugalnet.data.load(name)`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor


@dataclass
class Split:
    """Inputs x (N, ...) float32 and integer labels y (N,)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: Tensor | slice) -> "Split":
        return Split(self.x[index], self.y[index])


@dataclass
class DataBundle:
    """A train/test pair with what a model needs to know about it.

    x values are raw (images in [0, 1]); `mean`/`std` are train-set statistics for normalisation, which models or
    studies apply themselves so that input noise can be added in raw units first.
    """

    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    mean: float = 0.0
    std: float = 1.0
    source: str = ""
    extra: dict = field(default_factory=dict)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


_LOADERS: dict[str, tuple[Callable[..., DataBundle], bool, str]] = {}


def register_dataset(name: str, needs_data_dir: bool, description: str):
    def deco(fn: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        _LOADERS[name] = (fn, needs_data_dir, description)
        return fn

    return deco


def available_datasets() -> dict[str, str]:
    """name -> description, embedded ones first."""
    return {n: d + ("" if not needs else " (local copy, --data-dir)") for n, (_, needs, d) in
            sorted(_LOADERS.items(), key=lambda kv: (kv[1][1], kv[0]))}


def needs_data_dir(name: str) -> bool:
    """Whether data set `name` is read from a local copy (--data-dir). ValueError for an unknown name."""
    import frugalnet.data  # noqa: F401  (registers the loaders)

    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(_LOADERS)}")
    return _LOADERS[name][1]


def load(name: str, data_dir: str | None = None, **kwargs) -> DataBundle:
    """Load a data set by name. Embedded sets need nothing; the standard ones read a local copy from `data_dir`."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(_LOADERS)}")
    fn, needs_dir, _ = _LOADERS[name]
    if needs_dir:
        if data_dir is None:
            raise FileNotFoundError(f"dataset {name!r} is read from a local copy: pass data_dir= (CLI: --data-dir)")
        return fn(data_dir, **kwargs)
    return fn(**kwargs)


def stratified_split(y: Tensor, test_per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices of a fixed, seeded split that puts `test_per_class` samples of every class in the test set."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_idx.append(idx[:test_per_class])
        train_idx.append(idx[test_per_class:])
    train = torch.cat(train_idx)
    test = torch.cat(test_idx)
    return train[torch.randperm(len(train), generator=gen)], test[torch.randperm(len(test), generator=gen)]
