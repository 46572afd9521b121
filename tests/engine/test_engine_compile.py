from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

import frugalnet.engine as E
from frugalnet.engine.act import Act
from frugalnet.models import sparse_cnn2
from frugalnet.nn import KWinners, KWinners2d, SparseConv2d, SparseLinear

torch.set_num_threads(2)


def _small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    m = sparse_cnn2((1, 16, 16), num_classes=5, channels=(4, 8), hidden=24, seed=seed).eval()
    for mod in m.modules():  # nonzero duty cycles so boosting matters
        if isinstance(mod, (KWinners, KWinners2d)):
            mod.duty_cycle.uniform_(0.0, 0.4)
    return m


def _assert_matches(engine, model, x):
    with torch.no_grad():
        ref = model.eval()(x)
    out = engine(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))


def _no_rejections(engine):
    for choices in engine.choices.values():
        for c in choices:
            assert c.rejected == [], (c.name, c.rejected)


def test_sparse_cnn2_matches_pytorch_at_each_planned_batch():
    model = _small_cnn()
    x = torch.rand(4, 1, 16, 16)
    engine = E.compile(model, x, batch_sizes=(1, 4), repeats=1)
    assert sorted(engine.plans) == [1, 4]
    _no_rejections(engine)
    _assert_matches(engine, model, x[:1])
    _assert_matches(engine, model, x)
    _assert_matches(engine, model, torch.rand(7, 1, 16, 16))  # unplanned batch size: nearest plan
    summary = engine.summary(1)
    assert [c["kind"] for c in summary] == ["conv2d", "kwinners", "conv2d", "kwinners", "flatten", "linear",
                                            "kwinners", "linear"]
    assert [c["name"] for c in summary][:3] == ["conv1+pool1", "act1", "conv2+pool2"]  # max pools fused


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1),
                                  nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(2)])
