"""Study `prune`: from a trained dense CNN-2 to a sparse one, five ways, at several sparsities.

For every seed a dense CNN-2 is trained (`epochs`: the model pruning starts from) and, as the reference every
pruned network is judged against, a dense CNN-2 with the same total budget (`epochs + finetune_epochs`, same
recipe). Then for each sparsity:
- one-shot magnitude pruning, measured as is and after `finetune_epochs` of fine-tuning;
- random masking (random fixed fan-in over the trained weights), as is and fine-tuned, the baseline;
- gradual magnitude pruning (Zhu & Gupta's cubic schedule over the first `gradual_end` of the fine-tuning steps,
  then a recovery tail);
- gradual-train: Zhu & Gupta's schedule inside one run of the dense recipe and budget (epochs + finetune_epochs),
  pruning from `train_prune[0]` to `train_prune[1]` of its steps: on CNN-2 / mnist-5k, 90%, seeds 0-2, 98.53% ±
  0.12 / val loss 0.0432 ± 0.0037 against the same-budget dense 98.70% / 0.0410 (+5.3%), where gradual pruning of
  the finished dense model gave 98.60% / 0.0477 (+16%, earlier session); over 20-60%: 0.0423 on seed 0 (10-40%:
  0.0390). The dense reference does not overfit here: its val loss is lowest at its last epoch in all three seeds
  (0.0397 / 0.0402 / 0.0432), so its best-epoch and final figures are the same;
  Re-measured (`frugalnet run prune --seeds 3 --sparsities 0.9 --methods gradual-train`): 98.70% ± 0.10 / 0.0437 ±
  0.0036 against dense 98.67% / 0.0415 (+5.4%; per seed +1.0%, +3.1%, +11.8%: the 1,000 test digits make the val
  loss swing by ~5% from seed to seed). Pruning over 5-30% (`--train-prune 0.05 0.3`): 98.53% / 0.0460 (+10.9%); the
  cosine schedule for every run from scratch (`--train-schedule cosine`): 98.50% / 0.0452 against dense 98.43% /
  0.0425 (+6.2%); SGD weight decay 5e-4 on the sparse run (`--sparse-decay 0.0005`): 98.53% / 0.0439 (+5.8%);
- gradual-kd: gradual, with the fine-tuning loss (1 - a) CE + a T^2 KL(teacher_T || student_T) against the trained
  dense model it prunes (frugalnet.sparsity.distill; `distill_alpha` a, `distill_temperature` T; the teacher costs
  one more forward pass per step, ~1/3 of a training step). On CNN-2 / mnist-5k, 90%, seeds 0-2, a = 0.5, T = 2
  (`frugalnet run prune --seeds 3 --sparsities 0.9 --methods gradual gradual-kd --epochs 8 --finetune-epochs 4`):
  from a dense-8-epoch model (98.67% ± 0.12 / val loss 0.0415 ± 0.0016, converged: dense-12, the same-budget
  reference, has 98.40% ± 0.17 / 0.0421 ± 0.0038), gradual-kd 98.67% ± 0.15 / 0.0423 ± 0.0045: +0.00 points / +2.0%
  val loss against the model it pruned, +0.27 / +0.5% against dense-12, where gradual without distillation gives
  98.63% ± 0.29 / 0.0454 ± 0.0043 (+9.4% / +7.8%); a = 0.9, T = 4 (`--distill-alpha 0.9 --distill-temperature 4`):
  98.57% ± 0.25 / 0.0442 ± 0.0019 (+6.5% / +4.9%). With the defaults (5 + 3 epochs; dense-5 98.40% / 0.0451 is not
  converged, dense-8 98.67% / 0.0415): gradual-kd 98.53% ± 0.15 / 0.0457 (+1.4% on dense-5, +10.2% on dense-8),
  gradual 98.57% / 0.0474 (+5.1% / +14.2%): the student tracks its teacher, so it needs a converged one;
- RigL from scratch with ERK layer densities, trained like the dense reference (epochs + finetune_epochs).
Fine-tuning decays its LR by lr_gamma per epoch, or to 0 along a cosine (finetune_schedule="cosine": on CNN-2 /
mnist-5k, seeds 0-2, gradual 98.60% / val loss 0.0485 against 98.60% / 0.0477 with the default, fine-tuned one-shot
and random rows slightly worse too). Each arm is a resumable unit. The report gives accuracy and validation loss
against sparsity (mean and sd over seeds), the modelled inference cost of each pruned network against the dense one
(energy ledger) and, where the inference engine compiles it, its speed against dense PyTorch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

import torch
import torch.nn.functional as F
from torch import nn

from frugalnet.data import load
from frugalnet.data.core import DataBundle, Split
from frugalnet.energy import model_cost
from frugalnet.experiment.registry import StudyConfig, register_study
from frugalnet.experiment.runner import RunContext
from frugalnet.experiment.training import FitConfig, fit, make_optimizer, predict
from frugalnet.models import dense_cnn2
from frugalnet.sparsity.config import MagnitudeConfig, RandomFanInConfig
from frugalnet.sparsity.convert import sparsify_
from frugalnet.sparsity.distill import DistillConfig, Distiller
from frugalnet.sparsity.dynamic import RigL
from frugalnet.sparsity.pruning import GradualMagnitudePruner, measured_sparsity
from frugalnet.studies.prune_report import METHODS, build_ledger, summarize, write_report
from frugalnet.utils.io import atomic_torch_save, load_checkpoint

# units per sparsity (oneshot / random: + -ft rows)
PRUNED = ("oneshot", "random", "gradual", "gradual-kd", "gradual-train", "rigl")
SCHEDULES = ("cosine", "exponential")


@dataclass
class PruneConfig(StudyConfig):
    dataset: str = field(default="mnist-5k", metadata={"help": "embedded data set (frugalnet list)"})
    sparsities: tuple = field(default=(0.8, 0.9, 0.95), metadata={"help": "weight sparsities to prune to"})
    epochs: int = field(default=5, metadata={"help": "dense training epochs"})
    finetune_epochs: int = field(default=3, metadata={"help": "fine-tuning epochs after pruning"})
    batch_size: int = 64
    lr: float = 0.02
    finetune_lr: float = field(default=0.01, metadata={"help": "learning rate while fine-tuning / pruning"})
    finetune_schedule: str = field(default="exponential", metadata={"help": "fine-tuning LR: exponential (lr_gamma per "
                                                                            "epoch) or cosine (finetune_lr to 0)"})
    lr_gamma: float = 0.85
    train_schedule: str = field(default="exponential", metadata={"help": "LR of the runs from scratch (dense, "
                                                                         "dense-ref, gradual-train, rigl): exponential "
                                                                         "(lr_gamma per epoch) or cosine (lr to 0)"})
    gradual_end: float = field(default=0.667, metadata={"help": "gradual pruning reaches the target sparsity at this "
                                                                "fraction of the fine-tuning steps"})
    train_prune: tuple = field(default=(0.1, 0.4), metadata={"help": "gradual-train: pruning starts / ends at these "
                                                                     "fractions of the whole budget"})
    methods: tuple = field(default=PRUNED, metadata={"help": "pruning methods: " + " ".join(PRUNED)})
    scope: str = field(default="global", metadata={"help": "magnitude pruning scope: global (one threshold) or layer"})
    sparse_decay: float = field(default=0.0, metadata={"help": "SGD weight decay of the sparse runs from scratch "
                                                                 "(gradual-train, rigl); the dense recipe has none"})
    distill_alpha: float = field(default=0.5, metadata={"help": "gradual-kd: weight of the distillation term "
                                                                "(teacher: the trained dense model)"})
    distill_temperature: float = field(default=2.0, metadata={"help": "gradual-kd: distillation temperature"})
    rigl_delta_t: int = field(default=50, metadata={"help": "RigL: steps between drop-and-regrow"})
    rigl_alpha: float = field(default=0.3, metadata={"help": "RigL: initial drop fraction"})
    train_subset: int = field(default=0, metadata={"help": "first N training samples (0: all)"})
    test_subset: int = field(default=0, metadata={"help": "first N test samples (0: all)"})
    hidden: int = 700
    engine_speed: bool = field(default=True, metadata={"help": "time the compiled inference engine (if it compiles)"})
    engine_seconds: float = 5.0
    tiny: bool = field(default=False, metadata={"help": "smoke run: 128 train / 64 test samples, hidden 32, one "
                                                         "epoch each, sparsity 0.9 only, no engine timing"})

    def __post_init__(self) -> None:
        if self.tiny:
            for name, value in TINY.items():
                setattr(self, name, value)
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "finetune_epochs", "batch_size", "hidden", "rigl_delta_t"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not self.sparsities or any(not 0 < float(s) < 1 for s in self.sparsities):
            raise ValueError(f"sparsities must be fractions in (0, 1), got {self.sparsities}")
        for name in ("lr", "finetune_lr", "engine_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not isinstance(self.sparse_decay, (int, float)) or not 0 <= self.sparse_decay < 1:
            raise ValueError(f"sparse_decay must be a number in [0, 1), got {self.sparse_decay!r}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.scope not in ("global", "layer"):
            raise ValueError(f"scope must be 'global' or 'layer', got {self.scope!r}")
        for name in ("finetune_schedule", "train_schedule"):
            if getattr(self, name) not in SCHEDULES:
                raise ValueError(f"{name} must be one of {SCHEDULES}, got {getattr(self, name)!r}")
        if len(self.train_prune) != 2 or not 0 <= self.train_prune[0] < self.train_prune[1] <= 1:
            raise ValueError(f"train_prune must be (begin, end) fractions with 0 <= begin < end <= 1, got "
                             f"{self.train_prune}")
        if not 0 < self.gradual_end <= 1:
            raise ValueError(f"gradual_end must be in (0, 1], got {self.gradual_end}")
        if not self.methods or any(m not in PRUNED for m in self.methods):
            raise ValueError(f"methods must be a non-empty subset of {PRUNED}, got {self.methods}")
        try:
            DistillConfig(alpha=self.distill_alpha, temperature=self.distill_temperature)
        except ValueError as e:
            raise ValueError(str(e).replace("DistillConfig.", "distill_")) from None
        if not 0 < self.rigl_alpha <= 1:
            raise ValueError(f"rigl_alpha must be in (0, 1], got {self.rigl_alpha}")


TINY = dict(epochs=1, finetune_epochs=1, sparsities=(0.9,), train_subset=128, test_subset=64, hidden=32,
            rigl_delta_t=2, engine_speed=False)


def tiny_config(runs_dir: str = "runs") -> PruneConfig:
    """A smoke run for tests (`frugalnet run prune --tiny`)."""
    return PruneConfig(name="tiny", tiny=True, runs_dir=runs_dir, quiet=True)


def _subset(split: Split, n: int) -> Split:
    return split if n <= 0 or n >= len(split) else split.subset(slice(0, n))


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, train: Split, bundle: DataBundle, batch: int = 250) -> None:
    """Recompute BatchNorm running statistics of a pruned model on training inputs (forward passes only, no
    weight changes): pruning shifts every layer's output statistics, and stale ones alone can drop a CNN to chance."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None            # cumulative average over the passes below
    model.train()
    for start in range(0, len(train), batch):
        model(bundle.normalize(train.x[start:start + batch]))
    for m in norms:
        m.momentum = 0.1
    model.eval()


