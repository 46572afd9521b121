"""KWinners / KWinners2d on the numba selection kernel give the PyTorch path's output, gradient and duty cycles."""
import copy

import pytest
import torch

from frugalnet.nn import KWinners, KWinners2d
from frugalnet.nn import kwinners_functional as KF


def _run(module, x, kernel: bool, monkeypatch):
    monkeypatch.setattr(KF, "KERNEL_MIN_NUMEL", 1 if kernel else 1 << 62)
    x = x.clone().requires_grad_(True)
    y = module(x)
    g = torch.randn_like(y, generator=torch.Generator().manual_seed(1))
    (y * g).sum().backward()
    return y.detach(), x.grad


def _inputs(shape, style, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    if style == "ties":
        x = torch.round(x)
    elif style == "relu":
        x = torch.relu(x)           # zeros tied at the k-th place
    elif style == "specials":
        flat = x.view(-1)
        pos = torch.randint(0, flat.numel(), (max(1, flat.numel() // 20),), generator=gen)
        flat[pos] = torch.tensor([float("inf"), float("-inf"), float("nan")])[torch.arange(len(pos)) % 3]
    return x


@pytest.mark.parametrize("style", ["normal", "ties", "relu", "specials"])
@pytest.mark.parametrize("shape", [(7, 300), (2, 3, 1100)])
def test_kwinners_kernel_matches_torch_path(shape, style, monkeypatch):
    base = KWinners(shape[-1], 0.05, boost_strength=1.5, duty_cycle_period=50)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    for step in range(3):            # duty cycles (and so the boost) evolve alike over steps
        x = _inputs(shape, style, step)
        ya, ga = _run(a, x, False, monkeypatch)
        yb, gb = _run(b, x, True, monkeypatch)
        torch.testing.assert_close(yb, ya, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(gb, ga, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(b.duty_cycle, a.duty_cycle, rtol=0, atol=0)
    assert int(a.learning_iterations) == int(b.learning_iterations)
    a.eval(), b.eval()
    x = _inputs(shape, style, 9)
    torch.testing.assert_close(_run(b, x, True, monkeypatch)[0], _run(a, x, False, monkeypatch)[0], rtol=0,
                               atol=0, equal_nan=True)


@pytest.mark.parametrize("style", ["normal", "relu"])
def test_kwinners2d_kernel_matches_torch_path(style, monkeypatch):
    base = KWinners2d(6, 0.1, boost_strength=1.5, duty_cycle_period=20)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    for step in range(3):
        x = _inputs((5, 6, 7, 9), style, step)
        ya, ga = _run(a, x, False, monkeypatch)
        yb, gb = _run(b, x, True, monkeypatch)
        assert torch.equal(yb, ya) and torch.equal(gb, ga)
        torch.testing.assert_close(b.duty_cycle, a.duty_cycle, rtol=0, atol=0)


def test_kernel_path_without_grad_and_below_threshold(monkeypatch):
    kw = KWinners(64, 0.1).train()
    monkeypatch.setattr(KF, "KERNEL_MIN_NUMEL", 1)
    with torch.no_grad():
        y = kw(torch.rand(4, 64) + 0.1)
    assert ((y != 0).sum(1) == 6).all() and float(kw.duty_cycle.sum()) > 0
    assert not KF.kernel_eligible(torch.rand(4, 64, dtype=torch.float64))


def test_kwinners2d_kernel_on_channels_last_input(monkeypatch):
    base = KWinners2d(6, 0.1, boost_strength=1.5)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    x = _inputs((5, 6, 7, 9), "normal", 0)
    ya, ga = _run(a, x, False, monkeypatch)
    yb, gb = _run(b, x.contiguous(memory_format=torch.channels_last), True, monkeypatch)
    assert torch.equal(yb, ya) and torch.equal(gb, ga)
    assert gb.is_contiguous(memory_format=torch.channels_last)    # the gradient keeps the input's layout
    torch.testing.assert_close(b.duty_cycle, a.duty_cycle, rtol=0, atol=0)


@pytest.mark.parametrize("x_cl", [False, True])
@pytest.mark.parametrize("g_cl", [False, True])
def test_kwinners2d_kernel_gradient_in_every_layout_pair(x_cl, g_cl, monkeypatch):
    # the kernel reads a channels-last input and a channels-last upstream gradient without layout copies
    cl = torch.channels_last
    base = KWinners2d(6, 0.2, boost_strength=1.5)
    grads = []
    for kernel in (False, True):
        monkeypatch.setattr(KF, "KERNEL_MIN_NUMEL", 1 if kernel else 1 << 62)
        m = copy.deepcopy(base)
        x = _inputs((4, 6, 5, 7), "relu", 2)
        x = (x.contiguous(memory_format=cl) if x_cl else x).requires_grad_(True)
        y = m(x)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
        y.backward(g.contiguous(memory_format=cl) if g_cl else g)
        grads.append((y.detach(), x.grad))
    (ya, ga), (yb, gb) = grads
    assert torch.equal(yb, ya) and torch.equal(gb, ga)
    assert gb.is_contiguous(memory_format=cl) if x_cl else gb.is_contiguous()   # the input's layout


def test_timed_serial_parallel_choice_keeps_the_torch_paths_results(monkeypatch):
    KF.clear_choices()
    base = KWinners(2048, 0.05, boost_strength=1.5, duty_cycle_period=500)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    x = _inputs((64, 2048), "normal", 4)           # 131072 entries: both builds are timed
    ya, ga = _run(a, x, False, monkeypatch)
    yb, gb = _run(b, x, True, monkeypatch)
    assert {k[0] for k in KF.choices()} == {"select", "grad"}
    torch.testing.assert_close(yb, ya, rtol=0, atol=0)
    torch.testing.assert_close(gb, ga, rtol=0, atol=0)
    torch.testing.assert_close(b.duty_cycle, a.duty_cycle, rtol=0, atol=0)


class _Forced(dict):
    """A choices table that answers one build for every key (so no timing runs)."""

    def __init__(self, parallel: bool) -> None:
        super().__init__()
        self.parallel = parallel

    def get(self, key, default=None):
        return self.parallel


@pytest.mark.parametrize("parallel", [False, True])
def test_kwinners2d_serial_and_parallel_builds_agree_with_the_torch_path(parallel, monkeypatch):
    # KWinners2d's selection and gradient go through the timed serial/parallel choice too; force each build
    KF.clear_choices()
    monkeypatch.setattr(KF, "_PARALLEL", _Forced(parallel))
    base = KWinners2d(32, 0.1, boost_strength=1.5)
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    x = _inputs((16, 32, 12, 12), "normal", 5)
    ya, ga = _run(a, x, False, monkeypatch)
    yb, gb = _run(b, x, True, monkeypatch)
    torch.testing.assert_close(yb, ya, rtol=0, atol=0)
    torch.testing.assert_close(gb, ga, rtol=0, atol=0)
