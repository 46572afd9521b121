"""Reference models used by the studies and benchmarks (plain nn.Sequential, so any tool can take them apart)."""
from frugalnet.models.cnn import cnn2_output_size, dense_cnn2, sparse_cnn2

__all__ = ["dense_cnn2", "sparse_cnn2", "cnn2_output_size"]
