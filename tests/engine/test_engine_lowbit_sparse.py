"""The windows variants of sparse 4-bit low-bit steps (engine/steps/lowbit_sparse.py): offered where they apply and
the CPU has the ISA, equal to the simulated quantized layer (also from a save_packed file), a plan naming a build this
CPU lacks still runs (same layout, another build), and mutated sparse arrays are refused before any kernel or read
safely."""
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from frugalnet.engine.act import Act
from frugalnet.engine.steps.lowbit_factory import lowbit_step_for, lowbit_steps_from_file
from frugalnet.kernels import quant as quant_k, quant_sparse as sparse_k
from frugalnet.lowbit import QuantSpec, Recipe, quantize_
from frugalnet.lowbit.packing import save_packed
from frugalnet.nn import SparseLinear

torch.set_num_threads(2)
W4 = Recipe(name="int4-w", weight=QuantSpec("int4-sawb"))
W4A4 = Recipe(name="int4-pact4", weight=QuantSpec("int4-sawb"), activation=QuantSpec("pact4"))
EXAMPLES = int(os.environ.get("FRUGALNET_FUZZ_EXAMPLES", "60"))


def _layer(recipe, n_in=200, n_out=50, sparsity=0.9):
    torch.manual_seed(0)
    model = quantize_(torch.nn.Sequential(SparseLinear(n_in, n_out, sparsity)), recipe)
    model.train()
    model(torch.randn(8, n_in).abs())       # sets PACT clips where the recipe has them
    return model.eval()


def _close(out, ref):
    ref = ref.detach().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("recipe", [W4, W4A4, Recipe(name="mx", weight=QuantSpec("mxfp4")),
                                    Recipe(name="nv", weight=QuantSpec("nvfp4"))], ids=["int4-w", "int4-pact4", "mxfp4",
                                                                                        "nvfp4"])
def test_window_variants_equal_the_simulated_layer(recipe):
    model = _layer(recipe)
    x = torch.randn(3, 200)
    step = lowbit_step_for("fc", model[0])
    variants = [v for v in step.variants(Act(tuple(x.shape), dense=x.numpy())) if v.startswith("win")]
    isa = quant_k.isa()
    assert len(variants) == 2 * (isa["avx512"] + isa["avx2"])
    with torch.no_grad():
        ref = model(x)
    for v in variants:
        _close(step.run(Act(tuple(x.shape), dense=x.numpy()), v).dense(), ref)
    if variants and not step.params["block_scales"]:    # 16-column blocks (NVFP4) pad more: not always fewer
        assert step.weight_bytes(variants[0]) < step.weight_bytes("csr:s")


def test_window_variants_only_where_they_apply():
    """8-bit codes keep the CSR kernels."""
    step = lowbit_step_for("fc", _layer(Recipe(name="int8-w", weight=QuantSpec("int8")))[0])
    x = np.ones((1, 200), np.float32)
    assert step.params["sparse"] and not step.window_variants()
    assert not any(v.startswith("win") for v in step.variants(Act(x.shape, dense=x)))
    with pytest.raises(ValueError, match="needs sparse 4-bit codes"):
        step.bind("win256:s", x.shape)


def test_a_plan_naming_a_missing_build_runs_the_same_layout(monkeypatch):
    model = _layer(W4)
    x = torch.randn(2, 200)
    step = lowbit_step_for("fc", model[0])
    monkeypatch.setattr(sparse_k, "window_kernels", lambda: {})        # a CPU with neither AVX2 nor AVX-512
    assert not step.window_variants()
    with torch.no_grad():
        ref = model(x)
    _close(step.bind("win512:p", tuple(x.shape))(Act(tuple(x.shape), dense=x.numpy())).dense(), ref)


def test_steps_from_a_packed_file_run_the_window_variants(tmp_path):
    model = _layer(W4, n_in=300, n_out=40)
    save_packed(model, tmp_path / "m.fnp")
    skeleton = quantize_(torch.nn.Sequential(SparseLinear(300, 40, 0.9)), W4).to("meta")
    step = lowbit_steps_from_file(tmp_path / "m.fnp", skeleton)["0"]
    x = torch.randn(2, 300)
    with torch.no_grad():
        ref = model(x)
    for v in step.window_variants():
        _close(step.run(Act(tuple(x.shape), dense=x.numpy()), v).dense(), ref)


@settings(max_examples=EXAMPLES, deadline=None)
@given(array=st.sampled_from(["csr_ptr", "csr_idx", "csr_codes"]), where=st.floats(0, 1),
       value=st.integers(0, 2 ** 32 - 1))
def test_mutated_sparse_arrays_are_refused_or_read_safely(array, where, value):
    """One value of the stored CSR arrays changed (as in a crafted engine file): the step's check() raises
    ValueError, or its window and column-segments variants build their layouts and run (indices checked before any
    kernel)."""
    step = lowbit_step_for("fc", _layer(W4, n_in=64, n_out=20)[0])
    a = step.arrays[array].copy()
    i = min(len(a) - 1, int(where * len(a)))
    a[i] = value % (np.iinfo(a.dtype).max + 1)
    step.arrays[array] = a
    step._cache.clear()
    try:
        step.check()
    except ValueError:
        return
    x = np.ones((1, 64), np.float32)
    for v in step.window_variants() + step.colseg_variants():
        assert np.isfinite(step.run(Act(x.shape, dense=x), v).dense()).all()
