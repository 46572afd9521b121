"""Engine steps: one per layer (BatchNorm folded in), each with several implementations ("variants") that compute
the same thing; the compiler times them on the layer's real input and keeps the fastest.

A step holds only numpy arrays and plain parameters, so it saves to an .npz without pickling.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.kernels import conv as conv_k, formats, kwta as kwta_k, linear as linear_k, pool as pool_k
from frugalnet.kernels._jit import threads


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.numpy())


def _flavours(base: str, batch: int, split: bool) -> list[str]:
    """Serial (":s") and/or parallel (":p") builds worth trying: at batch 1 a kernel that only splits the batch
    gains nothing from threads; at larger batches the parallel build is the one to use."""
    if batch > 1:
        return [f"{base}:p"]
    return [f"{base}:s", f"{base}:p"] if split else [f"{base}:s"]


class Step:
    kind: ClassVar[str] = ""

    def __init__(self, name: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.name = name
        self.params = params
        self.arrays = arrays
        self._cache: dict[str, Any] = {}

    def variants(self, act: Act) -> list[str]:
        return ["torch"]

    def run(self, act: Act, variant: str) -> Act:
        raise NotImplementedError

    def bind(self, variant: str, shape: tuple[int, ...]):
        """A fast callable act -> act for one variant and input shape, with all lookups done up front (the engine
        calls these at inference; `run` is the readable, general path used while compiling)."""
        return lambda act: self.run(act, variant)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def macs(self, act: Act) -> tuple[float, float]:
        """(dense MACs, effective MACs: nonzero weight x nonzero input pairs) for this input."""
        return 0.0, 0.0

    def weight_bytes(self, variant: str) -> int:
        return 0

    def prepared(self, key: str, build) -> Any:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


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
        w = formats.as_f32(weight)
        b = np.zeros(w.shape[0], np.float32) if bias is None else formats.as_f32(bias)
        return cls(name, {"n_out": int(w.shape[0]), "n_in": int(w.shape[1])}, {"weight": w, "bias": b})

    def variants(self, act: Act) -> list[str]:
        wd = float(np.count_nonzero(self.arrays["weight"])) / max(1, self.arrays["weight"].size)
        sparse_in = act.density() < 0.5
        out = ["torch"]
        if wd < 0.7:
            out += _flavours("csr_rows", act.batch, split=True) + (["csr_rows_t:p"] if act.batch > 1 else [])
            if sparse_in:
                # (csc_active, the per-sample kernel with partial sums, is not tried: csc_rows matched or beat it in
                # every benchmark case, and each candidate costs JIT time on first use)
                out += _flavours("csc_rows", act.batch, split=True)
                if act.batch > 1:
                    out += ["csc_batched:p"]
        if sparse_in:
            out += _flavours("dense_active", act.batch, split=False)
            if act.batch > 1:
                out += ["dense_batched:p"]
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
            c = self.prepared("csr", lambda: formats.to_csr(w))
            linear_k.csr_rows.pick(par)(c.ptr, c.idx, c.val, act.dense(), b, out)
        elif base == "csr_rows_t":
            c = self.prepared("csr", lambda: formats.to_csr(w))
            out_t = np.empty((shape[1], shape[0]), np.float32)
            linear_k.csr_rows_t.pick(par)(c.ptr, c.idx, c.val, np.ascontiguousarray(act.dense().T), b, out_t)
            out = np.ascontiguousarray(out_t.T)
        elif base == "csc_active":
            c = self.prepared("csc", lambda: formats.to_csc(w))
            aidx, aval, counts = act.active()
            nchunks = 2 if par and shape[0] == 1 else 1
            linear_k.csc_active.pick(par)(c.ptr, c.idx, c.val, aidx, aval, counts, b, out, nchunks)
        elif base == "dense_active":
            wt = self.prepared("wt", lambda: np.ascontiguousarray(w.T))
            aidx, aval, counts = act.active()
            linear_k.dense_active.pick(par)(wt, aidx, aval, counts, b, out)
        elif base in ("csc_rows", "csc_batched", "dense_batched"):
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
        if base == "csr_rows":
            c = self.prepared("csr", lambda: formats.to_csr(w))
            k, ptr, idx, val = linear_k.csr_rows.pick(par), c.ptr, c.idx, c.val

            def f(act):
                out = empty(out_shape, np.float32)
                k(ptr, idx, val, act.dense(), b, out)
                return Act(out_shape, dense=out)
            return f
        if base == "csc_active":
            c = self.prepared("csc", lambda: formats.to_csc(w))
            k, ptr, idx, val = linear_k.csc_active.pick(par), c.ptr, c.idx, c.val
            nchunks = 2 if par and shape[0] == 1 else 1

            def f(act):
                out = empty(out_shape, np.float32)
                aidx, aval, counts = act.active()
                k(ptr, idx, val, aidx, aval, counts, b, out, nchunks)
                return Act(out_shape, dense=out)
            return f
        if base in ("csc_rows", "csc_batched"):
            c = self.prepared("csc", lambda: formats.to_csc(w))
            nparts = threads() if par else 1
            split = self.prepared(f"split{nparts}", lambda: linear_k.row_splits(c, nparts))
            idx, val = c.idx, c.val
            if base == "csc_rows":
                k = linear_k.csc_active_rows.pick(par)

                def f(act):
                    out = empty(out_shape, np.float32)
                    aidx, aval, counts = act.active()
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
        if base == "dense_batched":
            wt = self.prepared("wt", lambda: np.ascontiguousarray(w.T))
            k = linear_k.dense_active_batched.pick(par)
            grouped = _by_input(self.params["n_in"])
            nparts = threads() if par else 1   # (more, cache-sized ranges measured slower: 18 vs 23-38 ms)

            def f(act):
                out = empty(out_shape, np.float32)
                k(wt, *grouped(act), b, out, nparts)
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
            return self.prepared("csr", lambda: formats.to_csr(w)).nbytes + b.nbytes
        if variant.startswith(("csc_active", "csc_rows", "csc_batched")):
            # plus the row-split tables the plans built
            split = sum(a.nbytes for k, a in self._cache.items() if isinstance(k, str) and k.startswith("split")) \
                if not variant.startswith("csc_active") else 0
            return self.prepared("csc", lambda: formats.to_csc(w)).nbytes + b.nbytes + split
        return w.nbytes + b.nbytes


class ConvStep(Step):
    kind = "conv2d"

    @classmethod
    def build(cls, name: str, weight: np.ndarray, bias: np.ndarray | None, stride, padding, dilation,
              groups: int) -> "ConvStep":
        w = formats.as_f32(weight)
        b = np.zeros(w.shape[0], np.float32) if bias is None else formats.as_f32(bias)
        params = {"stride": [int(s) for s in stride], "padding": [int(p) for p in padding],
                  "dilation": [int(d) for d in dilation], "groups": int(groups)}
        return cls(name, params, {"weight": w, "bias": b})

    def _full(self) -> np.ndarray:
        return self.prepared("full", lambda: conv_k.expand_groups(self.arrays["weight"], self.params["groups"]))

    def variants(self, act):
        wd = float(np.count_nonzero(self.arrays["weight"])) / max(1, self.arrays["weight"].size)
        out = ["torch"] + _flavours("im2col", act.batch, split=False)
        if wd < 0.5:   # direct conv over the nonzero taps only pays off when most taps are zero
            out += _flavours("sparse_w", act.batch, split=True)
        if act.density() < 0.5:
            out += _flavours("active_dense", act.batch, split=True)
            if wd < 0.3:
                out += _flavours("active_sparse", act.batch, split=True)
        return out

    def out_shape(self, shape):
        w = self.arrays["weight"]
        cin = w.shape[1] * self.params["groups"]
        if len(shape) != 4 or shape[1] != cin:
            raise ValueError(f"engine layer {self.name!r} (Conv2d, in_channels={cin}) expects input "
                             f"(batch, {cin}, H, W), got {shape}")
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        oh = conv_k.conv_output_size(shape[2], w.shape[2], sh, ph, dh)
        ow = conv_k.conv_output_size(shape[3], w.shape[3], sw, pw, dw)
        if oh < 1 or ow < 1:
            raise ValueError(f"engine layer {self.name!r}: input {shape} is too small for the kernel")
        return (shape[0], w.shape[0], oh, ow)

    def run(self, act, variant):
        w, b = self.arrays["weight"], self.arrays["bias"]
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        shape = self.out_shape(act.shape)
        out = np.empty(shape, np.float32)
        base, _, mode = variant.partition(":")
        par = mode == "p"
        nchunks = 2 if par and shape[0] == 1 else 1
        if variant == "torch":
            out = _np(F.conv2d(_t(act.dense()), _t(w), _t(b), (sh, sw), (ph, pw), (dh, dw), self.params["groups"]))
        elif base == "sparse_w":
            ptr, taps, val = self.prepared("taps", lambda: formats.conv_nonzero_taps(self._full()))
            x = act.dense()
            if ph or pw:
                xp = np.empty((x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), np.float32)
                conv_k.pad_nchw.pick(par)(x, ph, pw, xp)
            else:
                xp = x
            conv_k.conv_dense_input.pick(par)(xp, ptr, taps, val, b, sh, sw, dh, dw, out)
        elif base == "im2col":
            return self.bind(variant, act.shape)(act)
        elif base == "active_dense":
            wt = self.prepared("dense_taps", lambda: formats.conv_taps_dense(self._full()))
            aidx, aval, counts = act.active()
            conv_k.conv_active_dense_taps.pick(par)(aidx, aval, counts, act.shape[2], act.shape[3], wt, b, sh, sw,
                                                    ph, pw, dh, dw, out, nchunks)
        elif base == "active_sparse":
            c = self.prepared("sparse_taps", lambda: formats.conv_taps_sparse(self._full()))
            aidx, aval, counts = act.active()
            conv_k.conv_active_sparse_taps.pick(par)(aidx, aval, counts, act.shape[2], act.shape[3], w.shape[2],
                                                     w.shape[3], c.ptr, c.idx, c.val, b, sh, sw, ph, pw, dh, dw,
                                                     out, nchunks)
        else:
            raise ValueError(f"unknown Conv2d variant {variant!r}")
        return Act(shape, dense=out)

    def bind(self, variant, shape):
        out_shape = self.out_shape(shape)
        base, _, mode = variant.partition(":")
        par = mode == "p"
        nchunks = 2 if par and shape[0] == 1 else 1
        w, b = self.arrays["weight"], self.arrays["bias"]
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        in_h, in_w = shape[2], shape[3]
        empty = np.empty
        if base == "sparse_w" and not (ph or pw):
            ptr, taps, val = self.prepared("taps", lambda: formats.conv_nonzero_taps(self._full()))
            k = conv_k.conv_dense_input.pick(par)

            def f(act):
                out = empty(out_shape, np.float32)
                k(act.dense(), ptr, taps, val, b, sh, sw, dh, dw, out)
                return Act(out_shape, dense=out)
            return f
        if base == "im2col":
            full = self._full()
            cout, cin, kh, kw = full.shape
            w2 = torch.from_numpy(np.ascontiguousarray(full.reshape(cout, cin * kh * kw)))
            bias_col = torch.from_numpy(b).reshape(1, cout, 1)
            k = conv_k.im2col.pick(par)
            pad = conv_k.pad_nchw.pick(par)
            batch = shape[0]
            n_pos = out_shape[2] * out_shape[3]
            padded = (batch, cin, in_h + 2 * ph, in_w + 2 * pw)

            def f(act):
                x = act.dense()
                if ph or pw:
                    xp = empty(padded, np.float32)
                    pad(x, ph, pw, xp)
                    x = xp
                cols = empty((batch, cin * kh * kw, n_pos), np.float32)
                k(x, kh, kw, sh, sw, dh, dw, cols)
                if batch == 1:   # bias folded into the GEMM
                    out = torch.addmm(bias_col[0], w2, torch.from_numpy(cols[0]))
                else:
                    out = torch.matmul(w2, torch.from_numpy(cols))
                    out += bias_col
                return Act(out_shape, dense=out.numpy().reshape(out_shape))
            return f
        if base == "active_dense":
            wt = self.prepared("dense_taps", lambda: formats.conv_taps_dense(self._full()))
            k = conv_k.conv_active_dense_taps.pick(par)

            def f(act):
                out = empty(out_shape, np.float32)
                aidx, aval, counts = act.active()
                k(aidx, aval, counts, in_h, in_w, wt, b, sh, sw, ph, pw, dh, dw, out, nchunks)
                return Act(out_shape, dense=out)
            return f
        return super().bind(variant, shape)

    def macs(self, act):
        w = self.arrays["weight"]
        shape = self.out_shape(act.shape)
        dense = float(shape[0] * shape[1] * shape[2] * shape[3] * w[0].size)
        # effective: each nonzero input times the nonzero weights of the taps that reach a valid output, estimated
        # as density_in x nonzero weights per output position x outputs (exact for stride 1 away from borders)
        dens_in = act.density()
        return dense, dense * dens_in * float(np.count_nonzero(w)) / max(1, w.size)

    def weight_bytes(self, variant):
        w, b = self.arrays["weight"], self.arrays["bias"]
        if variant.startswith("sparse_w"):
            return sum(a.nbytes for a in self.prepared("taps", lambda: formats.conv_nonzero_taps(self._full()))) \
                + b.nbytes
        if variant.startswith("active_sparse"):
            return self.prepared("sparse_taps", lambda: formats.conv_taps_sparse(self._full())).nbytes + b.nbytes
        return w.nbytes + b.nbytes


class KWinnersStep(Step):
    """k-WTA in eval mode: exactly k winners per sample (per position when local), by boosted score."""
    kind = "kwinners"

    @classmethod
    def build(cls, name: str, module) -> "KWinnersStep":
        from frugalnet.nn.kwinners import KWinners2d

        with torch.no_grad():
            boost = module._boost_factors(module.duty_cycle).detach().float().cpu().numpy()
        is2d = isinstance(module, KWinners2d)
        params = {"two_d": is2d, "local": bool(getattr(module, "local", False)),
                  "percent_on": module.percent_on, "k_inference_factor": module.k_inference_factor}
        return cls(name, params, {"boost": np.ascontiguousarray(boost, dtype=np.float32)})

    def _k(self, n: int) -> int:
        """The eval-mode k for n units, computed by the module's own code (so it can never drift from it)."""
        from types import SimpleNamespace

        from frugalnet.nn.kwinners import _KWinnersBase

        proxy = SimpleNamespace(percent_on=self.params["percent_on"], training=False,
                                k_inference_factor=self.params["k_inference_factor"])
        return _KWinnersBase._k(proxy, n)

    def out_shape(self, shape):
        if self.params["two_d"] and len(shape) != 4:
            raise ValueError(f"engine layer {self.name!r} (KWinners2d) expects (batch, C, H, W), got {shape}")
        if not self.params["two_d"] and len(shape) != 2:
            raise ValueError(f"engine layer {self.name!r} (KWinners) expects (batch, n), got {shape}")
        return shape

    def variants(self, act):
        return ["torch"] if self.params["local"] else ["torch"] + _flavours("numba", act.batch, split=False)

    def _scores_boost(self, shape) -> np.ndarray:
        boost = self.arrays["boost"]
        if not self.params["two_d"]:
            return boost
        return self.prepared(("boost", shape[1:]), lambda: np.ascontiguousarray(
            np.broadcast_to(boost[:, None, None], shape[1:]).reshape(-1)))

    def bind(self, variant, shape):
        self.out_shape(shape)
        if not variant.startswith("numba"):
            return super().bind(variant, shape)
        n = 1
        for d in shape[1:]:
            n *= d
        k = self._k(n)
        kern = kwta_k.kwta_rows.pick(variant.endswith(":p"))
        boost = self._scores_boost(shape)
        batch = shape[0]
        counts = np.full(batch, k, np.int32)  # read-only for consumers
        empty = np.empty

        def f(act):
            aidx = empty((batch, k), np.int32)
            aval = empty((batch, k), np.float32)
            kern(act.dense().reshape(batch, n), boost, k, aidx, aval)
            return Act(shape, sparse=(aidx, aval, counts))
        return f

    def run(self, act, variant):
        from frugalnet.nn.kwinners import topk_mask

        shape = self.out_shape(act.shape)
        n = act.width
        if variant.startswith("numba"):
            k = self._k(n)
            aidx = np.empty((shape[0], k), np.int32)
            aval = np.empty((shape[0], k), np.float32)
            kwta_k.kwta_rows.pick(variant.endswith(":p"))(act.dense().reshape(shape[0], n), self._scores_boost(shape),
                                                          k, aidx, aval)
            return Act(shape, sparse=(aidx, aval, np.full(shape[0], k, np.int32)))
        x = _t(act.dense())
        boost = _t(self.arrays["boost"])
        if self.params["local"]:
            b, c, h, w = shape
            flat = (x * boost.view(1, c, 1, 1)).permute(0, 2, 3, 1).reshape(b * h * w, c)
            mask = topk_mask(flat, self._k(c)).view(b, h, w, c).permute(0, 3, 1, 2)
        elif self.params["two_d"]:
            mask = topk_mask((x * boost.view(1, -1, 1, 1)).reshape(shape[0], n), self._k(n)).view(shape)
        else:
            mask = topk_mask(x * boost, self._k(n))
        return Act(shape, dense=_np(x * mask))


