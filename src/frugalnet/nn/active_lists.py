"""Per-sample active lists that ride with a tensor: k-WTA knows its winners, so the tensors it makes (its output, and
in backward the gradient it passes back, nonzero only at the winners) come with the (indices, values) lists the
sparse layers' kernels take, and those layers skip scanning the dense (B, n) tensor for its nonzeros.

The lists live in a side table keyed by the tensor's identity, held through a weak reference (an entry goes when
its tensor does), not as an attribute on the tensor: a tensor with attributes pickles them, and a saved activation
would then no longer load with `torch.load(..., weights_only=True)`. A list is trusted only while the tensor is
the one it was made for, unchanged: the same object, storage, shape and version counter (any in-place write
bumps the version, also through a detached alias; a reshaped or copied tensor has no lists). Writes that bypass
the version counter (`.data`, a `.numpy()` view) are not seen, as autograd's own saved-tensor checks do not see
them. The lists are made by our kernels, so their indices are in range.
"""
from __future__ import annotations

import weakref

import numpy as np
from torch import Tensor

_TABLE: dict[int, tuple] = {}


def tag(t: Tensor, aidx: np.ndarray, aval: np.ndarray) -> Tensor:
    """Record the lists of a 2-D tensor t (B, n): aidx (B, k) int32 positions (each row's distinct, ascending),
    aval (B, k) float32 t's values there; t is zero elsewhere. Returns t."""
    key = id(t)

    def _drop(ref, key=key):
        rec = _TABLE.get(key)
        if rec is not None and rec[0] is ref:
            del _TABLE[key]
    _TABLE[key] = (weakref.ref(t, _drop), t.data_ptr(), tuple(t.shape), t._version, aidx, aval)
    return t


def lists_of(t: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(aidx, aval, counts) of t when it has valid lists (see the module doc), else None."""
    rec = _TABLE.get(id(t))
    if rec is None or rec[0]() is not t:
        return None
    _, ptr, shape, version, aidx, aval = rec
    if t.data_ptr() != ptr or tuple(t.shape) != shape or t._version != version or t.dim() != 2:
        return None
    return aidx, aval, np.full(aidx.shape[0], aidx.shape[1], np.int32)
