"""Report of the `lowbit` study and its ledger (the computation is in lowbit.py).

The ledger puts the 4-bit recipe's levers against FP32, each labelled: precision (modelled: energy per MAC from the
bit widths of every GEMM operand, frugalnet.energy's cost model), data (measured: samples seen until the MNIST CNN
reaches FP32's final test accuracy), packed size (measured: file sizes), and step time (measured, and labelled a
simulation cost: the 4-bit values are rounded and multiplied in FP32 here, so a step is slower, not faster).
"""
from __future__ import annotations

from frugalnet.energy import Ledger
from frugalnet.report.document import mean_sd
from frugalnet.utils.plotting import pyplot


def ledger_recipe(cfg) -> str | None:
    """The recipe the ledger describes: ibm4 if it ran, else the first low-bit recipe of the config."""
    low = [r for r in cfg.recipes if r != "fp32"]
    return None if not low else "ibm4" if "ibm4" in low else low[0]


def _mnist_curve(units: list[dict], recipe: str) -> tuple[list[tuple[float, float]], float] | None:
    rs = [u for u in units if u["recipe"] == recipe and "train_size" in u]
    if not rs:
        return None
    epochs = min(len(u["test_acc_curve"]) for u in rs)
    curve = [((e + 1) * rs[0]["train_size"], mean_sd([u["test_acc_curve"][e] for u in rs])[0]) for e in range(epochs)]
    return curve, mean_sd([u["test_acc"] for u in rs])[0]


def build_ledger(results: dict, cfg) -> Ledger | None:
    """FP32 against the ledger recipe on the MNIST CNN; None without FP32 and a low-bit recipe to compare."""
    recipe = ledger_recipe(cfg)
    if recipe is None or "fp32" not in cfg.recipes:
        return None
    mnist = results["tasks"].get("mnist")
    base_name, run_name = "fp32", recipe
    curves = None
    if mnist is not None:
        base, run = _mnist_curve(mnist["units"], "fp32"), _mnist_curve(mnist["units"], recipe)
        if base and run:
            curves = (base[0], run[0])
            n = mnist["recipes"][recipe]["n"]
            base_name = f"fp32 (MNIST acc {base[1]:.4f}, {n} seed(s))"
            run_name = f"{recipe} (MNIST acc {run[1]:.4f}, {n} seed(s))"
    ledger = Ledger(base_name, run_name)
    energy = results.get("energy", {})
    if "cost" in energy.get("fp32", {}) and "cost" in energy.get(recipe, {}):
        ledger.add_precision(energy["fp32"]["cost"], energy[recipe]["cost"])
    else:
        ledger.add_missing("precision", "n/a: no modelled cost in this run", kind="modelled")
    if curves is not None:
        ledger.add_data_from_curves(*curves)
    packed = results.get("packing", {}).get(f"{recipe} / study CNN")
    if packed:
        ledger.add("packed size", packed["fp32_bytes"], packed["packed_bytes"], kind="measured", unit="bytes",
                   in_product=False, note=f"file sizes: torch.save of the FP32 state dict vs save_packed (LZMA) of "
                                          f"the study CNN at initialisation; reload bit-exact: {packed['bit_exact']}; "
                                          f"storage, not training energy")
    step = results.get("step_time", {})
    if recipe in step and "fp32" in step:
        ledger.add("step time", step["fp32"]["median_s"], step[recipe]["median_s"], kind="measured", unit="s",
                   in_product=False, note=f"SIMULATION COST: one training step, batch {cfg.batch_size}, medians of "
                                          f"{cfg.timing_repeats} interleaved rounds; 4-bit values are rounded and "
                                          f"multiplied in FP32 on this CPU, so < 1 here says what the simulation "
                                          f"costs, not what 4-bit hardware would")
    return ledger