class PoolStep(Step):
    kind = "pool"

    @classmethod
    def build(cls, name: str, module) -> "PoolStep":
        mode = "max" if isinstance(module, torch.nn.MaxPool2d) else "avg"

        def pair(v):
            return [int(v), int(v)] if isinstance(v, int) else [int(u) for u in v]
        stride = module.stride if module.stride is not None else module.kernel_size
        params = {"mode": mode, "kernel": pair(module.kernel_size), "stride": pair(stride),
                  "padding": pair(module.padding), "ceil_mode": bool(module.ceil_mode)}
        numba_ok = not module.ceil_mode
        if mode == "max":
            numba_ok = numba_ok and pair(module.dilation) == [1, 1]
            params["dilation"] = pair(module.dilation)
            if module.return_indices:
                raise ValueError(f"engine layer {name!r}: MaxPool2d(return_indices=True) is not supported")
        else:
            numba_ok = numba_ok and module.count_include_pad and module.divisor_override is None
            params["count_include_pad"] = bool(module.count_include_pad)
            params["divisor_override"] = module.divisor_override
        params["numba_ok"] = bool(numba_ok)
        return cls(name, params, {})

    def variants(self, act):
        return ["torch"] + _flavours("numba", act.batch, split=True) if self.params["numba_ok"] else ["torch"]

    def out_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(f"engine layer {self.name!r} (pooling) expects (batch, C, H, W), got {shape}")
        p = self.params
        dil = p.get("dilation", [1, 1])

        def size(n, k, s, pad, d):  # torch's pooling output size, floor or ceil mode
            num = n + 2 * pad - d * (k - 1) - 1
            out = (-(-num // s) if p["ceil_mode"] else num // s) + 1
            if p["ceil_mode"] and (out - 1) * s >= n + pad:
                out -= 1
            return out
        return (shape[0], shape[1], size(shape[2], p["kernel"][0], p["stride"][0], p["padding"][0], dil[0]),
                size(shape[3], p["kernel"][1], p["stride"][1], p["padding"][1], dil[1]))

    def run(self, act, variant):
        p = self.params
        x = act.dense()
        if variant == "torch":
            if p["mode"] == "max":
                y = F.max_pool2d(_t(x), p["kernel"], p["stride"], p["padding"], p["dilation"], p["ceil_mode"])
            else:
                y = F.avg_pool2d(_t(x), p["kernel"], p["stride"], p["padding"], p["ceil_mode"],
                                 p["count_include_pad"], p["divisor_override"])
            out = _np(y)
            return Act(out.shape, dense=out)
        if _is_plain_2x2_max(p):
            return self.bind(variant, act.shape)(act)
        shape = self.out_shape(act.shape)
        out = np.empty(shape, np.float32)
        fn = pool_k.max_pool if p["mode"] == "max" else pool_k.avg_pool
        fn.pick(variant.endswith(":p"))(x, *p["kernel"], *p["stride"], *p["padding"], out)
        return Act(shape, dense=out)


def _is_plain_2x2_max(p: dict) -> bool:
    return p["mode"] == "max" and p["kernel"] == [2, 2] and p["stride"] == [2, 2] and p["padding"] == [0, 0] \
        and p.get("dilation", [1, 1]) == [1, 1]


def _pool_bind(self, variant, shape):
    if not variant.startswith("numba"):
        return Step.bind(self, variant, shape)
    p = self.params
    out_shape = self.out_shape(shape)
    kern = (pool_k.max_pool if p["mode"] == "max" else pool_k.avg_pool).pick(variant.endswith(":p"))
    (kh, kw), (sh, sw), (ph, pw) = p["kernel"], p["stride"], p["padding"]
    empty = np.empty
    if _is_plain_2x2_max(p):
        kern2 = pool_k.max_pool_2x2.pick(variant.endswith(":p"))

        def f2(act):
            out = empty(out_shape, np.float32)
            kern2(act.dense(), out)
            return Act(out_shape, dense=out)
        return f2

    def f(act):
        out = empty(out_shape, np.float32)
        kern(act.dense(), kh, kw, sh, sw, ph, pw, out)
        return Act(out_shape, dense=out)
    return f


PoolStep.bind = _pool_bind


class ReLUStep(Step):
    kind = "relu"

    def run(self, act, variant):
        if act.is_sparse:
            aidx, aval, counts = act.active()
            return Act(act.shape, sparse=(aidx, np.maximum(aval, 0.0), counts))
        return Act(act.shape, dense=np.maximum(act.dense(), np.float32(0.0)))


class FlattenStep(Step):
    kind = "flatten"

    def out_shape(self, shape):
        return (shape[0], int(np.prod(shape[1:], dtype=np.int64)))

    def run(self, act, variant):
        return act.reshaped(self.out_shape(act.shape))

    def bind(self, variant, shape):
        out_shape = self.out_shape(shape)
        return lambda act: act.reshaped(out_shape)


class AffineStep(Step):
    """A BatchNorm that follows no Linear/Conv: y = x * scale + shift per channel (dim 1)."""
    kind = "affine"

    def run(self, act, variant):
        x = act.dense()
        view = (1, -1) + (1,) * (x.ndim - 2)
        y = x * self.arrays["scale"].reshape(view) + self.arrays["shift"].reshape(view)
        return Act(act.shape, dense=np.ascontiguousarray(y, dtype=np.float32))


STEP_TYPES: dict[str, type[Step]] = {c.kind: c for c in (LinearStep, ConvStep, KWinnersStep, PoolStep, ReLUStep,
                                                           FlattenStep, AffineStep)}


class ComplementaryStep(Step):
    """A ComplementaryGroup: N disjoint-mask layers packed into one dense weight plus an owner map."""
    kind = "complementary"

    @classmethod
    def build(cls, name: str, group) -> "ComplementaryStep":
        from frugalnet.nn.sparse import SparseConv2d
        from frugalnet.sparsity.complementary_groups import pack_group

        dense, owner, biases = pack_group(list(group.layers))
        first = group.layers[0]
        params = {"conv": isinstance(first, SparseConv2d)}
        if params["conv"]:
            if first.groups != 1 or first.padding_mode != "zeros" or isinstance(first.padding, str):
                raise ValueError(f"engine layer {name!r}: complementary convs need groups=1 and numeric zero padding")
            params.update(stride=list(first.stride), padding=list(first.padding), dilation=list(first.dilation))
        return cls(name, params, {"dense": dense, "owner": owner, "bias": biases})

    def _weights(self) -> np.ndarray:
        """(N, out, ...) unpacked weights, for the PyTorch path."""
        def build():
            d, o = self.arrays["dense"], self.arrays["owner"]
            return np.stack([np.where(o == i, d, 0.0).astype(np.float32) for i in range(self.arrays["bias"].shape[0])])
        return self.prepared("unpacked", build)

    def variants(self, act):
        return ["torch"] + (_flavours("packed", act.batch, split=False) if act.density() < 0.5 else [])

    def out_shape(self, shape):
        n, cout = self.arrays["bias"].shape
        if not self.params["conv"]:
            return (shape[0], n, cout)
        d = self.arrays["dense"]
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        return (shape[0], n, cout, conv_k.conv_output_size(shape[2], d.shape[2], sh, ph, dh),
                conv_k.conv_output_size(shape[3], d.shape[3], sw, pw, dw))

    def run(self, act, variant):
        from frugalnet.kernels import complementary as comp_k

        b = self.arrays["bias"]
        shape = self.out_shape(act.shape)
        if variant == "torch":
            w = _t(self._weights())
            x = _t(act.dense())
            if self.params["conv"]:
                p = self.params
                ys = [F.conv2d(x, w[i], _t(b[i]), p["stride"], p["padding"], p["dilation"]) for i in range(len(w))]
            else:
                ys = [F.linear(x, w[i], _t(b[i])) for i in range(len(w))]
            return Act(shape, dense=_np(torch.stack(ys, dim=1)))
        par = variant.endswith(":p")
        aidx, aval, counts = act.active()
        out = np.empty(shape, np.float32)
        if self.params["conv"]:
            wt = self.prepared("wt", lambda: np.ascontiguousarray(self.arrays["dense"].transpose(1, 2, 3, 0)))
            ot = self.prepared("ot", lambda: np.ascontiguousarray(self.arrays["owner"].transpose(1, 2, 3, 0)))
            (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
            comp_k.comp_conv_active.pick(par)(aidx, aval, counts, act.shape[2], act.shape[3], wt, ot, b, sh, sw,
                                              ph, pw, dh, dw, out)
        else:
            wt = self.prepared("wt", lambda: np.ascontiguousarray(self.arrays["dense"].T))
            ot = self.prepared("ot", lambda: np.ascontiguousarray(self.arrays["owner"].T))
            comp_k.comp_linear_active.pick(par)(wt, ot, aidx, aval, counts, b, out)
        return Act(shape, dense=out)

    def macs(self, act):
        d = self.arrays["dense"]
        n = self.arrays["bias"].shape[0]
        outs = int(np.prod(self.out_shape(act.shape)[2:])) if self.params["conv"] else d.shape[0]
        per_out = d[0].size
        dense = float(act.batch * n * outs * per_out)
        return dense, dense * act.density() / n

    def weight_bytes(self, variant):
        return int(self.arrays["dense"].nbytes + self.arrays["owner"].nbytes + self.arrays["bias"].nbytes)


STEP_TYPES[ComplementaryStep.kind] = ComplementaryStep
