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
    from frugalnet.utils import distributed as dist_utils

    if not dist_utils.is_distributed() or dist_utils.world_size() == 1:
        return counts, batch
    packed = torch.cat([counts.to(torch.float64), torch.tensor([float(batch)], dtype=torch.float64,
                                                                device=counts.device)])
    dist_utils.all_reduce_(packed)
    return packed[:-1].to(counts.dtype), int(packed[-1].item())


def _tracing() -> bool:
    """True under torch.jit tracing, ONNX export, torch.compile/export: no data-dependent Python allowed there."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Boolean mask of exactly k winners along the last dim of `scores` (any leading dims).

    Ranking follows torch.topk: +Inf is a valid winner (the largest), -Inf the smallest, and NaN ranks above
    everything (as torch.topk orders it). Ties are broken by the lower index, deterministically.

    Cost: one torch.topk for the k-th largest score, then `scores >= kth`; that is the answer whenever it holds
    exactly k per row and no row holds a NaN (checked with one sum and the k top values). Otherwise (ReLU zeros tied
    at the k-th place, NaN) a few more comparisons and a cumsum over the tied entries pick the lowest indices.
    Under tracing/export the exact path always runs (no data-dependent Python): ONNX TopK, CumSum, Where.
    """
    n = scores.shape[-1]
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    top = torch.topk(scores, k, dim=-1, largest=True, sorted=True).values
    kth = top[..., k - 1:k]
    if not _tracing():
        # a row with a NaN has it first in `top` (torch.topk ranks NaN highest); `>=` drops the NaN, and a tie
        # at the k-th place could still make the count k, so such rows take the exact path
        candidate = scores >= kth
        if bool((candidate.sum(-1) == k).all()) and not bool(torch.isnan(top[..., 0]).any()):
            return candidate
    nan, kth_nan = torch.isnan(scores), torch.isnan(kth)
    above = (scores > kth) | (nan & ~kth_nan)          # strictly better than the k-th score: always winners
    tied = (scores == kth) | (nan & kth_nan)            # equal to it: the lowest indices fill the remaining places
    need = k - above.sum(-1, keepdim=True)
    return above | (tied & (torch.cumsum(tied.to(torch.int32), -1) <= need))   # ONNX CumSum takes no bool


