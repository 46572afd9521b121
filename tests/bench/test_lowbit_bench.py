import numpy as np
import pytest
import torch
from torch import nn

from frugalnet.bench import lowbit_baselines as LB
from frugalnet.bench import lowbit_cases as LC
from frugalnet.bench.compare import RunSettings
from frugalnet.bench.report import table_rows
from frugalnet.nn import SparseLinear


def test_plain_linears_and_torch_int8():
    model = nn.Sequential(SparseLinear(64, 32, 0.9, seed=0), nn.ReLU(), nn.Linear(32, 8)).eval()
    plain = LB.plain_linears(model)
    assert type(plain[0]) is nn.Linear and torch.equal(plain[0].weight, model[0].weight)
    x = torch.randn(3, 64)
    r = LB.torch_dynamic_int8(model, (x,))
    if r.fn is None:
        pytest.skip(r.note)
    with torch.no_grad():
        y, ref = r.fn(x), model(x)
    assert float((y - ref).norm() / ref.norm()) < LB.INT8_MAX_REL_ERROR
    assert r.info["weight_bytes"] < sum(p.numel() * 4 for p in model.parameters()) / 2


def test_gemm_to_matmul_keeps_the_function():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from frugalnet.bench.baselines import onnx_export

    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4, bias=False)).eval()
    x = torch.randn(5, 16)
    data, _ = onnx_export(model, (x,))
    proto = onnx.load_from_string(data)
    n_gemm = sum(n.op_type == "Gemm" for n in proto.graph.node)
    assert LB.gemm_to_matmul(proto) == n_gemm
    assert not any(n.op_type == "Gemm" for n in proto.graph.node)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lowbit_case_runs_every_baseline():
    pytest.importorskip("onnxruntime")
    case = LC.linear_case(2, 0.9, n=64)
    r = LC.run_lowbit_case(case, RunSettings(repeats=1, min_time=0.0, max_seconds=1.0, torch_compile=False))
    m = r["methods"]
    assert m["torch_fp32"]["outputs_match"] and m["torch_fp32"]["rel_error"] == 0.0
    for name in ("ort_int8", "ort_int4", "ort_int4_a8"):
        assert m[name]["available"], m[name]["note"]
        assert m[name]["outputs_match"] is True and 0 < m[name]["rel_error"] < LB.INT4_MAX_REL_ERROR
    assert m["ort_int4"]["weight_bytes"] < m["ort_int8"]["weight_bytes"] < m["torch_fp32"]["weight_bytes"]
    for e in m.values():
        assert e["available"] or e["note"]
    headers, rows = table_rows([r])
    assert "[int4]" in rows[0][headers.index("ort_int4 ms (x)")]
    assert "modelled_energy_j_fp32" in r or "modelled_energy_note" in r


def test_openvino_mode_is_checked():
    with pytest.raises(ValueError, match="mode"):
        LB.openvino_compressed(nn.Linear(4, 4), (torch.zeros(1, 4),), mode="int3")
