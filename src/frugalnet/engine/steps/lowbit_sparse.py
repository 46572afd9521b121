"""Sparse low-bit codes (only the nonzero codes with their indices) for the low-bit Linear / Conv2d steps: their
layouts, built from the step's validated CSR codes, and their variants.

"csr": sparse codes x dense input (quant.csr_nib, any packed format). "win512" / "win256": sparse 4-bit codes (INT4,
MXFP4, NVFP4) x dense input in kernels.quant_sparse's windows layout (AVX-512 / AVX2 builds; 4096 x 4096 at 90%
sparsity, batch 1: about 3.5x the CSR kernels on one core, see that module). "csc": sparse codes x sparse input
(quant.csc_nib: only the columns of active inputs are read, one scalar scatter per nonzero). "colseg": sparse 4-bit
codes x sparse input in kernels.quant_colseg's column-segments layout (only the active columns read, eight rows at a
time by one vector table lookup; the best build this CPU has: AVX-512, AVX2 or scalar; 4096 x 4096, 90% sparse
weights and inputs, batch 1: ~1.5x our FP32 CSC kernel and ~2.2x csc, see benchmarks/lowbit_infer.py). Every layout is
derived in memory from the CSR arrays that `LowbitLinearStep.check` validated, and checked again before a kernel
sees it.
"""
from __future__ import annotations

import numpy as np

from frugalnet.engine.act import Act
from frugalnet.kernels import linear as linear_k, quant as quant_k, quant_sparse as sparse_k
from frugalnet.kernels import quant_colseg as colseg_k
from frugalnet.kernels._jit import threads
from frugalnet.kernels.layouts import Compressed


