"""k-winners-take-all with boosting (Ahmad & Scheinkman 2019, "How Can We Be So Dense?").

Only the k units with the largest *boosted* value in each sample stay on; the output keeps their raw values and is
zero elsewhere, so only winners get gradient. Boosting multiplies each unit's value by
exp(-boost_strength * (duty_cycle - target_density)) while picking winners, which lifts rarely active units and
spreads the representation over all units. Duty cycles are running averages of how often each unit won over the
last `duty_cycle_period` samples; they are updated in training only and, under torch.distributed, from the win
counts of every rank, so a 2-process run keeps the same duty cycles as a 1-process run of the same global batch.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from frugalnet.utils.validation import check_fraction, check_positive_int


def _reduce_across_ranks(counts: Tensor, batch: int) -> tuple[Tensor, int]:
    """Sum win counts and batch sizes over all ranks when running distributed (no-op otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return counts, batch
    packed = torch.cat([counts.to(torch.float64), torch.tensor([float(batch)], dtype=torch.float64,
                                                                device=counts.device)])
    dist.all_reduce(packed)
    return packed[:-1].to(counts.dtype), int(packed[-1].item())


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly k winners per row of a 2-D tensor; ties go to the lower index (deterministic)."""
    n = scores.shape[1]
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    # A stable descending sort puts equal values in index order, so ties are broken the same way every time.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, order, True)
    return mask


class _KWinnersBase(nn.Module):
    def __init__(self, percent_on: float, k_inference_factor: float, boost_strength: float,
                 boost_strength_factor: float, duty_cycle_period: int) -> None:
        super().__init__()
        check_fraction("percent_on", percent_on, low_inclusive=False, high_inclusive=False)
        if k_inference_factor < 1.0:
            raise ValueError(f"k_inference_factor must be >= 1.0, got {k_inference_factor}")
        if boost_strength < 0.0:
            raise ValueError(f"boost_strength must be >= 0, got {boost_strength}")
        check_fraction("boost_strength_factor", boost_strength_factor, high_inclusive=True)
        check_positive_int("duty_cycle_period", duty_cycle_period)
        self.percent_on = float(percent_on)
        self.k_inference_factor = float(k_inference_factor)
        self.boost_strength_factor = float(boost_strength_factor)
        self.duty_cycle_period = int(duty_cycle_period)
        # Buffers, so they travel with state_dict, .to() and checkpoints.
        self.register_buffer("boost_strength", torch.tensor(float(boost_strength)))
        self.register_buffer("learning_iterations", torch.tensor(0, dtype=torch.long))

    def update_boost_strength(self) -> None:
        """Decay the boost strength by `boost_strength_factor` (the study runner calls this once per epoch)."""
        self.boost_strength.mul_(self.boost_strength_factor)

    def _k(self, n: int) -> int:
        k = int(round(n * self.percent_on))
        k = max(1, min(n, k))
        if not self.training:
            k = min(n, int(math.floor(k * self.k_inference_factor)))
        return k

    def _boost_factors(self, duty_cycle: Tensor) -> Tensor:
        return torch.exp(-self.boost_strength * (duty_cycle - self.percent_on))

    def _update_duty_cycle(self, duty_cycle: Tensor, wins_per_unit: Tensor, batch: int) -> None:
        """duty <- (duty * (period - batch) + wins) / period, with period = min(samples seen, duty_cycle_period)."""
        wins_per_unit, batch = _reduce_across_ranks(wins_per_unit, batch)
        self.learning_iterations.add_(batch)
        period = float(min(int(self.learning_iterations.item()), self.duty_cycle_period))
        duty_cycle.mul_(period - batch).add_(wins_per_unit).div_(period)


class KWinners(_KWinnersBase):
    """k-WTA over the n features of a (batch, n) input.

    Args:
        n: number of units.
        percent_on: fraction of units active per sample in training, in (0, 1); k = round(n * percent_on).
        k_inference_factor: in eval, k becomes floor(k * factor) (at most n); >= 1.
        boost_strength: initial boosting strength (0 disables boosting).
        boost_strength_factor: multiplier applied by `update_boost_strength()`, in [0, 1].
        duty_cycle_period: number of samples the duty-cycle running average spans.

    Shape: input (B, n), output (B, n) with exactly k nonzero-allowed winners per row (a winner may itself be 0).
    """

    def __init__(self, n: int, percent_on: float, k_inference_factor: float = 1.5, boost_strength: float = 1.0,
                 boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000) -> None:
        super().__init__(percent_on, k_inference_factor, boost_strength, boost_strength_factor, duty_cycle_period)
        self.n = check_positive_int("n", n)
        self.register_buffer("duty_cycle", torch.zeros(n))

    @property
    def k(self) -> int:
        return self._k(self.n)

    def winners(self, x: Tensor) -> Tensor:
        """Boolean winner mask for x (no state change)."""
        boosted = x.detach() * self._boost_factors(self.duty_cycle)
        return topk_mask(boosted, self._k(self.n))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.n:
            raise ValueError(f"KWinners(n={self.n}) expects input of shape (batch, {self.n}), got {tuple(x.shape)}")
        mask = self.winners(x)
        if self.training:
            with torch.no_grad():
                self._update_duty_cycle(self.duty_cycle, mask.sum(0, dtype=self.duty_cycle.dtype), x.shape[0])
        return x * mask

    def extra_repr(self) -> str:
        return (f"n={self.n}, percent_on={self.percent_on}, k={self._k(self.n)}, "
                f"boost_strength={float(self.boost_strength):.3g}")


class KWinners2d(_KWinnersBase):
    """k-WTA over a (batch, C, H, W) feature map.

    With `local=False` the k = round(C*H*W*percent_on) winners are picked over the whole map of each sample; with
    `local=True`, k = round(C*percent_on) winners are picked across channels at every (h, w) position. Duty cycles
    and boosting are per channel (the fraction of a channel's positions that won).
    """

    def __init__(self, channels: int, percent_on: float, k_inference_factor: float = 1.5,
                 boost_strength: float = 1.0, boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000,
                 local: bool = False) -> None:
        super().__init__(percent_on, k_inference_factor, boost_strength, boost_strength_factor, duty_cycle_period)
        self.channels = check_positive_int("channels", channels)
        self.local = bool(local)
        self.register_buffer("duty_cycle", torch.zeros(channels))

    def winners(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        boosted = x.detach() * self._boost_factors(self.duty_cycle).view(1, c, 1, 1)
        if self.local:
            flat = boosted.permute(0, 2, 3, 1).reshape(b * h * w, c)
            mask = topk_mask(flat, self._k(c)).view(b, h, w, c).permute(0, 3, 1, 2)
        else:
            mask = topk_mask(boosted.reshape(b, c * h * w), self._k(c * h * w)).view(b, c, h, w)
        return mask

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"KWinners2d(channels={self.channels}) expects input of shape "
                             f"(batch, {self.channels}, H, W), got {tuple(x.shape)}")
        mask = self.winners(x)
        if self.training:
            with torch.no_grad():
                h, w = x.shape[2:]
                wins = mask.sum(dim=(0, 2, 3), dtype=self.duty_cycle.dtype) / float(h * w)
                self._update_duty_cycle(self.duty_cycle, wins, x.shape[0])
        return x * mask

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, percent_on={self.percent_on}, local={self.local}, "
                f"boost_strength={float(self.boost_strength):.3g}")


def update_boost_strength(model: nn.Module) -> None:
    """Decay the boost strength of every k-WTA module in `model` (call once per epoch)."""
    for module in model.modules():
        if isinstance(module, _KWinnersBase):
            module.update_boost_strength()
