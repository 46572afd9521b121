"""FRUGALNET_KERNEL_MODE sets the process default of the sparse layers' path, and a bad value says what is allowed."""
import subprocess
import sys

import pytest


def _mode_in_child(value: str) -> subprocess.CompletedProcess:
    code = "import frugalnet.nn.sparse_functional as SF; print(SF.kernel_mode())"
    return subprocess.run([sys.executable, "-c", code], env={"FRUGALNET_KERNEL_MODE": value, "PATH": ""},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value,expected", [("dense", "dense"), ("Sparse", "sparse"), ("", "auto")])
def test_environment_sets_the_default(value, expected):
    proc = _mode_in_child(value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_bad_value_names_the_choices():
    proc = _mode_in_child("fast")
    assert proc.returncode != 0
    assert "FRUGALNET_KERNEL_MODE must be one of" in proc.stderr


def _train_few_steps(layers, mode=None):
    """A two-layer 90%-sparse MLP big enough for the kernels (above MIN_KERNEL_WORK), a few SGD steps."""
    import torch
    from frugalnet.sparsity import MagnitudeConfig, sparsify_
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 512))
    sparsify_(model, MagnitudeConfig(sparsity=0.9))
    for m in model:
        if hasattr(m, "weight_mask"):
            m.kernel_mode = mode
            layers.append(m)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(64, 512)
    for _ in range(3):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture
def deterministic():
    import torch
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)


def test_deterministic_algorithms_make_auto_take_the_untimed_dense_path(deterministic):
    import torch
    import frugalnet.nn.sparse_functional as SF
    SF.clear_choices()
    layers = []
    first = _train_few_steps(layers)
    assert [SF.resolve_mode(m) for m in layers] == ["dense", "dense"]
    assert SF.choices() == {}                                    # nothing was timed
    second = _train_few_steps([])
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    layers[0].kernel_mode = "sparse"                             # asked for explicitly, the kernels stay
    assert SF.resolve_mode(layers[0]) == "sparse"


def test_auto_times_its_choice_without_deterministic_algorithms():
    import frugalnet.nn.sparse_functional as SF
    SF.clear_choices()
    layers = []
    _train_few_steps(layers)
    assert [SF.resolve_mode(m) for m in layers] == ["auto", "auto"]
    assert any(k[0] in ("fwd", "gx", "gw") for k in SF.choices())
    layers[0].kernel_mode = "fast"
    with pytest.raises(ValueError, match="kernel_mode must be one of"):
        SF.resolve_mode(layers[0])


def test_parallel_kernels_only_when_torch_may_use_more_than_one_thread():
    import numba
    import torch
    from frugalnet.nn.sparse_linear_candidates import _parallel_default, _parallel_options

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert _parallel_default() is False and _parallel_options() == (False,)
        torch.set_num_threads(2)
        assert _parallel_default() is (numba.get_num_threads() > 1)
    finally:
        torch.set_num_threads(before)
