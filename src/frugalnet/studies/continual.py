"""Study `continual`: continual learning on a task stream, every strategy side by side in one run.

Each strategy learns the tasks one after another (joint training sees them all at once); after every task the
accuracy on every task learned so far is measured, giving the matrix R[i][j], from which average accuracy,
forgetting and backward transfer follow. Networks that read a context get it from the chosen provider (by default
prototypes, inferred per test sample, so no task label is used at test time). A checkpoint is written after every
task, so `frugalnet resume <run folder>` continues an interrupted run. The report (continual_report.py) ends with a
ledger: the samples the continual learner processed against joint retraining from scratch at each new task.

Embedded-data setting (the default, documented here because it differs from the paper): the 4,000 training
images of mnist-5k per task, hidden layers 512-512, k-WTA 10% on (k = 51 units, about the paper's 102 of 2,048 in
count), weight sparsity 0.5, one dendritic segment per task, Adam lr 1e-3 with eps 1e-3, batch 64 (about 190 steps
per task; with batch 256 the dendrites had too few steps to specialise), 3 epochs per task; SI c = 1 (better than 0.1
here), EWC lambda = 1000 (not tuned). All strategies share the optimizer settings. The k-WTA networks (kwta,
dendrites, dendrites-si) start from Numenta's k-WTA-aware init (layers fed by k-WTA scaled by 1/sqrt(0.1)) times 2.
Why these two: forgetting in the dendritic network was drift of the feed-forward weights that tasks share (after 10
tasks, putting back the first layer's post-task-0 feed-forward weights lifted task 0 from 0.80 to 0.88; putting back
the segments changed nothing), and Adam with eps = 1e-8 moves every weight with any gradient by about lr per step,
however small its gradient. Measured on 10 tasks, seed 0, dendrites alone: init x 2 with eps 1e-8, 1e-5, 1e-4, 1e-3,
3e-3, 1e-2 gave 0.864, 0.875, 0.881, 0.895, 0.889, 0.873; init x 1 with eps 1e-3 gave 0.862; the old setting
(kaiming fan-in init, eps 1e-8) 0.799.
`--paper` switches to the paper's permuted-MNIST setup on full MNIST (784-2048-2048-10, k-WTA 5%, weight sparsity
0.5, segments = tasks, Adam with torch's eps 1e-8, batch 256, learning rate and epochs from `PAPER_SCHEDULE`,
Numenta's k-WTA-aware init without the extra gain).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from frugalnet.continual.contexts import CONTEXTS, make_context
from frugalnet.continual.learner import TrainSetup, evaluate_task, make_adam, train_joint, train_task
from frugalnet.continual.metrics import empty_matrix, summarize
from frugalnet.continual.streams import STREAMS, make_stream
from frugalnet.continual.strategies import STRATEGIES, Hyper, get_strategy
from frugalnet.data import load
from frugalnet.data.core import Split
from frugalnet.nn.dendrites import GATINGS, INITS
from frugalnet.report.document import mean_sd
from frugalnet.experiment.registry import StudyConfig, register_study
from frugalnet.studies.continual_report import (  # noqa: F401  (re-exported)
    PAPER_ACCURACY, acceptance_checks, build_ledger, command_line, write_report)
from frugalnet.utils.io import atomic_torch_save, load_checkpoint
from frugalnet.utils.seeding import seed_everything

# The authors' permuted-MNIST schedule for active dendrites with prototype contexts, by number of tasks: (Adam learning
# rate, epochs per task), batch 256. Taken from the configs PROTOTYPE_2 ... PROTOTYPE_100 in the authors' code,
# numenta/nupic.research, projects/dendrites/permutedMNIST/experiments/prototype.py ("chosen based on a
# hyperparameter search that maximized final test accuracy across all tasks"); the same file gives 784-2048-2048-10,
# k-WTA 5%, weight sparsity 0.5, dense segments, one segment per task. Not checked against the paper's own table.
# The nearest listed task count is used.
PAPER_SCHEDULE = {2: (5e-4, 1), 5: (5e-4, 1), 10: (5e-4, 3), 25: (3e-4, 5), 50: (3e-4, 3), 100: (1e-4, 3)}
ALL_STRATEGIES = tuple(STRATEGIES)


@dataclass
class ContinualConfig(StudyConfig):
    tasks: int = 10                       # number of tasks in the stream
    stream: str = "permuted"              # permuted | split
    strategies: tuple[str, ...] = ALL_STRATEGIES
    context: str = "prototype"            # prototype | online-prototype | onehot
    dataset: str = "mnist-5k"             # mnist-5k (embedded) or mnist (full, from --data-dir)
    data_dir: str = ""                    # folder with the MNIST IDX files (for --dataset mnist or --paper)
    hidden: tuple[int, ...] = (512, 512)  # hidden layer widths
    epochs: int = 3                       # epochs per task
    lr: float = 1e-3                      # Adam learning rate
    adam_eps: float = 1e-3                # Adam epsilon (torch default 1e-8): steps of tiny-gradient weights shrink
    batch_size: int = 64                  # 4,000 samples per task: 64 gives ~190 Adam steps per task in 3 epochs
    kw_percent_on: float = 0.1            # k-WTA fraction on (kwta, dendrites)
    weight_sparsity: float = 0.5          # feed-forward weight sparsity (kwta, dendrites)
    dendrite_sparsity: float = 0.0
    num_segments: int = 0                 # dendritic segments per unit; 0 = one per task
    gating: str = "abs_max"               # abs_max | max | bias
    init: str = "kwta"                    # feed-forward init of kwta/dendrites: kwta (Numenta's) | fan_in
    init_gain: float = 2.0                # multiplies that init (larger weights: Adam's steps change them less)
    si_c: float = 1.0                     # SI strength
    ewc_lambda: float = 1000.0            # EWC strength
    xdg_gate_fraction: float = 0.8        # fraction of hidden units XdG switches off per context
    online_threshold: float = 4.0         # online prototypes: new task if distance^2 > threshold x noise
    train_per_task: int = 0               # use only this many training samples per task (0 = all)
    test_per_task: int = 0                # use only this many test samples per task (0 = all)
    eval_every: int = 1                   # measure a full row of R every N tasks (diagonal and last row always)
    paper: bool = False                   # the paper's setup on full MNIST (needs --data-dir)
    keep_optimizer: bool = False          # one Adam for all tasks (moments carry over) instead of a fresh one per task

    def validate(self) -> None:
        super().validate()
        for name in ("tasks", "epochs", "batch_size", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("train_per_task", "test_per_task", "num_segments"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = default), got {v!r}")
        if self.stream not in STREAMS:
            raise ValueError(f"stream must be one of {sorted(STREAMS)}, got {self.stream!r}")
        if self.stream == "split" and self.tasks > 10:
            raise ValueError(f"tasks must be in [1, 10] for the split stream (10 digits), got {self.tasks}")
        if not self.strategies:
            raise ValueError("strategies must name at least one strategy")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ValueError(f"strategies: unknown strategy {s!r}; choose from {list(STRATEGIES)}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies lists a strategy twice: {list(self.strategies)}")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {list(CONTEXTS)}, got {self.context!r}")
        if self.gating not in GATINGS:
            raise ValueError(f"gating must be one of {sorted(GATINGS)}, got {self.gating!r}")
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden must be one or more integers >= 1, got {self.hidden!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps must be > 0, got {self.adam_eps}")
        for name in ("kw_percent_on",):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        for name in ("weight_sparsity", "dendrite_sparsity", "xdg_gate_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {self.init!r}")
        if not self.init_gain > 0:
            raise ValueError(f"init_gain must be > 0, got {self.init_gain}")
        if self.si_c < 0 or self.ewc_lambda < 0:
            raise ValueError(f"si_c and ewc_lambda must be >= 0, got {self.si_c}, {self.ewc_lambda}")
        if not self.online_threshold > 1.0:
            raise ValueError(f"online_threshold must be > 1, got {self.online_threshold}")
        if self.paper and not self.data_dir:
            raise FileNotFoundError("--paper trains on full MNIST: pass --data-dir with the four MNIST IDX files")

    def datasets(self) -> tuple[str, ...]:
        return ("mnist",) if self.paper else (self.dataset,)


def paper_setup(cfg: ContinualConfig) -> ContinualConfig:
    """The config with the paper's settings applied (full MNIST, 2048-2048, k-WTA 5%, the paper's lr and epochs)."""
    nearest = min(PAPER_SCHEDULE, key=lambda n: abs(n - cfg.tasks))
    lr, epochs = PAPER_SCHEDULE[nearest]
    return dataclasses.replace(cfg, dataset="mnist", stream="permuted", hidden=(2048, 2048), kw_percent_on=0.05,
                               weight_sparsity=0.5, dendrite_sparsity=0.0, num_segments=cfg.tasks, batch_size=256,
                               lr=lr, epochs=epochs, adam_eps=1e-8, init="kwta", init_gain=1.0, context=cfg.context,
                               train_per_task=0, test_per_task=0)


def effective_config(cfg: ContinualConfig) -> ContinualConfig:
    return paper_setup(cfg) if cfg.paper else cfg


def _hyper(cfg: ContinualConfig, stream, seed: int) -> Hyper:
    dim_context = cfg.tasks if cfg.context == "onehot" else stream.input_dim
    return Hyper(input_size=stream.input_dim, output_size=stream.num_outputs, hidden_sizes=tuple(cfg.hidden),
                 max_tasks=cfg.tasks, dim_context=dim_context, num_segments=cfg.num_segments or cfg.tasks,
                 kw_percent_on=cfg.kw_percent_on, weight_sparsity=cfg.weight_sparsity,
                 dendrite_sparsity=cfg.dendrite_sparsity, gating=cfg.gating, init=cfg.init, init_gain=cfg.init_gain,
                 xdg_gate_fraction=cfg.xdg_gate_fraction, ewc_lambda=cfg.ewc_lambda, si_c=cfg.si_c, seed=seed)


def _cap(split: Split, n: int) -> Split:
    return split if n <= 0 or n >= len(split) else split.subset(slice(0, n))


@dataclass
class _Learner:
    """A strategy's trainable state: network, penalty, context provider (saved together after each task)."""

    net: nn.Module
    reg: nn.Module
    provider: nn.Module | None
    modules: nn.ModuleDict = field(init=False)

    def __post_init__(self) -> None:
        self.modules = nn.ModuleDict({"net": self.net, "reg": self.reg})
        if self.provider is not None:
            self.modules["provider"] = self.provider


