"""Low-bit steps: quantized Linear / Conv2d layers run from their packed codes (INT4 SAWB, MXFP4, NVFP4: two 4-bit
codes per byte; INT8: one byte), never from FP32 weights.

A step holds the codes in the kernels' layouts (dense "halves" rows, or only the nonzero codes with their indices for
sparse layers), one float32 scale per tensor or per block, and the activation format of the layer's recipe. At run
time the input is quantized exactly as the simulated layer does (`lowbit.functions.GemmState.activation`, the same
code), then multiplied with the packed weights: 4-bit codes decode in registers through a 16-entry table. Where the
recipe quantizes activations to integers (PACT, INT8) or E2M1, every product of codes is an integer and the sums
are exact in float32 lanes below 2^24. Outputs equal `model.eval()(x)` after `quantize_` to float rounding.

Variants (picked by timing, like every step): "torch" (reference: the codes decoded a block of rows at a time and
F.linear / F.conv2d), "gemv" / "gemv512" (dense codes, small batches; pshufb / AVX-512 vpermps decoding), "int" /
"vnni" (integer dot products of 4-bit weight codes with 8-bit activation codes, AVX2 / AVX-512 VNNI, where the recipe
quantizes activations to integers), "gemm" (dense codes, decoded once per row for the whole batch), and the sparse
ones of engine/steps/lowbit_sparse.py ("csr", "win512" / "win256", "csc", "colseg"); ":s" serial, ":p" parallel
builds.
`check()` validates every array against the parameters (call it on steps read from a file: the kernels do no bounds
checks).

Steps are built from layers and from files by `engine.steps.lowbit_factory` (`lowbit_step_for`,
`lowbit_steps_from_file`).
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.engine.steps.base import Step, _np, _t
from frugalnet.engine.steps.lowbit_sparse import SparseCodes
from frugalnet.kernels import quant as quant_k, quant_sparse as sparse_k
from frugalnet.lowbit.unpack import E2M1_LUT, INT4_LUT  # noqa: F401

PACKED_FORMATS = ("int4-sawb", "mxfp4", "nvfp4", "int8")
_SPARSE_BELOW = 0.5        # weight density under which the codes are stored sparse (nonzeros + indices)
_DECODE_ROWS = 256         # rows the reference variant decodes at a time
_INT_ACTS = {"pact4": 4, "pact8": 8, "int8": 8}   # activation formats with integer codes (bits)


class LowbitLinearStep(SparseCodes, Step):
    """A quantized Linear from packed codes; see the module docstring."""

    kind = "lowbit_linear"

    @classmethod
    def build(cls, name: str, codes: dict, bias: np.ndarray | None, act: dict, alpha: float | None,
              n_in: int) -> "LowbitLinearStep":
        mat, n_out = codes["codes"], codes["codes"].shape[0]
        nib = codes["kind"] == "nib"
        if codes["kind"] == "f32":      # no packed kernel for this format: the reference variant only
            params = {"n_out": int(n_out), "n_in": int(n_in), "cols": int(mat.shape[1]), "k": int(mat.shape[1]),
                      "blk": int(mat.shape[1]), "nibble": False, "block_scales": False, "density": 1.0,
                      "act": dict(act), "sparse": False, "taps": int(codes["taps"]), "cin": int(codes["cin"]),
                      "float_weights": True}
            return cls(name, params, {"weight": mat, "lut": codes["lut"], "wscale": codes["scale"],
                                      "bias": np.zeros(n_out, np.float32) if bias is None else
                                      np.ascontiguousarray(bias, np.float32),
                                      "alpha": np.array([alpha if alpha is not None else 1.0], np.float32)})
        k = quant_k.padded_width(mat.shape[1])
        blk = codes["blk"] or (k // 2 if nib else k)
        scale = codes["scale"]
        if codes["blk"]:
            full = np.zeros((n_out, k // blk), np.float32)
            full[:, :scale.shape[1]] = scale
        else:
            full = np.repeat(scale[:, :1], k // blk, axis=1)
        zero = codes["lut"] == 0 if nib else np.arange(256) % 256 == 0
        density = float((~zero[mat.astype(np.int64) & (15 if nib else 255)]).mean()) if mat.size else 0.0
        params = {"n_out": int(n_out), "n_in": int(n_in), "cols": int(mat.shape[1]), "k": int(k), "blk": int(blk),
                  "nibble": nib, "block_scales": bool(codes["blk"]), "density": density, "act": dict(act),
                  "sparse": density < _SPARSE_BELOW, "taps": int(codes["taps"]), "cin": int(codes["cin"])}
        arrays = {"lut": np.ascontiguousarray(codes["lut"]), "wscale": np.ascontiguousarray(full),
                  "bias": np.zeros(n_out, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32),
                  "alpha": np.array([alpha if alpha is not None else 1.0], np.float32)}
        if params["sparse"]:
            ptr, idx, vals = quant_k.compress_codes(mat, zero, by_column=False, nibble=nib)
            arrays.update(csr_ptr=ptr, csr_idx=idx, csr_codes=vals)
        elif nib:
            arrays["codes"] = quant_k.to_halves(mat, k)
        else:
            full_codes = np.zeros((n_out, k), np.int8)
            full_codes[:, :mat.shape[1]] = mat
            arrays["codes"] = full_codes
        step = cls(name, params, arrays)
        step.check()
        return step

    def check(self) -> None:
        """Validate every array against the parameters (shapes, dtypes, index ranges, finite scales) before a kernel
        sees it; ValueError naming the step and the array otherwise."""
        p, a = self.params, self.arrays

        def bad(what: str):
            raise ValueError(f"low-bit step {self.name!r}: {what}")
        try:
            n_out, n_in, cols, k, blk = (int(p[key]) for key in ("n_out", "n_in", "cols", "k", "blk"))
        except (KeyError, TypeError, ValueError):
            bad("missing or non-integer size parameters")
        if min(n_out, n_in, cols, k, blk) < 1 or cols > k or n_out * k > 2 ** 34:
            bad(f"sizes out of range: n_out={n_out}, n_in={n_in}, cols={cols}, k={k}, blk={blk}")
        for name, shape, dtype in (("bias", (n_out,), np.float32), ("alpha", (1,), np.float32),
                                   ("lut", (16,), np.int8)):
            if name not in a or a[name].shape != shape or a[name].dtype != dtype:
                bad(f"array {name!r} must be {dtype.__name__} of shape {shape}")
        if p.get("float_weights"):
            w = a.get("weight")
            if w is None or w.dtype != np.float32 or w.shape != (n_out, cols):
                bad(f"array 'weight' must be float32 of shape {(n_out, cols)}")
            return
        if k % 64 or blk % 16 or (k // (2 if p["nibble"] else 1)) % blk or \
                (p["block_scales"] and blk & (blk - 1)):
            bad(f"k={k} must be a multiple of 64 and blk={blk} a multiple of 16 (a power of two for block scales) "
                f"dividing the row")
        if np.abs(a["lut"].astype(np.int64)).max() > 12:
            bad("table values must lie in [-12, 12]")
        ws = a.get("wscale")
        if ws is None or ws.dtype != np.float32 or ws.shape != (n_out, k // blk) or not np.isfinite(ws).all():
            bad(f"array 'wscale' must be finite float32 of shape {(n_out, k // blk)}")
        if "codes" in a:
            shape, dtype = ((n_out, k // 2), np.uint8) if p["nibble"] else ((n_out, k), np.int8)
            if a["codes"].shape != shape or a["codes"].dtype != dtype:
                bad(f"array 'codes' must be {dtype.__name__} of shape {shape}")
            return
        ptr, idx, vals = (a.get(key) for key in ("csr_ptr", "csr_idx", "csr_codes"))
        if ptr is None or idx is None or vals is None or ptr.ndim != 1 or len(ptr) != n_out + 1:
            bad(f"sparse codes need csr_ptr ({n_out + 1},), csr_idx and csr_codes")
        steps = np.diff(ptr.astype(np.int64))
        if ptr[0] != 0 or ptr[-1] != len(idx) or (steps < 0).any() or (steps % 2).any():
            bad("csr_ptr must rise from 0 to len(csr_idx) in even steps")
        if idx.dtype not in (np.uint16, np.uint32) or (len(idx) and int(idx.max()) >= cols):
            bad(f"csr_idx must be unsigned column indices below {cols}")
        if vals.dtype != np.uint8 or len(vals) != (len(idx) // 2 if p["nibble"] else len(idx)):
            bad("csr_codes must be uint8, one byte per two 4-bit codes (or per int8 code)")

    # --- the code matrix in other layouts (integer codes only) ------------------------------------------------
    def _matrix(self) -> np.ndarray:
        p, a = self.params, self.arrays

        def build():
            if "codes" in a:
                c = a["codes"]
                return quant_k.from_halves(c, p["cols"]) if p["nibble"] else c[:, :p["cols"]]
            mat = np.zeros((p["n_out"], p["cols"]), np.uint8 if p["nibble"] else np.int8)
            ptr, idx, vals = a["csr_ptr"], a["csr_idx"], a["csr_codes"]
            ent = (np.stack([vals & 15, vals >> 4], 1).reshape(-1) if p["nibble"] else vals)[:len(idx)]
            rows = np.repeat(np.arange(p["n_out"]), np.diff(ptr))
            real = ~self._zero()[ent.astype(np.int64) & (15 if p["nibble"] else 255)]     # not the padding
            mat[rows[real], idx[real]] = ent[real].astype(mat.dtype)
            return mat
        return self.prepared("matrix", build)

    def _dense_codes(self) -> np.ndarray:
        if "codes" in self.arrays:
            return self.arrays["codes"]
        p = self.params

        def build():
            if p["nibble"]:
                return quant_k.to_halves(self._matrix(), p["k"])
            full = np.zeros((p["n_out"], p["k"]), np.int8)
            full[:, :p["cols"]] = self._matrix()
            return full
        return self.prepared("dense", build)

    def _zero(self) -> np.ndarray:
        return self.arrays["lut"] == 0 if self.params["nibble"] else np.arange(256) % 256 == 0

    def _lutf(self) -> np.ndarray:
        return self.prepared("lutf", lambda: self.arrays["lut"].astype(np.float32))

    def _shift(self) -> int:
        return int(self.params["blk"]).bit_length() - 1

    def decoded_rows(self, lo: int, hi: int) -> np.ndarray:
        """FP32 weights of rows lo..hi (the reference variant decodes a block of rows at a time)."""
        p = self.params
        if p.get("float_weights"):
            return self.arrays["weight"][lo:hi]
        mat = self._matrix()[lo:hi]
        vals = self.arrays["lut"][mat & 15].astype(np.float32) if p["nibble"] else mat.astype(np.float32)
        sc = self.arrays["wscale"][lo:hi]
        cols = np.arange(p["cols"]) // p["blk"] if p["block_scales"] else np.zeros(p["cols"], np.int64)
        return vals * sc[:, cols]

    def _integer_inputs(self) -> bool:
        """Integer dot products apply: 4-bit codes with one scale per tensor, activations quantized to integers."""
        p = self.params
        return p["nibble"] and not p["block_scales"] and p["act"]["format"] in _INT_ACTS \
            and not p.get("float_weights")

    def _act_codes(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unsigned 8-bit codes (B, K), offset (B,), scale (B,)) of quantized activations xq = k * step_x: codes
        k + offset, scale = weight scale * step_x."""
        p = self.params
        fmt, bits = p["act"]["format"], _INT_ACTS[p["act"]["format"]]
        if fmt == "int8":
            amax = np.float32(np.abs(xq).max(initial=0.0))
            step, offset = (amax / np.float32(127) if amax > 0 else np.float32(1.0)), 127
        else:
            levels = 2 ** (bits - 1) - 1 if p["act"]["pact_signed"] else 2 ** bits - 1
            step = np.float32(self.arrays["alpha"][0]) / np.float32(levels)
            offset = levels if p["act"]["pact_signed"] else 0
        codes = np.zeros((xq.shape[0], p["k"]), np.uint8)
        codes[:, :xq.shape[1]] = np.rint(xq / step) + offset
        rows = xq.shape[0]
        return (codes, np.full(rows, offset, np.int32),
                np.full(rows, np.float32(self.arrays["wscale"][0, 0]) * np.float32(step), np.float32))

    # --- activations -------------------------------------------------------------------------------------------
    def quantize_input(self, x: np.ndarray, dim: int = -1) -> np.ndarray:
        """The input as the simulated layer's forward GEMM sees it (the same quantizer code)."""
        act = self.params["act"]
        if act["format"] == "fp32":
            return x
        from frugalnet.lowbit.functions import GemmState
        from frugalnet.lowbit.recipes import LayerRecipe, QuantSpec

        state, alpha = self.prepared("act_state", lambda: (
            GemmState(LayerRecipe(activation=QuantSpec(act["format"], act["rounding"])), act["seed"], act["step"],
                      False, False, act["pact_signed"]), torch.from_numpy(self.arrays["alpha"]).reshape(())))
        return _np(state.activation(_t(x), alpha, dim=dim))

    # --- the Step interface ------------------------------------------------------------------------------------
    def out_shape(self, shape):
        if len(shape) != 2 or shape[1] != self.params["n_in"]:
            raise ValueError(f"engine layer {self.name!r} (low-bit Linear, in_features={self.params['n_in']}) "
                             f"expects input (batch, {self.params['n_in']}), got {shape}")
        return (shape[0], self.params["n_out"])

    def variants(self, act: Act) -> list[str]:
        out = ["torch"]
        if self.params.get("float_weights"):
            return out
        if self.params["sparse"]:
            out += ["csr:s", "csr:p"] + self.window_variants()
            if act.density() < 0.5:
                out += ["csc:s", "csc:p"] + self.colseg_variants()
        else:
            isa = quant_k.isa()
            out += ["gemv:s", "gemv:p"] + (["gemv512:s", "gemv512:p"] if self.params["nibble"] and isa["avx512"]
                                           else [])
            if self._integer_inputs():
                out += (["int:s", "int:p"] if isa["avx2"] else []) + (["vnni:s", "vnni:p"] if isa["vnni"] else [])
        if act.batch > 1 and self.params["nibble"]:
            out += ["gemm:s", "gemm:p"]
        return out

    def run(self, act: Act, variant: str) -> Act:
        if variant != "torch":
            return self.bind(variant, act.shape)(act)
        shape = self.out_shape(act.shape)
        xq = _t(self.quantize_input(act.dense().reshape(shape[0], -1)))
        b = self.arrays["bias"]
        out = np.empty(shape, np.float32)
        for lo in range(0, shape[1], _DECODE_ROWS):
            hi = min(shape[1], lo + _DECODE_ROWS)
            w = np.ascontiguousarray(self.decoded_rows(lo, hi)[:, :self.params["n_in"]])
            out[:, lo:hi] = _np(F.linear(xq, _t(w), _t(b[lo:hi])))
        return Act(shape, dense=out)

    def _padded_input(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        if p["k"] == x.shape[1]:
            return np.ascontiguousarray(x)
        xp = np.zeros((x.shape[0], p["k"]), np.float32)
        xp[:, :x.shape[1]] = x
        return xp

    def bind(self, variant, shape):
        if variant == "torch":
            return super().bind(variant, shape)
        out_shape = self.out_shape(shape)
        gemm = self.matmul(variant, shape[0])
        quant = self.quantize_input

        def f(act):
            return Act(out_shape, dense=gemm(quant(act.dense()), act))
        return f

    def matmul(self, variant: str, rows: int):
        """A callable (quantized input (rows, n) float32, Act or None) -> (rows, n_out) output for one variant."""
        base, _, mode = variant.partition(":")
        par = mode == "p"
        p, a = self.params, self.arrays
        b, ws, blk, lut = a["bias"], a["wscale"], p["blk"], a["lut"]
        empty, pad = np.empty, self._padded_input
        n_out = p["n_out"]
        if base in ("gemv", "gemv512"):
            codes = self._dense_codes()
            if p["nibble"]:     # gemv512 where the CPU has AVX-512 (a plan from another CPU may name it), else gemv
                wide = base == "gemv512" and quant_k.isa()["avx512"]
                k, table = (quant_k.gemv_nib512, self._lutf()) if wide else (quant_k.gemv_nib, lut)
                k = k.pick(par)

                def f(x, act=None):
                    out = empty((rows, n_out), np.float32)
                    k(codes, table, ws, blk, pad(x), b, out)
                    return out
                return f
            k8 = quant_k.gemv_i8.pick(par)

            def f(x, act=None):
                out = empty((rows, n_out), np.float32)
                k8(codes, ws, blk, pad(x), b, out)
                return out
            return f
        if base == "gemm":
            codes = self._dense_codes()
            kg = quant_k.gemm_nib.pick(par)
            offs = np.arange(p["k"], dtype=np.int64) * rows

            def f(x, act=None):
                out_t = empty((n_out, rows), np.float32)
                kg(codes, lut, ws, blk, np.ascontiguousarray(pad(x).T), offs, b, out_t)
                return np.ascontiguousarray(out_t.T)
            return f
        if base in ("int", "vnni"):
            codes = self._dense_codes()
            ki = (quant_k.igemv_vnni if base == "vnni" else quant_k.igemv_avx2).pick(par)
            rowsum = self.prepared("rowsum", lambda: lut[self._matrix() & 15].sum(1, dtype=np.int64).astype(np.int32))

            def f(x, act=None):
                out = empty((rows, n_out), np.float32)
                xc, off, sc = self._act_codes(x)
                ki(codes, lut, rowsum, xc, off, sc, b, out)
                return out
            return f
        if base in ("csr", "csc", "colseg") or base in sparse_k.WINDOW_ISA:
            return self.sparse_matmul(variant, rows)
        raise ValueError(f"unknown low-bit variant {variant!r}")

    def macs(self, act):
        x = act.dense().reshape(act.batch, -1) != 0
        dense = float(act.batch * self.params["n_out"] * self.params["n_in"])
        return dense, dense * self.params["density"] * float(x.mean() if x.size else 0.0)

    def weight_bytes(self, variant):
        a = self.arrays
        if self.params.get("float_weights"):
            return a["weight"].nbytes + a["bias"].nbytes
        if variant.startswith("colseg"):        # its own scales (MXFP4's as exponents: a quarter of wscale)
            return self.sparse_weight_bytes(variant)
        extra = a["wscale"].nbytes + a["bias"].nbytes
        if variant.startswith(("csr", "csc")) or variant.partition(":")[0] in sparse_k.WINDOW_ISA or \
                (variant == "torch" and self.params["sparse"]):
            return self.sparse_weight_bytes(variant) + extra
        return self._dense_codes().nbytes + extra
