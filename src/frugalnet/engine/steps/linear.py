"""The Linear step: sparse x dense, sparse x sparse (per sample, or batched by input) and dense x sparse variants."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.engine.steps.base import Step, _flavours, _np, _t
from frugalnet.kernels import dense as dense_k, layouts, linear as linear_k, sparse_rows
from frugalnet.kernels._jit import threads


MKL = torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
GEMV_MAX_BATCH = 8      # the dense GEMV kernel (kernels.dense) is offered up to this batch


def _effective_linear_macs(w: np.ndarray, x_nonzero: np.ndarray) -> float:
    """sum over samples and inputs of (input nonzero) x (nonzeros in that input's weight column)."""
    col_nnz = (w != 0).sum(0).astype(np.float64)
    return float((x_nonzero.astype(np.float64) @ col_nnz).sum())


def _by_input(n_in: int):
    """act -> (xptr, xs, xv): the batch's active (sample, value) pairs grouped by input, for the batched kernels."""
    xptr = np.empty(n_in + 1, np.int32)

    def grouped(act: Act):
        aidx, aval, counts = act.active()
        total = int(counts.sum())
        xs, xv = np.empty(total, np.int32), np.empty(total, np.float32)
        linear_k.transpose_active(aidx, aval, counts, n_in, xptr, xs, xv)
        return xptr, xs, xv
    return grouped


class LinearStep(Step):
    kind = "linear"

    @classmethod
    def build(cls, name: str, weight: np.ndarray, bias: np.ndarray | None) -> "LinearStep":
        w = layouts.as_f32(weight)
        b = np.zeros(w.shape[0], np.float32) if bias is None else layouts.as_f32(bias)
        return cls(name, {"n_out": int(w.shape[0]), "n_in": int(w.shape[1])}, {"weight": w, "bias": b})

    def variants(self, act: Act) -> list[str]:
        wd = float(np.count_nonzero(self.arrays["weight"])) / max(1, self.arrays["weight"].size)
        sparse_in = act.density() < 0.5
        out = ["torch"]
        if MKL and act.batch > 1:   # the dense path: MKL's GEMM on a weight packed once for this many rows
            out += ["mkl:p"]
        if act.batch <= GEMV_MAX_BATCH and wd >= 0.2:
            # dense, memory-bound at small batches: W streamed once, row by row (PyTorch's GEMM path on a (1, in)
            # input read a GPT-2 LM head at about half the rate of a plain pass over its bytes)
            out += ["gemv:s", "gemv:p"]
        if wd < 0.7:
            # (at batch 1 the serial builds too: on a loaded machine a parallel kernel waits for a thread that is
            # not scheduled, and in a GPT decode step every projection then lost to PyTorch's GEMV; csc_active, the
            # per-sample kernel with partial sums, is not offered: csc_rows matched or beat it)
            out += _flavours("csr_rows", act.batch, split=True) + (["csr_rows_t:p"] if act.batch > 1 else [])
            if sparse_in and act.batch == 1:
                out += ["csc_rows:s"]
            if sparse_in:
                # (csc_batched, one pass over each weight column for all its samples, is not offered: it took
                # 7 to 14 ms from run to run on 4096 x 4096 90/90 at batch 64, against a steady 5-6 ms for
                # csc_rows, and won the compile-time timing by chance; saved engines that chose it still run)
                out += ["csc_rows:p"]
        if sparse_in and wd >= 0.2:   # dense weight rows read 1/wd times the nonzeros: never worth 5x or more
            out += _flavours("dense_active", act.batch, split=True)
        return out

    def out_shape(self, shape):
        if len(shape) != 2 or shape[1] != self.params["n_in"]:
            raise ValueError(f"engine layer {self.name!r} (Linear, in_features={self.params['n_in']}) expects input "
                             f"(batch, {self.params['n_in']}), got {shape}")
        return (shape[0], self.params["n_out"])

    def run(self, act: Act, variant: str) -> Act:
        w, b = self.arrays["weight"], self.arrays["bias"]
        shape = self.out_shape(act.shape)
        out = np.empty(shape, np.float32)
        base, _, mode = variant.partition(":")
        par = mode == "p"
        if variant == "torch":
            out = _np(F.linear(_t(act.dense()), _t(w), _t(b)))
        elif base == "csr_rows":
            c = self.prepared("csr", lambda: layouts.to_csr(w))
            linear_k.csr_rows.pick(par)(c.ptr, c.idx, c.val, act.dense(), b, out)
        elif base == "csc_active":
            c = self.prepared("csc", lambda: layouts.to_csc(w))
            aidx, aval, counts = act.active()
            nchunks = 2 if par and shape[0] == 1 else 1
            linear_k.csc_active.pick(par)(c.ptr, c.idx, c.val, aidx, aval, counts, b, out, nchunks)
        elif base == "dense_active":
            wt = self.prepared("wt", lambda: np.ascontiguousarray(w.T))
            aidx, aval, counts = act.active()
            linear_k.dense_active.pick(par)(wt, aidx, aval, counts, b, out)
        elif base in ("csc_rows", "csc_batched", "mkl", "gemv", "csr_rows_t"):
            return self.bind(variant, act.shape)(act)
        else:
            raise ValueError(f"unknown Linear variant {variant!r}")
        return Act(shape, dense=out)

    def bind(self, variant, shape):
        out_shape = self.out_shape(shape)
        base, _, mode = variant.partition(":")
        par = mode == "p"
        w, b = self.arrays["weight"], self.arrays["bias"]
        empty = np.empty
        if base == "mkl":
            rows = int(shape[0])
            wt_, bt_ = _t(w), _t(b)
            packed = self.prepared(("mkl", rows), lambda: torch.ops.mkl._mkl_reorder_linear_weight(wt_, rows))
            mkl_linear = torch.ops.mkl._mkl_linear

            def f(act):
                return Act(out_shape, dense=mkl_linear(act.tensor(), packed, wt_, bt_, rows).numpy())
            return f
        if base == "gemv":
            k = dense_k.gemv_rows.pick(par)
            dense_k.check_gemv(w, np.empty((1, w.shape[1]), np.float32), b, np.empty((1, w.shape[0]), np.float32))

            def f(act):
                out = empty(out_shape, np.float32)
                x = act.dense()
                if x.dtype != np.float32 or not x.flags.c_contiguous:
                    x = np.ascontiguousarray(x, dtype=np.float32)
                k(w, x, b, out)
                return Act(out_shape, dense=out)
            return f
        if base == "csr_rows":
            c = self.prepared("csr", lambda: layouts.to_csr(w))
            k, ptr, idx, val = linear_k.csr_rows.pick(par), c.ptr, c.idx, c.val

            def f(act):
                out = empty(out_shape, np.float32)
                k(ptr, idx, val, act.dense(), b, out)
                return Act(out_shape, dense=out)
            return f
        if base == "csr_rows_t":
            # (kernels.sparse_rows: csr_rows_t's arithmetic, blocked so a block of the input serves every row) on
            # the input transposed to (in, batch) and back: PyTorch's blocked, threaded transposes, as numpy's
            # strided copies cost as much as the product (BERT's FFN, 128 tokens x 3072: 1.09 ms against 0.21)
            c = self.prepared("csr", lambda: layouts.to_csr(w))
            k, ptr, idx, val = sparse_rows.csr_rows_cols.pick(par), c.ptr, c.idx, c.val
            nparts = threads() if par else 1

            def f(act):
                xt = act.tensor().t().contiguous().numpy()
                out_t = empty((out_shape[1], out_shape[0]), np.float32)
                k(ptr, idx, val, xt, b, out_t, nparts)
                return Act(out_shape, dense=torch.from_numpy(out_t).t().contiguous().numpy())
            return f
        if base == "csc_active":
            c = self.prepared("csc", lambda: layouts.to_csc(w))
            k, ptr, idx, val = linear_k.csc_active.pick(par), c.ptr, c.idx, c.val
            nchunks = 2 if par and shape[0] == 1 else 1

            def f(act):
                out = empty(out_shape, np.float32)
                aidx, aval, counts = act.active()
                k(ptr, idx, val, aidx, aval, counts, b, out, nchunks)
                return Act(out_shape, dense=out)
            return f
        if base in ("csc_rows", "csc_batched"):
            c = self.prepared("csc", lambda: layouts.to_csc(w))
            nparts = threads() if par else 1
            split = self.prepared(f"split{nparts}", lambda: linear_k.row_splits(c, nparts))
            idx, val = c.idx, c.val
            if base == "csc_rows":
                k = linear_k.csc_active_rows.pick(par)
                batch, n_in = shape
                # a dense input goes in as is (every index, the kernel skips zeros): no scan-and-compact pass
                every = np.ascontiguousarray(np.broadcast_to(np.arange(n_in, dtype=np.int32), (batch, n_in)))
                full = np.full(batch, n_in, np.int32)

                def f(act):
                    out = empty(out_shape, np.float32)
                    if act.is_sparse:
                        aidx, aval, counts = act.active()
                    else:
                        aidx, aval, counts = every, act.dense().reshape(batch, n_in), full
                    k(split, idx, val, aidx, aval, counts, b, out)
                    return Act(out_shape, dense=out)
                return f
            k = linear_k.csc_active_batched.pick(par)
            grouped = _by_input(self.params["n_in"])

            def f(act):
                out = empty(out_shape, np.float32)
                k(split, idx, val, *grouped(act), b, out)
                return Act(out_shape, dense=out)
            return f
        if base == "dense_active":
            wt = self.prepared("wt", lambda: np.ascontiguousarray(w.T))
            k = linear_k.dense_active.pick(par)

            def f(act):
                out = empty(out_shape, np.float32)
                aidx, aval, counts = act.active()
                k(wt, aidx, aval, counts, b, out)
                return Act(out_shape, dense=out)
            return f
        return super().bind(variant, shape)

    def macs(self, act):
        w = self.arrays["weight"]
        x = act.dense().reshape(act.batch, -1) != 0
        return float(act.batch * w.size), _effective_linear_macs(w, x)

    def weight_bytes(self, variant):
        w, b = self.arrays["weight"], self.arrays["bias"]
        if variant.startswith("csr_rows"):
            return self.prepared("csr", lambda: layouts.to_csr(w)).nbytes + b.nbytes
        if variant.startswith(("csc_active", "csc_rows", "csc_batched")):
            # plus the row-split tables the plans built
            split = sum(a.nbytes for k, a in self._cache.items() if isinstance(k, str) and k.startswith("split")) \
                if not variant.startswith("csc_active") else 0
            return self.prepared("csc", lambda: layouts.to_csc(w)).nbytes + b.nbytes + split
        return w.nbytes + b.nbytes
