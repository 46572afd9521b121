"""Inference engine: compile a trained (sparse) PyTorch model into a callable that runs the fastest kernel per
layer for the measured weight/activation sparsity and batch size (dense where dense is faster).

    engine = frugalnet.engine.compile(model, example_input, batch_sizes=(1, 64))
    y = engine(x)                      # == model.eval()(x) to float rounding
    engine.save("model.engine.npz"); engine = frugalnet.engine.load("model.engine.npz")
"""
from frugalnet.engine.compiler import Engine, LayerChoice, compile, resize_batch
from frugalnet.engine.speedup import measure_speedup

load = Engine.load

__all__ = ["Engine", "LayerChoice", "compile", "load", "measure_speedup", "resize_batch"]
