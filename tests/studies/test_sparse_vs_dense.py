import json

import pytest

from frugalnet.cli import main
from frugalnet.engine.speedup import ratio_spread, spread
from frugalnet.studies.sparse_vs_dense import EpochMeter, SparseVsDenseConfig, build_ledger, build_lowbit_ledger, \
    demo_config


def test_demo_tiny_end_to_end(tmp_path, capsys):
    assert main(["demo", "--tiny", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    run_dir = next((tmp_path / "sparse-vs-dense").iterdir())
    results = json.loads((run_dir / "results.json").read_text())["results"]
    summary = results["summary"]
    for kind in ("dense", "sparse", "sparse-4bit"):
        assert 0.0 <= summary[kind]["test_acc_mean"] <= 1.0
        assert len(summary[kind]["noise_acc_mean"]) == 3
    assert summary["sparse"]["nonzero_weights"] < summary["dense"]["nonzero_weights"]
    # k-WTA layers are measured as sparse as their k at inference says
    cfg = demo_config(tiny=True)
    k_eval = int(round(700 * cfg.hidden_percent_on) * cfg.k_inference_factor)
    assert summary["sparse"]["activation_sparsity"]["act3"] >= 1 - k_eval / 700 - 1e-6
    # two ledgers: sparse vs dense (with the metered training energy and the engine's speed with its spread), and
    # sparse 4-bit vs dense (compute x precision on one model)
    sparse = {f["name"]: f for f in results["ledgers"]["sparse"]["factors"]}
    energy = sparse["metered training energy"]
    assert energy["value"] == pytest.approx(energy["baseline"] / energy["run"]) and energy["kind"] in (
        "measured", "estimated")
    speed = sparse["inference speed, batch 1"]
    assert speed["low"] <= speed["high"] and "interleaved rounds" in speed["spread"]
    low = {f["name"]: f for f in results["ledgers"]["sparse-4bit"]["factors"]}
    assert low["precision"]["value"] > 1 and low["compute"]["value"] > 1
    assert "SIMULATION COST" in low["metered training energy"]["note"]
    assert "sparse ibm4" in results["ledgers"]["sparse-4bit"]["run"] and "%" in results["ledgers"]["sparse-4bit"]["run"]
    report = (run_dir / "report.md").read_text()
    assert "noise score" in report and (run_dir / "accuracy_vs_noise.png").exists()
    assert "sparse + 4-bit against dense FP32" in report
    out = capsys.readouterr().out
    assert "accuracy gap" in out and "report.md" in out and "savings of sparse ibm4" in out


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
    for field, value, match in (("lowbit_recipe", "ibm5", "lowbit_recipe"), ("lowbit_recipe", "fp32", "lowbit_recipe"),
                                ("lowbit_seeds", -1, "lowbit_seeds"), ("hidden_percent_on", 1.0, "percent_on"),
                                ("conv_percent_on", (0.1,), "percent_on"), ("hidden_weight_sparsity", 1.0, "sparsity"),
                                ("boost_strength_factor", 0.0, "boost_strength_factor"),
                                ("k_inference_factor", 0.5, "k_inference_factor")):
        with pytest.raises(ValueError, match=match):
            SparseVsDenseConfig(**{field: value})
    assert SparseVsDenseConfig(lowbit_recipe="").kinds() == ("dense", "sparse")


def test_spread_of_interleaved_rounds_flags_a_wide_one():
    steady = spread([2.0, 2.1, 1.9, 2.0, 2.05])
    assert steady["median"] == 2.0 and steady["min"] == 1.9 and steady["max"] == 2.1 and not steady["wide"]
    noisy = ratio_spread([1.0, 1.0, 1.0, 1.0, 1.0], [0.5, 0.1, 0.9, 0.002, 0.4])   # one stalled round: 500x
    assert noisy["max"] == pytest.approx(500.0) and noisy["median"] == pytest.approx(2.5) and noisy["wide"]
    with pytest.raises(ValueError):
        spread([])


def _run(model, seed, energy, acc, curve, cost):
    return {"model": model, "seed": seed, "test_acc": acc, "train_energy": {"energy_j": energy, "estimated": True,
            "source": "estimated"}, "history": [{"samples": 100 * (i + 1), "test_acc": a} for i, a in
                                               enumerate(curve)], "cost_per_step": cost}


def test_ledgers_pair_energy_by_seed_and_state_accuracies():
    import torch

    from frugalnet.energy import model_cost
    from frugalnet.models import dense_cnn2, sparse_cnn2

    x = torch.rand(2, 1, 28, 28)
    d, s = model_cost(dense_cnn2(), x, training=True).to_dict(), model_cost(sparse_cnn2(), x, training=True).to_dict()
    runs = [_run("dense", 0, 100.0, 0.98, [0.9, 0.98], d), _run("sparse", 0, 50.0, 0.97, [0.9, 0.98], s),
            _run("dense", 1, 120.0, 0.99, [0.9, 0.99], d), _run("sparse", 1, 40.0, 0.97, [0.95, 0.97], s),
            _run("sparse-4bit", 0, 400.0, 0.96, [0.9, 0.96], s)]
    led = {f.name: f for f in build_ledger(runs).factors}
    e = led["metered training energy"]
    assert e.value == pytest.approx(110 / 45) and (e.low, e.high) == pytest.approx((2.0, 3.0))
    assert e.kind == "estimated"
    low = build_lowbit_ledger(runs, "ibm4")
    assert "98.00%" in low.baseline and "1 seed" in low.baseline        # dense of the 4-bit run's seeds only
    f = {x.name: x for x in low.factors}
    assert f["metered training energy"].value == pytest.approx(100 / 400)


def test_epoch_meter_sums_checkpointed_epochs():
    m = EpochMeter({})
    m.start()
    rec = m.stop()
    assert rec["energy_j"] >= 0 and isinstance(rec["energy_estimated"], bool)
    hist = [{"energy_j": 2.0, "cpu_s": 1.0, "energy_estimated": True, "energy_source": "s"},
            {"energy_j": 3.0, "cpu_s": 1.5, "energy_estimated": False, "energy_source": "s"}]
    total = EpochMeter.total(hist)   # epochs done before a resume are in the history, so they count
    assert total["energy_j"] == 5.0 and total["estimated"] and total["epochs_metered"] == 2


def test_warm_up_leaves_the_model_alone():
    import torch

    from frugalnet.data.core import DataBundle, Split
    from frugalnet.studies.sparse_vs_dense import build_model
    from frugalnet.studies.sparse_vs_dense_meter import warm_up

    cfg = SparseVsDenseConfig(name="t", hidden=16, channels=(4, 8), batch_size=8)
    gen = torch.Generator().manual_seed(0)
    train = Split(torch.rand(12, 1, 28, 28, generator=gen), torch.randint(0, 10, (12,), generator=gen))
    bundle = DataBundle(name="t", train=train, test=train, num_classes=10, input_shape=(1, 28, 28), mean=0.1,
                        std=0.3)
    for kind in ("dense", "sparse"):
        model = build_model(kind, bundle, cfg, seed=0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        assert warm_up(model, train, bundle, cfg) >= 0.0
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)   # weights, duty cycles, BN statistics
        assert all(p.grad is None for p in model.parameters())