def _run_sequential(ctx, cfg: ContinualConfig, stream, name: str, seed: int) -> dict:
    strategy = get_strategy(name)
    hyper = _hyper(cfg, stream, seed)
    seed_everything(seed)
    net = strategy.build_net(hyper)
    learner = _Learner(net, strategy.build_regularizer(net, hyper),
                       make_context(cfg.context, stream.input_dim, cfg.tasks, cfg.online_threshold)
                       if strategy.uses_context else None)
    setup = TrainSetup(cfg.epochs, cfg.batch_size, cfg.lr, cfg.adam_eps)
    n = cfg.tasks
    tests = [_cap(stream.test(j), cfg.test_per_task) for j in range(n)]
    rows: list[dict] = []
    optimizer = make_adam(learner.net, cfg.lr, cfg.adam_eps) if cfg.keep_optimizer else None
    state_after = -1                     # the learner's weights are those after this task (-1: fresh)
    for t in range(n):
        key = f"s{seed}-{name}-task{t:03d}"
        if ctx.unit_path(key).is_file():
            rows.append(ctx.unit(key, dict))
            continue
        if state_after != t - 1:         # resuming: load the state saved after the previous task
            ckpt = load_checkpoint(ctx.checkpoint_path(f"s{seed}-{name}-after{t - 1:03d}"))
            learner.modules.load_state_dict(ckpt["modules"])
            if optimizer is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
            state_after = t - 1

        def one_task(t: int = t) -> dict:
            t0 = time.perf_counter()
            fit = train_task(learner.net, learner.reg, learner.provider, _cap(stream.train(t), cfg.train_per_task),
                             t, setup, seed=seed, desc=f"{name} task {t + 1}/{n}", optimizer=optimizer)
            train_s = time.perf_counter() - t0
            full = (t + 1) % cfg.eval_every == 0 or t == n - 1
            measured = range(t + 1) if full else [t]
            evals = {j: evaluate_task(learner.net, learner.provider, tests[j], j) for j in measured}
            path = ctx.checkpoint_path(f"s{seed}-{name}-after{t:03d}")
            if ctx.is_main:
                atomic_torch_save({"modules": learner.modules.state_dict(), "task": t,
                                   "optimizer": optimizer.state_dict() if optimizer is not None else None}, path)
                old = ctx.checkpoint_path(f"s{seed}-{name}-after{t - 2:03d}")
                if t >= 2 and old.is_file():
                    old.unlink()
            row = [evals[j]["acc"] if j in evals else None for j in range(n)]
            context_acc = [evals[j]["context_acc"] if j in evals else None for j in range(n)]
            record = {"task": t, "row": row, "context_acc": context_acc, "train_seconds": train_s,
                      "eval_seconds": time.perf_counter() - t0 - train_s, "loss": fit["loss"],
                      "samples": fit["samples"], "train_size": len(_cap(stream.train(t), cfg.train_per_task))}
            ctx.log(unit=key, strategy=name, seed=seed, task=t, loss=fit["loss"], train_seconds=train_s,
                    acc_this_task=row[t])
            return record

        rows.append(ctx.unit(key, one_task))
        state_after = t
    matrix = [r["row"] for r in rows]
    last_ctx = rows[-1]["context_acc"]
    ctx_vals = [v for v in last_ctx if v is not None]
    return {"R": matrix, **summarize(matrix),
            "context_acc": (sum(ctx_vals) / len(ctx_vals)) if ctx_vals and strategy.uses_context else None,
            "train_seconds": sum(r["train_seconds"] for r in rows),
            "eval_seconds": sum(r["eval_seconds"] for r in rows),
            "samples": _total(r.get("samples") for r in rows),
            "task_sizes": [r.get("train_size") for r in rows]}


