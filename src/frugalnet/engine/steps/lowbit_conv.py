"""The low-bit Conv2d step: a quantized Conv2d (groups = 1) from packed codes, through the Linear step's kernels on
patches of the quantized input (see engine/steps/lowbit.py)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.engine.steps.base import Step, _np, _t
from frugalnet.engine.steps.lowbit import LowbitLinearStep


class LowbitConvStep(LowbitLinearStep):
    """A quantized Conv2d (groups = 1) from packed codes: the quantized input unfolded into patches, tap-major
    (kh, kw, channel) like the code matrix, times the codes with the Linear kernels."""

    kind = "lowbit_conv2d"

    @classmethod
    def build_conv(cls, name: str, codes: dict, bias, act: dict, alpha, c_in: int, kernel_size, stride, padding,
                   dilation) -> "LowbitConvStep":
        step = cls.build(name, codes, bias, act, alpha, n_in=int(c_in) * int(codes["taps"]))
        step.params.update(c_in=int(c_in), kernel=[int(k) for k in kernel_size], stride=[int(s) for s in stride],
                           padding=[int(q) for q in padding], dilation=[int(d) for d in dilation])
        return step

    def out_shape(self, shape):
        p = self.params
        if len(shape) != 4 or shape[1] != p["c_in"]:
            raise ValueError(f"engine layer {self.name!r} (low-bit Conv2d, in_channels={p['c_in']}) expects input "
                             f"(batch, {p['c_in']}, H, W), got {shape}")
        size = [(shape[2 + i] + 2 * p["padding"][i] - p["dilation"][i] * (p["kernel"][i] - 1) - 1) // p["stride"][i]
                + 1 for i in range(2)]
        if min(size) < 1:
            raise ValueError(f"engine layer {self.name!r}: input {shape} is too small for the kernel")
        return (shape[0], p["n_out"], size[0], size[1])

    def variants(self, act: Act) -> list[str]:
        if self.params.get("float_weights"):
            return ["torch"]
        if self.params["sparse"]:
            return ["torch", "csr:s", "csr:p"] + self.window_variants()
        return ["torch"] + (["gemm:s", "gemm:p"] if self.params["nibble"] else ["gemv:s", "gemv:p"])

    def _patches(self, xq: np.ndarray) -> np.ndarray:
        """(B, C, H, W) -> (B * OH * OW, taps * cin) tap-major, channels zero-padded to the code matrix's cin."""
        p = self.params
        cols = F.unfold(_t(xq), p["kernel"], p["dilation"], p["padding"], p["stride"])   # (B, C * taps, L)
        bsz, _, n = cols.shape
        cols = cols.view(bsz, p["c_in"], p["taps"], n).permute(0, 3, 2, 1)               # (B, L, taps, C)
        if p["cin"] > p["c_in"]:
            cols = F.pad(cols, (0, p["cin"] - p["c_in"]))
        return _np(cols.reshape(bsz * n, p["taps"] * p["cin"]))

    def _conv_weight(self) -> torch.Tensor:
        p = self.params
        w = self.decoded_rows(0, p["n_out"]).reshape(p["n_out"], p["taps"], p["cin"])[:, :, :p["c_in"]]
        return _t(np.ascontiguousarray(w.transpose(0, 2, 1)).reshape(p["n_out"], p["c_in"], *p["kernel"]))

    def run(self, act: Act, variant: str) -> Act:
        if variant != "torch":
            return self.bind(variant, act.shape)(act)
        p = self.params
        xq = _t(self.quantize_input(act.dense(), dim=1))
        y = F.conv2d(xq, self._conv_weight(), _t(self.arrays["bias"]), p["stride"], p["padding"], p["dilation"])
        out = _np(y)
        return Act(out.shape, dense=out)

    def bind(self, variant, shape):
        if variant == "torch":
            return Step.bind(self, variant, shape)
        out_shape = self.out_shape(shape)
        bsz, n_out, oh, ow = out_shape
        gemm = self.matmul(variant, bsz * oh * ow)

        def f(act):
            y = gemm(self._patches(self.quantize_input(act.dense(), dim=1)))
            return Act(out_shape, dense=np.ascontiguousarray(y.reshape(bsz, oh, ow, n_out).transpose(0, 3, 1, 2)))
        return f

    def macs(self, act):
        n, c, oh, ow = self.out_shape(act.shape)
        dense = float(n * c * oh * ow * self.params["n_in"])
        return dense, dense * self.params["density"]
