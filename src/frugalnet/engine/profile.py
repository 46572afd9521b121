"""Where an engine's time goes: every node of its program timed on real inputs, as it runs at inference.

Each round runs the whole bound program once (the same callables `Engine.__call__` runs, with the plan's thread
counts), timing every node; the figure per node is its median over the rounds. A node is labelled by what runs it:
"ours" (a frugalnet numba kernel), "dense" (a step whose chosen variant hands the work to PyTorch / oneDNN), or
"fallback" (an aten op the engine has no step for: attention, LayerNorm, residual adds, ...).
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass

import torch

DENSE_VARIANTS = ("torch", "torch_conv", "onednn", "mkl", "im2col")   # variants whose arithmetic PyTorch does


@dataclass
class NodeTime:
    """One program node: its name, what it is (step kind or aten op), the chosen variant, who runs it, ms/call."""
    index: int
    name: str
    op: str
    variant: str
    runner: str
    ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def _label(engine, node, plan) -> tuple[str, str, str]:
    if node.op == "step":
        step, v = engine.steps[node.target], plan[node.target]
        base = v.split(":")[0]
        return step.kind, v, "dense" if base in DENSE_VARIANTS or step.kind in ("flatten",) else "ours"
    if node.op == "aten":
        return node.target.removeprefix("aten::").split(".")[0], "-", "fallback"
    return node.op, "-", "glue"


def profile(engine, *inputs, rounds: int = 20) -> list[NodeTime]:
    """Median ms per call of every node of `engine`'s program on `inputs` (positional, as for engine(*inputs))."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    from frugalnet.engine.compiler import _with_threads

    flat = [x.detach() if isinstance(x, torch.Tensor) else x for x in torch.utils._pytree.tree_leaves(inputs)]
    with torch.no_grad():
        engine.run(flat)
    key = tuple(tuple(x.shape) for x in flat)
    _, t, n, fns = engine._bound[key]
    prog = engine.program
    acc: list[list[float]] = [[] for _ in fns]
    perf = time.perf_counter

    def one_round():
        vals: list = [None] * prog.n_slots
        vals[:prog.n_inputs] = flat
        for i, f in enumerate(fns):
            t0 = perf()
            f(vals)
            acc[i].append(perf() - t0)

    with torch.no_grad():
        for _ in range(rounds):
            _with_threads(t, n, one_round)
    plan = engine.plan_for(int(flat[0].shape[0]))
    rows = []
    for i, (node, times) in enumerate(zip(prog.nodes, acc)):
        op, variant, runner = _label(engine, node, plan)
        rows.append(NodeTime(i, node.name, op, variant, runner, statistics.median(times) * 1e3))
    return rows


def summarize(rows: list[NodeTime]) -> dict[str, float]:
    """ms per call by (runner, op, variant), largest first."""
    out: dict[str, float] = defaultdict(float)
    for r in rows:
        key = f"{r.runner:8s} {r.op}" + (f" [{r.variant}]" if r.variant != "-" else "")
        out[key] += r.ms
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def format_profile(rows: list[NodeTime], top: int = 0) -> str:
    """A text table: totals by runner, then by (runner, op, variant); `top` > 0 adds the slowest nodes."""
    total = sum(r.ms for r in rows) or 1e-12
    by_runner: dict[str, float] = defaultdict(float)
    for r in rows:
        by_runner[r.runner] += r.ms
    lines = [f"total {total:.3f} ms over {len(rows)} nodes: " +
             ", ".join(f"{k} {v:.3f} ms ({v / total:.0%})" for k, v in sorted(by_runner.items(), key=lambda kv: -kv[1]))]
    lines.append(f"{'runner / op [variant]':44s} {'ms':>8s} {'share':>6s}")
    for k, v in summarize(rows).items():
        lines.append(f"{k:44s} {v:8.3f} {v / total:6.1%}")
    if top > 0:
        lines.append(f"slowest {top} nodes:")
        for r in sorted(rows, key=lambda r: -r.ms)[:top]:
            lines.append(f"  #{r.index:<4d} {r.name[:40]:40s} {r.op:14s} {r.variant:16s} {r.ms:8.3f}")
    return "\n".join(lines)
