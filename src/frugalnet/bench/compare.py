"""Run one case: every method's runner on the same inputs, outputs checked against the reference method, all timed
in interleaved rounds, with the limit (dense MACs / effective MACs) and the fraction of it each method reaches."""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from frugalnet.bench.baselines import Runner, _reason, dense_runtimes
from frugalnet.bench.harness import (count_macs, interleaved_samples, outputs_match, relative_error, spread,
                                     weight_bytes)
from frugalnet.nn.kwinners import KWinners, KWinners2d

EXACT_DENSE = ("torch_compile", "onnxruntime", "openvino_f32")   # the fp32 runtimes the engine must beat


@dataclass(frozen=True)
class RunSettings:
    """How hard to time: rounds, seconds per timed block, a cap per case; threads for every runtime."""

    threads: int = 2
    repeats: int = 15
    min_time: float = 0.1
    max_seconds: float = 60.0
    torch_compile: bool = True
    profile: bool = False       # add the engine's per-node time breakdown (engine.profile) to each model case

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")


def engine_runner(model: nn.Module, inputs: tuple, batch: int, settings: RunSettings) -> Runner:
    """The frugalnet engine compiled for this batch size, or the reason it did not compile."""
    from frugalnet.engine import compile as compile_engine

    example = inputs[0] if len(inputs) == 1 else tuple(inputs)
    t0 = time.perf_counter()
    try:
        try:
            engine = compile_engine(model, example, batch_sizes=(batch,), threads=settings.threads)
        except TypeError as exc:
            if "threads" not in str(exc):
                raise
            engine = compile_engine(model, example, batch_sizes=(batch,))
    except Exception as exc:
        return Runner(None, f"not compiled: {_reason(exc)}")
    seconds = time.perf_counter() - t0
    plans = getattr(engine, "plans", {})
    plan = plans.get(batch) if isinstance(plans, dict) else None
    note = f"compiled in {seconds:.1f} s" + \
        ("; layers timed with cold caches (weights > last-level cache)" if getattr(engine, "cold_cache", False)
         else "") + _plan_source_note(engine, batch) + (f"; plan: {', '.join(map(str, plan))}" if plan else "")
    info = {"engine": engine}
    try:
        info["weight_bytes"] = int(engine.weight_bytes(batch))
    except Exception:
        pass
    return Runner(lambda *xs: engine(*xs), note, info=info)


def compare(name: str, runners: dict[str, Runner], inputs: tuple, settings: RunSettings, *, reference: str,
            dense_macs: float, effective_macs: float, memory: dict[str, int] | None = None,
            extra: dict[str, Any] | None = None) -> dict:
    """Time every available runner on `inputs` side by side; speedups are over `reference`, whose outputs every
    other method is checked against (at the runner's rtol)."""
    ref_fn = runners[reference].fn
    if ref_fn is None:
        raise ValueError(f"the reference method {reference!r} is unavailable: {runners[reference].note}")
    ref = ref_fn(*inputs)
    fns, methods = {}, {}
    for m, r in runners.items():
        entry = {"available": False, "note": r.note, "precision": r.precision}
        if r.fn is not None:
            try:
                out = r.fn(*inputs)
                match, diff = outputs_match(out, ref, r.rtol)
                rel = relative_error(out, ref)
                if r.max_rel_error is not None:   # quantized weights: judged by relative L2 error
                    match = rel <= r.max_rel_error
                fns[m] = functools.partial(r.fn, *inputs)
                entry.update(available=True, outputs_match=match, max_abs_diff=diff, rel_error=rel,
                             rtol=r.rtol, max_rel_error=r.max_rel_error)
            except Exception as exc:
                entry["note"] = f"failed on the case's input: {_reason(exc)}"
        methods[m] = entry
    with torch.no_grad():
        samples = interleaved_samples(fns, repeats=settings.repeats, min_time=settings.min_time,
                                      max_seconds=settings.max_seconds)
    limit = dense_macs / max(effective_macs, 1.0)
    base = spread(samples[reference])["median"]
    for m, s in samples.items():
        st = spread(s)
        sp = base / st["median"]
        methods[m].update(seconds=st["median"], spread=st, speedup=sp, fraction_of_limit=sp / limit,
                          weight_bytes=runners[m].info.get("weight_bytes", (memory or {}).get(m)))
    result = {"case": name, "reference": reference, "dense_macs": dense_macs, "effective_macs": effective_macs,
              "limit": limit, "methods": methods, **(extra or {})}
    fastest = [(methods[m]["seconds"], m) for m in EXACT_DENSE
               if methods.get(m, {}).get("available") and methods[m].get("outputs_match")]
    if fastest and methods.get("frugalnet", {}).get("available"):
        secs, who = min(fastest)
        result["fastest_dense"] = who
        result["engine_vs_fastest_dense"] = secs / methods["frugalnet"]["seconds"]
    return result


def _plan_source_note(engine, batch: int) -> str:
    """'; whole plan kept: <label> (each candidate plan's ms)' from the compile's whole-plan timing."""
    secs = getattr(engine, "plan_seconds", {}).get(batch)
    if not secs:
        return ""
    timings = ", ".join(f"{k} {v * 1e3:.3g} ms" for k, v in secs.items())
    return f"; whole plan kept: {engine.plan_source.get(batch, 'per-layer')} ({timings})"


def run_model_case(case, settings: RunSettings) -> dict:
    """A ModelCase against PyTorch eager, torch.compile, ONNX Runtime, OpenVINO (f32 and default) and the engine."""
    runners = dense_runtimes(case.model, case.inputs, settings.threads, settings.torch_compile)
    runners["frugalnet"] = engine_runner(case.model, case.inputs, case.batch, settings)
    dense, eff = count_macs(case.model, case.inputs)
    wb = weight_bytes(case.model)
    notes = dict(case.notes)
    if any(isinstance(m, (KWinners, KWinners2d)) for m in case.model.modules()):
        notes["kwta"] = ("k-WTA is discontinuous: a runtime whose sums round differently can flip a winner at the "
                         "k-th value, and its outputs then differ there (not a wrong result)")
    result = compare(case.name, runners, case.inputs, settings, reference="torch_eager", dense_macs=dense,
                     effective_macs=eff, memory={m: wb for m in runners if m != "frugalnet"},
                     extra={"kind": "model", "group": case.group, "batch": case.batch, "table": "models",
                            "notes": notes})
    engine = runners["frugalnet"].info.get("engine")
    if settings.profile and engine is not None:
        rows = engine.profile(*case.inputs, rounds=max(5, settings.repeats))
        result["engine_profile"] = [r.to_dict() for r in rows]
    torch._dynamo.reset()   # free the compiled graphs before the next case
    return result
