import json

import numpy as np
import pytest
import torch
from torch import nn

from frugalnet.bench import model_cases as MC
from frugalnet.bench.compare import RunSettings, run_model_case
from frugalnet.bench.config import BenchConfig, select_groups
from frugalnet.bench.export_friendly import export_friendly
from frugalnet.bench.harness import count_macs, interleaved_samples, outputs_match, spread
from frugalnet.bench.pruning import magnitude_mask, magnitude_prune_
from frugalnet.bench.report import notes_lines, table_rows, write_report
from frugalnet.nn import KWinners, KWinners2d, SparseConv2d, SparseLinear

QUICK = RunSettings(repeats=2, min_time=0.0, max_seconds=1.0, torch_compile=False)


def test_case_filter():
    from frugalnet.bench.config import LOWBIT_GROUP_NAMES, MODEL_GROUP_NAMES
    from frugalnet.bench.lowbit_cases import LOWBIT_GROUPS

    assert tuple(MC.MODEL_GROUPS) == MODEL_GROUP_NAMES and tuple(LOWBIT_GROUPS) == LOWBIT_GROUP_NAMES
    assert select_groups("resnet") == ("resnet-relu", "resnet-kwta")
    assert select_groups("gpt,linear") == ("linear", "gpt")
    assert "cnn2" in select_groups(None)
    with pytest.raises(ValueError, match="no case group matches 'vgg'"):
        select_groups("vgg")
    with pytest.raises(ValueError, match="threads"):
        BenchConfig(threads=0)


def test_magnitude_prune_keeps_the_largest_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    before = [m.weight.detach().clone() for m in (model[0], model[3])]
    magnitude_prune_(model, 0.9)
    assert isinstance(model[0], SparseConv2d) and isinstance(model[3], SparseLinear)
    for layer, w in zip((model[0], model[3]), before):
        kept = layer.weight != 0
        assert kept.sum() == round(0.1 * w.numel())
        assert w[kept].abs().min() >= w[~kept].abs().max()
        assert torch.equal(layer.weight[kept], w[kept]) and torch.equal(kept, layer.weight_mask)
    m = magnitude_mask(torch.tensor([[0.1, -3.0], [2.0, 0.5]]), 0.5)
    assert m.tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_prune_(model, 1.5)


def test_export_friendly_kwta_computes_the_same():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), KWinners2d(8, 0.1, k_inference_factor=1.0),
                          nn.Conv2d(8, 8, 1), KWinners2d(8, 0.25, local=True), nn.Flatten(),
                          nn.Linear(8 * 36, 20), KWinners(20, 0.2)).eval()
    for m in model:
        if hasattr(m, "duty_cycle"):
            m.duty_cycle.uniform_(0, 0.3)
    x = torch.randn(3, 3, 6, 6)
    friendly, n = export_friendly(model, (x,))
    assert n == 3 and not any(isinstance(m, (KWinners, KWinners2d)) for m in friendly.modules())
    with torch.no_grad():
        torch.testing.assert_close(friendly(x), model(x))
    plain = nn.Linear(3, 3)
    assert export_friendly(plain, (torch.zeros(1, 3),)) == (plain, 0)


def test_harness_pieces():
    ok, diff = outputs_match((torch.ones(2), np.zeros(3)), (torch.ones(2), np.zeros(3)))
    assert ok and diff == 0.0
    assert outputs_match(torch.ones(2) * 1.01, torch.ones(2))[0] is False
    assert outputs_match(torch.ones(2), torch.ones(3))[0] is False
    s = spread([1.0, 1.0, 1.0, 2.0, 3.0])
    assert s["median"] == 1.0 and s["wide"] and s["max"] == 3.0
    calls = {"a": 0, "b": 0}
    samples = interleaved_samples({k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}, repeats=4)
    assert all(len(v) == 4 for v in samples.values()) and calls["a"] == calls["b"] == 5
    lin = SparseLinear(10, 4, 0.5, seed=0)
    x = torch.zeros(3, 10)
    x[:, :2] = 1.0
    dense, eff = count_macs(lin, (x,))
    assert dense == 3 * 10 * 4 and eff == 3 * float(lin.weight_mask[:, :2].sum())


def test_kwta_activation_for_tokens():
    act = MC.token_kwinners(20, 0.1)
    y = act(torch.randn(2, 5, 20))
    assert y.shape == (2, 5, 20) and ((y != 0).sum(-1) == 2).all()


@pytest.mark.parametrize("build", [lambda: MC.resnet_case(1, "relu", width=4),
                                   lambda: MC.gpt_case(1, hidden=32, ffn=64, layers=1, heads=4, kv=8, vocab=50)])
def test_model_case_runs_every_method_on_the_same_weights(build):
    case = build()
    r = run_model_case(case, QUICK)
    assert r["limit"] > 1.5 and r["effective_macs"] < r["dense_macs"]
    m = r["methods"]
    assert m["torch_eager"]["outputs_match"] is True and m["torch_eager"]["speedup"] == 1.0
    assert set(m) == {"torch_eager", "torch_compile", "onnxruntime", "openvino_f32", "openvino_default", "frugalnet"}
    for name, e in m.items():
        if not e["available"]:
            assert e["note"]          # every missing method says why
        elif e["precision"] == "fp32" and name != "frugalnet":
            assert e["outputs_match"] is True, (name, e)
    if m["frugalnet"]["available"]:
        assert m["frugalnet"]["outputs_match"] is True
    else:
        assert m["frugalnet"]["note"].startswith("not compiled")
    headers, rows = table_rows([r])
    assert len(rows[0]) == len(headers) and rows[0][headers.index("torch_compile ms (x)")] == "n/a"
    assert any("torch_compile: n/a" in line for line in notes_lines([r]))
    json.dumps(r)   # JSON-able


def test_report_has_one_table_per_kind(tmp_path):
    case = MC.bert_case(1, hidden=16, ffn=32, layers=1, heads=2, seq=8)
    r = run_model_case(case, RunSettings(repeats=1, min_time=0.0, max_seconds=1.0, torch_compile=False,
                                         profile=True))
    if r["methods"]["frugalnet"]["available"]:   # --profile: the engine's time per program node, JSON-able
        prof = r["engine_profile"]
        assert prof and all(row["runner"] in ("ours", "dense", "fallback", "glue") and row["ms"] >= 0
                            for row in prof)
        assert any(row["op"] == "linear" for row in prof) and any(row["runner"] == "fallback" for row in prof)
        json.dumps(prof)
    result = {"threads": 2, "cases": [r], "wall_s": 1.0,
              "machine": {"cpu": "test cpu", "isa": ["avx2"], "widest_isa": "AVX2", "torch": "x"}}
    text = write_report(result, tmp_path, "frugalnet bench --cases bert").read_text()
    assert "Whole models" in text and "test cpu" in text and (tmp_path / "speedups.png").exists()
