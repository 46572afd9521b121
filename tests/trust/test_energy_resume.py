"""The metered training energy of a resumed run is the sum over its parts (it used to cover the resumed part only,
which made the ledger's energy factor 0.37x after a resume)."""
import pytest

import frugalnet.studies.sparse_vs_dense as svd
from frugalnet.experiment import resume_run, run_study


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
    sparse, dense = runs["sparse"]["train_energy"], runs["dense"]["train_energy"]
    # every epoch is metered on its own and kept in the checkpointed history, so the 2 epochs trained before the
    # interruption count as well as the one after it (the resumed run used to count only the time after resume)
    assert sparse["epochs_metered"] == 3 and dense["epochs_metered"] == 3
    hist = runs["sparse"]["history"]
    assert sparse["cpu_s"] == pytest.approx(sum(h["cpu_s"] for h in hist)) and sparse["cpu_s"] > hist[-1]["cpu_s"]
