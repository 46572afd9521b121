"""The `lowbit` study: config validation and a tiny end-to-end run (every task path that needs no local data)."""
import json

import pytest

from frugalnet.studies import get_study, run_study
from frugalnet.studies.lowbit import LowbitConfig


@pytest.mark.parametrize("field,value,match", [
    ("tasks", ("mnist", "imagenet"), "tasks"), ("recipes", ("ibm5",), "recipes"), ("epochs", 0, "epochs"),
    ("lm_width", 66, "lm_width"), ("lr_gamma", 1.5, "lr_gamma"), ("timing_repeats", -1, "timing_repeats"),
])
def test_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):   # configs validate on construction
        LowbitConfig(**{field: value})


def test_registered():
    assert get_study("lowbit").config_cls is LowbitConfig


def test_tiny_run_end_to_end(tmp_path):
    cfg = LowbitConfig(seeds=1, tasks=("mnist", "cifar10", "charlm"), recipes=("fp32", "ibm4", "nvfp4"), epochs=1,
                       train_subset=256, channels=(4, 8), hidden=16, lm_steps=4, lm_eval_every=2,
                       lm_eval_batches=1, lm_batch=4, lm_context=16, lm_width=16, lm_layers=1, timing_repeats=1,
                       batch_size=64, runs_dir=str(tmp_path), quiet=True)
    result = run_study("lowbit", cfg)
    res = result.results
    assert set(res["tasks"]) == {"mnist", "charlm"}
    assert "cifar10 skipped" in res["notes"][0]
    for task, metric in (("mnist", "test_acc"), ("charlm", "val_loss")):
        assert res["tasks"][task]["metric"] == metric
        assert set(res["tasks"][task]["recipes"]) == {"fp32", "ibm4", "nvfp4"}
    assert 0.0 <= res["tasks"]["mnist"]["recipes"]["ibm4"]["mean"] <= 1.0
    assert res["tasks"]["charlm"]["recipes"]["fp32"]["mean"] > 0
    assert set(res["step_time"]) == {"fp32", "ibm4", "nvfp4"} and res["step_time"]["fp32"]["ratio"] == 1.0
    packed = res["packing"]["ibm4 / CNN-2 (32, 64, 700)"]
    assert packed["bit_exact"] and packed["ratio"] >= 7.0
    assert set(res["criteria"]) >= {"mnist_within_1pt", "charlm_within_5pct", "step_at_most_3x", "packed_at_least_7x"}
    saved = json.loads((result.dir / "results.json").read_text())
    assert saved["results"]["criteria"] == json.loads(json.dumps(res["criteria"]))
    report = (result.dir / "report.md").read_text()
    assert "mnist" in report and "Packed storage" in report and (result.dir / "mnist_loss.png").is_file()
    # the ledger: ibm4 against FP32, each factor labelled how it was obtained
    factors = {f["name"]: f for f in saved["results"]["ledger"]["factors"]}
    assert factors["precision"]["kind"] == "modelled" and factors["precision"]["value"] > 1
    packed_small = res["packing"]["ibm4 / study CNN"]
    assert factors["packed size"]["kind"] == "measured" and factors["packed size"]["value"] == pytest.approx(
        packed_small["fp32_bytes"] / packed_small["packed_bytes"])
    assert factors["step time"]["kind"] == "measured" and "SIMULATION COST" in factors["step time"]["note"]
    assert factors["step time"]["value"] == pytest.approx(1 / res["step_time"]["ibm4"]["ratio"])
    assert not factors["step time"]["in_product"] and "data" in factors
    assert "Savings ledger" in report and (result.dir / "lowbit-ledger.png").is_file()
