import json

import pytest

from frugalnet.experiment.runner import run_study
from frugalnet.studies.prune import PruneConfig, tiny_config


@pytest.mark.slow   # ~50-90 s on 2 shared cores: six short trainings and a report
def test_prune_tiny_end_to_end_and_resume(tmp_path):
    res = run_study(tiny_config(runs_dir=str(tmp_path)))
    summary = res.results["summary"]
    for method in ("dense", "oneshot-layer", "oneshot", "oneshot-ft", "random", "random-ft", "gradual", "rigl"):
        assert method in summary
    for method in ("oneshot", "gradual", "rigl", "random"):
        v = summary[method]["0.9"]
        assert 0.0 <= v["test_acc_mean"] <= 1.0
        # one-shot, random and gradual prune the same weights to 90%; RigL's ERK keeps the small layers denser
        assert v["sparsity_mean"] == pytest.approx(0.9, abs=0.02 if method != "rigl" else 0.1)
    report = (res.dir / "report.md").read_text()
    assert "Accuracy and validation loss against sparsity" in report and "Ledger at 90%" in report
    assert (res.dir / "accuracy_vs_sparsity.png").exists()
    units = sorted(p.name for p in (res.dir / "units").iterdir())
    assert "rigl-0.9-seed0.json" in units and "dense-seed0.json" in units
    # the units are resumable: a resume reads them back and gives the same summary
    from frugalnet.experiment.runner import resume_run

    again = resume_run(res.dir)
    assert again.results["summary"] == json.loads(json.dumps(summary))


@pytest.mark.parametrize("field,value", [("sparsities", (0.0,)), ("sparsities", (1.0,)), ("epochs", 0),
                                         ("finetune_lr", 0.0), ("rigl_alpha", 1.5)])
def test_prune_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        PruneConfig(**{field: value})
