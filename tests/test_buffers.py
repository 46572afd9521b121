"""utils.buffers.BufferPool recycles a work array only once nothing else refers to it."""
import numpy as np
import torch

from frugalnet.utils.buffers import MIN_BYTES, BufferPool


def test_pool_reuses_only_free_arrays():
    pool = BufferPool()
    shape = (MIN_BYTES // 4 + 10,)
    a = pool.empty(shape, np.float32)
    assert pool.empty(shape, np.float32) is not a           # a is still held here
    t = torch.from_numpy(a)[5:]                               # a tensor view holds it too
    del a
    b = pool.empty(shape, np.float32)
    assert not np.shares_memory(b, t.numpy())
    del t, b
    c = pool.empty(shape, np.float32)
    d = pool.empty(shape, np.float32)
    assert c is not d and not np.shares_memory(c, d)
    del d
    assert pool.empty(shape, np.float32) is not c             # c is held; the freed one comes back
    assert pool.empty(shape, np.float64).dtype == np.float64  # dtype is part of the key
    assert pool.empty((4,), np.float32).shape == (4,)


def test_pool_bounds_what_it_keeps():
    pool = BufferPool()
    held = [pool.empty((MIN_BYTES // 4 + 1,), np.float32) for _ in range(10)]
    assert len({id(a) for a in held}) == 10
    pool.clear()
    assert pool.empty((MIN_BYTES // 4 + 1,), np.float32) is not held[0]