def _total(values) -> int | None:
    """Sum of counts, or None when any is missing (units saved by an older version did not count them)."""
    vals = list(values)
    return None if any(v is None for v in vals) else int(sum(vals))


def _run_joint(ctx, cfg: ContinualConfig, stream, name: str, seed: int) -> dict:
    strategy = get_strategy(name)
    hyper = _hyper(cfg, stream, seed)

    def once() -> dict:
        seed_everything(seed)
        net = strategy.build_net(hyper)
        t0 = time.perf_counter()
        view = _CappedStream(stream, cfg.train_per_task) if cfg.train_per_task else stream
        fit = train_joint(net, view, TrainSetup(cfg.epochs, cfg.batch_size, cfg.lr, cfg.adam_eps),
                          seed=seed, desc=name)
        train_s = time.perf_counter() - t0
        accs = [evaluate_task(net, None, _cap(stream.test(j), cfg.test_per_task), j)["acc"] for j in range(cfg.tasks)]
        if ctx.is_main:
            atomic_torch_save({"modules": net.state_dict()}, ctx.checkpoint_path(f"s{seed}-{name}-final"))
        ctx.log(unit=f"s{seed}-{name}", strategy=name, seed=seed, loss=fit["loss"], train_seconds=train_s)
        return {"final": accs, "train_seconds": train_s, "eval_seconds": time.perf_counter() - t0 - train_s,
                "samples": fit["samples"], "task_sizes": view.train_sizes()}

    out = ctx.unit(f"s{seed}-{name}", once)
    final = out["final"]
    return {"R": None, "final": final, "average_accuracy": sum(final) / len(final), "forgetting": None,
            "backward_transfer": None, "curve": None, "context_acc": None, "train_seconds": out["train_seconds"],
            "eval_seconds": out["eval_seconds"], "samples": out.get("samples"), "task_sizes": out.get("task_sizes")}


