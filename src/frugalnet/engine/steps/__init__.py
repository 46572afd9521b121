"""Engine steps: the layers frugalnet has kernels for (BatchNorm folded in), each with several implementations
("variants") that compute the same thing, "torch" (PyTorch's own op) always among them; the compiler times them on
the layer's real input and keeps the fastest. Ops without a step run as fallback aten nodes (engine/program.py).

A step holds only numpy arrays and plain parameters, so it saves to an .npz without pickling; engine/validate.py
checks each kind's parameters against its arrays on load. The low-bit step factory (steps/lowbit.py,
`lowbit_factory.lowbit_step_for`) is called from engine/lower.py's `lowbit_step`, when that module is present.
"""
from __future__ import annotations

from frugalnet.engine.steps.base import Step
from frugalnet.engine.steps.complementary import ComplementaryStep
from frugalnet.engine.steps.conv import ConvStep
from frugalnet.engine.steps.layers import AffineStep, FlattenStep, KWinnersStep, PoolStep, ReLUStep
from frugalnet.engine.steps.linear import LinearStep
from frugalnet.engine.steps.lowbit import LowbitLinearStep
from frugalnet.engine.steps.lowbit_conv import LowbitConvStep

STEP_TYPES: dict[str, type[Step]] = {c.kind: c for c in (LinearStep, ConvStep, KWinnersStep, PoolStep, ReLUStep,
                                                           FlattenStep, AffineStep, ComplementaryStep,
                                                           LowbitLinearStep, LowbitConvStep)}

__all__ = ["Step", "LinearStep", "ConvStep", "KWinnersStep", "PoolStep", "ReLUStep", "FlattenStep", "AffineStep",
           "ComplementaryStep", "LowbitLinearStep", "LowbitConvStep", "STEP_TYPES"]
