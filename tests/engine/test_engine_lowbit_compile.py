"""engine.compile on models after quantize_: quantized layers become packed low-bit steps (never the FP32 master
weights), outputs equal the simulated model, and the engine file round-trips with its low-bit steps validated."""
import numpy as np
import pytest
import torch
from torch import nn

import frugalnet as fn
from frugalnet.engine import compile as compile_engine, load as load_engine


def _model(recipe: str) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 64), nn.ReLU(),
                          fn.SparseLinear(64, 32, 0.9), nn.ReLU(), nn.Linear(32, 10))
    fn.quantize_(model, recipe)
    x = torch.randn(4, 1, 8, 8)
    model.train()
    model(x)                # one training forward sets the activation clips
    return model.eval()


@pytest.mark.parametrize("recipe", ["ibm4", "int8", "nvfp4"])
def test_quantized_model_compiles_to_lowbit_steps_and_round_trips(recipe, tmp_path):
    model = _model(recipe)
    x = torch.randn(4, 1, 8, 8)
    engine = compile_engine(model, x, batch_sizes=(4,))
    kinds = {type(s).__name__ for s in engine.steps}
    assert {"LowbitLinearStep", "LowbitConvStep"} <= kinds, kinds
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_allclose(engine(x).numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)
    path = tmp_path / "q.engine.npz"
    engine.save(path)
    np.testing.assert_allclose(load_engine(path)(x).numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_engine_file_with_a_bad_lowbit_step_is_refused(tmp_path):
    from frugalnet.engine import validate as V

    engine = compile_engine(_model("ibm4"), torch.randn(4, 1, 8, 8), batch_sizes=(4,))
    step = next(s for s in engine.steps if type(s).__name__ == "LowbitLinearStep")
    params = dict(step.params, n_out=step.params["n_out"] + 1000)   # more rows than the codes hold
    with pytest.raises(ValueError, match="engine file"):
        V.check_step(0, step.kind, step.name, params, step.arrays)
