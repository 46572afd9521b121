"""Whole-plan timing after the per-layer choices (engine.compile's last step): a few whole plans derived from the
per-layer choice are timed side by side on the example, and the fastest kept. Each layer was timed alone; run
together, a parallel region's wake-up, the caches the previous step left and the threads' contention change the
sums (ResNet-18 at batch 1 measured 2.8x-4.5x eager across three compiles of per-layer choices on the 2-core
machine)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from frugalnet.engine.choice import DENSE_FIRST, LayerChoice
from frugalnet.engine.timing import interleaved_fastest

if TYPE_CHECKING:
    from frugalnet.engine.compiler import Engine


RUNNER_UP_MARGIN = 1.3   # a step's second-fastest variant within this factor of its choice is a close call


def _twin(variant: str, to: str) -> str:
    base, _, build = variant.rpartition(":")
    return f"{base}:{to}" if base and build in ("s", "p") else variant


def candidate_plans(plan: list[str], chosen: dict[int, LayerChoice]) -> dict[str, list[str]]:
    """Whole plans worth timing against the per-layer choice `plan`: every kernel in its serial build, every one in
    its parallel build (where that build was a checked candidate of the step), each step's fastest dense variant,
    and every close call (runner-up within RUNNER_UP_MARGIN) taken the other way; duplicates dropped."""
    out = {"per-layer": list(plan)}
    for label, to in (("serial", "s"), ("parallel", "p")):
        alt = list(plan)
        for i, c in chosen.items():
            twin = _twin(plan[i], to)
            if twin != plan[i] and twin in c.seconds:
                alt[i] = twin
        out[label] = alt
    dense = list(plan)
    for i, c in chosen.items():
        ok = [v for v in c.seconds if v.split(":")[0] in DENSE_FIRST]
        if ok:
            dense[i] = min(ok, key=c.seconds.get)
    out["dense"] = dense
    runner_up = list(plan)    # each close call decided the other way: a second, whole-model look at near ties
    for i, c in chosen.items():
        others = sorted((v for v in c.seconds if v != plan[i]), key=c.seconds.get)
        if others and c.seconds.get(plan[i]) and c.seconds[others[0]] <= RUNNER_UP_MARGIN * c.seconds[plan[i]]:
            runner_up[i] = others[0]
    out["runner-up"] = runner_up
    unique: dict[str, list[str]] = {}
    for label, p in out.items():
        if all(p != q for q in unique.values()):
            unique[label] = p
    return unique


def refine_plans(engine: "Engine", examples: dict[int, list], chosen_at: dict[int, dict[int, LayerChoice]],
                  repeats: int, tie_margin: float, evict=None) -> bool:
    """Per batch size, the whole plan that runs fastest among candidate_plans, timed interleaved on the example
    (a candidate must beat the per-layer plan by tie_margin / 2, so near ties keep it), with the caches emptied
    before every call when the layers were timed so (`evict`: weights larger than the last-level cache come from
    DRAM in use; timed back to back, a serial build won on weights left in cache and lost 1.5x in the bench). The
    winner's label goes to engine.plan_source. Returns whether any candidate plan was bound (other layouts were
    built)."""
    bound = False
    for bs, flat in examples.items():
        by_index = chosen_at.get(bs, {})
        plans = candidate_plans(engine.plans[bs], by_index)
        if len(plans) < 2:
            engine.plan_source[bs] = "per-layer"
            continue
        runners = {}
        bound = True
        with torch.no_grad():
            for label, plan in plans.items():
                _, fns = engine.program.bind(engine.steps, plan, flat)
                runners[label] = engine.program.runner(fns)

        def timed(r):
            def f():
                with torch.no_grad():
                    r(flat)
            return f
        fns = {k: timed(r) for k, r in runners.items()}
        if evict is not None:
            secs = interleaved_fastest(fns, repeats=max(3, repeats), max_seconds=10.0, before=evict)
        else:
            secs = interleaved_fastest(fns, repeats=max(3, repeats), min_time=0.01, max_seconds=10.0)
        best = min(secs, key=secs.get)
        if secs[best] * (1.0 + tie_margin / 2) > secs["per-layer"]:
            best = "per-layer"
        engine.plan_source[bs] = best
        engine.plan_seconds[bs] = dict(secs)
        if best != "per-layer":
            engine.plans[bs] = plans[best]
            for i, c in by_index.items():
                c.variant = plans[best][i]
    engine._bound.clear()
    return bound
