"""Run folders: locks, a changed config refused on resume, no half-made folders, energy summed over the parts of a
resumed run."""
import json
import os
import subprocess
import sys

import pytest
import torch

from frugalnet.data import Split
from frugalnet.experiment import FitConfig, fit, load_run_config, resume_run, run_study
from frugalnet.utils.checksum import FileCheckError
from frugalnet.utils.io import read_json
from frugalnet.utils.lock import FileLock, LockedError
from tests.trust import toystudy
from tests.trust.toystudy import TrustToyConfig


def _interrupted(tmp_path, unit=1, epoch=1):
    toystudy.STOP.update(unit=unit, epoch=epoch)
    with pytest.raises(KeyboardInterrupt):
        run_study(TrustToyConfig(runs_dir=str(tmp_path), quiet=True))
    toystudy.STOP.clear()
    return next((tmp_path / "trust-toy").iterdir())


def test_resume_equals_an_uninterrupted_run_and_energy_sums_the_parts(tmp_path):
    full = run_study(TrustToyConfig(runs_dir=str(tmp_path / "full"), quiet=True))
    run_dir = _interrupted(tmp_path / "cut")
    parts_before = read_json(run_dir / "energy_parts.json")
    assert len(parts_before["unit1"]) == 1 and len(parts_before["run"]) == 1
    res = resume_run(run_dir)
    assert res.results == full.results
    parts = read_json(run_dir / "energy_parts.json")
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["energy"]["parts"] == 2 and len(parts["run"]) == 2
    assert saved["energy"]["energy_j"] == pytest.approx(sum(p["energy_j"] for p in parts["run"]))
    assert saved["energy"]["cpu_s"] == pytest.approx(sum(p["cpu_s"] for p in parts["run"]))
    assert any("resumed: 2 parts" in n for n in saved["energy"]["notes"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["energy_parts"] for m in metrics if m.get("unit") == "unit1" and "energy_parts" in m] == [2]
    assert "resumed" in (run_dir / "report.md").read_text()


def test_changed_config_is_refused_unless_forced(tmp_path):
    run_dir = _interrupted(tmp_path)
    cfg_file = run_dir / "config.json"
    data = json.loads(cfg_file.read_text())
    data["config"]["lr"] = 0.05
    cfg_file.write_text(json.dumps(data))
    with pytest.raises(FileCheckError, match="config.json was changed since the run started.*--force"):
        resume_run(run_dir)
    res = resume_run(run_dir, allow_changed_config=True)
    assert res.results["units"][1]["i"] == 1
    assert read_json(cfg_file)["config"]["lr"] == 0.05          # checksum renewed
    assert any(json.loads(line).get("event") == "config changed"
               for line in (run_dir / "metrics.jsonl").read_text().splitlines())


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("study"), "must hold"),
    (lambda d: d["config"].update(epochs="3"), "epochs must be an integer"),
    (lambda d: d["config"].update(lr=float("inf")), "lr must be a finite number"),
    (lambda d: d["config"].update(bogus=1), "unknown TrustToyConfig fields"),
])
def test_bad_config_json_is_named(tmp_path, edit, match):
    run_dir = _interrupted(tmp_path)
    cfg_file = run_dir / "config.json"
    data = json.loads(cfg_file.read_text())
    edit(data)
    cfg_file.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match) as err:
        load_run_config(run_dir, allow_changed_config=True)
    assert "config.json" in str(err.value)


def test_a_second_resume_of_a_folder_in_use_is_refused(tmp_path):
    run_dir = _interrupted(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "run.lock").write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename, "since": 0}))
        with pytest.raises(LockedError, match=f"in use by process {holder.pid}"):
            resume_run(run_dir)
        assert not (run_dir / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match="stale lock"):        # its process is gone: taken over
        resume_run(run_dir)
    assert (run_dir / "results.json").exists() and not (run_dir / "run.lock").exists()


def test_lock_is_exclusive_within_a_process_too(tmp_path):
    with FileLock(tmp_path / "run.lock"):
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run.lock").exists()


def test_an_early_failure_leaves_no_half_made_folder(tmp_path):
    toystudy.FAIL["error"] = ValueError("no data")
    with pytest.raises(ValueError, match="no data"):
        run_study(TrustToyConfig(runs_dir=str(tmp_path), quiet=True))
    assert not (tmp_path / "trust-toy").exists()


def test_a_failure_after_work_was_saved_keeps_the_folder(tmp_path):
    run_dir = _interrupted(tmp_path)          # a KeyboardInterrupt keeps the folder for `frugalnet resume`
    assert (run_dir / "units" / "unit0.json").is_file()


def test_runs_dir_that_is_a_file_is_refused_before_any_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder.*--runs-dir"):
        run_study(TrustToyConfig(runs_dir=str(tmp_path / "f" / "runs"), quiet=True))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_runs_dir_not_writable_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ValueError, match="not writable"):
        run_study(TrustToyConfig(runs_dir=str(ro), quiet=True))


def test_fit_on_an_empty_split_is_refused():
    with pytest.raises(ValueError, match="empty training split"):
        fit(torch.nn.Linear(4, 2), Split(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), FitConfig(epochs=1))


@pytest.mark.parametrize("field, value", [("lr", float("inf")), ("lr", float("nan")), ("lr", 0.0), ("lr", -1.0),
                                          ("momentum", float("inf")), ("weight_decay", -0.1), ("lr_gamma", 0.0),
                                          ("epochs", 1.5), ("batch_size", 0)])
def test_fit_config_refuses_non_finite_and_out_of_range_values(field, value):
    cfg = FitConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        cfg.validate()
