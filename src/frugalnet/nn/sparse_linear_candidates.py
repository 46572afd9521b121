"""The per-product candidates of SparseLinear's training Function (sparse_functional): for the forward y = x W^T,
the input gradient gx = gy W and the weight gradient gW = gy^T x at the mask, the dense PyTorch way and the sparse
kernels' ways (serial and parallel builds), each a closure that `sparse_functional._pick` times and caches.

The weight is given as `_Values`: a dense parameter's values gathered at the mask, or a compact layer's (nnz,)
values as they are; shared per-step preprocessing (transposes, nonzero lists) lives in `_Transposed` and is made
once for every product that reads it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _parallel_options() -> tuple[bool, ...]:
    return (False, True) if _parallel_default() else (False,)


def _parallel_default() -> bool:
    """Parallel builds only when both numba and torch may use more than one thread: `torch.set_num_threads(1)` is
    how users (and one-process-per-core runs) ask for one thread. With numba's own count (every core by default), a
    process at one torch thread that timed its way to the parallel kernels used 44 s of CPU over 25 s of wall time
    for 400 pruning steps of the char Transformer, where a run that picked the serial ones took 26 s over 26 s."""
    import numba

    return numba.get_num_threads() > 1 and torch.get_num_threads() > 1


class _Values:
    """The weight's values in CSR / CSC order: a compact layer's values Parameter (nnz,) as they are, a dense
    weight's gathered on first use (one pass over the nonzeros); the masked dense weight built on demand for the
    dense candidates."""

    def __init__(self, weight: Tensor, lay) -> None:
        self.weight = weight
        self.lay = lay
        self.compact = weight.dim() == 1
        self._csr = weight.detach().numpy() if self.compact else None
        self._csc = None
        self._masked = None

    def csr(self, parallel: bool = False) -> np.ndarray:
        if self._csr is None:
            from frugalnet.kernels.train import gather

            flat = self.lay.layout.csr_flat
            self._csr = np.empty(flat.shape[0], np.float32)
            gather.serial(self.weight.detach().reshape(-1).numpy(), flat, self._csr)
        return self._csr

    def csc(self, parallel: bool = False) -> np.ndarray:
        """The CSC values, gathered once a step; the gather's build is timed once per size (`_gather_build`),
        whatever the candidate's (`parallel` is accepted for the candidates' uniform call): a memory-bound
        gather, which on two threads of the loaded machine took 1.7 ms in a step's profile against about 0.3 ms
        serial (kernels.train.gather), and may still gain from the second core of a quiet one."""
        if self._csc is None:
            from frugalnet.kernels.train import gather

            perm = self.lay.layout.csc_from_csr
            self._csc = np.empty(perm.shape[0], np.float32)
            src = self.csr()
            gather.pick(_gather_build(src, perm, self._csc))(src, perm, self._csc)
        return self._csc

    def masked(self, mask: Tensor) -> Tensor:
        if self._masked is None:
            if self.compact:
                self._masked = expand(self.lay.layout, self.csr())
            else:
                self._masked = self.weight.detach() * mask
        return self._masked


_GATHER_BUILDS: dict[int, bool] = {}


def _gather_build(src: np.ndarray, perm: np.ndarray, out: np.ndarray) -> bool:
    """Whether the parallel gather is the faster for this size: both builds timed on the first call (three
    interleaved repeats each after one untimed call, the lower minimum wins), then remembered; serial with one
    thread."""
    import time

    from frugalnet.kernels.train import gather

    n = int(perm.shape[0])
    par = _GATHER_BUILDS.get(n)
    if par is None:
        par = False
        if _parallel_default():
            times = {False: [], True: []}
            for p in (False, True):
                gather.pick(p)(src, perm, out)
            for _ in range(3):
                for p in (False, True):
                    t0 = time.perf_counter()
                    gather.pick(p)(src, perm, out)
                    times[p].append(time.perf_counter() - t0)
            par = min(times[True]) < min(times[False])
        _GATHER_BUILDS[n] = par
    return par


def expand(layout, values: np.ndarray, parallel: bool = False) -> Tensor:
    """The dense (out, in) tensor holding CSR `values` at the mask's positions, zeros elsewhere."""
    from frugalnet.kernels.train import expand_rows

    out = np.empty(layout.shape, np.float32)
    expand_rows.pick(parallel)(layout.csr_ptr, layout.csr_idx, values, out)
    return torch.from_numpy(out)


