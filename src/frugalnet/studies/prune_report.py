"""Report of study `prune`, built from its results alone (so a finished run's report can be rebuilt): summary over
seeds, accuracy / validation-loss table against the same-budget dense reference, plot, ledgers, engine speed."""
from __future__ import annotations

from frugalnet.energy import Ledger
from frugalnet.report.document import mean_sd

METHODS = ("oneshot-layer", "oneshot", "oneshot-ft", "random", "random-ft", "gradual", "gradual-kd", "gradual-train",
           "rigl")


def _rows(runs: list[dict]) -> list[dict]:
    """Flatten one-shot / random units into their no-fine-tuning and fine-tuned rows."""
    rows = []
    for r in runs:
        if "no_ft" in r:
            rows.append({**r["no_ft"], "method": r["method"], "sparsity_target": r["sparsity_target"]})
            if "no_ft_layer" in r:
                rows.append({**r["no_ft_layer"], "method": "oneshot-layer", "sparsity_target": r["sparsity_target"]})
            rows.append({**r, "method": r["method"] + "-ft"})
        else:
            rows.append(r)
    return rows


def summarize(runs: list[dict]) -> dict:
    """{method: {sparsity: {test_acc_mean, test_acc_sd, val_loss_mean, sparsity_mean, seeds}}}."""
    out: dict = {}
    for r in _rows(runs):
        out.setdefault(r["method"], {}).setdefault(str(r["sparsity_target"]), []).append(r)
    summary = {}
    for method, by_s in out.items():
        summary[method] = {}
        for s, rs in by_s.items():
            acc, loss = mean_sd([x["test_acc"] for x in rs]), mean_sd([x["val_loss"] for x in rs])
            summary[method][s] = {"test_acc_mean": acc[0], "test_acc_sd": acc[1], "val_loss_mean": loss[0],
                                  "val_loss_sd": loss[1], "sparsity_mean": mean_sd([x["sparsity"] for x in rs])[0],
                                  "seeds": len(rs)}
    return summary


def build_ledger(runs: list[dict], s: float) -> Ledger:
    """The gradually pruned network at sparsity s (first seed) against the dense one: modelled inference compute."""
    dense = next(r for r in runs if r["method"] == "dense")
    pruned = next(r for r in runs if r["method"] == "gradual" and r["sparsity_target"] == s)
    ledger = Ledger("dense fp32", f"gradual magnitude {int(round(100 * s))}%")
    ledger.add_compute(dense["cost"], pruned["cost"])
    return ledger


LABELS = {"oneshot-layer": "one-shot magnitude per layer, no fine-tuning",
          "oneshot": "one-shot magnitude, no fine-tuning", "oneshot-ft": "one-shot magnitude + fine-tuning",
          "random": "random mask, no fine-tuning", "random-ft": "random mask + fine-tuning",
          "gradual": "gradual magnitude (Zhu & Gupta) + fine-tuning",
          "gradual-kd": "gradual magnitude + fine-tuning, distilled from the dense model",
          "gradual-train": "gradual magnitude during training (dense recipe)", "rigl": "RigL from scratch (ERK)"}


