"""Drop-in PyTorch modules: k-WTA, sparse layers, dendritic layers, batch norm over all ranks."""
from frugalnet.nn.dendrites import DendriteSegments, DendriticLinear, DendriticMLP
from frugalnet.nn.fused_blocks import FusedSequential, fuse_blocks_
from frugalnet.nn.kwinners import KWinners, KWinners2d, update_boost_strength
from frugalnet.nn.sparse import SparseConv2d, SparseLinear, SparseWeightMixin
from frugalnet.nn.sparse_compact import compact_layers_
from frugalnet.nn.sync_batchnorm import DistributedBatchNorm, convert_to_distributed_batchnorm

__all__ = ["KWinners", "KWinners2d", "update_boost_strength", "SparseLinear", "SparseConv2d", "SparseWeightMixin", "compact_layers_",
           "FusedSequential", "fuse_blocks_",
           "DendriteSegments", "DendriticLinear", "DendriticMLP", "DistributedBatchNorm",
           "convert_to_distributed_batchnorm"]
