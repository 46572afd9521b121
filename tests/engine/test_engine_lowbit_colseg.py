"""The column-segments variants of sparse 4-bit low-bit steps (sparse weights x sparse inputs, kernels/quant_colseg.py):
offered with sparse inputs where the layout applies, equal to the simulated quantized layer for every 4-bit format
(dense or sparse-form input, batch 1 and more), chosen or not by engine.compile with outputs unchanged, and a saved
plan naming them loads and runs."""
import numpy as np
import pytest
import torch

from frugalnet.engine import compile as compile_engine, load as load_engine
from frugalnet.engine.act import Act
from frugalnet.engine.steps.lowbit_factory import lowbit_step_for
from frugalnet.lowbit import QuantSpec, Recipe, quantize_
from frugalnet.nn import SparseLinear

torch.set_num_threads(2)
RECIPES = {"int4-w": Recipe(name="int4-w", weight=QuantSpec("int4-sawb")),
           "int4-pact4": Recipe(name="int4-pact4", weight=QuantSpec("int4-sawb"), activation=QuantSpec("pact4")),
           "mxfp4": Recipe(name="mx", weight=QuantSpec("mxfp4")), "nvfp4": Recipe(name="nv", weight=QuantSpec("nvfp4"))}


def _layer(recipe, n_in=200, n_out=50, sparsity=0.9):
    torch.manual_seed(0)
    model = quantize_(torch.nn.Sequential(SparseLinear(n_in, n_out, sparsity)), recipe)
    model.train()
    model(torch.randn(8, n_in).abs())       # sets PACT clips where the recipe has them
    return model.eval()


def _sparse_input(batch, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, generator=g).abs()
    x[torch.rand(batch, n, generator=g) < 0.9] = 0.0
    return x


def _close(out, ref):
    ref = ref.detach().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("batch", [1, 3])
def test_colseg_variants_equal_the_simulated_layer(recipe, batch):
    model = _layer(RECIPES[recipe])
    x = _sparse_input(batch, 200)
    x[-1] = 0.0                               # an all-zero sample
    step = lowbit_step_for("fc", model[0])
    act = Act(tuple(x.shape), dense=x.numpy())
    variants = [v for v in step.variants(act) if v.startswith("colseg")]
    assert variants == ["colseg:s", "colseg:p"]
    with torch.no_grad():
        ref = model(x)
    for v in variants:
        _close(step.run(Act(tuple(x.shape), dense=x.numpy()), v).dense(), ref)
        sparse_form = Act(tuple(x.shape), dense=x.numpy())
        sparse_form.active()                  # the input also held as active lists (as a k-WTA step leaves it)
        _close(step.run(sparse_form, v).dense(), ref)
        assert step.weight_bytes(v) > 0


def test_colseg_only_with_sparse_inputs_and_4bit_codes():
    model = _layer(RECIPES["int4-w"])
    step = lowbit_step_for("fc", model[0])
    dense_x = np.ones((1, 200), np.float32)
    assert not any(v.startswith("colseg") for v in step.variants(Act(dense_x.shape, dense=dense_x)))
    step8 = lowbit_step_for("fc", _layer(Recipe(name="int8-w", weight=QuantSpec("int8")))[0])
    x = _sparse_input(1, 200).numpy()
    assert step8.params["sparse"] and not any(v.startswith("colseg") for v in step8.variants(Act(x.shape, dense=x)))
    with pytest.raises(ValueError, match="needs sparse 4-bit codes"):
        step8.bind("colseg:s", x.shape)


def test_engine_compile_picks_a_valid_variant_and_a_colseg_plan_round_trips(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(SparseLinear(256, 64, 0.9), torch.nn.ReLU(), SparseLinear(64, 32, 0.9))
    quantize_(model, RECIPES["int4-w"])
    model.eval()
    x = _sparse_input(2, 256, seed=1)
    engine = compile_engine(model, x, batch_sizes=(2,), repeats=2, max_seconds_per_layer=0.5, jit_workers=0)
    with torch.no_grad():
        ref = model(x)
    _close(engine(x).numpy(), ref)
    first = next(i for i, s in enumerate(engine.steps) if type(s).__name__ == "LowbitLinearStep")
    step = engine.steps[first]
    plan = engine.plan_for(2)
    assert plan[first] in step.variants(Act(tuple(x.shape), dense=x.numpy()))
    plan[first] = "colseg:s"                  # a plan naming the new variant: validated on load, runs the same
    engine.plans[2] = plan
    engine._bound.clear()
    _close(engine(x).numpy(), ref)
    path = tmp_path / "colseg.engine.npz"
    engine.save(path)
    loaded = load_engine(path)
    assert loaded.plan_for(2)[first] == "colseg:s"
    _close(loaded(x).numpy(), ref)


@pytest.mark.parametrize("build", ["avx2", "scalar"])
def test_colseg_runs_the_best_build_the_cpu_has(monkeypatch, build):
    """On a CPU without AVX-512 (or AVX2) the same layout runs through the next build, with the same outputs."""
    from frugalnet.kernels import quant_colseg as colseg_k

    if build == "avx2" and not colseg_k.colseg_kernels().get("avx2"):
        pytest.skip("this CPU lacks AVX2")
    builds = {"avx2": colseg_k.colseg_avx2, "scalar": colseg_k.colseg_scalar}
    monkeypatch.setattr(colseg_k, "colseg_kernels", lambda: {build: builds[build]})
    model = _layer(RECIPES["nvfp4"])
    x = _sparse_input(2, 200, seed=3)
    step = lowbit_step_for("fc", model[0])
    with torch.no_grad():
        ref = model(x)
    _close(step.run(Act(tuple(x.shape), dense=x.numpy()), "colseg:s").dense(), ref)
