"""Report and headline of the `sparse-vs-dense` study (the computation is in sparse_vs_dense.py)."""
from __future__ import annotations

from frugalnet.utils.plotting import pyplot

KIND_LABELS = {"dense": "dense", "sparse": "sparse", "sparse-4bit": "sparse 4-bit"}


def _kinds(s: dict) -> list[str]:
    return [k for k in KIND_LABELS if k in s]


def write_report(ctx, results: dict, ledgers: dict) -> None:
    """Accuracy, noise curve, engine timing with spread, activation sparsity, then every ledger (table and chart)."""
    plt = pyplot()
    s = results["summary"]
    cfg = ctx.config
    rep = ctx.report
    rep.text(f"Data: {results['dataset']} ({results['train_samples']} train, {results['test_samples']} test); "
             f"{cfg.epochs} epochs, batch {cfg.batch_size}, seeds {ctx.seeds}. Values are mean ± sd over seeds.")
    rep.text(f"Sparse recipe: k-WTA on {tuple(cfg.conv_percent_on)} (conv), {cfg.hidden_percent_on:g} (hidden); "
             f"weight sparsity {tuple(cfg.conv_weight_sparsity)} (conv), {cfg.hidden_weight_sparsity:g} (hidden); "
             f"boost {cfg.boost_strength:g} x {cfg.boost_strength_factor:g} per epoch; k at inference x "
             f"{cfg.k_inference_factor:g}." + (f" The 4-bit network is the same sparse network under "
                                               f"quantize_(model, {cfg.lowbit_recipe!r})." if cfg.lowbit_recipe
                                               else ""))
    rep.heading("Accuracy and noise robustness")
    rows = []
    for kind in _kinds(s):
        k = s[kind]
        rows.append([KIND_LABELS[kind], f"{100 * k['test_acc_mean']:.2f} ± {100 * k['test_acc_sd']:.2f}",
                     f"{k['noise_score_mean']:.0f} ± {k['noise_score_sd']:.0f}", k["parameters"],
                     k["nonzero_weights"], f"{k['train_seconds_mean']:.1f}", k["seeds"]])
    rep.table(["model", "test accuracy %", "noise score", "parameters", "nonzero weights", "train s", "seeds"], rows,
              "noise score: correct test answers summed over all noise levels")
    if "accuracy_gap_points" in s:
        rep.text(f"Sparse minus dense accuracy: {s['accuracy_gap_points']:+.2f} points; noise score ratio "
                 f"sparse/dense: {s['noise_score_ratio']:.3f}.")

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in _kinds(s):
        lv, m, sd = s[kind]["noise_levels"], s[kind]["noise_acc_mean"], s[kind]["noise_acc_sd"]
        ax.plot(lv, [100 * v for v in m], marker="o", label=KIND_LABELS[kind])
        ax.fill_between(lv, [100 * (a - b) for a, b in zip(m, sd)], [100 * (a + b) for a, b in zip(m, sd)], alpha=0.2)
    ax.set_xlabel("fraction of pixels set to mean + 2 sd")
    ax.set_ylabel("test accuracy %")
    ax.grid(alpha=0.3)
    ax.legend()
    rep.figure(fig, "accuracy_vs_noise", "Accuracy vs noise (mean ± sd over seeds)")

    if results.get("engine"):
        rep.heading("Compiled inference engine (trained sparse network, first seed)")
        rows = []
        for bs, e in results["engine"]["batches"].items():
            sp = e.get("speedup_vs_dense_model_spread")
            spread = (f"{sp['q1']:.2f}-{sp['q3']:.2f} (min {sp['min']:.2f}, max {sp['max']:.2f}, {sp['rounds']} "
                      f"rounds)" + (" WIDE" if sp["wide"] else "")) if sp else "n/a"
            rows.append([bs, 1e3 * e["torch_dense_model_s"], 1e3 * e["torch_s"], 1e3 * e["engine_s"],
                         f"{e['speedup_vs_dense_model']:.2f}x", spread, e["outputs_match"]])
        threshold = results["engine"].get("wide_threshold")
        rep.table(["batch", "dense PyTorch ms", "sparse PyTorch ms", "sparse engine ms", "speedup vs dense",
                   "per-round ratio IQR", "outputs match"], rows,
                  "medians of interleaved rounds measured in this run; a ratio is flagged WIDE when its "
                  f"interquartile range exceeds {threshold} x its median (the machine's load changed while timing)")

    rep.heading("Measured activation sparsity (eval mode)")
    layer_names = sorted({n for kind in _kinds(s) for n in s[kind]["activation_sparsity"]})
    rep.table(["layer"] + [KIND_LABELS[k] for k in _kinds(s)],
              [[n] + [f"{100 * s[k]['activation_sparsity'].get(n, float('nan')):.1f}%" for k in _kinds(s)]
               for n in layer_names], "fraction of zero outputs of each activation layer on test inputs")

    titles = {"sparse": "Savings ledger: sparse against dense FP32",
              "sparse-4bit": "Savings ledger: sparse + 4-bit against dense FP32 (compute x precision, one model)"}
    for key, ledger in ledgers.items():
        rep.heading(titles.get(key, f"Savings ledger: {key}"))
        ledger.add_to_report(rep, "sparse-vs-dense" if key == "sparse" else f"sparse-vs-dense-{key}")


def print_headline(results: dict) -> None:
    """The demo's verdict in a few lines: the measured figures next to the targets of the foundation issue."""
    s = results["summary"]
    if "dense" not in s or "sparse" not in s:
        return
    gap = s["accuracy_gap_points"]
    print(f"\n{'':14s}{'test acc %':>16s}{'noise score':>16s}{'nonzero weights':>18s}{'seeds':>7s}")
    for kind in _kinds(s):
        k = s[kind]
        print(f"{KIND_LABELS[kind]:14s}{100 * k['test_acc_mean']:>9.2f} ± {100 * k['test_acc_sd']:<4.2f}"
              f"{k['noise_score_mean']:>11.0f} ± {k['noise_score_sd']:<4.0f}{k['nonzero_weights']:>16,d}"
              f"{k['seeds']:>7d}")
    for table in results.get("ledger_tables", {"sparse": results.get("ledger_table", "")}).values():
        if table:
            print("\n" + table)
    engine = results.get("engine") or {}
    if engine.get("wide_spread"):
        print(f"note: an inference-speed ratio is flagged WIDE SPREAD (interquartile range > "
              f"{engine.get('wide_threshold')} x median over interleaved rounds): the machine's load changed while "
              f"timing; rerun on a quiet machine before quoting it")
    print(f"accuracy gap {gap:+.2f} points (target: within 1.5): {'met' if abs(gap) <= 1.5 else 'NOT met'}; "
          f"noise score sparse/dense {s['noise_score_ratio']:.3f} (target: > 1): "
          f"{'met' if s['noise_score_ratio'] > 1 else 'NOT met'}  [{s['sparse']['seeds']} seed(s)]")
