"""Making and keeping networks sparse: `sparsify_` with its configs, pruning schedules, dynamic sparse training
(SET, RigL) and compact sparse checkpoints (mask builders live in frugalnet.nn.masks)."""
from frugalnet.nn import masks
from frugalnet.nn.masks import complementary, fixed_fan_in
from frugalnet.sparsity.config import (GivenMasksConfig, KWinnersConfig, MagnitudeConfig, NMConfig,
                                       RandomFanInConfig)
from frugalnet.sparsity.convert import sparsify_

__all__ = ["masks", "sparsify_", "fixed_fan_in", "complementary", "MagnitudeConfig", "RandomFanInConfig",
           "NMConfig", "GivenMasksConfig", "KWinnersConfig"]
