"""Report of the `continual` study and its ledger (the computation is in continual.py).

The ledger states the lever continual learning pulls: fewer training samples. To hold all T tasks learned so far, a
learner without continual learning retrains jointly from scratch at each new task, processing the data of tasks
1..t again at task t (sum over t of t x n samples per epoch for equal tasks); the continual learner processes each
task's data once (T x n). The samples the continual learner processed are counted in its training loop (measured);
the joint strategy's final training on all T tasks is counted too, and its retrainings at tasks 1..T-1, which the
study does not run, follow from the task sizes (modelled). Both strategies' accuracies stand beside the factor.
"""
from __future__ import annotations

import dataclasses

from frugalnet.continual.plots import accuracy_vs_tasks, heatmaps
from frugalnet.continual.strategies import get_strategy
from frugalnet.energy import Ledger

# The paper's reported accuracy of active dendrites with prototypes (Iyer et al. 2022, Table 2), for comparison only.
PAPER_ACCURACY = {10: 0.946, 50: 0.870, 100: 0.814}


def ledger_strategy(results: dict) -> str | None:
    """The continual learner the ledger describes: dendrites if it ran, else the most accurate non-joint strategy."""
    learners = [n for n in results if not get_strategy(n).joint]
    if not learners:
        return None
    return "dendrites" if "dendrites" in learners else max(learners, key=lambda n: results[n]["average_accuracy"])


def build_ledger(results: dict, tasks: int, epochs: int) -> Ledger | None:
    """Joint retraining from scratch at each new task against the continual learner: samples processed (the
    learner's counted, joint's modelled from the task sizes), task-epochs (modelled), training time (estimated from
    the joint run's measured time per sample). None when no continual learner ran or counts are missing."""
    name = ledger_strategy(results)
    if name is None or results[name].get("samples") is None:
        return None
    learner = results[name]
    sizes = learner["task_sizes"]
    joint = results.get("joint")
    # Retrained at task t (1-based) on tasks 1..t for `epochs` epochs each time.
    retrain = [epochs * sum(sizes[:t]) for t in range(1, tasks + 1)]
    joint_acc = f"avg acc {joint['average_accuracy']:.4f}" if joint else "not run: accuracy unknown"
    ledger = Ledger(f"joint retrained at each task ({joint_acc})",
                    f"{name} (avg acc {learner['average_accuracy']:.4f})")
    counted = joint is not None and joint.get("samples") == retrain[-1]
    ledger.add("samples processed", sum(retrain), learner["samples"], kind="modelled", unit="samples",
               note=f"{tasks} tasks of {sizes[0]}" + ("" if len(set(sizes)) == 1 else "-" + str(max(sizes))) +
                    f" samples x {epochs} epoch(s); the learner's samples counted in its loop; joint's last "
                    f"retraining (all tasks) " + ("counted" if counted else "from the task sizes") +
                    ", its earlier retrainings from the task sizes")
    ledger.add("task-epochs", epochs * tasks * (tasks + 1) / 2, epochs * tasks, kind="modelled", unit="epochs",
               in_product=False, note="epochs over one task's data: sum of t x epochs for joint, T x epochs for the "
                                      "learner; restates the samples factor")
    if joint is not None and joint.get("samples"):
        per_sample = (sum(joint["train_seconds_per_seed"]) / len(joint["train_seconds_per_seed"])) / joint["samples"]
        learner_s = sum(learner["train_seconds_per_seed"]) / len(learner["train_seconds_per_seed"])
        ledger.add("training time", per_sample * sum(retrain), learner_s, kind="estimated", unit="s",
                   in_product=False, note=f"joint's measured seconds per sample (its final training) x the samples "
                                          f"of all retrainings, against the learner's measured training seconds "
                                          f"(network, penalty and contexts included); mean over seeds")
    return ledger


def acceptance_checks(results: dict) -> list[dict]:
    """The issue's criteria, evaluated on the measured results (only those whose strategies were run)."""
    acc = {k: v["average_accuracy"] for k, v in results.items()}
    checks = []

    def add(name: str, needs: tuple[str, ...], ok) -> None:
        if all(k in acc for k in needs):
            checks.append({"check": name, "passed": bool(ok())})

    add("dendrites > finetune", ("dendrites", "finetune"), lambda: acc["dendrites"] > acc["finetune"])
    add("dendrites > kwta", ("dendrites", "kwta"), lambda: acc["dendrites"] > acc["kwta"])
    add("dendrites-si >= si", ("dendrites-si", "si"), lambda: acc["dendrites-si"] >= acc["si"])
    add("dendrites >= 0.93 x joint", ("dendrites", "joint"), lambda: acc["dendrites"] >= 0.93 * acc["joint"])
    add("dendrites-si >= 0.9 x joint", ("dendrites-si", "joint"), lambda: acc["dendrites-si"] >= 0.9 * acc["joint"])
    return checks


