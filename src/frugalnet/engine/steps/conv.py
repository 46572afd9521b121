"""The Conv2d step (with the ReLU and the max pool that follow it fused in, when lower() finds them): oneDNN with
weights prepacked once (channels_last activations kept between such convs), im2col + GEMM, direct sparse-weight,
and sparse-input (k-WTA) variants."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.engine.steps.base import Step, _flavours, _np, _t
from frugalnet.kernels import conv as conv_k, conv_rows, layouts, pool as pool_k, sparse_rows
from frugalnet.kernels._jit import threads as kernel_threads

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class ConvStep(Step):
    kind = "conv2d"

    @classmethod
    def build(cls, name: str, weight: np.ndarray, bias: np.ndarray | None, stride, padding, dilation,
              groups: int) -> "ConvStep":
        w = layouts.as_f32(weight)
        b = np.zeros(w.shape[0], np.float32) if bias is None else layouts.as_f32(bias)
        params = {"stride": [int(s) for s in stride], "padding": [int(p) for p in padding],
                  "dilation": [int(d) for d in dilation], "groups": int(groups)}
        return cls(name, params, {"weight": w, "bias": b})

    def _full(self) -> np.ndarray:
        return self.prepared("full", lambda: conv_k.expand_groups(self.arrays["weight"], self.params["groups"]))

    def variants(self, act):
        wd = float(np.count_nonzero(self.arrays["weight"])) / max(1, self.arrays["weight"].size)
        out = ["torch"] + _flavours("im2col", act.batch, split=False)
        if ONEDNN:   # the dense path: oneDNN, weights reordered once for this input shape, ReLU as a post-op
            out += _flavours("onednn", act.batch, split=True)
        if self.pool > 1:   # PyTorch's conv with our pooling (torch's max_pool2d is slow on CPU for wide maps)
            out += _flavours("torch_conv", act.batch, split=False)
        if wd < 0.5:   # direct conv over the nonzero taps only pays off when most taps are zero
            out += _flavours("sparse_w", act.batch, split=True)
            if tuple(self.params["stride"]) == (1, 1):   # the same, each output row summed in registers
                out += _flavours("rows_w", act.batch, split=True)
            # im2col, then each nonzero weight adds its scaled input row to its output row, the positions in
            # vector lanes held in registers (kernels.sparse_rows): one FMA per nonzero per 8 positions
            out += _flavours("im2col_csr", act.batch, split=True)
        # dense input: direct conv with register-held sums; sparse input: over the active inputs only. Each only in
        # its parallel build (at batch 1 it splits the output rows): one build halves the JIT time.
        if act.density() >= 0.5:
            out += ["direct:p"]
        else:
            out += ["active_dense:p"]
            if wd < 0.3:
                out += _flavours("active_sparse", act.batch, split=True)
        return out

    @property
    def relu(self) -> bool:
        """A ReLU fused after the conv (before any fused pool; they commute); see lower()."""
        return bool(self.params.get("relu", False))

    def _relu(self, out: np.ndarray) -> np.ndarray:
        if self.relu:
            np.maximum(out, np.float32(0.0), out=out)
        return out

    @property
    def pool(self) -> int:
        """Window (= stride) of a max pool fused after the conv (1: none); see lower()."""
        return int(self.params.get("pool", 1))

    def conv_shape(self, shape):
        """Output shape of the convolution itself, before any fused pool."""
        w = self.arrays["weight"]
        cin = w.shape[1] * self.params["groups"]
        if len(shape) != 4 or shape[1] != cin:
            raise ValueError(f"engine layer {self.name!r} (Conv2d, in_channels={cin}) expects input "
                             f"(batch, {cin}, H, W), got {shape}")
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        oh = conv_k.conv_output_size(shape[2], w.shape[2], sh, ph, dh)
        ow = conv_k.conv_output_size(shape[3], w.shape[3], sw, pw, dw)
        if oh < self.pool or ow < self.pool:
            raise ValueError(f"engine layer {self.name!r}: input {shape} is too small for the kernel")
        return (shape[0], w.shape[0], oh, ow)

    def out_shape(self, shape):
        n, c, oh, ow = self.conv_shape(shape)
        return (n, c, oh // self.pool, ow // self.pool)

    def _pooler(self, conv_shape, par: bool):
        """out (conv_shape) -> out max-pooled by the fused pool (identity without one), shapes fixed at bind time."""
        pool = self.pool
        if pool == 1:
            return lambda out: out
        n, c, oh, ow = conv_shape
        pooled_shape = (n, c, oh // pool, ow // pool)
        k = pool_k.pool_fn("max", pool, pool, pool, pool, 0, 0, par)
        empty = np.empty

        def pooled(out):
            res = empty(pooled_shape, np.float32)
            k(out, res)
            return res
        return pooled

    def _padder(self, shape, par: bool):
        """x (shape) -> x zero-padded by the conv's padding (identity without padding)."""
        ph, pw = self.params["padding"]
        if not (ph or pw):
            return lambda x: x
        padded_shape = (shape[0], shape[1], shape[2] + 2 * ph, shape[3] + 2 * pw)
        k = conv_k.pad_nchw.pick(par)

        def pad(x):
            xp = np.empty(padded_shape, np.float32)
            k(x, ph, pw, xp)
            return xp
        return pad

    def run(self, act, variant):
        if variant == "torch":
            w, b = self.arrays["weight"], self.arrays["bias"]
            (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
            y = F.conv2d(_t(act.dense()), _t(w), _t(b), (sh, sw), (ph, pw), (dh, dw), self.params["groups"])
            if self.relu:
                y = F.relu(y)
            if self.pool > 1:
                y = F.max_pool2d(y, self.pool)
            out = _np(y)
            return Act(out.shape, dense=out)
        return self.bind(variant, act.shape)(act)   # bind names an unknown variant

    def bind(self, variant, shape):
        if variant == "torch":
            return super().bind(variant, shape)
        if variant.startswith("onednn"):
            return self._bind_onednn(variant, shape)
        f = self._bind_numba(variant, shape)
        if not self.relu:
            return f
        relu = self._relu

        def g(act):
            out = f(act)
            relu(out.dense())
            return out
        return g

    def _bind_onednn(self, variant, shape):
        """oneDNN convolution (PyTorch's mkldnn ops, as torch.compile's CPU freezing uses them): the weight reordered
        once into oneDNN's blocked layout for this input shape, bias and ReLU fused, input and output channels_last
        (so consecutive dense convs, and the residual adds between them, never change layout)."""
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        groups = self.params["groups"]
        out_shape = self.out_shape(shape)
        mk = torch.ops.mkldnn
        wp = self.prepared(("onednn", tuple(shape)), lambda: mk._reorder_convolution_weight(
            _t(self.arrays["weight"]), [ph, pw], [sh, sw], [dh, dw], groups, list(shape)))
        bt = _t(self.arrays["bias"])
        attr, pool = ("relu" if self.relu else "none"), self.pool
        conv, cl = mk._convolution_pointwise, torch.channels_last
        serial = variant.endswith(":s")
        get_threads, set_threads = torch.get_num_threads, torch.set_num_threads

        def run(act):
            x = act.tensor()
            if not x.is_contiguous(memory_format=cl):
                x = x.contiguous(memory_format=cl)
            y = conv(x, wp, bt, [ph, pw], [sh, sw], [dh, dw], groups, attr, [], "")
            if pool > 1:
                y = F.max_pool2d(y, pool)
            return Act(out_shape, tensor=y)
        if not serial:
            return run

        def f(act):
            threads = get_threads()
            set_threads(1)
            try:
                return run(act)
            finally:
                set_threads(threads)
        return f

    def _bind_numba(self, variant, shape):
        out_shape = self.out_shape(shape)
        conv_shape = self.conv_shape(shape)
        base, _, mode = variant.partition(":")
        par = mode == "p"
        nchunks = 2 if par and shape[0] == 1 else 1
        b = self.arrays["bias"]
        (sh, sw), (ph, pw), (dh, dw) = self.params["stride"], self.params["padding"], self.params["dilation"]
        in_h, in_w = shape[2], shape[3]
        pool = self.pool
        empty = np.empty
        pooled, padded = self._pooler(conv_shape, par), self._padder(shape, par)
        if base == "torch_conv":
            wt_, bt_ = _t(self.arrays["weight"]), _t(b)
            groups = self.params["groups"]

            def f(act):
                y = F.conv2d(_t(act.dense()), wt_, bt_, (sh, sw), (ph, pw), (dh, dw), groups)
                return Act(out_shape, dense=pooled(_np(y)))
            return f
        if base == "sparse_w":
            ptr, taps, val = self.prepared("taps", lambda: layouts.conv_nonzero_taps(self._full()))
            k = conv_k.conv_dense_input.pick(par)

            def f(act):
                out = empty(conv_shape, np.float32)
                k(padded(act.dense()), ptr, taps, val, b, sh, sw, dh, dw, out)
                return Act(out_shape, dense=pooled(out))
            return f
        if base == "rows_w":
            ptr, taps, val = self.prepared("taps", lambda: layouts.conv_nonzero_taps(self._full()))
            hp_, wp_ = in_h + 2 * ph, in_w + 2 * pw
            off = self.prepared(("tap_offsets", hp_, wp_), lambda: conv_rows.tap_offsets(ptr, taps, (hp_, wp_),
                                                                                           (dh, dw)))
            k = conv_rows.conv_rows_sparse_w.pick(par)
            batch, flat_n = shape[0], shape[1] * hp_ * wp_
            conv_rows.check_conv_rows(np.empty((batch, flat_n), np.float32), wp_, ptr, off, val, b,
                                      np.empty(conv_shape, np.float32))

            def f(act):
                xp = padded(act.dense())
                if not xp.flags.c_contiguous:
                    xp = np.ascontiguousarray(xp)
                out = empty(conv_shape, np.float32)
                k(xp.reshape(batch, flat_n), wp_, ptr, off, val, b, out)
                return Act(out_shape, dense=pooled(out))
            return f
        if base == "im2col_csr":
            full = self._full()
            cout, cin, kh, kw = full.shape
            c = self.prepared("csr2d", lambda: layouts.to_csr(np.ascontiguousarray(full.reshape(cout, -1))))
            kcol, kmul = conv_k.im2col.pick(par), sparse_rows.csr_rows_cols.pick(par)
            batch, n_pos, n_k = shape[0], conv_shape[2] * conv_shape[3], cin * kh * kw
            nparts = kernel_threads() if par else 1

            def f(act):
                xp = padded(act.dense())
                cols = empty((1, n_k, n_pos), np.float32)    # one sample at a time: stays in L2 at CIFAR sizes
                out = empty(conv_shape, np.float32)
                for i in range(batch):
                    kcol(xp[i:i + 1], kh, kw, sh, sw, dh, dw, cols)
                    kmul(c.ptr, c.idx, c.val, cols[0], b, out[i].reshape(cout, n_pos), nparts)
                return Act(out_shape, dense=pooled(out))
            return f
        if base == "im2col":
            full = self._full()
            cout, cin, kh, kw = full.shape
            w2 = torch.from_numpy(np.ascontiguousarray(full.reshape(cout, cin * kh * kw)))
            bias_col = torch.from_numpy(b).reshape(1, cout, 1)
            bias_vec = bias_col[0]
            k = conv_k.im2col.pick(par)
            batch = shape[0]
            n_pos = conv_shape[2] * conv_shape[3]

            get_threads, set_threads = torch.get_num_threads, torch.set_num_threads

            def f(act):
                cols = empty((batch, cin * kh * kw, n_pos), np.float32)
                k(padded(act.dense()), kh, kw, sh, sw, dh, dw, cols)
                if batch == 1:   # bias folded into the GEMM
                    # the serial variant is serial throughout: waking PyTorch's second thread for this small GEMM
                    # cost more than it saved between the engine's other kernels (79-90 vs 110-164 us in the chain)
                    threads = get_threads()
                    set_threads(1)
                    try:
                        out = torch.addmm(bias_vec, w2, torch.from_numpy(cols.reshape(cin * kh * kw, n_pos)))
                    finally:
                        set_threads(threads)
                else:
                    out = torch.matmul(w2, torch.from_numpy(cols))
                    out += bias_col
                return Act(out_shape, dense=pooled(out.numpy().reshape(conv_shape)))
            return f
        if base == "direct":
            wt = self.prepared("dense_taps", lambda: layouts.conv_taps_dense(self._full()))
            k = conv_k.conv_direct_dense.pick(par)

            def f(act):
                out = empty(out_shape, np.float32)
                k(padded(act.dense()), wt, b, sh, sw, dh, dw, out, nchunks, pool)
                return Act(out_shape, dense=out)
            return f
        if base == "active_dense":
            wt = self.prepared("dense_taps", lambda: layouts.conv_taps_dense(self._full()))
            k = conv_k.conv_active_dense_taps.pick(par)

            def f(act):
                out = empty(out_shape, np.float32)
                aidx, aval, counts = act.active()
                k(aidx, aval, counts, in_h, in_w, wt, b, sh, sw, ph, pw, dh, dw, out, nchunks, pool)
                return Act(out_shape, dense=out)
            return f
        if base == "active_sparse":
            c = self.prepared("sparse_taps", lambda: layouts.conv_taps_sparse(self._full()))
            kh, kw = self.arrays["weight"].shape[2:]
            k = conv_k.conv_active_sparse_taps.pick(par)

            def f(act):
                out = empty(conv_shape, np.float32)
                aidx, aval, counts = act.active()
                k(aidx, aval, counts, in_h, in_w, kh, kw, c.ptr, c.idx, c.val, b, sh, sw, ph, pw, dh, dw, out,
                  nchunks)
                return Act(out_shape, dense=pooled(out))
            return f
        raise ValueError(f"unknown Conv2d variant {variant!r}")

    def macs(self, act):
        w = self.arrays["weight"]
        dense = float(np.prod(self.conv_shape(act.shape), dtype=np.float64) * w[0].size)
        # effective: each nonzero input times the nonzero weights of the taps that reach a valid output, estimated
        # as density_in x nonzero weights per output position x outputs (exact for stride 1 away from borders)
        dens_in = act.density()
        return dense, dense * dens_in * float(np.count_nonzero(w)) / max(1, w.size)

    def weight_bytes(self, variant):
        w, b = self.arrays["weight"], self.arrays["bias"]
        if variant.startswith(("sparse_w", "rows_w")):
            return sum(a.nbytes for a in self.prepared("taps", lambda: layouts.conv_nonzero_taps(self._full()))) \
                + b.nbytes
        if variant.startswith("im2col_csr"):
            return self.prepared("csr2d", lambda: layouts.to_csr(np.ascontiguousarray(
                self._full().reshape(w.shape[0], -1)))).nbytes + b.nbytes
        if variant.startswith("active_sparse"):
            return self.prepared("sparse_taps", lambda: layouts.conv_taps_sparse(self._full())).nbytes + b.nbytes
        return w.nbytes + b.nbytes
