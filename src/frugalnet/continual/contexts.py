"""Context providers: what the dendrites (or XdG's gates) are told about the current task.

- `PrototypeContext` (Iyer et al. 2022): the context of task t is its *prototype*, the mean training input of the
  task. At test time each sample gets the prototype nearest to it (Euclidean), so no task label is needed.
- `OnlinePrototypeContext`: the same prototypes, but built without task labels or task boundaries. Each training
  batch's mean is compared to the existing prototypes; if it is farther from the nearest one than sampling noise
  explains (squared distance > `threshold` x the variance of a batch mean), a new task is declared and a new prototype
  started; otherwise the batch is added to the nearest prototype.
- `OneHotContext`: the true task id as a one-hot vector, given at training and at test time (for comparison).

State (sums, counts, squared sums, number of prototypes) lives in registered buffers, so it travels with
`state_dict` and checkpoints. Prototypes are computed from sums and counts that are all-reduced across ranks, so
under torch.distributed every rank holds the same prototypes (single-process the reduction is a no-op).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from frugalnet.utils import distributed as dist_utils
from frugalnet.utils.validation import check_positive_int


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum `tensor` over ranks in place (no-op when not distributed)."""
    return dist_utils.all_reduce_(tensor)


def nearest(x: Tensor, prototypes: Tensor, chunk: int = 4096) -> Tensor:
    """Index of the nearest prototype (Euclidean) for each row of x: (N, D), (K, D) -> (N,) long."""
    if len(prototypes) == 0:
        raise ValueError("no prototypes yet: train on at least one task before inferring contexts")
    p_sq = (prototypes * prototypes).sum(1)
    out = []
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        # ||x - p||^2 = ||x||^2 - 2 x.p + ||p||^2; ||x||^2 is the same for every p, so it is left out.
        out.append((p_sq.unsqueeze(0) - 2.0 * xb @ prototypes.t()).argmin(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


class ContextProvider(nn.Module):
    """Interface: `begin_task(t, x)` before training on task t, `train_context(t, xb)` per training batch,
    `infer(x)` at test time; `table()` gives the context vectors, one row per known task/prototype."""

    dim: int
    needs_task_id = False   # True if the provider reads the true task id at test time

    def begin_task(self, t: int, x: Tensor) -> None:
        """Called once before training on task t with all of its training inputs (rank-local share)."""

    def train_context(self, t: int, xb: Tensor) -> int:
        """Index of the context used for a training batch of task t."""
        raise NotImplementedError

    def infer(self, x: Tensor, t: int) -> Tensor:
        """Context index for each test sample; `t` is the true task, which only one-hot contexts may read."""
        raise NotImplementedError

    def table(self) -> Tensor:
        raise NotImplementedError


class PrototypeContext(ContextProvider):
    """Prototype = mean training input of each task; nearest prototype at test time."""

    def __init__(self, dim: int, max_tasks: int) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.max_tasks = check_positive_int("max_tasks", max_tasks)
        self.register_buffer("sums", torch.zeros(max_tasks, dim, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(max_tasks, dtype=torch.float64))

    def begin_task(self, t: int, x: Tensor) -> None:
        if not 0 <= t < self.max_tasks:
            raise ValueError(f"task must be in [0, {self.max_tasks - 1}], got {t}")
        stats = torch.cat([x.double().sum(0), torch.tensor([float(len(x))], dtype=torch.float64)])
        all_reduce_sum_(stats)
        self.sums[t] = stats[:-1]
        self.counts[t] = stats[-1]

    def train_context(self, t: int, xb: Tensor) -> int:
        return t

    def known(self) -> int:
        return int((self.counts > 0).sum())

    def table(self) -> Tensor:
        k = self.known()
        return (self.sums[:k] / self.counts[:k].clamp_min(1).unsqueeze(1)).float()

    def infer(self, x: Tensor, t: int) -> Tensor:
        return nearest(x, self.table())


class OnlinePrototypeContext(ContextProvider):
    """Prototypes found without task labels: a new one starts when a batch's mean is far from every prototype."""

    def __init__(self, dim: int, max_tasks: int, threshold: float = 4.0) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.max_tasks = check_positive_int("max_tasks", max_tasks)
        if not threshold > 1.0:
            raise ValueError(f"threshold must be > 1 (a multiple of the batch-mean variance), got {threshold}")
        self.threshold = float(threshold)
        self.register_buffer("sums", torch.zeros(max_tasks, dim, dtype=torch.float64))
        self.register_buffer("sq_sums", torch.zeros(max_tasks, dtype=torch.float64))   # sum of ||x||^2
        self.register_buffer("counts", torch.zeros(max_tasks, dtype=torch.float64))
        self.register_buffer("num", torch.tensor(0, dtype=torch.long))
        self.register_buffer("current", torch.tensor(-1, dtype=torch.long))

    def table(self) -> Tensor:
        k = int(self.num)
        return (self.sums[:k] / self.counts[:k].clamp_min(1).unsqueeze(1)).float()

    def _total_variance(self, i: int) -> float:
        """Trace of the input covariance of prototype i: E||x||^2 - ||E x||^2."""
        n = float(self.counts[i])
        mean = self.sums[i] / n
        return max(float(self.sq_sums[i]) / n - float(mean @ mean), 1e-12)

    def train_context(self, t: int, xb: Tensor) -> int:
        """Assign the batch to a prototype (the true task id `t` is ignored) and fold it into that prototype."""
        xd = xb.double()
        stats = torch.cat([xd.sum(0), (xd * xd).sum().view(1), torch.tensor([float(len(xb))], dtype=torch.float64)])
        all_reduce_sum_(stats)                   # every rank sees the same global batch statistics
        s, sq, n = stats[:-2], stats[-2], stats[-1]
        mean = s / n
        k = int(self.num)
        choice = -1
        if k > 0:
            protos = self.sums[:k] / self.counts[:k].unsqueeze(1)
            dist2 = ((protos - mean) ** 2).sum(1)
            i = int(dist2.argmin())
            # A batch mean from prototype i's distribution is off by about trace(cov) / n (+ the prototype's own
            # uncertainty, trace(cov) / count); a new task shifts it by far more.
            expected = self._total_variance(i) * (1.0 / float(n) + 1.0 / float(self.counts[i]))
            if float(dist2[i]) <= self.threshold * expected:
                choice = i
        if choice < 0:
            if k >= self.max_tasks:
                raise ValueError(f"OnlinePrototypeContext found more than max_tasks={self.max_tasks} tasks; raise "
                                 f"max_tasks or the threshold ({self.threshold})")
            choice = k
            self.num.add_(1)
        self.sums[choice] += s
        self.sq_sums[choice] += sq
        self.counts[choice] += n
        self.current.fill_(choice)
        return choice

    def infer(self, x: Tensor, t: int) -> Tensor:
        return nearest(x, self.table())


class OneHotContext(ContextProvider):
    """The true task id as a one-hot vector (the task label is given at test time too)."""

    needs_task_id = True

    def __init__(self, max_tasks: int) -> None:
        super().__init__()
        self.dim = check_positive_int("max_tasks", max_tasks)
        self.register_buffer("eye", torch.eye(max_tasks))

    def train_context(self, t: int, xb: Tensor) -> int:
        return t

    def infer(self, x: Tensor, t: int) -> Tensor:
        return torch.full((len(x),), t, dtype=torch.long)

    def table(self) -> Tensor:
        return self.eye


# name -> builder(dim, max_tasks, threshold): one table, as strategies (STRATEGIES) and streams (STREAMS) have
_BUILDERS = {
    "prototype": lambda dim, max_tasks, threshold: PrototypeContext(dim, max_tasks),
    "online-prototype": lambda dim, max_tasks, threshold: OnlinePrototypeContext(dim, max_tasks, threshold),
    "onehot": lambda dim, max_tasks, threshold: OneHotContext(max_tasks),
}
CONTEXTS = tuple(_BUILDERS)


def make_context(kind: str, dim: int, max_tasks: int, threshold: float = 4.0) -> ContextProvider:
    """Build a context provider by name: "prototype", "online-prototype" or "onehot"."""
    if kind in _BUILDERS:
        return _BUILDERS[kind](dim, max_tasks, threshold)
    raise ValueError(f"context must be one of {list(CONTEXTS)}, got {kind!r}")
