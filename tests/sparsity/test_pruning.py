import pytest
import torch
from torch import nn

from frugalnet.experiment.training import FitConfig, fit
from frugalnet.data.core import Split
from frugalnet.nn import SparseLinear
from frugalnet.sparsity.pruning import GradualMagnitudePruner, cubic_sparsity, measured_sparsity, prune_magnitude_


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))


def test_cubic_schedule_matches_zhu_gupta():
    assert cubic_sparsity(0, 0.0, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(100, 0.0, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(50, 0.0, 0.9, 0, 100) == pytest.approx(0.9 + (0.0 - 0.9) * 0.5 ** 3)
    assert cubic_sparsity(500, 0.1, 0.9, 0, 100) == 0.9


def test_gradual_pruner_reaches_target_with_shrinking_masks_and_resumes():
    model = mlp()
    pruner = GradualMagnitudePruner(model, 0.9, begin_step=0, end_step=20, frequency=5)
    assert isinstance(model[0], SparseLinear)           # a dense model is converted with all-ones masks
    previous = model[0].weight_mask.clone()
    for _ in range(20):
        pruner.step()
        assert not (model[0].weight_mask & ~previous).any()    # masks only shrink
        previous = model[0].weight_mask.clone()
    s = measured_sparsity(model)
    assert s["0"] == pytest.approx(0.9, abs=0.01) and s["2"] == pytest.approx(0.9, abs=0.02)
    again = GradualMagnitudePruner(mlp(), 0.9, begin_step=0, end_step=20, frequency=5)
    again.load_state_dict(pruner.state_dict())
    assert again.step_count == 20 and again.current == pytest.approx(0.9)


def test_pruner_as_fit_callback_and_one_shot():
    model = mlp()
    x, y = torch.randn(64, 12), torch.randint(0, 3, (64,))
    steps = 4 * 4   # 4 epochs of 64 / 16
    pruner = GradualMagnitudePruner(model, 0.8, begin_step=0, end_step=steps // 2, frequency=2)
    fit(model, Split(x, y), FitConfig(epochs=4, batch_size=16, lr=0.05), callbacks=[pruner])
    assert pruner.step_count == steps
    assert measured_sparsity(model)["total"] == pytest.approx(0.8, abs=0.02)
    one = prune_magnitude_(mlp(), 0.5)
    assert measured_sparsity(one)["total"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("kwargs,match", [(dict(final_sparsity=1.0), "final_sparsity"),
                                          (dict(end_step=0), "end_step"),
                                          (dict(initial_sparsity=0.95), "initial_sparsity"),
                                          (dict(scope="net"), "scope")])
def test_pruner_bad_arguments(kwargs, match):
    args = dict(final_sparsity=0.9, begin_step=0, end_step=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GradualMagnitudePruner(mlp(), **args)


def test_gradual_pruning_to_erk_layer_sparsities():
    from frugalnet.nn import masks as M
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 16))
    pruner = GradualMagnitudePruner(model, 0.9, begin_step=0, end_step=4, frequency=1, erk=True)
    for _ in range(4):
        pruner.step()
    got = measured_sparsity(model)
    want = M.erk_densities({"0": (256, 64), "2": (16, 256)}, 0.1)
    assert got["0"] == pytest.approx(1 - want["0"], abs=1e-3) and got["2"] == pytest.approx(1 - want["2"], abs=1e-3)
    assert got["2"] < got["0"] and got["total"] == pytest.approx(0.9, abs=2e-3)
    with pytest.raises(ValueError, match="erk"):
        GradualMagnitudePruner(model, 0.9, begin_step=0, end_step=4, scope="global", erk=True)
