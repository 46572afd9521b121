import json

import pytest

from frugalnet.cli import main
from frugalnet.studies.sparse_vs_dense import SparseVsDenseConfig


def test_demo_tiny_end_to_end(tmp_path, capsys):
    assert main(["demo", "--tiny", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    run_dir = next((tmp_path / "sparse-vs-dense").iterdir())
    results = json.loads((run_dir / "results.json").read_text())["results"]
    summary = results["summary"]
    for kind in ("dense", "sparse"):
        assert 0.0 <= summary[kind]["test_acc_mean"] <= 1.0
        assert len(summary[kind]["noise_acc_mean"]) == 3
    assert summary["sparse"]["nonzero_weights"] < summary["dense"]["nonzero_weights"]
    # k-WTA layers are measured sparser than the dense ReLUs
    assert summary["sparse"]["activation_sparsity"]["act3"] >= 1 - 150 / 700 - 1e-6   # eval k = floor(100 * 1.5)
    report = (run_dir / "report.md").read_text()
    assert "noise score" in report and (run_dir / "accuracy_vs_noise.png").exists()
    out = capsys.readouterr().out
    assert "accuracy gap" in out and "report.md" in out


def test_cli_run_bad_option_gives_clear_error(tmp_path, capsys):
    assert main(["run", "sparse-vs-dense", "--epochs", "0", "--runs-dir", str(tmp_path)]) == 2
    assert "epochs must be >= 1" in capsys.readouterr().err


def test_cli_missing_data_dir_error(tmp_path, capsys):
    assert main(["run", "sparse-vs-dense", "--dataset", "mnist", "--data-dir", str(tmp_path / "x"),
                 "--runs-dir", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="noise_levels"):
        SparseVsDenseConfig(noise_levels=(0.0, 2.0)).validate()
