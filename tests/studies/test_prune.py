import json

import pytest
import torch

from frugalnet.cli import main
from frugalnet.experiment.runner import resume_run
from frugalnet.studies.prune import CosineLR, PruneConfig


@pytest.mark.slow   # ~50-90 s on 2 shared cores: six short trainings and a report
def test_prune_tiny_end_to_end_and_resume(tmp_path):
    assert main(["run", "prune", "--tiny", "--quiet", "--runs-dir", str(tmp_path)]) == 0
    run_dir = next((tmp_path / "prune").iterdir())
    summary = json.loads((run_dir / "results.json").read_text())["results"]["summary"]
    for method in ("dense", "dense-ref", "oneshot-layer", "oneshot", "oneshot-ft", "random", "random-ft", "gradual",
                   "gradual-kd", "gradual-train", "rigl"):
        assert method in summary
    for method in ("oneshot", "gradual", "gradual-kd", "rigl", "random"):
        v = summary[method]["0.9"]
        assert 0.0 <= v["test_acc_mean"] <= 1.0
        # one-shot, random and gradual prune the same weights to 90%; RigL's ERK keeps the small layers denser
        assert v["sparsity_mean"] == pytest.approx(0.9, abs=0.02 if method != "rigl" else 0.1)
    report = (run_dir / "report.md").read_text()
    assert "Accuracy and validation loss against sparsity" in report and "Ledger at 90%" in report
    assert (run_dir / "accuracy_vs_sparsity.png").exists()
    units = sorted(p.name for p in (run_dir / "units").iterdir())
    assert "rigl-0.9-seed0.json" in units and "dense-seed0.json" in units and "dense-ref-seed0.json" in units
    assert "reference" in report
    again = resume_run(run_dir)            # the units are read back, not recomputed: the same summary
    assert again.results["summary"] == summary


def test_tiny_flag_sets_the_smoke_settings():
    cfg = PruneConfig(tiny=True)
    assert cfg.epochs == 1 and cfg.train_subset == 128 and cfg.sparsities == (0.9,) and not cfg.engine_speed


@pytest.mark.parametrize("field,value", [("sparsities", (0.0,)), ("sparsities", (1.0,)), ("epochs", 0),
                                         ("finetune_lr", 0.0), ("rigl_alpha", 1.5), ("scope", "net"),
                                         ("finetune_schedule", "linear"), ("train_schedule", "step"),
                                         ("sparse_decay", -0.1), ("gradual_end", 0.0), ("gradual_end", 1.5),
                                         ("methods", ()), ("methods", ("oneshot", "lottery")),
                                         ("distill_alpha", 1.5), ("distill_temperature", 0.0)])
def test_prune_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        PruneConfig(**{field: value})


def test_cosine_lr_decays_to_zero_and_resumes():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = CosineLR(opt, 0.1, total_steps=4)
    lrs = []
    for _ in range(5):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[1] == pytest.approx(0.05) and lrs[3] == pytest.approx(0.0) and lrs[4] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    again = CosineLR(opt, 0.1, total_steps=4)
    again.load_state_dict({"step_count": 1})
    again.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_gradual_train_prunes_during_the_dense_budget(tmp_path):
    """gradual-train: pruning while the dense recipe trains (tiny run: dense, dense reference and the one arm)."""
    assert main(["run", "prune", "--tiny", "--quiet", "--runs-dir", str(tmp_path), "--methods", "gradual-train",
                 "--train-prune", "0.0", "0.5"]) == 0
    summary = json.loads(next((tmp_path / "prune").iterdir()).joinpath("results.json").read_text())["results"]
    v = summary["summary"]["gradual-train"]["0.9"]
    assert v["sparsity_mean"] == pytest.approx(0.9, abs=0.01) and 0.0 <= v["test_acc_mean"] <= 1.0
    assert set(summary["summary"]) == {"dense", "dense-ref", "gradual-train"}


@pytest.mark.parametrize("value", [(0.6, 0.2), (0.1,), (-0.1, 0.5), (0.2, 1.5)])
def test_prune_config_rejects_bad_train_prune(value):
    with pytest.raises(ValueError, match="train_prune"):
        PruneConfig(train_prune=value)


def test_gradual_kd_with_alpha_zero_is_plain_gradual(tmp_path):
    """The distilled arm runs the gradual arm's recipe: with no distillation weight it gives the very same model."""
    assert main(["run", "prune", "--tiny", "--quiet", "--runs-dir", str(tmp_path), "--methods", "gradual",
                 "gradual-kd", "--distill-alpha", "0"]) == 0
    run_dir = next((tmp_path / "prune").iterdir())
    units = {m: json.loads((run_dir / "units" / f"{m}-0.9-seed0.json").read_text()) for m in ("gradual",
                                                                                               "gradual-kd")}
    res = {m: u.get("result", u) for m, u in units.items()}
    assert res["gradual-kd"]["val_loss"] == res["gradual"]["val_loss"]
    assert res["gradual-kd"]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert "Distilled gradual pruning" in (run_dir / "report.md").read_text()
