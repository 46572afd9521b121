"""Choosing each step's variant: every candidate's output checked against PyTorch's, then the candidates timed
side by side on the step's real input (warm, or with the caches emptied before each call), and the fastest kept
(dense on a near tie)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from frugalnet.engine import steps as S
from frugalnet.engine.act import Act
from frugalnet.engine.timing import interleaved_fastest


@dataclass
class LayerChoice:
    """What the compiler measured and chose for one step at one batch size."""
    name: str
    kind: str
    variant: str
    seconds: dict[str, float] = field(default_factory=dict)  # each candidate's fastest interleaved round, per call
    input_density: float = 1.0
    dense_macs: float = 0.0
    effective_macs: float = 0.0
    weight_bytes: int = 0
    rejected: list[str] = field(default_factory=list)  # variants whose output did not match PyTorch's (a bug)


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(np.abs(b).max(initial=0.0)) if np.isfinite(b).all() else 1.0
    return bool(np.allclose(a, b, rtol=rtol, atol=1e-5 * max(1.0, scale), equal_nan=True))


DENSE_FIRST = ("onednn", "mkl", "torch", "gemv")   # variant bases preferred on a near tie: no sparse layout, same on any input


def pick(secs: dict[str, float], tie_margin: float) -> str:
    """The variant to keep among those within `tie_margin` of the fastest: a dense one (DENSE_FIRST) if any, else
    the first in the step's own order (`secs` is in candidate order). A sparse kernel has to win by a margin, not by
    a timing's noise, and a near tie always resolves the same way, so two compiles of one model on a shared machine
    choose the same plan."""
    fastest = min(secs.values())
    near = [v for v in secs if secs[v] <= fastest * (1.0 + tie_margin)]
    dense = [v for v in near if v.split(":")[0] in DENSE_FIRST]
    return (dense or near)[0]


COLD_MIN_BYTES = 256 << 10   # steps with fewer weight bytes are timed warm even in a cold-cache compile


def step_bytes(step: S.Step) -> int:
    return int(sum(a.nbytes for a in step.arrays.values() if isinstance(a, np.ndarray)))


def _choose(step: S.Step, act: Act, repeats: int, max_seconds: float,
            tie_margin: float = 0.1, evict=None) -> tuple[Act, LayerChoice]:
    variants = step.variants(act)
    ref = step.run(act.fresh(), "torch")
    outs, rejected = {"torch": ref}, []
    for v in variants:
        if v != "torch":
            out = step.run(act.fresh(), v)
            if _close(out.dense(), ref.dense()):
                outs[v] = out
            else:
                rejected.append(v)
    if len(outs) > 1:
        # time the bound callables inference will run (run() would redo bind's set-up every call)
        bound = {v: step.bind(v, act.shape) for v in outs}
        fns = {v: (lambda f=f: f(act.fresh())) for v, f in bound.items()}
        if evict is not None and step_bytes(step) >= COLD_MIN_BYTES:
            x = act.dense()

            def cold():     # weights from DRAM, the input just written (in the model, the previous step made it)
                evict()
                x.sum()
            secs = interleaved_fastest(fns, repeats=repeats, max_seconds=max_seconds, before=cold)
        else:
            secs = interleaved_fastest(fns, repeats=repeats, min_time=0.003, max_seconds=max_seconds)
        best = pick(secs, tie_margin)
    else:
        secs, best = {}, "torch"
    dense_macs, eff_macs = step.macs(act)
    return outs[best], LayerChoice(step.name, step.kind, best, secs, act.density(), dense_macs, eff_macs,
                                   step.weight_bytes(best), rejected)
