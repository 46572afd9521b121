"""Engine steps: one per layer (BatchNorm folded in), each with several implementations ("variants") that compute
the same thing; the compiler times them on the layer's real input and keeps the fastest.

A step holds only numpy arrays and plain parameters, so it saves to an .npz without pickling.
"""
from __future__ import annotations

from frugalnet.engine.steps.base import Step
from frugalnet.engine.steps.complementary import ComplementaryStep
from frugalnet.engine.steps.conv import ConvStep
from frugalnet.engine.steps.layers import AffineStep, FlattenStep, KWinnersStep, PoolStep, ReLUStep
from frugalnet.engine.steps.linear import LinearStep

STEP_TYPES: dict[str, type[Step]] = {c.kind: c for c in (LinearStep, ConvStep, KWinnersStep, PoolStep, ReLUStep,
                                                           FlattenStep, AffineStep, ComplementaryStep)}

__all__ = ["Step", "LinearStep", "ConvStep", "KWinnersStep", "PoolStep", "ReLUStep", "FlattenStep", "AffineStep",
           "ComplementaryStep", "STEP_TYPES"]
