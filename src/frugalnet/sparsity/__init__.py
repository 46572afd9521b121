"""Making and keeping networks sparse: `sparsify_` with its configs, gradual magnitude pruning, dynamic sparse
training (SET, RigL), calibrated one-shot pruning (activation magnitude, least-squares reconstruction), distillation
from the dense model while pruning, and compact sparse checkpoints (mask builders live in frugalnet.nn.masks)."""
from frugalnet.nn import masks
from frugalnet.nn.masks import complementary, fixed_fan_in
from frugalnet.sparsity.calibrated import prune_activation_magnitude_, prune_reconstruct_
from frugalnet.sparsity.checkpoint import from_pretrained_sparse, load_sparse, save_pretrained_sparse, save_sparse
from frugalnet.sparsity.config import (GivenMasksConfig, KWinnersConfig, MagnitudeConfig, NMConfig,
                                       RandomFanInConfig)
from frugalnet.sparsity.convert import sparsify_
from frugalnet.sparsity.distill import DistillConfig, Distiller, distillation_loss
from frugalnet.sparsity.dynamic import SET, DynamicSparsity, RigL
from frugalnet.sparsity.pruning import GradualMagnitudePruner, cubic_sparsity, measured_sparsity, prune_magnitude_

__all__ = ["masks", "sparsify_", "fixed_fan_in", "complementary", "MagnitudeConfig", "RandomFanInConfig",
           "NMConfig", "GivenMasksConfig", "KWinnersConfig", "GradualMagnitudePruner", "cubic_sparsity",
           "prune_magnitude_", "measured_sparsity", "DynamicSparsity", "SET", "RigL", "save_sparse", "load_sparse",
           "save_pretrained_sparse", "from_pretrained_sparse", "prune_activation_magnitude_", "prune_reconstruct_",
           "DistillConfig", "Distiller", "distillation_loss"]
