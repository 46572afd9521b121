"""The complementary step: N disjoint-mask layers packed into one dense weight, run on a sparse input."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.engine.steps.base import Step, _flavours, _np, _t
from frugalnet.kernels import conv as conv_k


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
