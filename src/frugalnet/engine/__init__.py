"""Inference engine: compile any model torch.export can capture into a callable that runs frugalnet's kernels where
the measured weight/activation sparsity makes them faster, and PyTorch's own ops everywhere else.

    engine = frugalnet.engine.compile(model, example_inputs, batch_sizes=(1, 64))
    y = engine(x)                      # == model.eval()(x) to float rounding (several inputs: engine(ids, kv))
    engine.save("model.engine.npz"); engine = frugalnet.engine.load("model.engine.npz")

capture (torch.export; k-WTA, complementary and quantized layers kept whole) -> lower (a program of steps and
fallback aten ops; BatchNorm folded, conv + max pool fused) -> per-step choice by timing on the step's real input.
"""
from frugalnet.engine.choice import LayerChoice
from frugalnet.engine.compiler import Engine, compile, resize_batch
from frugalnet.engine.speedup import measure_speedup

load = Engine.load

__all__ = ["Engine", "LayerChoice", "compile", "load", "measure_speedup", "resize_batch"]