def _active(a: np.ndarray):
    """Nonzeros of each row of a (B, n) array as (aidx, aval, counts) for the scatter kernels."""
    from frugalnet.kernels import linear as K

    aidx = np.empty(a.shape, np.int32)
    aval = np.empty(a.shape, np.float32)
    counts = np.empty(a.shape[0], np.int32)
    K.nonzeros.serial(a, aidx, aval, counts)
    return aidx, aval, counts


def _forward_candidates(x: Tensor, xp: "_Transposed", vals: _Values, mask: Tensor, bias: Tensor | None,
                        mode: str) -> dict:
    lay = vals.lay.layout
    n_out = lay.shape[0]
    bn = np.zeros(n_out, np.float32) if bias is None else bias.detach().numpy()
    cands = {}
    if mode != "sparse":
        def dense():
            w = vals.masked(mask)
            return torch.addmm(bias, x, w.t()) if bias is not None else x @ w.t()
        cands["dense"] = dense
    if mode != "dense":
        cands.update(_sparse_product_candidates(
            xp, (lay.csr_ptr, lay.csr_idx, vals.csr),
            (lay.csc_split, lay.csc_idx, vals.csc, lay.csc_ptr), bn, n_out, ("csr", "csc")))
    return cands


def _sparse_product_candidates(a: "_Transposed", rows, cols, bias: np.ndarray, n_out: int, names) -> dict:
    """The two sparse ways to compute a @ M^T for a (B, n) array `a.a` and a sparse M given both by rows (ptr, idx,
    values()) and by columns (split cut for the threads, idx, values(), ptr): row dot products over a's transpose
    (`a.t`; the result written in (B, n_out) order by the kernel, no transposing copy), or a scatter of a's
    nonzeros (`a.active`) down M's columns, per sample or (when a's lists came from k-WTA, "_blk") per block of
    BLOCK samples, each column read once for the block; each serial and parallel. The forward (M = W) and the
    input gradient (M = W^T, so W's CSC gives M's rows and W's CSR its columns) both use it."""
    from frugalnet.kernels import linear as K
    from frugalnet.kernels import train_active as A

    cands = {}
    batch = a.a.shape[0]
    for par in _parallel_options():
        def by_rows(par=par):
            out = np.empty((batch, n_out), np.float32)
            A.csr_rows_tt.pick(par)(rows[0], rows[1], rows[2](par), a.t, bias, out)
            return torch.from_numpy(out)

        def by_cols(par=par):
            aidx, aval, counts = a.active
            out = np.empty((batch, n_out), np.float32)
            K.csc_active_rows.pick(par)(cols[0], cols[1], cols[2](par), aidx, aval, counts, bias, out)
            return torch.from_numpy(out)
        def by_col_blocks(par=par):
            aidx, aval, counts = a.active
            out = np.empty((batch, n_out), np.float32)
            A.csc_lists_blocked.pick(par)(cols[3], cols[1], cols[2](par), aidx, aval, counts, bias, out, BLOCK)
            return torch.from_numpy(out)
        cands[f"{names[0]}/{int(par)}"] = by_rows
        cands[f"{names[1]}/{int(par)}"] = by_cols
        if a.tagged:
            cands[f"{names[1]}_blk/{int(par)}"] = by_col_blocks
    return cands


# samples per block of csc_lists_blocked: their output rows (64 x 2048 floats) stay in a core's 1 MB L2 cache
# while the block's active columns stream through once (2048 x 2048 at 10%, 5% active inputs, batch 256, one
# thread: 2.9 ms against 3.8 ms per sample, bitwise equal)
BLOCK = 64


class _Transposed:
    """A (B, n) array, its C-contiguous transpose, its nonzeros per row and those grouped per unit, each made on
    first use and shared by the products that need them (forward and weight gradient for x; both gradients for gy).
    `lists` (aidx, aval, counts), when the tensor carried them (nn.active_lists: k-WTA's winners), stand in for the
    nonzero scan; `tagged` says so."""

    def __init__(self, a: np.ndarray, lists=None) -> None:
        self.a = a
        self.tagged = lists is not None
        self._lists = lists
        self.reset()

    def reset(self) -> None:
        """Forget what was made on use."""
        self.restore((None, self._lists, None))

    def snapshot(self) -> tuple:
        """What has been made so far; `restore` returns to it, so that a timed choice charges each candidate for
        the preprocessing it makes itself but not for what earlier products made and share."""
        return (self._t, self._active, self._units)

    def restore(self, snap: tuple) -> None:
        self._t, self._active, self._units = snap

    @property
    def t(self) -> np.ndarray:
        # PyTorch's blocked transpose: numpy's (and a plain loop) reads a (256, 2048) array down columns 8 KB
        # apart, all in one cache set: 1.5 ms against 0.39 ms on one thread
        if self._t is None:
            self._t = torch.from_numpy(self.a).t().contiguous().numpy()
        return self._t

    @property
    def active(self):
        if self._active is None:
            self._active = _active(self.a)
        return self._active

    @property
    def units(self):
        """The nonzeros grouped per unit (column): (ptr (n + 1), sample rows, values), samples ascending."""
        if self._units is None:
            from frugalnet.kernels.train_active import by_unit

            aidx, aval, counts = self.active
            n = self.a.shape[1]
            total = int(counts.sum())
            ptr = np.empty(n + 1, np.int64)
            rows = np.empty(total, np.int32)
            vals = np.empty(total, np.float32)
            by_unit(aidx, aval, counts, n, ptr, rows, vals)
            self._units = (ptr, rows, vals)
        return self._units


