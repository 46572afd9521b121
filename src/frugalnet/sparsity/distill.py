"""Knowledge distillation from a dense teacher while a network is pruned (Hinton et al. 2015's loss).

When a user prunes a trained dense model, that model is a free teacher: the student (the network being pruned) is
trained on

    loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

per sample (per position for sequence outputs). The soft targets carry what the dense model knows about every
class, not just the label, which is the information the pruned network loses; T^2 keeps the KL term's gradient on
the scale of the CE term's as T changes. The teacher is frozen (a private copy in eval mode, no gradients): only the
student learns.

    distiller = Distiller(dense_model, DistillConfig(alpha=0.5, temperature=2.0))
    loss = distiller(student(x), x, y)                           # any training loop
    fit(student, train, cfg, loss_fn=distiller.fit_loss(student))  # frugalnet's `fit` (per-sample losses)
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class DistillConfig:
    """alpha: weight of the distillation term in [0, 1] (0: plain cross-entropy, 1: soft targets only);
    temperature: softmax temperature T > 0 of both teacher and student in the distillation term."""
    alpha: float = 0.5
    temperature: float = 2.0

    def __post_init__(self) -> None:
        for name in ("alpha", "temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"DistillConfig.{name} must be a finite number, got {v!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"DistillConfig.alpha must be in [0, 1] (weight of the distillation term), got "
                             f"{self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"DistillConfig.temperature must be > 0 (softmax temperature; 1-4 is usual), got "
                             f"{self.temperature}")


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, target: Tensor,
                      config: DistillConfig = DistillConfig(), reduction: str = "mean") -> Tensor:
    """(1 - alpha) * CE + alpha * T^2 * KL(teacher_T || student_T) per sample.

    Shapes: logits (..., C), the same for student and teacher; target (...) class indices. reduction "none"
    returns one loss per target element (shape of `target`). The teacher logits are detached.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape (same inputs, same classes)")
    if student_logits.dim() < 1 or tuple(target.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"target shape {tuple(target.shape)} must be the logits' shape without the class "
                         f"dimension, {tuple(student_logits.shape[:-1])}")
    classes = student_logits.shape[-1]
    s = student_logits.reshape(-1, classes)
    t = teacher_logits.detach().reshape(-1, classes).to(s.dtype)
    ce = F.cross_entropy(s, target.reshape(-1), reduction="none")
    temp = float(config.temperature)
    log_s = F.log_softmax(s / temp, dim=-1)
    log_t = F.log_softmax(t / temp, dim=-1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    loss = (1.0 - config.alpha) * ce + config.alpha * temp * temp * kl
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(target.shape)


class Distiller:
    """A frozen teacher and the distillation loss against it.

    Args:
        teacher: the dense model (copied unless copy=False; the copy is put in eval mode, its parameters frozen).
        config: DistillConfig.
        copy_teacher: False uses `teacher` itself (it is still put in eval mode and frozen).
    """

    def __init__(self, teacher: nn.Module, config: DistillConfig = DistillConfig(), copy_teacher: bool = True) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        if not isinstance(config, DistillConfig):
            raise TypeError(f"config must be a DistillConfig, got {type(config).__name__}")
        self.teacher = copy.deepcopy(teacher) if copy_teacher else teacher
        self.teacher.eval().requires_grad_(False)
        self.config = config

    @torch.no_grad()
    def teacher_logits(self, inputs: Tensor) -> Tensor:
        self.teacher.eval()
        return self.teacher(inputs)

    def __call__(self, student_logits: Tensor, inputs: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        """The distillation loss of `student_logits` (the student's output on `inputs`) against the teacher's."""
        return distillation_loss(student_logits, self.teacher_logits(inputs), target, self.config, reduction)

    def fit_loss(self, student: nn.Module) -> "_FitLoss":
        """A `loss_fn` for frugalnet's `fit(..., loss_fn=...)`: per-sample distillation losses (averaged over any
        positions). It reads the student's input through a forward pre-hook; call `.remove()` when done."""
        return _FitLoss(self, student)

    def __repr__(self) -> str:
        return f"Distiller({type(self.teacher).__name__}, alpha={self.config.alpha}, " \
               f"temperature={self.config.temperature})"


class _FitLoss:
    """(out, y) -> per-sample losses, the teacher fed the input the student last saw."""

    def __init__(self, distiller: Distiller, student: nn.Module) -> None:
        self.distiller, self.inputs = distiller, None
        self.handle = student.register_forward_pre_hook(self._record)

    def _record(self, module: nn.Module, args: tuple) -> None:
        if module.training and args:
            self.inputs = args[0]

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        if self.inputs is None or len(self.inputs) != len(out):
            raise RuntimeError("the distillation loss saw no training forward pass of its student for this batch: "
                               "call fit_loss(model) with the model that `fit` trains")
        losses = self.distiller(out, self.inputs, y, reduction="none")
        self.inputs = None
        return losses.reshape(len(out), -1).mean(1)

    def remove(self) -> None:
        self.handle.remove()