class _CappedStream:
    """A stream view that keeps only the first n training samples of every task (for quick runs)."""

    def __init__(self, stream, n: int) -> None:
        self.stream, self.n = stream, n

    def train_sizes(self) -> list[int]:
        return [min(self.n, s) for s in self.stream.train_sizes()]

    def train_batch(self, tasks, index):
        return self.stream.train_batch(tasks, index)


def _mean_matrix(ms: list[list[list[float | None]]]) -> list[list[float | None]]:
    n = len(ms[0])
    out = empty_matrix(n)
    for i in range(n):
        for j in range(n):
            vals = [m[i][j] for m in ms if m[i][j] is not None]
            out[i][j] = sum(vals) / len(vals) if vals else None
    return out


def _aggregate(per_seed: list[dict]) -> dict:
    acc_m, acc_sd = mean_sd([r["average_accuracy"] for r in per_seed])
    out = {"average_accuracy": acc_m, "average_accuracy_sd": acc_sd,
           "per_seed_accuracy": [r["average_accuracy"] for r in per_seed],
           "train_seconds": sum(r["train_seconds"] for r in per_seed),
           "eval_seconds": sum(r["eval_seconds"] for r in per_seed),
           "train_seconds_per_seed": [r["train_seconds"] for r in per_seed],
           "samples": per_seed[0].get("samples"), "task_sizes": per_seed[0].get("task_sizes")}
    if per_seed[0]["R"] is not None:
        r = _mean_matrix([p["R"] for p in per_seed])
        s = summarize(r)
        out.update(R=r, forgetting=s["forgetting"], backward_transfer=s["backward_transfer"], curve=s["curve"])
    else:
        out.update(R=None, forgetting=None, backward_transfer=None, curve=None,
                   final=[sum(v) / len(v) for v in zip(*[p["final"] for p in per_seed])])
    ctx_vals = [p["context_acc"] for p in per_seed if p["context_acc"] is not None]
    out["context_acc"] = sum(ctx_vals) / len(ctx_vals) if ctx_vals else None
    return out


@register_study("continual", ContinualConfig, "continual learning: active dendrites vs fine-tuning, EWC, SI, XdG, "
                                               "k-WTA and joint training on permuted/split MNIST")
def continual(ctx) -> dict:
    cfg = effective_config(ctx.config)
    bundle = load(cfg.dataset, cfg.data_dir or None)
    stream = make_stream(cfg.stream, bundle, cfg.tasks, seed=cfg.seed)
    per_strategy: dict[str, list[dict]] = {name: [] for name in cfg.strategies}
    for seed in ctx.seeds:
        for name in cfg.strategies:
            run = _run_joint if get_strategy(name).joint else _run_sequential
            per_strategy[name].append(run(ctx, cfg, stream, name, seed))
    results = {name: _aggregate(runs) for name, runs in per_strategy.items()}
    checks = acceptance_checks(results)
    ledger = build_ledger(results, cfg.tasks, cfg.epochs)
    write_report(ctx, ctx.config, cfg, stream, results, checks, ledger)
    return {"strategies": results, "checks": checks, "effective_config": dataclasses.asdict(cfg),
            "command": command_line(ctx.config),
            "ledger": ledger.to_dict() if ledger else None, "ledger_table": ledger.format_table() if ledger else None}
