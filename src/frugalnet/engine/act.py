"""An activation flowing through the engine: dense (numpy, C-contiguous NCHW or (B, n)), and/or sparse (active
indices/values per sample, flat over the per-sample shape), and/or a torch tensor in whatever memory layout the
step that made it prefers (oneDNN convs keep channels_last between them, so no layout change runs between two dense
convs). Conversions are computed once and cached."""
from __future__ import annotations

import numpy as np

from frugalnet.kernels import kwta as kwta_k, linear as linear_k


class Act:
    __slots__ = ("shape", "_dense", "_sparse", "_torch")

    def __init__(self, shape: tuple[int, ...], dense: np.ndarray | None = None,
                 sparse: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, tensor=None) -> None:
        self.shape = tuple(shape)  # (B, *per_sample)
        self._dense = dense
        self._sparse = sparse
        self._torch = tensor       # a float32 torch.Tensor of this shape, any strides (e.g. channels_last)

    @property
    def batch(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        n = 1
        for s in self.shape[1:]:
            n *= s
        return n

    @property
    def is_sparse(self) -> bool:
        return self._sparse is not None

    def tensor(self):
        """The values as a torch tensor (no copy when held as one or as a dense array; layout as made)."""
        if self._torch is None:
            import torch
            self._torch = torch.from_numpy(self.dense())
        return self._torch

    def dense(self) -> np.ndarray:
        if self._dense is None and self._torch is not None:
            self._dense = np.ascontiguousarray(self._torch.numpy())   # one NCHW copy when held channels_last
        if self._dense is None:
            aidx, aval, counts = self._sparse
            flat = np.empty((self.batch, self.width), np.float32)
            kwta_k.scatter_rows.pick(self.batch > 1)(aidx, aval, counts, flat)
            self._dense = flat.reshape(self.shape)
        return self._dense

    def active(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(aidx (B, K) int32, aval (B, K), counts (B,)) of the nonzeros, flat over the per-sample shape."""
        if self._sparse is None:
            flat = self.dense().reshape(self.batch, self.width)
            aidx = np.empty((self.batch, self.width), np.int32)
            aval = np.empty((self.batch, self.width), np.float32)
            counts = np.empty(self.batch, np.int32)
            linear_k.nonzeros.pick(self.batch > 1)(flat, aidx, aval, counts)
            self._sparse = (aidx, aval, counts)
        return self._sparse

    def fresh(self) -> "Act":
        """A copy holding only the primary form (so timing a consumer includes any conversion it needs)."""
        if self._torch is not None:
            return Act(self.shape, tensor=self._torch)
        if self._sparse is not None and self._dense is None:
            return Act(self.shape, sparse=self._sparse)
        if self._dense is not None and self._sparse is None:
            return Act(self.shape, dense=self._dense)
        return Act(self.shape, dense=self._dense, sparse=self._sparse)

    def reshaped(self, shape: tuple[int, ...]) -> "Act":
        if self._torch is not None and self._dense is None and self._sparse is None and self._torch.is_contiguous():
            return Act(shape, tensor=self._torch.view(shape))
        d = self._dense
        if d is None and self._torch is not None:
            d = self.dense()
        if d is not None:
            d = d.reshape(shape)
        return Act(shape, dense=d, sparse=self._sparse)

    def density(self) -> float:
        if self._sparse is not None and self._dense is None and self._torch is None:
            return float(self._sparse[2].sum()) / max(1, self.batch * self.width)
        if self._dense is None:
            import torch
            return float(torch.count_nonzero(self._torch)) / max(1, self._torch.numel())
        return float(np.count_nonzero(self._dense)) / max(1, self._dense.size)