def _grad_input_candidates(gy: Tensor, gyp: _Transposed, vals: _Values, mask: Tensor, mode: str) -> dict:
    lay = vals.lay.layout
    n_in = lay.shape[1]
    zeros = np.zeros(n_in, np.float32)
    cands = {}
    if mode != "sparse":
        cands["dense"] = lambda: gy @ vals.masked(mask)
    if mode != "dense":
        cands.update(_sparse_product_candidates(
            gyp, (lay.csc_ptr, lay.csc_idx, vals.csc), (lay.csr_split, lay.csr_idx, vals.csr, lay.csr_ptr),
            zeros, n_in, ("csc_t", "scatter")))
    return cands


def _grad_weight_candidates(gy: Tensor, gyp: _Transposed, x: Tensor, xp: _Transposed, lay, mask: Tensor,
                            mode: str, compact: bool = False) -> dict:
    """The weight gradient's candidates: dense (out, in) with zeros outside the mask, or with `compact` the (nnz,)
    values in CSR order (no dense tensor is formed by the kernels then)."""
    from frugalnet.kernels import train as T
    from frugalnet.kernels import train_active as A

    layout = lay.layout

    def finish(vals: np.ndarray, par: bool) -> Tensor:
        return torch.from_numpy(vals) if compact else expand(layout, vals, par)
    cands = {}
    if mode != "sparse":
        def dense():
            g = gy.t() @ x
            if not compact:
                return g.mul_(mask)
            vals = np.empty(layout.nnz, np.float32)
            T.gather.serial(g.reshape(-1).numpy(), layout.csr_flat, vals)
            return torch.from_numpy(vals)
        cands["dense"] = dense
    if mode != "dense":
        for par in _parallel_options():
            def sddmm(par=par):
                vals = np.empty(layout.nnz, np.float32)
                T.sddmm_dense.pick(par)(layout.csr_ptr, layout.csr_idx, gyp.t, xp.t, vals)
                return finish(vals, par)

            def sddmm_gy(par=par):
                vals = np.empty(layout.nnz, np.float32)
                T.sddmm_sparse_gy.pick(par)(layout.csr_ptr, layout.csr_idx, gyp.t, xp.a, vals)
                return finish(vals, par)
            def sddmm_both(par=par):
                import numba

                vals = np.empty(layout.nnz, np.float32)
                aidx, aval, counts = xp.active
                T.sddmm_sparse_both.pick(par)(layout.csr_ptr, layout.csr_idx, gyp.t, aidx, aval, counts, vals,
                                              numba.get_num_threads() if par else 1)
                return finish(vals, par)
            def lists(par=par):
                vals = np.empty(layout.nnz, np.float32)
                A.sddmm_lists.pick(par)(layout.csr_ptr, layout.csr_idx, *gyp.units, xp.a, vals)
                return finish(vals, par)

            def lists_both(par=par):
                import numba

                vals = np.empty(layout.nnz, np.float32)
                aidx, aval, counts = xp.active
                A.sddmm_lists_both.pick(par)(layout.csr_ptr, layout.csr_idx, *gyp.units, aidx, aval, counts,
                                             layout.shape[1], vals, numba.get_num_threads() if par else 1)
                return finish(vals, par)
            cands[f"sddmm_lists/{int(par)}"] = lists
            cands[f"sddmm_lists_both/{int(par)}"] = lists_both
            if not xp.tagged:   # its accumulator is as wide as the lists (a scan's are in_features wide)
                cands[f"sddmm_both/{int(par)}"] = sddmm_both
            cands[f"sddmm/{int(par)}"] = sddmm
            cands[f"sddmm_gy/{int(par)}"] = sddmm_gy
    return cands
