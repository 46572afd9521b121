"""Steps without weights: k-WTA, pooling, ReLU, Flatten, and a BatchNorm that follows no Linear/Conv (affine)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from frugalnet.engine.act import Act
from frugalnet.engine.steps.base import Step, _flavours, _np, _t
from frugalnet.kernels import kwta as kwta_k, pool as pool_k
from frugalnet.kernels._jit import threads


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
                                k_inference_factor=self.params["k_inference_factor"],
                                _eval_k_rule="round" if self.params["two_d"] else "floor")   # as KWinners2d / KWinners
        return _KWinnersBase._k(proxy, n)

    def out_shape(self, shape):
        if self.params["two_d"] and len(shape) != 4:
            raise ValueError(f"engine layer {self.name!r} (KWinners2d) expects (batch, C, H, W), got {shape}")
        if not self.params["two_d"] and len(shape) != 2:
            raise ValueError(f"engine layer {self.name!r} (KWinners) expects (batch, n), got {shape}")
        units = shape[1]
        if self.arrays["boost"].shape != (units,):   # checked here, before the kernel reads boost[0:n]
            raise ValueError(f"engine layer {self.name!r}: {self.arrays['boost'].shape[0]} boost factors for "
                             f"{units} units")
        return shape

    def variants(self, act):
        return ["torch"] if self.params["local"] else ["torch"] + _flavours("numba", act.batch, split=False)

    def _scores_boost(self, shape) -> np.ndarray:
        boost = self.arrays["boost"]
        if not self.params["two_d"]:
            return boost
        # np.repeat always copies (a reshaped broadcast view would stay read-only for a 1x1 map, and a read-only
        # argument is a different numba signature: one more JIT compile of the kernel)
        return self.prepared(("boost", shape[1:]), lambda: np.repeat(boost, shape[2] * shape[3]))

    def bind(self, variant, shape):
        self.out_shape(shape)
        if not variant.startswith("numba"):
            return super().bind(variant, shape)
        n = 1
        for d in shape[1:]:
            n *= d
        k = self._k(n)
        par = variant.endswith(":p")
        kern = kwta_k.kwta_rows.pick(par)
        nchunks = threads() if par else 1
        boost = self._scores_boost(shape)
        batch = shape[0]
        counts = np.full(batch, k, np.int32)  # read-only for consumers
        empty = np.empty

        finite = np.isfinite
        exact = self.bind("torch", shape)

        def f(act):
            x = act.dense().reshape(batch, n)
            if not finite(x.sum()):   # Inf/NaN somewhere (or an overflowing sum): KWinners' own selection
                return exact(act)     # (NaN ranks first, losers 0 even at -Inf), done by topk_mask
            aidx = empty((batch, k), np.int32)
            aval = empty((batch, k), np.float32)
            kern(x, boost, k, aidx, aval, nchunks)
            return Act(shape, sparse=(aidx, aval, counts))
        return f

    def run(self, act, variant):
        from frugalnet.nn.kwinners import topk_mask

        shape = self.out_shape(act.shape)
        n = act.width
        if variant.startswith("numba"):
            return self.bind(variant, act.shape)(act)
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
        return Act(shape, dense=_np(torch.where(mask, x, 0.0)))   # as KWinners: losers 0, even at -Inf


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
        if not variant.startswith("numba"):
            raise ValueError(f"unknown pooling variant {variant!r}")
        return self.bind(variant, act.shape)(act)

    def bind(self, variant, shape):
        if not variant.startswith("numba"):
            return super().bind(variant, shape)
        p = self.params
        out_shape = self.out_shape(shape)
        kern = pool_k.pool_fn(p["mode"], *p["kernel"], *p["stride"], *p["padding"], variant.endswith(":p"))
        empty = np.empty

        def f(act):
            out = empty(out_shape, np.float32)
            kern(act.dense(), out)
            return Act(out_shape, dense=out)
        return f


class ReLUStep(Step):
    kind = "relu"

    def run(self, act, variant):
        if act.is_sparse:
            aidx, aval, counts = act.active()
            return Act(act.shape, sparse=(aidx, np.maximum(aval, 0.0), counts))
        if act._dense is None and act._torch is not None:   # keeps a oneDNN conv's channels_last layout
            return Act(act.shape, tensor=torch.relu(act._torch))
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
