import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from frugalnet.data import Split
from frugalnet.studies import FitConfig, StudyConfig, fit, register_study, resume_run, run_study
from frugalnet.experiment.registry import get_study
from frugalnet.utils.io import load_checkpoint

CALLS: list[str] = []


@dataclass
class ToyConfig(StudyConfig):
    units: int = 2
    fail_at: int = -1

    def validate(self) -> None:
        super().validate()
        if self.units < 1:
            raise ValueError(f"units must be >= 1, got {self.units}")


@register_study("toy-test", ToyConfig, "a study used by the tests")
def toy(ctx):
    out = []
    for i in range(ctx.config.units):
        def work(i=i):
            if i == ctx.config.fail_at:
                raise KeyboardInterrupt
            CALLS.append(f"unit{i}")
            ctx.log(unit=i, value=i * i)
            return {"i": i, "square": i * i}
        out.append(ctx.unit(f"unit{i}", work))
    ctx.report.table(["i", "square"], [[r["i"], r["square"]] for r in out])
    return {"units": out}


def test_run_writes_the_run_folder(tmp_path):
    res = run_study("toy-test", ToyConfig(runs_dir=str(tmp_path), name="a", units=3))
    assert res.dir.parent == tmp_path / "toy-test" and res.dir.name.endswith("-a")
    cfg = json.loads((res.dir / "config.json").read_text())
    assert cfg["study"] == "toy-test" and cfg["config"]["units"] == 3 and "torch" in cfg["environment"]
    results = json.loads((res.dir / "results.json").read_text())
    assert [u["square"] for u in results["results"]["units"]] == [0, 1, 4]
    assert results["timing"]["wall_seconds"] >= 0
    lines = [json.loads(line) for line in (res.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["value"] for r in lines if "value" in r] == [0, 1, 4]
    assert "| 2 | 4 |" in (res.dir / "report.md").read_text()
    assert "<table>" in (res.dir / "report.html").read_text()


def test_interrupted_run_resumes_without_redoing_finished_units(tmp_path):
    CALLS.clear()
    with pytest.raises(KeyboardInterrupt):
        run_study("toy-test", ToyConfig(runs_dir=str(tmp_path), units=3, fail_at=2))
    run_dir = next((tmp_path / "toy-test").iterdir())
    assert not (run_dir / "results.json").exists() and CALLS == ["unit0", "unit1"]
    res = resume_run(run_dir, fail_at=-1)
    assert CALLS == ["unit0", "unit1", "unit2"] and res.dir == run_dir
    assert (run_dir / "results.json").exists()


def test_config_validation_names_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="units"):
        run_study("toy-test", ToyConfig(runs_dir=str(tmp_path), units=0))
    with pytest.raises(ValueError, match="seeds"):
        run_study("toy-test", ToyConfig(runs_dir=str(tmp_path), seeds=0))
    with pytest.raises(ValueError, match="unknown study"):
        get_study("nope")
    with pytest.raises(FileNotFoundError, match="config.json"):
        resume_run(tmp_path)


def _toy_data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return Split(x, (x[:, 0] > 0).long())


def _toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def test_fit_learns_and_logs():
    logs = []
    out = fit(_toy_model(), _toy_data(), FitConfig(epochs=8, batch_size=16, lr=0.1), log=lambda **r: logs.append(r))
    assert len(out["history"]) == 8 and len(logs) == 8
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]


def test_fit_resumes_from_checkpoint_to_identical_weights(tmp_path):
    cfg = FitConfig(epochs=4, batch_size=16, lr=0.1)
    ref = _toy_model()
    fit(ref, _toy_data(), cfg, seed=3)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, model):
        if epoch == 1:
            raise Stop

    ckpt = tmp_path / "m.pt"
    interrupted = _toy_model()
    with pytest.raises(Stop):
        fit(interrupted, _toy_data(), cfg, seed=3, checkpoint=str(ckpt), on_epoch_end=stop_after_two)
    # epoch 1 finished and was saved; epoch 2's checkpoint never happened
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = _toy_model()
    out = fit(resumed, _toy_data(), cfg, seed=3, checkpoint=str(ckpt))
    assert len(out["history"]) == 4
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_fit_rejects_bad_config():
    with pytest.raises(ValueError, match="batch_size"):
        fit(_toy_model(), _toy_data(), FitConfig(batch_size=0))
