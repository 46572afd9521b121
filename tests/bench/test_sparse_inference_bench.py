import json

import numpy as np
import pytest

from frugalnet.bench import sparse_inference as B


def test_workload_generators_are_exact():
    rng = np.random.default_rng(0)
    w = B._masked_weight(16, 40, 0.9, rng)
    assert ((w != 0).sum(1) == 4).all()
    x = B._sparse_input(3, 50, 0.9, rng)
    assert ((x != 0).sum(1) == 5).all() and (x >= 0).all()


def _fake_case(name, times):
    methods = {}
    for m in B.METHODS:
        if m in times:
            sp = times["torch_dense"] / times[m]
            methods[m] = {"available": True, "seconds": times[m], "speedup": sp, "fraction_of_limit": sp / 10,
                          "weight_bytes": 1 << 20, "outputs_match": True, "note": ""}
        else:
            methods[m] = {"available": False, "note": "n/a"}
    return {"case": name, "limit": 10.0, "methods": methods, "engine_compile_s": 1.0}


def test_table_and_report(tmp_path):
    result = {"threads": 2, "torch": "x", "cases": [_fake_case("a", {"torch_dense": 0.01, "frugalnet": 0.002,
                                                                      "torch_masked": 0.01})],
              "engine_compile_s_total": 1.0, "wall_s": 2.0}
    headers, rows = B.table_rows(result["cases"])
    assert len(rows[0]) == len(headers)
    assert rows[0][headers.index("frugalnet ms (x)")] == "2 (5.00x)"
    assert rows[0][headers.index("torch_csr ms (x)")] == "n/a"
    path = B.write_report(result, tmp_path, "frugalnet bench --quick")
    text = path.read_text()
    assert "frugalnet bench --quick" in text and (tmp_path / "speedups.png").exists()


def test_bad_arguments_exit_with_message(capsys):
    with pytest.raises(SystemExit):
        B.main(["--threads", "0"])
    assert "threads" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_benchmark_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    assert B.main(["--quick", "--quiet", "--cases", "linear,cnn2", "--json", str(out), "--out",
                   str(tmp_path / "rep")]) == 0
    data = json.loads(out.read_text())
    assert len(data["cases"]) == 16
    for case in data["cases"]:
        assert case["methods"]["frugalnet"]["outputs_match"] is True