def write_report(ctx, results: dict, cfg, ledger: Ledger | None) -> None:
    """Setting, per-task tables and loss curves, step time, packed storage, modelled energy, checks, ledger."""
    plt = pyplot()
    rep = ctx.report
    rep.heading("Setting")
    rep.text(f"Recipes {', '.join(cfg.recipes)}; seeds {ctx.seeds}; the same data order, optimizer and budget for "
             f"every recipe. 4-bit recipes keep the first and last GEMM layers at 8 bits. Quantization is simulated: "
             f"values are rounded onto each format's grid and multiplied in FP32 (FP32 accumulation, FP32 master "
             f"weights). Command: `frugalnet run lowbit` with the options in config.json.")
    for note in results["notes"]:
        rep.text(f"Note: {note}.")
    for task, summary in results["tasks"].items():
        metric = summary["metric"]
        label = "test accuracy" if metric == "test_acc" else "validation loss (nats/char)"
        rows = []
        base = summary["recipes"].get("fp32", {}).get("mean")
        for recipe, s in summary["recipes"].items():
            if base is None:
                delta = float("nan")
            elif metric == "test_acc":
                delta = 100 * (s["mean"] - base)
            else:
                delta = 100 * (s["mean"] / base - 1)
            rows.append([recipe, s["mean"], s["sd"], s["n"], delta, s["train_seconds"]])
        rep.heading(f"{task}")
        if task == "charlm" and results["tasks"][task]["units"]:
            unit0 = results["tasks"][task]["units"][0]
            rep.text(f"Corpus: {unit0['corpus']}: {unit0['train_chars']:,} training and {unit0['val_chars']:,} "
                     f"validation characters, vocabulary {unit0['vocab']}.")
        rep.table(["recipe", label, "sd", "seeds", "vs fp32 (points)" if metric == "test_acc" else "vs fp32 (%)",
                   "train seconds"], rows, caption=f"{task}: final {label}, mean over seeds")
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for recipe in summary["recipes"]:
            units = [u for u in results["tasks"][task]["units"] if u["recipe"] == recipe]
            if metric == "val_loss":
                steps = [p[0] for p in units[0]["val_curve"]]
                vals = [sum(u["val_curve"][i][1] for u in units) / len(units) for i in range(len(steps))]
                ax.plot(steps, vals, label=recipe, marker=".")
                ax.set_xlabel("step")
                ax.set_ylabel("validation loss")
            else:
                n = len(units[0]["train_loss"])
                vals = [sum(u["train_loss"][i] for u in units) / len(units) for i in range(n)]
                ax.plot(range(1, n + 1), vals, label=recipe, marker=".")
                ax.set_xlabel("epoch")
                ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"{task}: loss curves (mean over seeds)")
        fig.tight_layout()
        rep.figure(fig, f"{task}_loss", f"{task}: loss curves, mean over seeds")
    if "step_time" in results:
        rep.heading("Step time")
        rep.table(["recipe", "median step (ms)", "ratio to fp32"],
                  [[r, 1e3 * v["median_s"], v["ratio"]] for r, v in results["step_time"].items()],
                  caption=f"one training step of the MNIST CNN, batch {cfg.batch_size}, interleaved, "
                          f"{cfg.timing_repeats} rounds, medians; fp32 is the plain PyTorch model")
    rep.heading("Packed storage")
    rep.table(["recipe", "model", "packed bytes", "fp32 bytes", "fp32 / packed", "fp32 / packed (no LZMA)",
               "both LZMA", "reload bit-exact"],
              [[v["recipe"], v["model"], v["packed_bytes"], v["fp32_bytes"], v["ratio"],
                v.get("plain_ratio", float("nan")), v.get("ratio_vs_compressed_fp32", float("nan")),
                v["bit_exact"]] for v in results["packing"].values()],
              caption="MNIST CNN checkpoints at initialisation: save_packed (LZMA) vs torch.save of the FP32 "
                      "state dict; 'no LZMA': the plain packed container; 'both LZMA': the FP32 file compressed too")
    if "energy" in results:
        rep.heading("Modelled energy")
        base = results["energy"].get("fp32", {}).get("energy_j")
        rep.table(["recipe", "energy per step (uJ)", "compute (uJ)", "memory (uJ)", "fp32 / recipe"],
                  [[r, 1e6 * v["energy_j"], 1e6 * v["compute_energy_j"], 1e6 * v["memory_energy_j"],
                    base / v["energy_j"] if base else float("nan")] for r, v in results["energy"].items()],
                  caption="frugalnet.energy.costmodel, one training step of the MNIST CNN (modelled, not measured)")
    rep.heading("Acceptance checks")
    rep.table(["check", "result"], [[k, ", ".join(f"{r}: {'pass' if ok else 'FAIL'}" for r, ok in v.items())]
                                    for k, v in results["criteria"].items()])
    if ledger is not None:
        rep.heading(f"Savings ledger: {ledger_recipe(cfg)} against FP32")
        ledger.add_to_report(rep, "lowbit")
