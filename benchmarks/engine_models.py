"""Whole models through frugalnet.engine against PyTorch eager, torch.compile, ONNX Runtime and OpenVINO (f32), side
by side in one run (interleaved rounds, medians and spread), plus where the engine's time goes: per program node,
whether it ran one of our kernels, a PyTorch-backed step or a fallback aten op.

    PYTHONPATH=src python benchmarks/engine_models.py --cases resnet-relu --batches 1
    PYTHONPATH=src python benchmarks/engine_models.py --cases bert gpt --quick     # smaller shapes, for a smoke run

The official cases live in frugalnet.bench.model_cases (same builders); this script is the engine's own view.
"""
from __future__ import annotations

import argparse
import time

import torch

from frugalnet.bench import model_cases as MC
from frugalnet.bench.baselines import dense_runtimes
from frugalnet.bench.harness import machine_info
from frugalnet.engine import compile as compile_engine
from frugalnet.engine.profile import format_profile
from frugalnet.engine.timing import interleaved_medians


def build(case: str, batch: int, quick: bool):
    if case.startswith("resnet"):
        return MC.resnet_case(batch, case.split("-")[1], width=16 if quick else 64)
    if case == "bert":
        return MC.bert_case(batch, **(dict(hidden=192, ffn=768, layers=2, heads=4, seq=32) if quick else {}))
    if case == "gpt":
        return MC.gpt_case(batch, **(dict(hidden=192, ffn=768, layers=2, heads=4, kv=32, vocab=1000) if quick
                                     else {}))
    raise SystemExit(f"unknown case {case!r} (resnet-relu, resnet-kwta, bert, gpt)")


def first_tensor(out):
    return torch.utils._pytree.tree_leaves(out)[0]


def run_case(name: str, batch: int, quick: bool, threads: int, repeats: int, compile_torch: bool) -> None:
    case = build(name, batch, quick)
    print(f"\n== {case.name}: {case.notes.get('model', '')}")
    model, inputs = case.model.eval(), case.inputs
    t0 = time.perf_counter()
    engine = compile_engine(model, inputs, batch_sizes=(batch,), threads=threads, repeats=3,
                            max_seconds_per_layer=2.0)
    print(f"compile {time.perf_counter() - t0:.1f} s; {len(engine.steps)} steps, "
          f"{len(engine.fallback_ops())} fallback ops; (PyTorch, numba) threads per plan: {engine.run_threads}")
    with torch.no_grad():
        ref = first_tensor(model(*inputs))
    got = first_tensor(engine(*inputs))
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    print(f"outputs match (rtol 1e-4): {torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))}"
          f" (max |diff| / max |ref| = {err:.2e})")
    runners = dense_runtimes(model, inputs, threads, compile_torch=compile_torch)
    fns = {"frugalnet": lambda: engine(*inputs)}
    for rname, r in runners.items():
        if r.fn is None:
            print(f"  {rname}: unavailable ({r.note})")
        elif rname != "openvino_default":
            fns[rname] = (lambda f=r.fn: f(*inputs))
    samples = {}
    secs = interleaved_medians(fns, repeats=repeats, min_time=0.05, max_seconds=120, samples=samples)
    base = secs["frugalnet"]
    print(f"{'runtime':16s} {'ms/call':>9s} {'spread (min-max)':>20s} {'engine speedup':>15s}")
    for k, v in sorted(secs.items(), key=lambda kv: kv[1]):
        lo, hi = min(samples[k]), max(samples[k])
        print(f"{k:16s} {v * 1e3:9.3f} {lo * 1e3:9.3f}-{hi * 1e3:<9.3f} {v / base:14.2f}x")
    others = [v for k, v in secs.items() if k not in ("frugalnet", "torch_eager")]
    if others:
        print(f"vs fastest of torch.compile/ORT/OpenVINO f32: {min(others) / base:.2f}x")
    print("where the engine's time goes (median ms per call, by node; engine.profile):")
    print(format_profile(engine.profile(*inputs, rounds=20), top=10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["resnet-relu", "bert", "gpt"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run)")
    ap.add_argument("--no-torch-compile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    info = machine_info()
    print(f"CPU: {info['cpu']}; widest ISA {info['widest_isa']} ({', '.join(info['isa'])}); "
          f"{info['cpu_count']} cores; torch {info['torch']}, onnxruntime {info['onnxruntime']}, "
          f"openvino {info['openvino']}; threads {a.threads}")
    try:
        print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    except OSError:
        pass
    for name in a.cases:
        for b in a.batches:
            run_case(name, b, a.quick, a.threads, a.repeats, not a.no_torch_compile)


if __name__ == "__main__":
    main()