class SparseCodes:
    """Mixin of LowbitLinearStep: the sparse layouts and variants (uses its _matrix, _zero, _lutf, _shift,
    _padded_input and prepared)."""

    def _csr(self):
        a = self.arrays
        if "csr_ptr" in a:
            return a["csr_ptr"], a["csr_idx"], a["csr_codes"]
        return self.prepared("csr", lambda: quant_k.compress_codes(self._matrix(), self._zero(), False,
                                                                   self.params["nibble"]))

    def _csc_split(self, nparts: int):
        p = self.params
        ptr, idx, vals = self.prepared("csc", lambda: quant_k.compress_codes(self._matrix(), self._zero(), True,
                                                                             p["nibble"]))
        split = self.prepared(f"split{nparts}", lambda: linear_k.row_splits(
            Compressed(ptr, idx, vals, (p["n_out"], p["cols"])), nparts))
        return split, idx, vals

    def window_eligible(self) -> bool:
        """The windows layout (kernels.quant_sparse) applies: sparse 4-bit codes (one scale per row, or per block of
        a power-of-two number of columns) with code 0 worth 0.0 (the layout's padding)."""
        p = self.params
        return bool(p["sparse"] and p["nibble"] and not p.get("float_weights") and self.arrays["lut"][0] == 0)

    def window_variants(self) -> list[str]:
        """The windows-layout variants of the builds this host can run (none where the layout does not apply)."""
        return [f"{v}:{m}" for v in sparse_k.window_kernels() for m in "sp"] if self.window_eligible() else []

    def _windows(self):
        """The window kernels' weight arguments, built from the CSR codes and checked (kernels.quant_sparse)."""
        p, a = self.params, self.arrays
        return self.prepared("windows", lambda: sparse_k.windows_from_csr(
            *self._csr(), self._zero(), p["n_out"], p["k"], a["wscale"] if p["block_scales"] else a["wscale"][:, :1],
            p["blk"] if p["block_scales"] else 0, a["bias"]))

    def colseg_variants(self) -> list[str]:
        """The column-segments variants (sparse 4-bit codes, code 0 worth 0.0, like the windows layout)."""
        return ["colseg:s", "colseg:p"] if self.window_eligible() else []

    def _colseg(self, nparts: int):
        """The column-segments kernels' weight arguments for `nparts` row parts (kernels.quant_colseg), checked."""
        p, a = self.params, self.arrays
        return self.prepared(f"colseg{nparts}", lambda: colseg_k.colseg_from_csr(
            *self._csr(), self._zero(), p["n_out"], p["cols"],
            a["wscale"] if p["block_scales"] else a["wscale"][:, :1], p["blk"] if p["block_scales"] else 0,
            a["bias"], nparts))

    def _csr_scale(self) -> np.ndarray:
        return self.arrays["wscale"] if self.params["block_scales"] else self.arrays["wscale"][:, :1].copy()

    def sparse_matmul(self, variant: str, rows: int):
        """LowbitLinearStep.matmul for the sparse variants."""
        base, _, mode = variant.partition(":")
        par = mode == "p"
        p, a = self.params, self.arrays
        b, empty, pad, n_out = a["bias"], np.empty, self._padded_input, p["n_out"]
        lutf, shift, nibble, cs = self._lutf(), self._shift(), p["nibble"], self._csr_scale()
        if base == "csr":
            ptr, idx, vals = self._csr()
            kc = quant_k.csr_nib.pick(par)

            def f(x, act=None):
                out = empty((rows, n_out), np.float32)
                kc(ptr, idx, vals, lutf, nibble, cs, shift, np.ascontiguousarray(x), b, out)
                return out
            return f
        if base in sparse_k.WINDOW_ISA:
            if not self.window_eligible():
                raise ValueError(f"low-bit step {self.name!r}: {variant!r} needs sparse 4-bit codes")
            layout = self._windows()
            # a plan saved on another CPU: the same layout through a build this one has (same outputs)
            builds = sparse_k.window_kernels()
            kw = builds.get(base, builds.get("win256", sparse_k.window_rows_scalar)).pick(par)

            def f(x, act=None):
                out = empty((x.shape[0], n_out), np.float32)
                sptr, wbase, ent, lane_scale, lane_bias, bscale, bshift = layout
                kw(sptr, wbase, ent, lutf, lane_scale, lane_bias, bscale, bshift, pad(x), out)
                return out
            return f
        if base == "csc":
            split, idx, vals = self._csc_split(threads() if par else 1)
            ks = quant_k.csc_nib.pick(par)
            cs_t = self.prepared("wscale_t", lambda: np.ascontiguousarray(cs.T))

            def f(x, act=None):
                out = empty((rows, n_out), np.float32)
                same = act is not None and x is act.dense()     # unquantized input: its cached active list
                aidx, aval, counts = (act if same else Act(x.shape, dense=np.ascontiguousarray(x))).active()
                ks(split, idx, vals, lutf, nibble, cs_t, shift, aidx, aval, counts, b, out)
                return out
            return f
        if base == "colseg":
            if not self.window_eligible():
                raise ValueError(f"low-bit step {self.name!r}: {variant!r} needs sparse 4-bit codes")
            split, seg, codes, row_scale, cbias, bscale, bshift = self._colseg(threads() if par else 1)
            kk = next(iter(colseg_k.colseg_kernels().values())).pick(par)      # the best build this CPU has
            cols = p["cols"]
            # a dense input goes in as is (every index; the kernel skips zeros): no scan-and-compact pass
            every = np.ascontiguousarray(np.broadcast_to(np.arange(cols, dtype=np.int32), (rows, cols)))
            full = np.full(rows, cols, np.int32)

            def f(x, act=None):
                out = empty((rows, n_out), np.float32)
                if act is not None and act.is_sparse and x is act.dense():    # unquantized input: its active list
                    aidx, aval, counts = act.active()
                else:
                    aidx, aval, counts = every, np.ascontiguousarray(x), full
                kk(split, seg, codes, lutf, row_scale, cbias, bscale, bshift, aidx, aval, counts,
                   colseg_k.scratch(rows, n_out), out)
                return out
            return f
        raise ValueError(f"unknown low-bit variant {variant!r}")

    def sparse_weight_bytes(self, variant: str) -> int:
        """Bytes of the sparse layout a variant reads (scales and bias aside, but for colseg: its own)."""
        if variant.partition(":")[0] in sparse_k.WINDOW_ISA:
            return sparse_k.windows_nbytes(*self._windows()[:3])       # its scales: wscale, relaid
        if variant.startswith("colseg"):
            split, seg, codes, row_scale, bias, bscale, _ = self._colseg(threads() if variant.endswith(":p") else 1)
            return colseg_k.colseg_nbytes(split, seg, codes) + row_scale.nbytes + bias.nbytes + bscale.nbytes
        if variant.startswith("csc"):
            split, idx, vals = self._csc_split(threads() if variant.endswith(":p") else 1)
            return split.nbytes + idx.nbytes + vals.nbytes
        return sum(x.nbytes for x in self._csr())
