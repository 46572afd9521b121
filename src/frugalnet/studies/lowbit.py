"""Study `lowbit`: the same models trained in FP32 and with simulated 4-bit recipes (ibm4, mxfp4, nvfp4), same data,
same budget, same seeds. ibm4-nearest (ibm4 with round-to-nearest radix-4 gradients, see lowbit.recipes) runs beside
them so the effect of the gradient rounding mode is measured, not asserted.

Tasks: "mnist" (CNN-2 on the embedded MNIST digits, test accuracy), "cifar10" (a small ResNet, run when --data-dir
holds CIFAR-10), "charlm" (a character-level Transformer on CPython's bundled reference docs, pydoc_data.topics,
validation loss in nats per character). The report gives the loss curves, the final metrics (mean and sd over
seeds), the measured step-time ratio of each recipe against plain FP32 (MNIST CNN, interleaved, medians), the size of
a packed checkpoint against FP32 with a bit-exactness check, and each recipe's modelled training-step energy from
frugalnet.energy's cost model.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from frugalnet.data import load
from frugalnet.data.core import DataBundle
from frugalnet.bench.step_time import step_time_ratios
from frugalnet.lowbit.convert import quantize_, quantized_layers
from frugalnet.models.small import CharTransformer, SmallResNet, char_corpus
from frugalnet.lowbit.packing import fp32_checkpoint_bytes, load_packed, save_packed
from frugalnet.lowbit.recipes import RECIPES, get_recipe
from frugalnet.models import dense_cnn2
from frugalnet.report.document import mean_sd
from frugalnet.experiment.registry import StudyConfig, register_study
from frugalnet.experiment.runner import RunContext
from frugalnet.experiment.training import FitConfig, evaluate, fit
from frugalnet.studies.lowbit_report import build_ledger, write_report
from frugalnet.utils.seeding import make_generator

TASKS = ("mnist", "cifar10", "charlm")


@dataclass
class LowbitConfig(StudyConfig):
    seeds: int = 3
    tasks: tuple = field(default=TASKS, metadata={"help": f"tasks to run, from {TASKS}"})
    recipes: tuple = field(default=("fp32", "ibm4", "ibm4-nearest", "mxfp4", "nvfp4"),
                           metadata={"help": f"recipes to compare, from {tuple(RECIPES)}"})
    data_dir: str = field(default="", metadata={"help": "folder with a local CIFAR-10 copy (cifar10 task)"})
    epochs: int = field(default=4, metadata={"help": "epochs for the image tasks"})
    batch_size: int = 128
    lr: float = 0.05
    lr_gamma: float = 0.7
    channels: tuple = (16, 32)
    hidden: int = 128
    train_subset: int = field(default=0, metadata={"help": "use only the first N training images (0: all)"})
    cifar_epochs: int = 10
    lm_steps: int = field(default=400, metadata={"help": "training steps of the character Transformer"})
    lm_seeds: int = field(default=1, metadata={"help": "seeds for the character Transformer (the first lm_seeds)"})
    lm_batch: int = 32
    lm_context: int = 64
    lm_width: int = 64
    lm_layers: int = 2
    lm_lr: float = 3e-3
    lm_eval_every: int = 50
    lm_eval_batches: int = 8
    timing_repeats: int = field(default=7, metadata={"help": "interleaved rounds for the step-time ratio (0: skip)"})

    def validate(self) -> None:
        super().validate()
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        bad = [r for r in self.recipes if r not in RECIPES]
        if bad or not self.recipes:
            raise ValueError(f"recipes must be a non-empty subset of {tuple(RECIPES)}, got {self.recipes}")
        for name in ("epochs", "batch_size", "hidden", "cifar_epochs", "lm_steps", "lm_batch", "lm_context",
                     "lm_width", "lm_layers", "lm_eval_every", "lm_eval_batches", "lm_seeds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("train_subset", "timing_repeats"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "lm_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"channels must be two positive integers, got {self.channels}")
        if self.lm_width % 4:
            raise ValueError(f"lm_width must be a multiple of 4 (4 heads), got {self.lm_width}")

    def datasets(self) -> tuple[str, ...]:
        """cifar10 needs --data-dir when asked for; the default task list skips it (with a note) without one."""
        asked = "cifar10" in self.tasks and (self.data_dir or tuple(self.tasks) != TASKS)
        return ("cifar10",) if asked else ()


def _convert(model: torch.nn.Module, recipe: str) -> torch.nn.Module:
    """FP32 is the plain model; every other recipe converts it in place."""
    return model if recipe == "fp32" else quantize_(model, get_recipe(recipe))


# --- image tasks -------------------------------------------------------------------------------------------------
def _mnist_model(bundle: DataBundle, cfg: LowbitConfig) -> torch.nn.Module:
    """CNN-2 without batch norm: every GEMM is a quantized layer, and a 2-process run stays equal to a 1-process one
    (with batch norm, float-rounding differences in the all-reduced statistics move radix-4 gradients across bins)."""
    return dense_cnn2(bundle.input_shape, bundle.num_classes, channels=cfg.channels, hidden=cfg.hidden,
                      batch_norm=False)


def _image_unit(ctx: RunContext, task: str, bundle: DataBundle, build, recipe: str, seed: int, epochs: int) -> dict:
    cfg: LowbitConfig = ctx.config
    key = f"{task}-{recipe}-s{seed}"
    torch.manual_seed(seed)
    model = _convert(build(), recipe)
    train = bundle.train if not cfg.train_subset else bundle.train.subset(slice(0, cfg.train_subset))

    def on_epoch_end(epoch: int, m: torch.nn.Module) -> dict:   # kept in the checkpointed history: survives resume
        return {"test_acc": evaluate(m, bundle.test, transform=bundle.normalize, device=ctx.device)}

    fit_cfg = FitConfig(epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, momentum=0.9, lr_gamma=cfg.lr_gamma)
    out = fit(model, train, fit_cfg, seed=seed, transform=bundle.normalize, checkpoint=ctx.checkpoint_path(key),
              log=ctx.log, desc=key, on_epoch_end=on_epoch_end, device=ctx.device)
    acc = evaluate(model, bundle.test, transform=bundle.normalize, device=ctx.device)
    return {"task": task, "recipe": recipe, "seed": seed, "test_acc": acc, "train_size": len(train),
            "train_loss": [h["train_loss"] for h in out["history"]], "test_acc_curve": [h["test_acc"] for h in out["history"]],
            "train_seconds": out["train_seconds"]}


# --- character LM ------------------------------------------------------------------------------------------------
def _lm_data(context: int) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    text, source = char_corpus()
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], vocab, source


def _lm_batch(ids: torch.Tensor, batch: int, context: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(ids) - context - 1, (batch,), generator=gen)
    offsets = torch.arange(context)
    x = ids[starts[:, None] + offsets]
    return x, ids[starts[:, None] + offsets + 1]


@torch.no_grad()
def _lm_val_loss(model, val: torch.Tensor, cfg: LowbitConfig) -> float:
    model.eval()
    gen = make_generator(12345)                         # the same validation windows for every recipe and seed
    losses = []
    for _ in range(cfg.lm_eval_batches):
        x, y = _lm_batch(val, cfg.lm_batch, cfg.lm_context, gen)
        losses.append(float(F.cross_entropy(model(x).flatten(0, 1), y.flatten())))
    model.train()
    return sum(losses) / len(losses)


def _lm_unit(ctx: RunContext, recipe: str, seed: int) -> dict:
    """nanoGPT-style loop: AdamW, linear warm-up then cosine decay, gradient clipping at 1."""
    cfg: LowbitConfig = ctx.config
    train, val, vocab, source = _lm_data(cfg.lm_context)
    torch.manual_seed(seed)
    model = _convert(CharTransformer(len(vocab), cfg.lm_context, cfg.lm_width, cfg.lm_layers), recipe)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=cfg.lm_lr, betas=(0.9, 0.95))
    warmup = max(1, cfg.lm_steps // 20)
    gen = make_generator(seed)
    curve, train_curve = [], []
    t0 = time.perf_counter()
    for step in ctx.progress(range(cfg.lm_steps), desc=f"charlm-{recipe}-s{seed}"):
        lr = cfg.lm_lr * (step + 1) / warmup if step < warmup else \
            cfg.lm_lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, cfg.lm_steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = _lm_batch(train, cfg.lm_batch, cfg.lm_context, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_curve.append(float(loss.detach()))
        if (step + 1) % cfg.lm_eval_every == 0 or step + 1 == cfg.lm_steps:
            curve.append((step + 1, _lm_val_loss(model, val, cfg)))
            ctx.log(unit=f"charlm-{recipe}-s{seed}", step=step + 1, val_loss=curve[-1][1])
    return {"task": "charlm", "recipe": recipe, "seed": seed, "val_loss": curve[-1][1], "val_curve": curve,
            "train_loss": train_curve, "train_seconds": time.perf_counter() - t0, "corpus": source,
            "vocab": len(vocab), "train_chars": len(train), "val_chars": len(val)}


# --- measurements -------------------------------------------------------------------------------------------------
def _timing_unit(cfg: LowbitConfig, bundle: DataBundle) -> dict:
    gen = make_generator(0)
    idx = torch.randperm(len(bundle.train), generator=gen)[:cfg.batch_size]
    x, y = bundle.normalize(bundle.train.x[idx]), bundle.train.y[idx]
    torch.manual_seed(0)
    return step_time_ratios(lambda: _mnist_model(bundle, cfg), x, y, cfg.recipes, repeats=cfg.timing_repeats)


def _packing_unit(cfg: LowbitConfig, bundle: DataBundle) -> dict:
    """Packed vs FP32 checkpoint of the study's CNN and of the full-size CNN-2 (32, 64 channels, 700 hidden units),
    at initialisation: uniform (Kaiming) weights are the hard case for the LZMA stage (trained weights concentrate
    near zero and compress further), and small models are dominated by their 8-bit first/last layers. Also given:
    the plain (uncompressed) packed size and the ratio against an FP32 checkpoint compressed the same way."""
    out = {}
    x = bundle.normalize(bundle.train.x[:64])
    builds = {"study CNN": lambda: _mnist_model(bundle, cfg),
              "CNN-2 (32, 64, 700)": lambda: dense_cnn2(bundle.input_shape, bundle.num_classes,
                                                           batch_norm=False)}
    for (label, build), recipe in ((b, r) for b in builds.items() for r in cfg.recipes):
        if recipe == "fp32":
            continue
        torch.manual_seed(0)
        model = build()
        reference = fp32_checkpoint_bytes(model)
        reference_xz = fp32_checkpoint_bytes(model, compress=True)
        quantize_(model, get_recipe(recipe))
        model(x)                                                  # sets PACT clips as training would
        with tempfile.TemporaryDirectory() as tmp:
            size = save_packed(model, Path(tmp) / "model.fnp")
            plain = save_packed(model, Path(tmp) / "plain.fnp", compress=False)
            state = load_packed(Path(tmp) / "model.fnp")
        exact = all(torch.equal(state[f"{n}.weight"].view(torch.int32), layer.quantized_weight().view(torch.int32))
                    for n, layer in quantized_layers(model))
        out[f"{recipe} / {label}"] = {"recipe": recipe, "model": label, "packed_bytes": size,
                                      "plain_packed_bytes": plain, "fp32_bytes": reference,
                                      "ratio": reference / size, "plain_ratio": reference / plain,
                                      "ratio_vs_compressed_fp32": reference_xz / size, "bit_exact": exact}
    return out


def _energy_unit(cfg: LowbitConfig, bundle: DataBundle) -> dict | None:
    try:
        from frugalnet.energy.costmodel import model_cost
    except ImportError:
        return None
    x = bundle.normalize(bundle.train.x[:cfg.batch_size])
    y = bundle.train.y[:cfg.batch_size]
    out = {}
    for recipe in cfg.recipes:
        torch.manual_seed(0)
        model = _convert(_mnist_model(bundle, cfg), recipe)
        model(x)                                                  # initialise PACT clips
        cost = model_cost(model, x, training=True, target=y)
        out[recipe] = {"energy_j": cost.energy_j, "compute_energy_j": cost.compute_energy_j,
                       "memory_energy_j": cost.memory_energy_j, "bits": cost.bits_used(), "table": cost.table.name,
                       "cost": cost.to_dict()}
    return out


# --- the study ----------------------------------------------------------------------------------------------------
@register_study("lowbit", LowbitConfig, "FP32 vs simulated 4-bit training (ibm4, mxfp4, nvfp4): accuracy, speed, size")
def lowbit_study(ctx: RunContext) -> dict:
    cfg: LowbitConfig = ctx.config
    results: dict = {"tasks": {}, "notes": []}
    mnist = load("mnist-5k")
    for task in cfg.tasks:
        units = []
        if task == "mnist":
            for recipe in cfg.recipes:
                for seed in ctx.seeds:
                    units.append(ctx.unit(f"mnist-{recipe}-s{seed}", lambda r=recipe, s=seed: _image_unit(
                        ctx, "mnist", mnist, lambda: _mnist_model(mnist, cfg), r, s, cfg.epochs)))
        elif task == "cifar10":
            if not cfg.data_dir:
                results["notes"].append("cifar10 skipped: no --data-dir with a local CIFAR-10 copy")
                continue
            cifar = load("cifar10", cfg.data_dir)
            for recipe in cfg.recipes:
                for seed in ctx.seeds:
                    units.append(ctx.unit(f"cifar10-{recipe}-s{seed}", lambda r=recipe, s=seed: _image_unit(
                        ctx, "cifar10", cifar, lambda: SmallResNet(cifar.input_shape[0], cifar.num_classes), r, s,
                        cfg.cifar_epochs)))
        else:
            for recipe in cfg.recipes:
                for seed in ctx.seeds[:cfg.lm_seeds]:
                    units.append(ctx.unit(f"charlm-{recipe}-s{seed}", lambda r=recipe, s=seed: _lm_unit(ctx, r, s)))
        results["tasks"][task] = _summarise(task, units, cfg.recipes)
        results["tasks"][task]["units"] = units
    if cfg.timing_repeats:
        results["step_time"] = ctx.unit("timing", lambda: _timing_unit(cfg, mnist))
    results["packing"] = ctx.unit("packing", lambda: _packing_unit(cfg, mnist))
    energy = ctx.unit("energy", lambda: _energy_unit(cfg, mnist) or {})
    if energy:
        results["energy"] = energy
    else:
        results["notes"].append("energy column left out: frugalnet.energy.costmodel is not available")
    results["criteria"] = _criteria(results, cfg)
    ledger = build_ledger(results, cfg)
    if ledger is not None:
        results["ledger"], results["ledger_table"] = ledger.to_dict(), ledger.format_table()
    write_report(ctx, results, cfg, ledger)
    return results


def _summarise(task: str, units: list[dict], recipes) -> dict:
    metric = "val_loss" if task == "charlm" else "test_acc"
    summary = {"metric": metric, "recipes": {}}
    for recipe in recipes:
        vals = [u[metric] for u in units if u["recipe"] == recipe]
        if vals:
            m, sd = mean_sd(vals)
            summary["recipes"][recipe] = {"mean": m, "sd": sd, "n": len(vals),
                                          "train_seconds": mean_sd([u["train_seconds"] for u in units
                                                                    if u["recipe"] == recipe])[0]}
    return summary


def _criteria(results: dict, cfg: LowbitConfig) -> dict:
    """The issue's acceptance checks, computed from the measured numbers (None where not measured)."""
    crit: dict = {}
    tasks = results["tasks"]
    if "mnist" in tasks and "fp32" in tasks["mnist"]["recipes"]:
        base = tasks["mnist"]["recipes"]["fp32"]["mean"]
        crit["mnist_within_1pt"] = {r: 100 * (base - v["mean"]) <= 1.0 for r, v in tasks["mnist"]["recipes"].items()
                                    if r in ("ibm4", "mxfp4", "nvfp4")}
    if "charlm" in tasks and "fp32" in tasks["charlm"]["recipes"]:
        base = tasks["charlm"]["recipes"]["fp32"]["mean"]
        crit["charlm_within_5pct"] = {r: v["mean"] <= 1.05 * base for r, v in tasks["charlm"]["recipes"].items()
                                      if r in ("ibm4", "nvfp4")}
    if "step_time" in results:
        crit["step_at_most_3x"] = {r: v["ratio"] <= 3.0 for r, v in results["step_time"].items() if r != "fp32"}
    crit["packed_at_least_7x"] = {k: v["ratio"] >= 7.0 for k, v in results["packing"].items()}
    return crit