def write_report(ctx: RunContext, results: dict) -> None:
    from frugalnet.utils.plotting import pyplot

    cfg = ctx.config
    s, rep = results["summary"], ctx.report
    start = s["dense"]["0.0"]
    dense = s.get("dense-ref", s["dense"])["0.0"]     # the same-budget reference (older runs: the start model)
    total = cfg.epochs + cfg.finetune_epochs
    rep.text(f"Data: {results['dataset']} ({results['train_samples']} train, {results['test_samples']} test); "
             f"pruning starts from a dense CNN-2 trained {cfg.epochs} epochs; the reference is a dense CNN-2 trained "
             f"{total} epochs (the same total budget); fine-tuning {cfg.finetune_epochs} epochs "
             f"(LR {cfg.finetune_lr}, {cfg.finetune_schedule}); gradual pruning reaches its target at "
             f"{cfg.gradual_end:.0%} of the fine-tuning; RigL {total} epochs from scratch; seeds {ctx.seeds}. "
             f"Mean ± sd over seeds. Magnitude pruning scope: {cfg.scope}. 'No fine-tuning' rows have their "
             "BatchNorm statistics re-estimated on training inputs (forward passes only, no weight change).")
    if "gradual-kd" in s:
        rep.text(f"Distilled gradual pruning (gradual-kd): the same fine-tuning with the loss (1 - a) CE + a T^2 "
                 f"KL(teacher_T || student_T), a = {cfg.distill_alpha}, T = {cfg.distill_temperature}, the teacher "
                 f"being the dense {cfg.epochs}-epoch model it prunes (frozen; one more forward pass per step).")
    rep.heading("Accuracy and validation loss against sparsity")

    def dense_row(label, v):
        return [label, "0", f"{100 * v['test_acc_mean']:.2f} ± {100 * v['test_acc_sd']:.2f}",
                f"{v['val_loss_mean']:.4f} ± {v['val_loss_sd']:.4f}",
                f"{100 * (v['test_acc_mean'] - dense['test_acc_mean']):+.2f}",
                f"{100 * (v['val_loss_mean'] / dense['val_loss_mean'] - 1):+.1f}%"]
    rows = [dense_row(f"dense, {total} epochs (reference)", dense)] if "dense-ref" in s else []
    rows.append(dense_row(f"dense, {cfg.epochs} epochs (pruning starts here)", start))
    for method in METHODS:
        for sp, v in sorted(s.get(method, {}).items(), key=lambda kv: float(kv[0])):
            rows.append([LABELS[method], f"{100 * float(sp):.0f} ({100 * v['sparsity_mean']:.1f})",
                         f"{100 * v['test_acc_mean']:.2f} ± {100 * v['test_acc_sd']:.2f}",
                         f"{v['val_loss_mean']:.4f} ± {v['val_loss_sd']:.4f}",
                         f"{100 * (v['test_acc_mean'] - dense['test_acc_mean']):+.2f}",
                         f"{100 * (v['val_loss_mean'] / dense['val_loss_mean'] - 1):+.1f}%"])
    rep.table(["method", "sparsity % (measured)", "test accuracy %", "val loss", "vs reference (points)",
               "val loss vs reference"], rows, "sparsity measured over all pruned weights; reference: the dense "
              "model with the same total budget")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        pts = sorted((float(k), v) for k, v in s.get(method, {}).items())
        if pts:
            ax.errorbar([100 * p for p, _ in pts], [100 * v["test_acc_mean"] for _, v in pts],
                        yerr=[100 * v["test_acc_sd"] for _, v in pts], marker="o", capsize=3, label=LABELS[method])
    ax.axhline(100 * dense["test_acc_mean"], color="k", ls="--", lw=1, label=f"dense, {total} epochs")
    ax.set_xlabel("weight sparsity %")
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    rep.figure(fig, "accuracy_vs_sparsity", "Accuracy against sparsity (mean ± sd over seeds)")
    for sp in cfg.sparsities if results.get("ledger") else ():
        rep.heading(f"Ledger at {100 * sp:.0f}%: gradual magnitude against dense (first seed, modelled)")
        build_ledger(results["runs"], sp).add_to_report(rep, f"prune-{sp}")
    if results.get("engine"):
        rep.heading("Compiled inference engine (one-shot + fine-tuned, first seed)")
        rows = []
        for sp, e in results["engine"].items():
            if "error" in e:
                rows.append([sp, "-", "-", "-", e["error"][:100]])
            else:
                for bs, b in e["batches"].items():
                    rows.append([sp, bs, f"{1e3 * b['torch_dense_model_s']:.3f}", f"{1e3 * b['engine_s']:.3f}",
                                 f"{b['speedup_vs_dense_model']:.2f}x, outputs match: {b['outputs_match']}"])
        rep.table(["sparsity", "batch", "dense PyTorch ms", "engine ms", "speedup"], rows,
                  "medians of interleaved repeats, measured in this run")
