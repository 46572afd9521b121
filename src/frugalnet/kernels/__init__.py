"""CPU kernels (numba) for sparse inference: pure functions of numpy arrays, each tested against a plain PyTorch
reference in `frugalnet.kernels.reference`.

* linear: sparse W x dense x (CSR, per row / batch-transposed); sparse W x sparse x (CSC, active inputs only)
* conv: direct sparse-weight and dense-weight conv with dense input, im2col; conv_active: sparse (k-WTA) input
  with dense or compressed taps
* complementary: N disjoint-mask kernels packed densely, products routed per kernel (Linear and Conv2d)
* kwta: exact k-WTA selection producing (indices, values); pool: max/avg pooling
"""
from frugalnet.kernels import complementary, conv, conv_active, layouts, kwta, linear, pool, reference
from frugalnet.kernels._jit import set_threads, threads
from frugalnet.kernels.layouts import Compressed, to_csc, to_csr
from frugalnet.kernels.kwta import densify
from frugalnet.kernels.linear import active_inputs, sparse_dense_linear, sparse_sparse_linear

__all__ = ["complementary", "conv", "conv_active", "layouts", "kwta", "linear", "pool", "reference", "set_threads",
           "threads",
           "Compressed", "to_csr", "to_csc", "densify", "active_inputs", "sparse_dense_linear",
           "sparse_sparse_linear"]
