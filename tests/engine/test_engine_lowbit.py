"""Low-bit engine steps: every variant equals the simulated quantized layer (model.eval()(x) after quantize_), for
each packed format, dense and sparse, Linear and Conv2d; steps built straight from a save_packed file (model on the
meta device: no FP32 weights exist) run the whole model; the compiler's choose-by-timing loop works on them."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from frugalnet.engine.act import Act
from frugalnet.engine.steps.lowbit import PACKED_FORMATS, LowbitLinearStep
from frugalnet.engine.steps.lowbit_factory import lowbit_step_for, lowbit_steps_from_file
from frugalnet.engine.steps.lowbit_conv import LowbitConvStep
from frugalnet.engine.timing import interleaved_medians
from frugalnet.lowbit import NVFP4, quantize_, quantized_layers
from frugalnet.lowbit.packing import load_packed, save_packed
from frugalnet.nn import SparseConv2d, SparseLinear

torch.set_num_threads(2)
RECIPES = ["ibm4", "mxfp4", "nvfp4", "int8", "fp8"]


def _close(out, ref):
    ref = ref.detach().numpy() if hasattr(ref, "detach") else ref
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(ref).max())))


def _trained(model, x):
    """One training-mode forward (sets PACT clips), then eval."""
    model.train()
    model(x)
    return model.eval()


def _mlp(sparse: bool, recipe: str):
    torch.manual_seed(0)
    mid = SparseLinear(80, 48, 0.9) if sparse else nn.Linear(80, 48)
    model = nn.Sequential(nn.Linear(40, 80), nn.ReLU(), mid, nn.ReLU(), nn.Linear(48, 10))
    return _trained(quantize_(model, recipe), torch.randn(16, 40))


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_every_linear_variant_equals_the_simulated_layer(recipe, sparse):
    model = _mlp(sparse, recipe)
    x = torch.randn(5, 40)
    for i, layer in ((0, model[0]), (2, model[2])):
        with torch.no_grad():
            h = model[:i](x) if i else x
            h_sparse = torch.where(torch.rand_like(h) < 0.9, torch.zeros_like(h), h)
            refs = [layer(h), layer(h_sparse)]
        step = lowbit_step_for(f"l{i}", layer)
        assert isinstance(step, LowbitLinearStep)
        variants = step.variants(Act(tuple(h_sparse.shape), dense=h_sparse.numpy()))
        packed = layer.lowbit.weight.format in PACKED_FORMATS
        assert (len(variants) > 1) == packed
        if sparse and i == 2 and packed:
            assert step.params["sparse"] and any(v.startswith("csc") for v in variants)
        for v in variants:
            for inp, ref in zip((h, h_sparse), refs):
                _close(step.run(Act(tuple(inp.shape), dense=inp.numpy().copy()), v).dense(), ref)


@pytest.mark.parametrize("recipe", ["ibm4", "mxfp4", "nvfp4", "int8"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_conv_variants_equal_the_simulated_layer(recipe, sparse):
    torch.manual_seed(1)
    conv = SparseConv2d(6, 12, 3, 0.85, padding=1, stride=2) if sparse else nn.Conv2d(6, 12, 3, padding=1, stride=2)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding="same"), nn.ReLU(), conv, nn.ReLU(), nn.Flatten(),
                          nn.Linear(12 * 4 * 4, 5))
    model = _trained(quantize_(model, recipe), torch.randn(4, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    for i in (0, 2):
        layer = model[i]
        with torch.no_grad():
            h = model[:i](x) if i else x
            ref = layer(h)
        step = lowbit_step_for(f"c{i}", layer)
        assert isinstance(step, LowbitConvStep)
        for v in step.variants(Act(tuple(h.shape), dense=h.numpy())):
            _close(step.run(Act(tuple(h.shape), dense=h.numpy().copy()), v).dense(), ref)


def test_other_modules_get_no_step_and_bad_input_is_named():
    assert lowbit_step_for("fc", nn.Linear(3, 2)) is None
    assert lowbit_step_for("relu", nn.ReLU()) is None
    step = lowbit_step_for("l2", _mlp(False, "ibm4")[2])
    with pytest.raises(ValueError, match="in_features=80"):
        step.out_shape((2, 79))
    grouped = quantize_(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), "ibm4")[0]
    with pytest.raises(ValueError, match="groups=1"):
        lowbit_step_for("g", grouped)


def _run_chain(model, steps, x):
    """Run `model` layer by layer, quantized layers through their engine steps (with their fastest variant)."""
    h = x
    for name, layer in model.named_children():
        if name in steps:
            step = steps[name]
            act = Act(tuple(h.shape), dense=np.ascontiguousarray(h.numpy()))
            h = torch.from_numpy(step.run(act, step.variants(act)[-1]).dense())
        else:
            h = layer(h)
    return h


@pytest.mark.parametrize("recipe", ["ibm4", dataclasses.replace(NVFP4, name="nvfp4-all", first_last=None)],
                         ids=["ibm4", "nvfp4-all"])
def test_a_saved_model_runs_from_its_file_without_fp32_weights(recipe, tmp_path):
    """(FP8 layers, the first and last of the named MX/NV recipes, have no packed kernel: they hold their
    quantized values as float32, so this uses NVFP4 throughout.)"""
    model = _mlp(True, recipe)
    save_packed(model, tmp_path / "m.fnp")
    skeleton = nn.Sequential(nn.Linear(40, 80), nn.ReLU(), SparseLinear(80, 48, 0.9), nn.ReLU(),
                             nn.Linear(48, 10)).to("meta")       # structure only: its tensors hold no data
    quantize_(skeleton, recipe)
    assert all(p.is_meta for p in skeleton.parameters())         # nothing to read weights from
    steps = lowbit_steps_from_file(tmp_path / "m.fnp", skeleton)
    assert set(steps) == {name for name, _ in quantized_layers(skeleton)}
    for step in steps.values():
        n_weights = step.params["n_out"] * step.params["n_in"]
        floats = sum(a.size for a in step.arrays.values() if a.dtype == np.float32)
        assert floats < n_weights / 2                      # scales and biases only, never a float weight matrix
        assert step.weight_bytes(step.variants(Act((1, step.params["n_in"]),
                                                   dense=np.ones((1, step.params["n_in"]), np.float32)))[-1]) \
            < 4 * n_weights                                    # fewer bytes than FP32, even padded and scaled
    x = torch.randn(6, 40)
    with torch.no_grad():
        _close(_run_chain(model, steps, x).numpy(), model(x))
    other = quantize_(nn.Sequential(nn.Linear(40, 80), nn.ReLU(), SparseLinear(80, 48, 0.9), nn.ReLU(),
                                    nn.Linear(48, 10)), "mxfp4")
    with pytest.raises(ValueError, match=f"recipe '{getattr(recipe, 'name', recipe)}'.*'mxfp4'"):
        lowbit_steps_from_file(tmp_path / "m.fnp", other)


def test_load_packed_layers_run_from_the_files_codes(tmp_path):
    model = _mlp(False, "ibm4")
    save_packed(model, tmp_path / "m.fnp")
    twin = quantize_(nn.Sequential(nn.Linear(40, 80), nn.ReLU(), nn.Linear(80, 48), nn.ReLU(), nn.Linear(48, 10)),
                     "ibm4")
    load_packed(tmp_path / "m.fnp", twin)
    twin.eval()
    steps = {n: lowbit_step_for(n, m) for n, m in quantized_layers(twin)}
    assert all(s.params.get("nibble") or s.params["act"]["format"] == "int8" for s in steps.values())
    assert steps["2"].params["nibble"]                      # the file's INT4 codes, not a float fallback
    x = torch.randn(3, 40)
    with torch.no_grad():
        _close(_run_chain(twin, steps, x).numpy(), model(x))


def test_the_compilers_choice_by_timing_works_on_lowbit_steps():
    """What engine.compile does per step: run each variant, keep those equal to the reference, time them
    interleaved, take the fastest."""
    layer = _mlp(True, "ibm4")[2]
    step = lowbit_step_for("fc", layer)
    x = np.maximum(np.random.default_rng(0).standard_normal((1, 80)), 0).astype(np.float32)
    act = Act(x.shape, dense=x)
    ref = step.run(act.fresh(), "torch").dense()
    fns = {}
    for v in step.variants(act):
        np.testing.assert_allclose(step.run(act.fresh(), v).dense(), ref, rtol=1e-4, atol=1e-5)
        f = step.bind(v, act.shape)
        fns[v] = lambda f=f: f(act.fresh())
    secs = interleaved_medians(fns, repeats=3, min_time=0.0005, max_seconds=2.0)
    assert set(secs) == set(fns) and all(s > 0 for s in secs.values())


def test_check_refuses_arrays_that_do_not_fit():
    """What a crafted engine file could hold: every array is checked against the parameters before a kernel runs."""
    dense = lowbit_step_for("d", _mlp(False, "ibm4")[2])
    sparse = lowbit_step_for("s", _mlp(True, "ibm4")[2])
    for step, key, bad in ((dense, "codes", lambda a: a[:-1]), (dense, "wscale", lambda a: a * np.inf),
                           (dense, "lut", lambda a: a * 3), (sparse, "csr_idx", lambda a: a + 1000),
                           (sparse, "csr_ptr", lambda a: a[::-1].copy()), (sparse, "csr_codes", lambda a: a[1:]),
                           (dense, "bias", lambda a: a[:3])):
        broken = type(step)(step.name, dict(step.params), {**step.arrays, key: bad(step.arrays[key])})
        with pytest.raises(ValueError, match=f"low-bit step '{step.name}'"):
            broken.check()
    for step in (dense, sparse):
        step.check()