def command_line(cfg, default=None) -> str:
    """The `frugalnet run continual ...` line that reproduces this config (fields that differ from the defaults)."""
    default = type(cfg)() if default is None else default
    parts = ["frugalnet run continual"]
    for f in dataclasses.fields(cfg):
        v, d = getattr(cfg, f.name), getattr(default, f.name)
        if v == d or f.name in ("runs_dir",):
            continue
        opt = "--" + f.name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(opt if v else "--no-" + f.name.replace("_", "-"))
        elif isinstance(v, tuple):
            parts.append(opt + " " + " ".join(str(x) for x in v))
        else:
            parts.append(f"{opt} {v}")
    return " ".join(parts)




def write_report(ctx, given, cfg, stream, results: dict, checks: list, ledger: Ledger | None) -> None:
    """Setup, results table, checks, paper comparison, R heatmaps and curves, and the samples ledger."""
    rep = ctx.report
    rep.heading("Setup")
    rep.text(f"Stream: {stream.name}, {cfg.tasks} tasks; context: {cfg.context}; network {stream.input_dim}-"
             f"{'-'.join(map(str, cfg.hidden))}-{stream.num_outputs}; k-WTA {cfg.kw_percent_on:g} on; weight "
             f"sparsity {cfg.weight_sparsity:g}; segments {cfg.num_segments or cfg.tasks}; init {cfg.init} x "
             f"{cfg.init_gain:g}; Adam lr {cfg.lr:g} eps {cfg.adam_eps:g}, "
             f"batch {cfg.batch_size}, {cfg.epochs} epoch(s) per task; seeds {ctx.seeds}.")
    rep.text(f"Command: `{command_line(given)}`")
    joint = results.get("joint", {}).get("average_accuracy")
    rows = []
    for name, r in results.items():
        s = get_strategy(name)
        acc = r["average_accuracy"]
        cells = [acc, r["average_accuracy_sd"], r["forgetting"], r["backward_transfer"], acc / joint if joint else None,
                 r["context_acc"], r["train_seconds"]]
        rows.append([name, s.paper] + ["n/a" if v is None else v for v in cells])
    rep.heading("Results")
    rep.table(["strategy", "paper", "avg final acc", "sd (seeds)", "forgetting", "BWT", "x joint",
               "context = true task", "train s"], rows,
              caption="Average accuracy over all tasks after the last one; forgetting (Chaudhry et al. 2018) and "
                      "backward transfer (Lopez-Paz & Ranzato 2017) from R; 'context = true task' is how often the "
                      "inferred context index equals the task's id on its test samples.")
    total = sum(r["train_seconds"] + r["eval_seconds"] for r in results.values())
    rep.text(f"Training and evaluation took {total:.0f} s of wall time in all (this process; a resumed run counts "
             f"the saved times of its finished tasks).")
    if checks:
        rep.table(["criterion", "passed"], [[c["check"], c["passed"]] for c in checks],
                  caption="The issue's criteria, evaluated on the numbers above.")
    if cfg.paper:
        paper_acc = PAPER_ACCURACY.get(cfg.tasks)
        ours = results.get("dendrites", {}).get("average_accuracy")
        rep.text(f"Paper comparison: active dendrites with prototypes, {cfg.tasks} tasks: this run "
                 f"{ours if ours is None else round(ours, 4)}; paper "
                 f"{paper_acc if paper_acc is not None else 'n/a (reported for 10, 50, 100 tasks)'}.")
    matrices = {n: r["R"] for n, r in results.items() if r["R"] is not None}
    rep.heading("Savings ledger: continual learning against joint retraining at each task")
    if ledger is None:
        rep.text("No ledger: no continual (non-joint) strategy ran, or its units were saved without sample counts.")
    else:
        name = ledger_strategy(results)
        rep.text(f"Accuracy beside the factor: {name} reaches an average final accuracy of "
                 f"{results[name]['average_accuracy']:.4f} over all {cfg.tasks} tasks"
                 + (f"; joint training on all tasks reaches {joint:.4f} (ratio "
                    f"{results[name]['average_accuracy'] / joint:.3f})." if joint else
                    "; joint was not run, so its accuracy is unknown."))
        ledger.add_to_report(rep, "continual")
    if matrices:
        rep.figure(heatmaps(matrices), "accuracy_matrix", "R[i][j]: accuracy on task j after training task i")
        rep.figure(accuracy_vs_tasks({n: r["curve"] for n, r in results.items() if r["curve"] is not None},
                                     joint), "accuracy_vs_tasks", "mean accuracy on the tasks learned so far")
