"""Drop-in PyTorch modules: k-WTA, sparse layers (and, as they land, dendritic layers)."""
from frugalnet.nn.kwinners import KWinners, KWinners2d, update_boost_strength
from frugalnet.nn.sparse import SparseConv2d, SparseLinear

__all__ = ["KWinners", "KWinners2d", "update_boost_strength", "SparseLinear", "SparseConv2d"]
