"""Task streams: a data set cut into a sequence of tasks that a learner sees one after another.

- Permuted MNIST (Goodfellow et al. 2013; Kirkpatrick et al. 2017): task t applies a fixed random pixel permutation
  to every image; task 0 is the unpermuted data. The label space (10 digits) is shared by all tasks, so without a
  context the network cannot tell which permutation it is looking at.
- Split MNIST (Zenke et al. 2017): the 10 digits are cut into `num_tasks` disjoint groups (5 tasks of 2 digits by
  default). Labels are re-indexed within each task (the "domain-incremental" setting of van de Ven & Tolias 2019),
  so the output layer has max-group-size units and the task must be inferred from the input.

Tasks are built on demand from the base data (inputs normalised and flattened), so 100 permuted tasks of full MNIST
never sit in memory at once. Permutations depend only on the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from frugalnet.data.core import DataBundle, Split
from frugalnet.utils.seeding import make_generator
from frugalnet.utils.validation import check_positive_int


@dataclass
class TaskStream:
    """Base class: `train(t)` / `test(t)` give task t's Split with inputs flattened to (N, input_dim)."""

    name: str
    num_tasks: int
    input_dim: int
    num_outputs: int

    def train(self, t: int) -> Split:
        raise NotImplementedError

    def test(self, t: int) -> Split:
        raise NotImplementedError

    def train_sizes(self) -> list[int]:
        """Number of training samples of every task (joint training draws from all of them)."""
        return [len(self.train(t)) for t in range(self.num_tasks)]

    def train_batch(self, tasks: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs and labels of sample index[i] of task tasks[i], for batches that mix tasks (joint training)."""
        cache = self.__dict__.setdefault("_cache", {})
        xs, ys = [], []
        for t, i in zip(tasks.tolist(), index.tolist()):
            if t not in cache:
                cache[t] = self.train(t)
            xs.append(cache[t].x[i])
            ys.append(cache[t].y[i])
        return torch.stack(xs), torch.stack(ys)

    def _check_task(self, t: int) -> int:
        if not isinstance(t, int) or not 0 <= t < self.num_tasks:
            raise ValueError(f"task must be an integer in [0, {self.num_tasks - 1}], got {t!r}")
        return t


def _flat(bundle: DataBundle, split: Split) -> Split:
    return Split(bundle.normalize(split.x).reshape(len(split), -1).contiguous(), split.y)


class PermutedStream(TaskStream):
    """Permuted MNIST-style stream: task t = pixels shuffled by permutation t (task 0 unpermuted)."""

    def __init__(self, bundle: DataBundle, num_tasks: int, seed: int = 0) -> None:
        check_positive_int("num_tasks", num_tasks)
        self._train, self._test = _flat(bundle, bundle.train), _flat(bundle, bundle.test)
        dim = self._train.x.shape[1]
        super().__init__(f"permuted-{bundle.name}", num_tasks, dim, bundle.num_classes)
        gen = make_generator(10_007 * seed + 1)
        perms = [torch.arange(dim)] + [torch.randperm(dim, generator=gen) for _ in range(num_tasks - 1)]
        self.permutations = torch.stack(perms)

    def permute(self, x: Tensor, t: int) -> Tensor:
        return x[:, self.permutations[t]]

    def train(self, t: int) -> Split:
        return Split(self.permute(self._train.x, self._check_task(t)), self._train.y)

    def test(self, t: int) -> Split:
        return Split(self.permute(self._test.x, self._check_task(t)), self._test.y)

    def train_sizes(self) -> list[int]:
        return [len(self._train)] * self.num_tasks

    def train_batch(self, tasks: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        return self._train.x[index].gather(1, self.permutations[tasks]), self._train.y[index]


class SplitStream(TaskStream):
    """Split MNIST-style stream: the classes are cut into `num_tasks` consecutive groups; labels re-indexed per task."""

    def __init__(self, bundle: DataBundle, num_tasks: int = 5, seed: int = 0) -> None:
        check_positive_int("num_tasks", num_tasks)
        if num_tasks > bundle.num_classes:
            raise ValueError(f"split streams need num_tasks <= number of classes ({bundle.num_classes}), "
                             f"got {num_tasks}")
        self._train, self._test = _flat(bundle, bundle.train), _flat(bundle, bundle.test)
        groups = torch.arange(bundle.num_classes).tensor_split(num_tasks)
        super().__init__(f"split-{bundle.name}", num_tasks, self._train.x.shape[1], max(len(g) for g in groups))
        self.groups = [g.tolist() for g in groups]

    def _task_split(self, split: Split, t: int) -> Split:
        classes = torch.tensor(self.groups[self._check_task(t)])
        keep = torch.isin(split.y, classes)
        y = torch.searchsorted(classes, split.y[keep])   # label -> index within the task's group
        return Split(split.x[keep], y)

    def train(self, t: int) -> Split:
        return self._task_split(self._train, t)

    def test(self, t: int) -> Split:
        return self._task_split(self._test, t)


STREAMS = {"permuted": PermutedStream, "split": SplitStream}


def make_stream(kind: str, bundle: DataBundle, num_tasks: int, seed: int = 0) -> TaskStream:
    """Build a stream by name ("permuted" or "split")."""
    if kind not in STREAMS:
        raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {kind!r}")
    return STREAMS[kind](bundle, num_tasks, seed)