class _KWinnersBase(nn.Module):
    _eval_k_rule = "floor"   # eval k: "floor" = floor(round(n p) f) (KWinners), "round" = round(n p f) (KWinners2d)

    def __init__(self, percent_on: float, k_inference_factor: float, boost_strength: float,
                 boost_strength_factor: float, duty_cycle_period: int) -> None:
        super().__init__()
        check_fraction("percent_on", percent_on, low_inclusive=False, high_inclusive=False)
        if not k_inference_factor >= 1.0:
            raise ValueError(f"k_inference_factor must be >= 1.0, got {k_inference_factor}")
        if not boost_strength >= 0.0:
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
        """Winners among n units: round(n p) in training; in eval floor(round(n p) f) for KWinners and
        round(n p f) for KWinners2d (Numenta's nupic.torch rules), clamped to [1, n]."""
        n = int(n)   # a traced size (ONNX export) is a tensor: the exported graph keeps k constant
        k = max(1, min(n, int(round(n * self.percent_on))))
        if not self.training:
            if getattr(self, "_eval_k_rule", "floor") == "round":
                k = int(round(n * self.percent_on * self.k_inference_factor))
            else:
                k = int(math.floor(k * self.k_inference_factor))
            k = max(1, min(n, k))
        return k

    def _boost_factors(self, duty_cycle: Tensor) -> Tensor:
        return torch.exp(-self.boost_strength * (duty_cycle - self.percent_on))

    def _factors(self) -> Tensor | None:
        """The boost factors (duty_cycle's shape), None when they are all equal (a positive constant factor
        changes no ranking: boost 0, or duty cycles all equal as at the start). Cached until the duty cycle or the
        boost strength changes (tensor versions)."""
        duty, strength = self._buffers["duty_cycle"], self._buffers["boost_strength"]
        cached = self.__dict__.get("_boost_cache")
        if not (cached is not None and cached[0] is duty and cached[1] is strength
                and cached[2] == (duty._version, strength._version)):
            factors = self._boost_factors(duty)
            factors = None if bool(factors.min() == factors.max()) else factors
            cached = (duty, strength, (duty._version, strength._version), factors)
            self.__dict__["_boost_cache"] = cached
        return cached[3]

    def _boosted(self, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        """x (detached) times the boost factors viewed as `shape` (x itself when they are all equal)."""
        x = x.detach()
        if _tracing():
            return x * self._boost_factors(self.duty_cycle).view(shape)
        factors = self._factors()
        return x if factors is None else x * factors.view(shape)

    def _boost_vector(self, repeat: int):
        """The boost factors as a float32 numpy vector, each repeated `repeat` times (a KWinners2d map's positions),
        for the selection kernel; ones when they are all equal (as `_factors` decides, on the same values), cached
        until the duty cycle or the boost strength changes. The factors are made by the same torch expression as
        `_factors`'s, but the all-equal test runs in numpy: four fewer small torch ops (and no tensor -> bool sync)
        per training call, where each took tens of microseconds on the shared machine."""
        import numpy as np

        duty, strength = self._buffers["duty_cycle"], self._buffers["boost_strength"]
        key = (duty._version, strength._version, repeat)
        cached = self.__dict__.get("_boost_vec")
        if cached is None or cached[0] is not duty or cached[1] is not strength or cached[2] != key:
            with torch.no_grad():
                factors = self._boost_factors(duty).reshape(-1).to(torch.float32).numpy()
            n = duty.numel() * repeat
            if factors.size == 0 or factors.min() == factors.max():
                vec = np.ones(n, np.float32)
            else:
                vec = np.ascontiguousarray(factors) if repeat == 1 else np.repeat(factors, repeat)
            cached = (duty, strength, key, vec)
            self.__dict__["_boost_vec"] = cached
        return cached[3]

    def _kernel_forward(self, x: Tensor, n: int, k: int, repeat: int) -> Tensor:
        """k-WTA of the rows of n entries of x on the selection kernel, the duty cycle updated in training from the
        per-unit (per-channel: `repeat` positions each) win counts."""
        import numpy as np

        from frugalnet.nn.kwinners_functional import kwta_train

        wins = np.zeros(self.duty_cycle.numel(), np.float64) if self.training else None
        out = kwta_train(x, n, self._boost_vector(repeat), k, wins, repeat)
        if wins is not None:
            self._add_wins(wins, repeat, x.numel() // n)
        return out

    def _add_wins(self, wins, repeat: int, rows: int) -> None:
        """The duty cycle updated from per-unit win counts (per channel: over `repeat` positions each)."""
        with torch.no_grad():
            counts = torch.from_numpy(wins).to(self.duty_cycle.dtype)
            if repeat > 1:
                counts = counts / float(repeat)
            self._update_duty_cycle(self.duty_cycle, counts, rows)

    def _fused_select(self, rows, n: int, repeat: int):
        """Training k-WTA of the float32 rows (R, n) (numpy, a fused block's normalised input in NCHW order) on the
        selection kernel, duty cycle updated as forward does: (dense output, winners' indices, their values)."""
        import numpy as np

        from frugalnet.kernels.kwta import count_positive_values
        from frugalnet.nn.kwinners_functional import _select

        out, aidx, aval = _select(rows, self._boost_vector(repeat), self._k(n), True, pooled=True)
        wins = np.zeros(self.duty_cycle.numel(), np.float64)
        count_positive_values(aidx, aval, repeat, wins)
        self._add_wins(wins, repeat, rows.shape[0])
        return out, aidx, aval

    def _use_kernel(self, x: Tensor) -> bool:
        from frugalnet.nn.kwinners_functional import kernel_eligible

        return self.duty_cycle.dtype.is_floating_point and kernel_eligible(x)

    def _update_duty_cycle(self, duty_cycle: Tensor, wins_per_unit: Tensor, batch: int) -> None:
        """duty <- (duty * (period - batch) + wins) / period, with period = min(samples seen, duty_cycle_period)."""
        wins_per_unit, batch = _reduce_across_ranks(wins_per_unit, batch)
        self.learning_iterations.add_(batch)
        period = float(min(int(self.learning_iterations.item()), self.duty_cycle_period))
        duty_cycle.mul_(period - batch).add_(wins_per_unit).div_(period)


class KWinners(_KWinnersBase):
    """k-WTA over the last dim (n features) of a (..., n) input: per sample for (B, n), per token for (B, T, n).

    Args:
        n: number of units.
        percent_on: fraction of units active per sample in training, in (0, 1); k = round(n * percent_on).
        k_inference_factor: in eval, k becomes floor(k * factor) (at most n); >= 1.
        boost_strength: initial boosting strength (0 disables boosting).
        boost_strength_factor: multiplier applied by `update_boost_strength()`, in [0, 1].
        duty_cycle_period: number of samples (rows: tokens for (B, T, n)) the duty-cycle running average spans.

    Shape: input (..., n), output (..., n) with exactly k winners per row (a winner may itself be 0).

    Winners are the k largest boosted values as torch.topk ranks them (+Inf wins, NaN ranks highest), ties to the
    lower index. A unit's duty cycle counts the rows where it won *with an output > 0* (as nupic.torch), so zeros
    that win a row of a sparse ReLU input give no unit credit.
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
        """Boolean winner mask for x (..., n) (no state change)."""
        return topk_mask(self._boosted(x, (self.n,)), self._k(self.n))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.n:
            raise ValueError(f"KWinners(n={self.n}) expects input of shape (..., {self.n}), e.g. (batch, {self.n}),"
                             f" got {tuple(x.shape)}")
        if self._use_kernel(x):
            return self._kernel_forward(x, self.n, self._k(self.n), 1)
        mask = self.winners(x)
        if self.training:
            with torch.no_grad():
                active = (mask & (x > 0)).reshape(-1, self.n)
                self._update_duty_cycle(self.duty_cycle, active.sum(0, dtype=self.duty_cycle.dtype), active.shape[0])
        return torch.where(mask, x, 0.0)   # not x * mask: -Inf * 0 would give NaN

    def extra_repr(self) -> str:
        return (f"n={self.n}, percent_on={self.percent_on}, k={self._k(self.n)}, "
                f"boost_strength={float(self.boost_strength):.3g}")


class KWinners2d(_KWinnersBase):
    """k-WTA over a (batch, C, H, W) feature map.

    Args:
        channels: number of channels C.
        percent_on: fraction of units active per sample in training, in (0, 1).
        k_inference_factor: in eval, k becomes round(n * percent_on * factor) (at most n; Numenta's rule); >= 1.
        boost_strength: initial boosting strength (0 disables boosting).
        boost_strength_factor: multiplier applied by `update_boost_strength()`, in [0, 1].
        duty_cycle_period: number of samples the duty-cycle running average spans.
        local: False picks k = round(C*H*W*percent_on) winners over the whole map of each sample; True picks
            k = round(C*percent_on) winners across channels at every (h, w) position.

    Shape: input (B, C, H, W), output the same with exactly k winners per sample (per position when local).

    Duty cycles and boosting are per channel: the fraction of a channel's positions that won with an output > 0.
    Ranking as KWinners (torch.topk's order, ties to the lower index).
    """
    _eval_k_rule = "round"

    def __init__(self, channels: int, percent_on: float, k_inference_factor: float = 1.5,
                 boost_strength: float = 1.0, boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000,
                 local: bool = False) -> None:
        super().__init__(percent_on, k_inference_factor, boost_strength, boost_strength_factor, duty_cycle_period)
        self.channels = check_positive_int("channels", channels)
        self.local = bool(local)
        self.register_buffer("duty_cycle", torch.zeros(channels))

    def winners(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        boosted = self._boosted(x, (1, c, 1, 1))
        if self.local:
            return topk_mask(boosted.transpose(1, 3), self._k(c)).transpose(1, 3)
        return topk_mask(boosted.reshape(b, c * h * w), self._k(c * h * w)).view(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"KWinners2d(channels={self.channels}) expects input of shape "
                             f"(batch, {self.channels}, H, W), got {tuple(x.shape)}")
        if not self.local and self._use_kernel(x):
            _, c, h, w = x.shape
            return self._kernel_forward(x, c * h * w, self._k(c * h * w), h * w)
        mask = self.winners(x)
        if self.training:
            with torch.no_grad():
                h, w = x.shape[2:]
                wins = (mask & (x > 0)).sum(dim=(0, 2, 3), dtype=self.duty_cycle.dtype) / float(h * w)
                self._update_duty_cycle(self.duty_cycle, wins, x.shape[0])
        return torch.where(mask, x, 0.0)   # not x * mask: -Inf * 0 would give NaN

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, percent_on={self.percent_on}, local={self.local}, "
                f"boost_strength={float(self.boost_strength):.3g}")


def update_boost_strength(model: nn.Module) -> None:
    """Decay the boost strength of every k-WTA module in `model` (call once per epoch)."""
    for module in model.modules():
        if isinstance(module, _KWinnersBase):
            module.update_boost_strength()
