"""Quantized layers run their quantized forward (never the FP32 master weights); k-WTA on +-Inf/NaN matches
KWinners; layers feeding a k-WTA: the difference to PyTorch is bounded."""
import numpy as np
import pytest
import torch
from torch import nn

import frugalnet.engine as E
from frugalnet.engine.act import Act
from frugalnet.nn import KWinners

torch.set_num_threads(2)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("packed_steps", [True, False], ids=["lowbit-steps", "module-fallback"])
def test_quantized_layers_run_quantized_never_fp32(tmp_path, monkeypatch, packed_steps):
    """With the packed low-bit steps, quantized layers compile to them; without a step for a layer, the layer's own
    quantized forward runs (and such an engine cannot be saved without pickle). Never the FP32 master weights."""
    from frugalnet.engine import lower as L
    from frugalnet.lowbit.convert import quantize_

    if not packed_steps:
        monkeypatch.setattr(L, "lowbit_step", lambda name, module: None)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 4))
    fp32 = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in model if isinstance(m, nn.Linear)]
    quantize_(model, "int8")
    model.eval()
    x = torch.randn(3, 16)
    engine = E.compile(model, x, repeats=1)
    with torch.no_grad():
        ref = model(x)
        dense = x
        for i, (w, b) in enumerate(fp32):
            dense = torch.nn.functional.linear(dense, w, b)
            dense = dense.relu() if i < 2 else dense
    out = engine(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, dense, rtol=1e-4, atol=1e-5)   # the FP32 master weights would give this
    modules = sum(o.startswith("module:") for o in engine.fallback_ops())
    if packed_steps:
        assert modules == 0 and sum(type(s).__name__ == "LowbitLinearStep" for s in engine.steps) == 3
        engine.save(tmp_path / "q.npz")
        torch.testing.assert_close(E.load(tmp_path / "q.npz")(x), ref, rtol=1e-4, atol=1e-5)
    else:
        assert modules == 3
        with pytest.raises(ValueError, match="own \\(quantized\\) forward"):
            engine.save(tmp_path / "q.npz")


def test_lowbit_hook_is_used_when_present(monkeypatch):
    from frugalnet.engine import lower as L
    from frugalnet.engine import steps as S
    from frugalnet.lowbit.convert import quantize_

    calls = []

    def factory(name, module):
        calls.append(name)
        w = module.quantized_weight().numpy()
        return S.LinearStep.build(name, w, module.bias.detach().numpy())

    monkeypatch.setattr(L, "lowbit_step", factory)
    torch.manual_seed(1)
    model = quantize_(nn.Sequential(nn.Linear(8, 8)), "fp32").eval()
    engine = E.compile(model, torch.randn(2, 8), repeats=1)
    assert calls and [c["kind"] for c in engine.summary()] == ["linear"]


@pytest.mark.parametrize("special", [float("inf"), float("-inf"), float("nan")])
def test_kwinners_step_matches_kwinners_on_inf_and_nan(special):
    torch.manual_seed(2)
    kw = KWinners(64, 0.1).eval()
    kw.duty_cycle.uniform_(0, 0.3)
    model = nn.Sequential(kw).eval()
    x = torch.randn(4, 64)
    engine = E.compile(model, x, batch_sizes=(4,), repeats=1)
    engine.plans[4] = ["numba:p"]   # the kernel, whatever the timing chose
    engine._bound.clear()
    x[1, 5] = special
    x[2, 7] = -special if special == special else special
    ref = model(x)
    out = engine(x)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    fin = ~torch.isnan(ref)
    assert torch.equal(out[fin], ref[fin])


def test_layers_feeding_kwinners_differ_from_pytorch_only_within_a_bound():
    """The engine's conv/linear kernels round differently from PyTorch's (sums in another order), so a score within
    that rounding of the k-th largest can swap a winner. Bound: each output element equals PyTorch's to
    rtol 1e-4 unless a winner swapped; then the swapped pair's scores lie within 1e-5 (relative) of each other,
    and winners are identical whenever the k-th and (k+1)-th boosted scores are further apart than that."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 256), KWinners(256, 0.1)).eval()
    x = torch.randn(16, 64)
    engine = E.compile(model, x, batch_sizes=(16,), repeats=1)
    with torch.no_grad():
        scores = model[0](x) * model[1]._boost_factors(model[1].duty_cycle)
        ref = model(x)
    out = engine(x)
    k = model[1].k
    top = scores.topk(k + 1, dim=1).values
    gap = (top[:, k - 1] - top[:, k]) / top[:, k - 1].abs().clamp_min(1e-30)
    same = (out != 0) == (ref != 0)
    for r in range(x.shape[0]):
        if gap[r] > 1e-5:
            assert bool(same[r].all()), r
            torch.testing.assert_close(out[r], ref[r], rtol=1e-4, atol=1e-5)
