"""The engine's dense path (oneDNN convs with prepacked weights and fused bias/ReLU, kept channels_last between
convs; MKL packed Linear), conv+ReLU fusion, the tie margin of the plan choice, and the per-node profile."""
import numpy as np
import pytest
import torch
from torch import nn

import frugalnet.engine as E
from frugalnet.engine.act import Act
from frugalnet.engine.choice import pick
from frugalnet.engine.profile import format_profile, summarize
from frugalnet.engine.steps import ConvStep, LinearStep
from frugalnet.engine.steps.conv import ONEDNN
from frugalnet.engine.steps.linear import MKL

needs_onednn = pytest.mark.skipif(not ONEDNN, reason="PyTorch built without oneDNN")


def _conv_step(cin=6, cout=8, k=3, stride=1, pad=1, dil=1, groups=1, relu=False, pool=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, k, k, generator=g).numpy()
    b = torch.randn(cout, generator=g).numpy()
    step = ConvStep.build("c", w, b, (stride, stride), (pad, pad), (dil, dil), groups)
    step.params["relu"] = relu
    if pool > 1:
        step.params["pool"] = pool
    return step


@needs_onednn
@pytest.mark.parametrize("kw", [dict(), dict(relu=True), dict(relu=True, pool=2), dict(stride=2, k=1, pad=0),
                                dict(groups=2, dil=2, pad=2), dict(cin=8, groups=8, relu=True)])
@pytest.mark.parametrize("batch", [1, 3])
def test_onednn_conv_matches_pytorch(kw, batch, one_thread):
    step = _conv_step(**kw)
    cin = step.arrays["weight"].shape[1] * step.params["groups"]
    x = torch.randn(batch, cin, 8, 8, generator=torch.Generator().manual_seed(1)).numpy()
    act = Act(x.shape, dense=x)
    ref = step.run(act.fresh(), "torch").dense()
    if step.relu:
        assert (ref >= 0).all()
    for v in ("onednn:s", "onednn:p"):
        out = step.bind(v, x.shape)(act.fresh())
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.dense(), ref, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(ref).max()))


@needs_onednn
def test_channels_last_flows_between_onednn_convs_and_into_numba_kernels(one_thread):
    a, b = _conv_step(relu=True), _conv_step(cin=8, cout=8, relu=True, seed=1)
    x = torch.randn(2, 6, 8, 8, generator=torch.Generator().manual_seed(2)).numpy()
    ya = a.bind("onednn:p", x.shape)(Act(x.shape, dense=x))
    t = ya.tensor()
    assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()   # no layout change
    ref = b.run(a.run(Act(x.shape, dense=x), "torch"), "torch").dense()
    for v in ("onednn:p", "im2col:p", "direct:p"):      # a numba kernel gets the NCHW copy (dense())
        out = b.bind(v, ya.shape)(ya.fresh()).dense()
        assert out.flags.c_contiguous
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not MKL, reason="PyTorch built without MKL")
def test_mkl_linear_matches_pytorch():
    g = torch.Generator().manual_seed(0)
    step = LinearStep.build("fc", torch.randn(20, 12, generator=g).numpy(), torch.randn(20, generator=g).numpy())
    x = torch.randn(5, 12, generator=g).numpy()
    act = Act(x.shape, dense=x)
    assert "mkl:p" in step.variants(act)
    ref = step.run(act, "torch").dense()
    np.testing.assert_allclose(step.run(act.fresh(), "mkl:p").dense(), ref, rtol=1e-5, atol=1e-5)


def test_pick_prefers_a_dense_variant_on_a_near_tie():
    assert pick({"torch": 1.05, "sparse_w:s": 1.0}, 0.1) == "torch"
    assert pick({"torch": 1.05, "onednn:p": 1.08, "sparse_w:s": 1.0}, 0.1) == "torch"
    assert pick({"torch": 1.2, "onednn:p": 1.3, "sparse_w:s": 1.0}, 0.1) == "sparse_w:s"
    assert pick({"torch": 1.05, "sparse_w:s": 1.0}, 0.0) == "sparse_w:s"
    assert pick({"im2col:s": 1.0, "sparse_w:s": 1.01}, 0.1) == "im2col:s"
    with pytest.raises(ValueError, match="tie_margin"):
        E.compile(nn.Linear(2, 2), torch.zeros(2, 2), tie_margin=-1.0)


class ConvBnRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.relu(self.conv2(y) + y)          # residual add, then ReLU on the sum
        return self.fc(self.pool(y).flatten(1))


def test_conv_relu_fused_in_lowering_and_profile_covers_every_node(one_thread):
    torch.manual_seed(0)
    model = ConvBnRelu().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 8, 8)
    eng = E.compile(model, x, repeats=1, max_seconds_per_layer=0.5, jit_workers=0)
    kinds = [s.kind for s in eng.steps]
    assert "relu" not in kinds and eng.steps[0].relu and not eng.steps[1].relu
    # the residual add runs in place on conv2's fresh output, the ReLU after it in place on the sum
    assert [t for t in eng.fallback_ops() if t.startswith(("aten::add", "aten::relu"))] == \
        ["aten::add_.Tensor", "aten::relu_.default"]
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(eng(x), ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))
    rows = eng.profile(x, rounds=2)
    assert len(rows) == len(eng.program.nodes) and all(r.ms >= 0 for r in rows)
    assert {r.runner for r in rows} >= {"fallback"} and any(r.op == "conv2d" for r in rows)
    assert "total" in format_profile(rows, top=3) and abs(sum(summarize(rows).values()) - sum(r.ms for r in rows)) < 1e-9
    with pytest.raises(ValueError, match="rounds"):
        eng.profile(x, rounds=0)


def test_engine_file_checks_the_fused_relu_and_knows_the_dense_variants():
    from frugalnet.engine.validate import check_step, check_variant

    step = _conv_step(relu=True)
    check_step(0, "conv2d", "c", dict(step.params), step.arrays)
    with pytest.raises(ValueError, match="relu must be a boolean"):
        check_step(0, "conv2d", "c", dict(step.params, relu="yes"), step.arrays)
    check_variant(0, "conv2d", step.params, "onednn:p")
    check_variant(0, "linear", {}, "mkl:p")
    with pytest.raises(ValueError, match="unknown variant"):
        check_variant(0, "conv2d", step.params, "onednn")
