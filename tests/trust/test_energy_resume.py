"""The metered training energy of a resumed run is the sum over its parts (it used to cover the resumed part only,
which made the ledger's energy factor 0.37x after a resume)."""
import pytest

import frugalnet.studies.sparse_vs_dense as svd
from frugalnet.experiment import resume_run, run_study
from frugalnet.utils.io import read_json


def test_sparse_vs_dense_training_energy_after_resume_sums_its_parts(tmp_path, monkeypatch):
    real_fit = svd.fit
    calls = []

    def fit_killed_in_the_sparse_model(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        if kwargs.get("desc") == "sparse-seed0" and calls.count("sparse-seed0") == 1:
            inner = kwargs["on_epoch_end"]

            def stop(epoch, model):
                out = inner(epoch, model)
                if epoch == 1:
                    raise KeyboardInterrupt   # after epoch 1's checkpoint, before epoch 2's
                return out
            kwargs["on_epoch_end"] = stop
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(svd, "fit", fit_killed_in_the_sparse_model)
    cfg = svd.SparseVsDenseConfig(name="e", seeds=1, epochs=3, train_subset=128, test_subset=50, channels=(4, 8),
                                  hidden=32, noise_levels=(0.0,), engine_speedup=False, runs_dir=str(tmp_path), quiet=True)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg)
    run_dir = next((tmp_path / "sparse-vs-dense").iterdir())
    res = resume_run(run_dir)
    runs = {r["model"]: r for r in res.results["runs"]}
    parts = read_json(run_dir / "energy_parts.json")
    sparse, dense = runs["sparse"]["train_energy"], runs["dense"]["train_energy"]
    assert len(parts["train-sparse-seed0"]) == 2 and sparse["parts"] == 2 and dense["parts"] == 1
    assert sparse["energy_j"] == pytest.approx(sum(p["energy_j"] for p in parts["train-sparse-seed0"]))
    assert sparse["cpu_s"] == pytest.approx(sum(p["cpu_s"] for p in parts["train-sparse-seed0"]))
    assert sparse["cpu_s"] > parts["train-sparse-seed0"][1]["cpu_s"]       # more than the resumed part alone
    assert any("resumed: 2 parts" in n for n in sparse["notes"])