@pytest.mark.parametrize("input_sparsity", [0.0, 0.85])
def test_conv_pool_fusion_matches_pytorch_for_every_variant(pool, input_sparsity):
    """A max pool that tiles its input is fused into the conv step (every variant pools, natively or after);
    any other pool stays a step of its own. NaN in the input propagates through the fused pool as in torch."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 20, 3, padding=1)
    model = nn.Sequential(OrderedDict([("conv", conv), ("pool", pool)])).eval()
    x = torch.randn(3, 3, 11, 13)
    x = x * (torch.rand_like(x) >= input_sparsity)
    engine = E.compile(model, x, batch_sizes=(1, 3), repeats=1)
    _no_rejections(engine)
    fused = isinstance(pool, nn.MaxPool2d) and pool.stride == pool.kernel_size and not pool.ceil_mode
    assert len(engine.steps) == (1 if fused else 2)
    for batch in (1, 3):
        step = engine.steps[0]
        ref = model(x[:batch]).detach().numpy()
        for v in step.variants(Act(tuple(x[:batch].shape), dense=x[:batch].numpy())) if fused else []:
            got = step.run(Act(tuple(x[:batch].shape), dense=x[:batch].numpy().copy()), v).dense()
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=v)
        _assert_matches(engine, model, x[:batch])
    if fused:
        xn = x.clone()
        xn[0, 1, 4, 5] = float("nan")
        for v in engine.steps[0].variants(Act(tuple(xn.shape), dense=xn.numpy())):
            got = engine.steps[0].run(Act(tuple(xn.shape), dense=xn.numpy().copy()), v).dense()
            assert np.array_equal(np.isnan(got), np.isnan(model(xn).detach().numpy())), v


def test_batchnorm_is_folded_and_other_layers_run():
    torch.manual_seed(1)
    model = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(3, 6, 3, padding=1, stride=2)), ("bn", nn.BatchNorm2d(6)), ("relu", nn.ReLU()),
        ("pool", nn.AvgPool2d(2)), ("mp", nn.MaxPool2d(2, padding=1, ceil_mode=True)), ("drop", nn.Dropout(0.3)),
        ("flat", nn.Flatten()), ("fc", SparseLinear(6 * 2 * 2, 10, 0.8)), ("bn1", nn.BatchNorm1d(10)),
        ("bn_alone", nn.Sequential(nn.ReLU(), nn.BatchNorm1d(10))), ("out", nn.Linear(10, 3))]))
    for bn in (model.bn, model.bn1, model.bn_alone[1]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(3, 3, 12, 12)
    engine = E.compile(model, x, repeats=1)
    kinds = [c["kind"] for c in engine.summary()]
    assert kinds.count("conv2d") == 1 and "affine" in kinds  # bn folded into conv; standalone bn kept as affine
    _no_rejections(engine)
    _assert_matches(engine, model, x)
    model.train()
    E.compile(model, x, repeats=1)
    assert model.training  # compile restores the caller's mode


def test_local_kwinners_and_grouped_sparse_conv():
    torch.manual_seed(2)
    model = nn.Sequential(SparseConv2d(4, 8, 3, 0.5, groups=2, padding=1), KWinners2d(8, 0.25, local=True),
                          SparseConv2d(8, 4, 3, 0.3), nn.Flatten())
    x = torch.randn(2, 4, 7, 7)
    engine = E.compile(model, x, repeats=1)
    _no_rejections(engine)
    _assert_matches(engine, model, x)


def test_op_without_a_step_runs_as_fallback_and_uncapturable_model_says_why():
    """(API change: an op without a frugalnet step used to be refused; it now runs as the aten op itself.)"""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([("fc", nn.Linear(4, 4)), ("squash", nn.Tanh())]))
    x = torch.randn(2, 4)
    engine = E.compile(model, x, repeats=1)
    assert "aten::tanh.default" in engine.fallback_ops()
    _assert_matches(engine, model, x)

    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            y = self.fc(x)
            return y * 2 if float(y.sum()) > 0 else y   # Python control flow on a tensor value

    with pytest.raises(ValueError, match="could not capture DataDependent.*torch.cond"):
        E.compile(DataDependent(), torch.randn(2, 4))


def test_bad_arguments():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ValueError, match="example_input"):
        E.compile(model, torch.randn(4))
    with pytest.raises(ValueError, match="batch_sizes"):
        E.compile(model, torch.randn(2, 4), batch_sizes=(0,))
    engine = E.compile(model, torch.randn(2, 4), repeats=1)
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        engine(torch.randn(2, 5))


def test_save_and_load_roundtrip(tmp_path):
    model = _small_cnn(3)
    x = torch.rand(2, 1, 16, 16)
    engine = E.compile(model, x, batch_sizes=(1, 2), repeats=1)
    path = engine.save(tmp_path / "cnn.engine.npz")
    loaded = E.load(path)
    assert loaded.plans == engine.plans
    assert loaded.input_shape == engine.input_shape
    np.testing.assert_array_equal(loaded(x).numpy(), engine(x).numpy())
    assert loaded.summary(1)[0]["variant"] == engine.summary(1)[0]["variant"]
    with pytest.raises(FileNotFoundError):
        E.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a frugalnet engine"):
        E.load(tmp_path / "other.npz")


def test_measure_speedup_reports_figures():
    model = _small_cnn(4)
    r = E.measure_speedup(model, torch.rand(2, 1, 16, 16), batch_sizes=(1, 2), repeats=3, max_seconds=2)
    assert r["outputs_match"] is True
    for bs in ("1", "2"):
        e = r["batches"][bs]
        assert e["engine_s"] > 0 and e["torch_s"] > 0
        assert e["speedup"] == pytest.approx(e["torch_s"] / e["engine_s"])
        assert len(e["layers"]) == 8   # conv + max pool fused into one step, twice
    import json
    json.dumps(r)


def test_whole_plan_candidates_and_compile_keeps_the_fastest_whole_plan():
    from frugalnet.engine.choice import LayerChoice
    from frugalnet.engine.plans import candidate_plans

    chosen = {0: LayerChoice("a", "conv2d", "im2col_csr:p", {"im2col_csr:p": 1.0, "im2col_csr:s": 1.1,
                                                                "onednn:s": 1.3, "onednn:p": 1.2, "torch": 2.0}),
              2: LayerChoice("b", "linear", "csr:s", {"csr:s": 1.0, "torch": 1.5}),
              3: LayerChoice("c", "linear", "gemv", {"gemv": 1.0, "torch": 1.2})}
    plans = candidate_plans(["im2col_csr:p", "torch", "csr:s", "gemv"], chosen)
    assert plans["per-layer"] == ["im2col_csr:p", "torch", "csr:s", "gemv"]
    assert plans["serial"] == ["im2col_csr:s", "torch", "csr:s", "gemv"]     # only twins that were candidates
    assert "parallel" not in plans                                          # same as per-layer: dropped
    assert plans["dense"] == ["onednn:p", "torch", "torch", "gemv"]         # each step's fastest dense variant
    assert plans["runner-up"] == ["im2col_csr:s", "torch", "csr:s", "torch"]   # close calls (within 1.3x) flipped
    model = _small_cnn()
    x = torch.rand(4, 1, 16, 16)
    engine = E.compile(model, x, repeats=1)
    assert engine.plan_source[4] in engine.plan_seconds[4]
    assert set(engine.plan_seconds[4]) <= {"per-layer", "serial", "parallel", "dense", "runner-up"}
    assert all(c.variant in engine.plans[4] for c in engine.choices[4])
    _assert_matches(engine, model, x)
