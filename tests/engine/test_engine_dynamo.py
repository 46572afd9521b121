"""torch.compile(model, backend="frugalnet"): the engine behind TorchDynamo, with safe fallbacks."""
import warnings

import pytest
import torch
from torch import nn

from frugalnet.engine.dynamo import frugalnet_backend


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8)).eval()
    with torch.no_grad():
        m[0].weight.mul_((torch.rand_like(m[0].weight) > 0.8).float())    # a pruned layer, as users bring them
    return m


@pytest.mark.parametrize("backend", ["frugalnet", frugalnet_backend])
def test_backend_matches_eager(backend):
    torch._dynamo.reset()
    m, x = _model(), torch.randn(4, 64)
    c = torch.compile(m, backend=backend, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c(x * 2), m(x * 2), rtol=1e-4, atol=1e-5)   # second call: the compiled engine


def test_changed_weights_and_autograd_fall_back_to_the_captured_graph():
    torch._dynamo.reset()
    m, x = _model(), torch.randn(4, 64)
    c = torch.compile(m, backend=frugalnet_backend, dynamic=False)
    with torch.no_grad():
        c(x)
        m[2].weight.mul_(3.0)                  # in place, as an optimizer step does: the engine's copy is stale
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            y = c(x)
        assert any("weights changed" in str(w.message) for w in got)
        torch.testing.assert_close(y, m(x), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
    m2 = _model()
    c2 = torch.compile(m2, backend=frugalnet_backend, dynamic=False)
    with pytest.warns(UserWarning, match="autograd is recording"):
        y = c2(x)                               # grad enabled, parameters require grad: PyTorch runs it
    assert y.requires_grad
    torch.testing.assert_close(y, m2(x))


def test_dynamic_graph_runs_as_captured_with_a_warning():
    torch._dynamo.reset()
    m = _model()
    c = torch.compile(m, backend=frugalnet_backend, dynamic=True)
    with torch.no_grad(), pytest.warns(UserWarning, match="dynamic=False"):
        y = c(torch.randn(5, 64))
    assert y.shape == (5, 8)
