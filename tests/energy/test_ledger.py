"""Ledger: factors, missing factors, the product, the report table and log-scale chart."""
import json
import math

import pytest
import torch

from frugalnet.energy import Ledger, model_cost, samples_to_reach
from frugalnet.energy.meter import MeterResult
from frugalnet.models.cnn import dense_cnn2, sparse_cnn2
from frugalnet.report import Report


def meter_result(energy, label="estimated"):
    return MeterResult(wall_s=1.0, cpu_s=1.0, energy_j=energy, label=label, source=f"{label} (test)",
                       components_j={}, carbon_g=0.0, intensity_g_per_kwh=481.0, intensity_region="World average",
                       intensity_source="test", pue=1.0, pue_source="test")


def test_samples_to_reach():
    curve = [(100, 0.5), (200, 0.8), (300, 0.9)]
    assert samples_to_reach(curve, 0.8) == 200
    assert samples_to_reach(curve, 0.95) is None


def test_factors_and_product():
    led = Ledger("dense fp32", "sparse")
    led.add("compute", 1000, 100, kind="modelled")
    led.add("precision", 4.6, 0.23, kind="modelled")
    f = led.add_data_from_curves([(100, 0.6), (200, 0.9), (300, 0.95)], [(100, 0.7), (200, 0.95)])
    assert f.value == pytest.approx(300 / 200) and f.kind == "measured"
    e = led.add_epochs_from_curves([0.6, 0.9, 0.95], [0.7, 0.95])
    assert e.value == pytest.approx(1.5) and not e.in_product
    led.add_speed(2.0, 1.0)
    assert led.product == pytest.approx(10 * 20 * 1.5)
    assert led.product_complete
    d = led.to_dict()
    json.dumps(d)
    assert [x["kind"] for x in d["factors"]] == ["modelled", "modelled", "measured", "measured", "measured"]


def test_unreached_data_factor_is_shown_not_faked():
    led = Ledger()
    led.add("compute", 10, 2, kind="modelled")
    f = led.add_data_from_curves([(1, 0.5), (2, 0.9)], [(1, 0.4), (2, 0.8)])
    assert f.value is None and "not reached" in f.note
    assert led.product == pytest.approx(5.0)
    assert not led.product_complete
    assert "excludes data" in led.product_label()
    row = next(r for r in led.table_rows() if r[0] == "data")
    assert row[1] == "not reached"
    with_tol = Ledger().add_data_from_curves([(1, 0.5), (2, 0.9)], [(1, 0.4), (2, 0.8)], tolerance=0.1)
    assert with_tol.value == pytest.approx(1.0)


def test_validation():
    led = Ledger()
    with pytest.raises(ValueError, match="kind"):
        led.add("x", 1, 1, kind="guessed")
    with pytest.raises(ValueError, match="run cost"):
        led.add("x", 1, 0, kind="measured")
    led.add("x", 1, 1, kind="measured")
    with pytest.raises(ValueError, match="already"):
        led.add("x", 2, 1, kind="measured")
    with pytest.raises(ValueError, match="non-empty"):
        led.add_data_from_curves([], [(1, 0.5)])


def test_ledger_from_cost_model_and_meter_into_report(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 28, 28)
    dense = model_cost(dense_cnn2(), x, training=True)
    sparse = model_cost(sparse_cnn2(), x, training=True)
    low = sparse_cnn2()
    for m in (low.conv2, low.fc1):
        m.gemm_bits = {"forward": (4, 4), "grad_input": (4, 4), "grad_weight": (4, 4)}
    lowcost = model_cost(low, x, training=True)
    led = Ledger("dense fp32", "sparse 4-bit")
    c = led.add_compute(dense, lowcost)
    p = led.add_precision(dense, lowcost)
    assert c.value == pytest.approx(dense.effective_macs / lowcost.effective_macs)
    assert c.value > 1 and p.value > 1
    assert sparse.energy_per_mac_j == pytest.approx(dense.energy_per_mac_j)  # both FP32
    en = led.add_energy(meter_result(10.0), meter_result(4.0))
    assert en.kind == "estimated" and not en.in_product
    assert led.product == pytest.approx(c.value * p.value)
    report = Report("ledger test")
    led.add_to_report(report, "sparse-vs-dense")
    md = report.write(tmp_path).read_text()
    assert "modelled" in md and "estimated" in md and "product" in md
    assert (tmp_path / "sparse-vs-dense-ledger.png").stat().st_size > 1000
    assert math.isfinite(led.product)
    assert "savings of sparse 4-bit against dense fp32" in led.format_table()


def test_costs_read_back_from_json_give_the_same_factors():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 28, 28)
    d, s = model_cost(dense_cnn2(), x, training=True), model_cost(sparse_cnn2(), x, training=True)
    a, b = Ledger(), Ledger()
    a.add_compute(d, s), a.add_precision(d, s)
    b.add_compute(json.loads(json.dumps(d.to_dict())), json.loads(json.dumps(s.to_dict())))
    b.add_precision(d.to_dict(), s.to_dict())
    assert [f.value for f in a.factors] == pytest.approx([f.value for f in b.factors])
    with pytest.raises(ValueError, match="no 'effective_macs'"):
        Ledger().add_compute({}, s)


def test_factor_spread_and_flag_are_shown_and_validated(tmp_path):
    led = Ledger("dense", "engine")
    f = led.add("inference speed", 3.0, 1.0, kind="measured", unit="s", in_product=False, low=2.5, high=3.5,
                spread="quartiles of 9 rounds", flag="wide spread")
    assert f.value_text() == "3x [2.5-3.5] WIDE SPREAD"
    table = led.format_table()
    assert "3x [2.5-3.5] WIDE SPREAD" in table and "quartiles of 9 rounds" in table
    assert led.to_dict()["factors"][0]["low"] == 2.5
    with pytest.raises(ValueError, match="both low and high"):
        led.add("x", 1.0, 1.0, kind="measured", low=1.0)
    with pytest.raises(ValueError, match="low <= high"):
        led.add("y", 1.0, 1.0, kind="measured", low=2.0, high=1.0)
    report = Report("spread")
    led.add_to_report(report, "spread")          # the chart draws the spread as an error bar
    report.write(tmp_path)
    assert (tmp_path / "spread-ledger.png").stat().st_size > 1000


def test_value_outside_its_spread_still_draws(tmp_path):
    """A ratio of medians can fall outside the quartiles of per-round ratios (seen in CI on a noisy machine);
    the chart must still draw instead of failing on a negative error-bar length."""
    led = Ledger("dense", "sparse")
    led.add("inference speed", 1.0, 1.0, kind="measured", unit="s", in_product=False, low=1.2, high=1.5,
            spread="quartiles of 5 rounds")
    led.add("training speed", 3.0, 1.0, kind="measured", unit="s", in_product=False, low=1.5, high=2.0,
            spread="quartiles of 5 rounds")
    assert led.factors[0].value == 1.0 and led.factors[0].low == 1.2
    report = Report("outside")
    led.add_to_report(report, "outside")
    report.write(tmp_path)
    assert (tmp_path / "outside-ledger.png").stat().st_size > 1000
