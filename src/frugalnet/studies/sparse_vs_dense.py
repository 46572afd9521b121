"""Study `sparse-vs-dense`: dense CNN-2 against sparse CNN-2 (Ahmad & Scheinkman 2019) with the same data and budget.

For every seed both networks are trained with the same data order, optimizer and epochs, then measured on the clean
test set and on the paper's noise (a fraction of pixels set to mean + 2 std, 0 to 0.5 in steps of 0.05; the same
noisy images for both). The report gives accuracy, the accuracy-vs-noise curve and the noise score (correct answers
summed over the noise levels), parameters and nonzero weights, measured activation sparsity per layer, MACs, training
time, mean and sd over seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from frugalnet.data import add_pixel_noise, load
from frugalnet.data.core import DataBundle, Split
from frugalnet.energy import Ledger, model_cost
from frugalnet.models import dense_cnn2, sparse_cnn2
from frugalnet.nn.kwinners import KWinners, KWinners2d
from frugalnet.report.document import mean_sd
from frugalnet.experiment.registry import StudyConfig, register_study
from frugalnet.experiment.runner import RunContext
from frugalnet.experiment.training import FitConfig, evaluate, fit, predict
from frugalnet.utils.io import atomic_torch_save, load_checkpoint

MODELS = ("dense", "sparse")
NOISE_LEVELS = tuple(round(0.05 * i, 2) for i in range(11))


@dataclass
class SparseVsDenseConfig(StudyConfig):
    dataset: str = field(default="mnist-5k", metadata={"help": "data set (frugalnet list); local ones need --data-dir"})
    data_dir: str = field(default="", metadata={"help": "folder holding a local copy of the data set"})
    epochs: int = field(default=8, metadata={"help": "training epochs for each network"})
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    lr_gamma: float = field(default=0.85, metadata={"help": "per-epoch learning-rate decay"})
    train_subset: int = field(default=0, metadata={"help": "use only the first N training samples (0: all)"})
    test_subset: int = field(default=0, metadata={"help": "use only the first N test samples (0: all)"})
    noise_levels: tuple = NOISE_LEVELS
    hidden: int = 700
    channels: tuple = (32, 64)
    engine_speedup: bool = field(default=True, metadata={"help": "measure the compiled inference engine's speedup"})
    engine_seconds: float = field(default=10.0, metadata={"help": "time budget per batch size for the engine timing"})

    def validate(self) -> None:
        super().validate()
        for name in ("epochs", "batch_size", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 means all), got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.engine_seconds > 0:
            raise ValueError(f"engine_seconds must be > 0, got {self.engine_seconds}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if any(not 0 <= float(v) <= 1 for v in self.noise_levels):
            raise ValueError(f"noise_levels must lie in [0, 1], got {self.noise_levels}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"channels must be two positive integers, got {self.channels}")


def demo_config(tiny: bool = False, seeds: int = 3, runs_dir: str = "runs", quiet: bool = False) -> SparseVsDenseConfig:
    """The `frugalnet demo` setting: the full embedded MNIST set, a few minutes on 2 cores; `tiny` is a smoke run."""
    if tiny:
        return SparseVsDenseConfig(name="demo-tiny", seeds=1, epochs=1, train_subset=512, test_subset=200,
                                   runs_dir=runs_dir, quiet=quiet, noise_levels=(0.0, 0.25, 0.5), engine_seconds=0.5)
    return SparseVsDenseConfig(name="demo", seeds=seeds, runs_dir=runs_dir, quiet=quiet)


def build_model(kind: str, bundle: DataBundle, cfg: SparseVsDenseConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "dense":
        return dense_cnn2(bundle.input_shape, bundle.num_classes, channels=cfg.channels, hidden=cfg.hidden)
    return sparse_cnn2(bundle.input_shape, bundle.num_classes, channels=cfg.channels, hidden=cfg.hidden,
                       seed=seed * 1000)


@torch.no_grad()
def activation_sparsity(model: nn.Module, x: torch.Tensor, transform: Callable) -> dict[str, float]:
    """Fraction of zero outputs of every activation layer (ReLU or k-WTA), measured on x in eval mode."""
    zeros: dict[str, list[float]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.ReLU, KWinners, KWinners2d)):
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: zeros.setdefault(name, []).append(float((o == 0).float().mean()))))
    try:
        predict(model, x, transform=transform)
    finally:
        for h in handles:
            h.remove()
    return {name: sum(v) / len(v) for name, v in zeros.items()}


def weight_counts(model: nn.Module) -> dict[str, int]:
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {"parameters": params, "nonzero_weights": nonzero}


def noise_curve(model: nn.Module, test: Split, bundle: DataBundle, levels, seed: int) -> list[dict]:
    """Accuracy at each noise level; the noisy images depend only on (seed, level), so every model sees the same."""
    value = bundle.mean + 2 * bundle.std
    rows = []
    for i, level in enumerate(levels):
        gen = torch.Generator().manual_seed(seed * 7919 + i)
        noisy = Split(add_pixel_noise(test.x, level, value, gen), test.y)
        out = predict(model, noisy.x, transform=bundle.normalize)
        correct = int((out.argmax(1) == noisy.y).sum())
        rows.append({"noise": float(level), "accuracy": correct / len(noisy), "correct": correct})
    return rows


def _subset(split: Split, n: int) -> Split:
    return split if n <= 0 or n >= len(split) else split.subset(slice(0, n))


def train_and_measure(ctx: RunContext, kind: str, seed: int, bundle: DataBundle, train: Split, test: Split) -> dict:
    cfg: SparseVsDenseConfig = ctx.config
    model = build_model(kind, bundle, cfg, seed)

    def on_epoch_end(epoch: int, m: nn.Module) -> dict:  # the learning curve, for the ledger's data factor
        return {"test_acc": evaluate(m, test, transform=bundle.normalize, device=ctx.device)}

    fit_cfg = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                        lr_gamma=cfg.lr_gamma)
    key = f"{kind}-seed{seed}"
    with ctx.meter(f"train-{key}") as meter:   # summed over the parts of a resumed run
        trained = fit(model, train, fit_cfg, seed=seed, transform=bundle.normalize,
                      checkpoint=ctx.checkpoint_path(key), log=ctx.log, desc=key, on_epoch_end=on_epoch_end,
                      device=ctx.device)
    model.cpu().eval()
    batch = min(cfg.batch_size, len(train))   # one real training step, to model its cost per layer
    cost = model_cost(model, bundle.normalize(train.x[:batch]), training=True, target=train.y[:batch])
    noise = noise_curve(model, test, bundle, cfg.noise_levels, seed=cfg.seed)
    result = {
        "model": kind, "seed": seed,
        "test_acc": evaluate(model, test, transform=bundle.normalize),
        "noise": noise, "noise_score": sum(r["correct"] for r in noise),
        "train_seconds": trained["train_seconds"], "history": trained["history"],
        "activation_sparsity": activation_sparsity(model, test.x[:500], bundle.normalize),
        **weight_counts(model),
        "train_energy": meter.result.to_dict(), "cost_per_step": cost.to_dict(),
    }
    if ctx.is_main:
        atomic_torch_save(model.state_dict(), ctx.checkpoint_path(f"{key}-final"))
    return result


@register_study("sparse-vs-dense", SparseVsDenseConfig,
                "dense vs sparse CNN-2: accuracy, noise robustness, sparsity, MACs (Ahmad & Scheinkman 2019)")
def sparse_vs_dense(ctx: RunContext) -> dict:
    cfg: SparseVsDenseConfig = ctx.config
    bundle = load(cfg.dataset, cfg.data_dir or None)
    train, test = _subset(bundle.train, cfg.train_subset), _subset(bundle.test, cfg.test_subset)
    runs = [ctx.unit(f"{kind}-seed{seed}", lambda kind=kind, seed=seed: train_and_measure(
        ctx, kind, seed, bundle, train, test)) for seed in ctx.seeds for kind in MODELS]
    summary = summarize(runs)
    engine = ctx.unit("engine-speedup", lambda: measure_engine(ctx, bundle, test)) if cfg.engine_speedup else None
    ledger = build_ledger(runs, engine)
    results = {"dataset": bundle.name, "train_samples": len(train), "test_samples": len(test), "runs": runs,
               "summary": summary, "engine": engine, "ledger": ledger.to_dict(),
               "ledger_table": ledger.format_table()}
    write_report(ctx, results)
    ctx.report.heading("Savings ledger: sparse against dense FP32")
    ledger.add_to_report(ctx.report, "sparse-vs-dense")
    return results


def measure_engine(ctx: RunContext, bundle: DataBundle, test: Split) -> dict:
    """Compile the trained sparse network (first seed) and time it against PyTorch running the trained dense one."""
    from frugalnet.engine import measure_speedup

    cfg: SparseVsDenseConfig = ctx.config
    seed = ctx.seeds[0]
    models = {}
    for kind in MODELS:
        model = build_model(kind, bundle, cfg, seed)
        model.load_state_dict(load_checkpoint(ctx.checkpoint_path(f"{kind}-seed{seed}-final")))
        models[kind] = model.eval()
    example = bundle.normalize(test.x[:1])
    return measure_speedup(models["sparse"], example, batch_sizes=(1, 64), dense_model=models["dense"],
                           max_seconds=cfg.engine_seconds)


def _mean_curve(runs: list[dict]) -> list[tuple[float, float]]:
    """(samples seen, test accuracy) per epoch, averaged over seeds."""
    epochs = min(len(r["history"]) for r in runs)
    return [(runs[0]["history"][e]["samples"], mean_sd([r["history"][e]["test_acc"] for r in runs])[0])
            for e in range(epochs)]


def build_ledger(runs: list[dict], engine: dict | None = None) -> Ledger:
    """Sparse against its dense FP32 baseline: compute and precision modelled, data, epochs and speed measured."""
    dense = [r for r in runs if r["model"] == "dense"]
    sparse = [r for r in runs if r["model"] == "sparse"]
    ledger = Ledger("dense fp32", "sparse")
    ledger.add_compute(dense[0]["cost_per_step"], sparse[0]["cost_per_step"])
    ledger.add_precision(dense[0]["cost_per_step"], sparse[0]["cost_per_step"])
    dense_curve, sparse_curve = _mean_curve(dense), _mean_curve(sparse)
    ledger.add_data_from_curves(dense_curve, sparse_curve)
    ledger.add_epochs_from_curves([a for _, a in dense_curve], [a for _, a in sparse_curve])
    if engine is not None:
        for bs, entry in engine["batches"].items():
            ledger.add(f"inference speed, batch {bs}", entry["torch_dense_model_s"], entry["engine_s"],
                       kind="measured", unit="s", in_product=False,
                       note=f"trained dense CNN-2 in PyTorch vs compiled sparse engine; outputs match "
                            f"PyTorch: {entry['outputs_match']}; realises the compute factor, so not multiplied")
    energy = [mean_sd([r["train_energy"]["energy_j"] for r in rs])[0] for rs in (dense, sparse)]
    estimated = any(r["train_energy"]["estimated"] for r in runs)
    ledger.add("metered training energy", energy[0], energy[1], kind="estimated" if estimated else "measured",
               unit="J", in_product=False,
               note="each training run metered; PyTorch trains masked layers as dense GEMMs, so this follows wall time, not MACs")
    return ledger


def summarize(runs: list[dict]) -> dict:
    out = {}
    for kind in MODELS:
        rs = [r for r in runs if r["model"] == kind]
        if not rs:
            continue
        acc = mean_sd([r["test_acc"] for r in rs])
        score = mean_sd([r["noise_score"] for r in rs])
        secs = mean_sd([r["train_seconds"] for r in rs])
        levels = [row["noise"] for row in rs[0]["noise"]]
        curve = [mean_sd([r["noise"][i]["accuracy"] for r in rs]) for i in range(len(levels))]
        layers = list(rs[0]["activation_sparsity"])
        act = {name: mean_sd([r["activation_sparsity"][name] for r in rs])[0] for name in layers}
        out[kind] = {"test_acc_mean": acc[0], "test_acc_sd": acc[1], "noise_score_mean": score[0],
                     "noise_score_sd": score[1], "train_seconds_mean": secs[0], "noise_levels": levels,
                     "noise_acc_mean": [c[0] for c in curve], "noise_acc_sd": [c[1] for c in curve],
                     "parameters": rs[0]["parameters"], "nonzero_weights": rs[0]["nonzero_weights"],
                     "activation_sparsity": act, "seeds": len(rs)}
    if "dense" in out and "sparse" in out:
        out["accuracy_gap_points"] = 100 * (out["sparse"]["test_acc_mean"] - out["dense"]["test_acc_mean"])
        out["noise_score_ratio"] = out["sparse"]["noise_score_mean"] / max(out["dense"]["noise_score_mean"], 1e-9)
    return out


def write_report(ctx: RunContext, results: dict) -> None:
    import matplotlib.pyplot as plt

    s = results["summary"]
    rep = ctx.report
    rep.text(f"Data: {results['dataset']} ({results['train_samples']} train, {results['test_samples']} test); "
             f"{ctx.config.epochs} epochs, batch {ctx.config.batch_size}, seeds {ctx.seeds}. "
             "Values are mean ± sd over seeds.")
    rep.heading("Accuracy and noise robustness")
    rows = []
    for kind in MODELS:
        if kind in s:
            k = s[kind]
            rows.append([kind, f"{100 * k['test_acc_mean']:.2f} ± {100 * k['test_acc_sd']:.2f}",
                         f"{k['noise_score_mean']:.0f} ± {k['noise_score_sd']:.0f}", k["parameters"],
                         k["nonzero_weights"], f"{k['train_seconds_mean']:.1f}"])
    rep.table(["model", "test accuracy %", "noise score", "parameters", "nonzero weights", "train s"], rows,
              "noise score: correct test answers summed over all noise levels")
    if "accuracy_gap_points" in s:
        rep.text(f"Sparse minus dense accuracy: {s['accuracy_gap_points']:+.2f} points; noise score ratio "
                 f"sparse/dense: {s['noise_score_ratio']:.3f}.")

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in MODELS:
        if kind in s:
            lv, m, sd = s[kind]["noise_levels"], s[kind]["noise_acc_mean"], s[kind]["noise_acc_sd"]
            ax.plot(lv, [100 * v for v in m], marker="o", label=kind)
            ax.fill_between(lv, [100 * (a - b) for a, b in zip(m, sd)], [100 * (a + b) for a, b in zip(m, sd)],
                            alpha=0.2)
    ax.set_xlabel("fraction of pixels set to mean + 2 sd")
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend()
    rep.figure(fig, "accuracy_vs_noise", "Accuracy vs noise (mean ± sd over seeds)")

    if results.get("engine"):
        rep.heading("Compiled inference engine (trained sparse network, first seed)")
        rows = [[bs, 1e3 * e["torch_dense_model_s"], 1e3 * e["torch_s"], 1e3 * e["engine_s"],
                 f"{e['speedup_vs_dense_model']:.2f}x", e["outputs_match"]]
                for bs, e in results["engine"]["batches"].items()]
        rep.table(["batch", "dense PyTorch ms", "sparse PyTorch ms", "sparse engine ms", "speedup vs dense",
                   "outputs match"], rows, "medians of interleaved repeats, measured in this run")

    rep.heading("Measured activation sparsity (eval mode)")
    layer_names = sorted({n for kind in MODELS if kind in s for n in s[kind]["activation_sparsity"]})
    rep.table(["layer"] + [k for k in MODELS if k in s],
              [[n] + [f"{100 * s[k]['activation_sparsity'].get(n, float('nan')):.1f}%" for k in MODELS if k in s]
               for n in layer_names], "fraction of zero outputs of each activation layer on test inputs")


def print_headline(results: dict) -> None:
    """The demo's verdict in a few lines: the measured figures next to the targets of the foundation issue."""
    s = results["summary"]
    if "dense" not in s or "sparse" not in s:
        return
    d, sp = s["dense"], s["sparse"]
    gap = s["accuracy_gap_points"]
    print(f"\n{'':8s}{'test acc %':>16s}{'noise score':>16s}{'nonzero weights':>18s}")
    for kind, k in (("dense", d), ("sparse", sp)):
        print(f"{kind:8s}{100 * k['test_acc_mean']:>9.2f} ± {100 * k['test_acc_sd']:<4.2f}"
              f"{k['noise_score_mean']:>11.0f} ± {k['noise_score_sd']:<4.0f}{k['nonzero_weights']:>16,d}")
    if "ledger_table" in results:
        print("\n" + results["ledger_table"])
    print(f"accuracy gap {gap:+.2f} points (target: within 1.5): {'met' if abs(gap) <= 1.5 else 'NOT met'}; "
          f"noise score sparse/dense {s['noise_score_ratio']:.3f} (target: > 1): "
          f"{'met' if s['noise_score_ratio'] > 1 else 'NOT met'}  [{d['seeds']} seed(s)]")
