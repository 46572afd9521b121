"""The engine's per-call overhead: a GPT-shaped decode step so small (hidden 64, 12 layers, 334 program nodes) that
its arithmetic is negligible, in CPU time per call (time.thread_time, one thread: what the plan runner costs, not
what the machine's load does to wall time), against PyTorch eager on the same model; then the per-node profile.

    PYTHONPATH=src python benchmarks/engine_overhead.py
"""
from __future__ import annotations

import collections
import statistics
import time

import torch

from frugalnet.bench import model_cases as MC
from frugalnet.bench.harness import machine_summary
from frugalnet.engine import compile as compile_engine
from frugalnet.engine.profile import format_profile
from frugalnet.kernels import set_threads


def cpu_ms(f, calls: int = 200, rounds: int = 7) -> tuple[float, float, float]:
    """(median, min, max) CPU ms per call over `rounds` blocks of `calls` calls."""
    out = []
    for _ in range(rounds):
        t0 = time.thread_time()
        for _ in range(calls):
            f()
        out.append((time.thread_time() - t0) / calls * 1e3)
    return statistics.median(out), min(out), max(out)


def main() -> None:
    print(machine_summary())
    torch.set_num_threads(1)
    case = MC.gpt_case(1, hidden=64, ffn=256, layers=12, heads=4, kv=16, vocab=100)
    engine = compile_engine(case.model, case.inputs, batch_sizes=(1,), threads=1, repeats=3,
                            max_seconds_per_layer=0.5, jit_workers=0)
    set_threads(1)
    engine.run_threads.clear()
    engine._bound.clear()
    ops = collections.Counter(n.op for n in engine.program.nodes)
    print(f"{len(engine.program.nodes)} program nodes: {dict(ops)}")
    with torch.no_grad():
        for name, f in (("eager", lambda: case.model(*case.inputs)), ("engine", lambda: engine(*case.inputs))):
            med, lo, hi = cpu_ms(f)
            print(f"{name:8s} CPU ms per call: median {med:.3f} (min {lo:.3f}, max {hi:.3f})")
    print(format_profile(engine.profile(*case.inputs, rounds=50), top=5))


if __name__ == "__main__":
    main()