def _measure(model: nn.Module, test: Split, bundle: DataBundle) -> dict:
    out = predict(model, test.x, transform=bundle.normalize)
    return {"test_acc": float((out.argmax(1) == test.y).float().mean()),
            "val_loss": float(F.cross_entropy(out, test.y)), "sparsity": measured_sparsity(model).get("total", 0.0)}


class CosineLR:
    """A `fit` callback: after every optimizer step set the learning rate to lr * (1 + cos(pi * t / T)) / 2, so it
    reaches 0 at the last of `total_steps`; `state_dict` carries t for resume."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, total_steps: int) -> None:
        self.optimizer, self.lr, self.total, self.step_count = optimizer, lr, max(1, total_steps), 0

    def step(self) -> None:
        self.step_count += 1
        lr = self.lr * 0.5 * (1 + math.cos(math.pi * min(self.step_count, self.total) / self.total))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])


class _Job:
    """What every unit of one seed shares: data, config, the dense checkpoint."""

    def __init__(self, ctx: RunContext, seed: int, bundle: DataBundle, train: Split, test: Split) -> None:
        self.ctx, self.cfg, self.seed, self.bundle, self.train, self.test = ctx, ctx.config, seed, bundle, train, test

    def new_dense(self) -> nn.Module:
        torch.manual_seed(self.seed)
        return dense_cnn2(self.bundle.input_shape, self.bundle.num_classes, hidden=self.cfg.hidden)

    def trained_dense(self) -> nn.Module:
        model = self.new_dense()
        model.load_state_dict(load_checkpoint(self.ctx.checkpoint_path(f"dense-seed{self.seed}-final")))
        return model

    def fit(self, model: nn.Module, key: str, epochs: int, lr: float, callbacks=(), finetune: bool = False,
            weight_decay: float = 0.0, loss_fn=None) -> None:
        """Train with the dense recipe (SGD, lr_gamma per epoch), or, under the cosine schedule (finetune_schedule
        for fine-tuning, train_schedule for runs from scratch), with the learning rate decayed from `lr` to 0."""
        cosine = (self.cfg.finetune_schedule if finetune else self.cfg.train_schedule) == "cosine"
        cfg = FitConfig(epochs=epochs, batch_size=self.cfg.batch_size, lr=lr, weight_decay=weight_decay,
                        lr_gamma=1.0 if cosine else self.cfg.lr_gamma, boost_decay=False)
        opt = make_optimizer(cfg, model.parameters())
        for cb in callbacks:            # RigL resets the optimizer state of regrown weights
            if getattr(cb, "optimizer", False) is None:
                cb.optimizer = opt
        extra = [CosineLR(opt, lr, self.steps(epochs))] if cosine else []
        fit(model, self.train, cfg, seed=self.seed, transform=self.bundle.normalize, optimizer=opt,
            checkpoint=self.ctx.checkpoint_path(key), log=self.ctx.log, desc=key, callbacks=[*callbacks, *extra],
            device=self.ctx.device, loss_fn=loss_fn)
        model.cpu()

    def steps(self, epochs: int) -> int:
        return epochs * -(-len(self.train) // self.cfg.batch_size)

    def dense(self) -> dict:
        model = self.new_dense()
        self.fit(model, f"dense-seed{self.seed}", self.cfg.epochs, self.cfg.lr)
        if self.ctx.is_main:
            atomic_torch_save(model.state_dict(), self.ctx.checkpoint_path(f"dense-seed{self.seed}-final"))
        return {"method": "dense", "sparsity_target": 0.0, "seed": self.seed, **self._cost_and_measure(model)}

    def dense_reference(self) -> dict:
        """Dense with the pruned runs' whole budget (epochs + finetune_epochs), the dense recipe throughout."""
        model = self.new_dense()
        self.fit(model, f"dense-ref-seed{self.seed}", self.cfg.epochs + self.cfg.finetune_epochs, self.cfg.lr)
        return {"method": "dense-ref", "sparsity_target": 0.0, "seed": self.seed, **self._cost_and_measure(model)}

    def _cost_and_measure(self, model: nn.Module) -> dict:
        model.eval()
        cost = model_cost(model, self.bundle.normalize(self.test.x[:64]))
        return {**_measure(model, self.test, self.bundle), "cost": cost.to_dict()}

    def pruned(self, method: str, s: float) -> dict:
        cfg, key = self.cfg, f"{method}-{s}-seed{self.seed}"
        if method in ("rigl", "gradual-train"):     # from scratch, the dense recipe and budget
            model, total = self.new_dense(), cfg.epochs + cfg.finetune_epochs
            steps = self.steps(total)
            if method == "rigl":
                sparsify_(model, RandomFanInConfig(sparsity=s, erk=True, seed=self.seed))
                cb = RigL(model, delta_t=cfg.rigl_delta_t, end_step=int(0.75 * steps), alpha=cfg.rigl_alpha,
                          seed=self.seed)
            else:                                   # Zhu & Gupta: pruning while the dense recipe trains
                b, e = (int(f * steps) for f in cfg.train_prune)
                cb = GradualMagnitudePruner(model, s, begin_step=b, end_step=max(b + 1, e),
                                            frequency=max(1, (e - b) // 30), scope=cfg.scope)
            self.fit(model, key, total, cfg.lr, callbacks=[cb], weight_decay=cfg.sparse_decay)
            getattr(cb, "remove", lambda: None)()
            return {"method": method, "sparsity_target": s, "seed": self.seed, **self._cost_and_measure(model)}
        model = self.trained_dense()
        if method in ("gradual", "gradual-kd"):
            steps = self.steps(cfg.finetune_epochs)
            # the teacher: a frozen copy of the dense model, taken before the pruner touches it
            loss_fn = Distiller(model, DistillConfig(cfg.distill_alpha, cfg.distill_temperature)
                                ).fit_loss(model) if method == "gradual-kd" else None
            pruner = GradualMagnitudePruner(model, s, begin_step=0, end_step=max(1, int(cfg.gradual_end * steps)),
                                            frequency=max(1, steps // 30), scope=cfg.scope)
            self.fit(model, key, cfg.finetune_epochs, cfg.finetune_lr, callbacks=[pruner], finetune=True,
                     loss_fn=loss_fn)
            if loss_fn is not None:
                loss_fn.remove()
            return {"method": method, "sparsity_target": s, "seed": self.seed, **self._cost_and_measure(model)}
        extra = {}
        if method == "oneshot":
            layer = self.trained_dense()      # the per-layer variant, measured without fine-tuning only
            sparsify_(layer, MagnitudeConfig(sparsity=s))
            reestimate_batchnorm(layer, self.train, self.bundle)
            extra["no_ft_layer"] = _measure(layer, self.test, self.bundle)
        config = MagnitudeConfig(sparsity=s, scope=cfg.scope) if method == "oneshot" else \
            RandomFanInConfig(sparsity=s, seed=self.seed)
        sparsify_(model, config)
        raw = _measure(model, self.test, self.bundle)
        reestimate_batchnorm(model, self.train, self.bundle)
        before = {**_measure(model, self.test, self.bundle), "test_acc_stale_bn": raw["test_acc"]}
        self.fit(model, f"{key}-ft", cfg.finetune_epochs, cfg.finetune_lr, finetune=True)
        after = self._cost_and_measure(model)
        if self.ctx.is_main and method == "oneshot":
            atomic_torch_save(model.state_dict(), self.ctx.checkpoint_path(f"{key}-final"))
        return {"method": method, "sparsity_target": s, "seed": self.seed, "no_ft": before, **extra, **after}


@register_study("prune", PruneConfig, "prune a trained dense CNN-2: one-shot, gradual (Zhu & Gupta), random, RigL")
def prune(ctx: RunContext) -> dict:
    cfg: PruneConfig = ctx.config
    bundle = load(cfg.dataset)
    train, test = _subset(bundle.train, cfg.train_subset), _subset(bundle.test, cfg.test_subset)
    runs = []
    for seed in ctx.seeds:
        job = _Job(ctx, seed, bundle, train, test)
        runs.append(ctx.unit(f"dense-seed{seed}", job.dense))
        runs.append(ctx.unit(f"dense-ref-seed{seed}", job.dense_reference))
        for s in cfg.sparsities:
            for method in cfg.methods:
                runs.append(ctx.unit(f"{method}-{s}-seed{seed}", lambda m=method, s=s, job=job: job.pruned(m, s)))
    engine = ctx.unit("engine", lambda: measure_engine(ctx, bundle, test)) \
        if cfg.engine_speed and "oneshot" in cfg.methods else None
    results = {"dataset": bundle.name, "train_samples": len(train), "test_samples": len(test),
               "runs": runs, "summary": summarize(runs), "engine": engine}
    results["ledger"] = {str(s): build_ledger(runs, s).to_dict() for s in cfg.sparsities} \
        if "gradual" in cfg.methods else {}
    write_report(ctx, results)
    return results


def measure_engine(ctx: RunContext, bundle: DataBundle, test: Split) -> dict:
    """Compile each one-shot fine-tuned network of the first seed (if the engine takes it) and time it."""
    cfg: PruneConfig = ctx.config
    seed = ctx.seeds[0]
    job = _Job(ctx, seed, bundle, test, test)
    dense = job.trained_dense().eval()
    out = {}
    for s in cfg.sparsities:
        try:
            from frugalnet.engine import measure_speedup

            model = job.new_dense()
            sparsify_(model, MagnitudeConfig(sparsity=s))
            model.load_state_dict(load_checkpoint(ctx.checkpoint_path(f"oneshot-{s}-seed{seed}-final")))
            res = measure_speedup(model.eval(), bundle.normalize(test.x[:1]), batch_sizes=(1, 64), dense_model=dense,
                                  max_seconds=cfg.engine_seconds)
            out[str(s)] = {"batches": res["batches"]}
        except Exception as e:   # noqa: BLE001  (the engine is being rewritten: report, don't fail the study)
            out[str(s)] = {"error": f"{type(e).__name__}: {e}"}
    return out
