"""`frugalnet bench`: sparse inference on CPU, the frugalnet engine side by side with PyTorch eager, torch.compile,
ONNX Runtime and OpenVINO in one run, on the same weights.

Case groups (`--cases`, comma-separated, parts of names allowed):
  linear, cnn2             layer cases: Linear 4096 (weight/input sparsity), sparse CNN-2 (layer_cases.py)
  resnet-relu, resnet-kwta CIFAR ResNet-18 pruned to 90%, ReLU or k-WTA, batch 1 and 64 (model_cases.py)
  bert, gpt                BERT-shaped encoder with sparse k-WTA FFN; one GPT-shaped decode step with a KV cache
  lowbit-linear, lowbit-gpt  low-bit weights: PyTorch FP32 vs dynamic INT8, ORT INT8/4-bit, OpenVINO (lowbit_cases.py)
Per case and method: median time over interleaved rounds with its spread, speedup over the reference, the limit
(dense MACs / effective MACs) and the fraction reached, and whether the output matches the reference.

    frugalnet bench --quick --cases resnet,bert --json out.json
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from frugalnet.bench.config import ALL_GROUPS, BenchConfig, select_groups
from frugalnet.bench.harness import machine_info
from frugalnet.bench.layer_cases import (METHODS, _cnn_input, _masked_weight, _sparse_input, cnn_cases,
                                         cold_jit_seconds, linear_cases)
from frugalnet.bench.report import print_table, table_rows, write_report
from frugalnet.utils.io import atomic_write_json
from frugalnet.utils.progress import progress, set_quiet

__all__ = ["BenchConfig", "run_benchmark", "main", "METHODS", "table_rows", "write_report", "print_table",
           "linear_cases", "cnn_cases", "cold_jit_seconds", "_masked_weight", "_sparse_input", "_cnn_input"]


def _settings(cfg: BenchConfig):
    from frugalnet.bench.compare import RunSettings

    return RunSettings(threads=cfg.threads, repeats=cfg.reps, min_time=cfg.block, max_seconds=cfg.max_seconds,
                       torch_compile=cfg.torch_compile, profile=cfg.profile)


def model_case_results(cfg: BenchConfig, on_case=None) -> list[dict]:
    """Every whole-model case of the selected groups, built and run one at a time; `on_case(result)` after each."""
    from frugalnet.bench.compare import run_model_case
    from frugalnet.bench.model_cases import MODEL_GROUPS

    builders = [b for g in cfg.cases if g in MODEL_GROUPS for b in MODEL_GROUPS[g]]
    results = []
    for build in progress(builders, desc="model cases"):
        torch.manual_seed(cfg.seed)
        case = build()
        results.append(run_model_case(case, _settings(cfg)))
        if on_case:
            on_case(results[-1])
        del case
        gc.collect()
    return results


def lowbit_case_results(cfg: BenchConfig, on_case=None) -> list[dict]:
    from frugalnet.bench.lowbit_cases import LOWBIT_GROUPS, run_lowbit_case

    builders = [b for g in cfg.cases if g in LOWBIT_GROUPS for b in LOWBIT_GROUPS[g]]
    results = []
    for build in progress(builders, desc="low-bit cases"):
        torch.manual_seed(cfg.seed)
        case = build()
        results.append(run_lowbit_case(case, _settings(cfg)))
        if on_case:
            on_case(results[-1])
        del case
        gc.collect()
    return results


def run_benchmark(cfg: BenchConfig, partial_json: Path | None = None) -> dict:
    """Run the selected case groups. With `partial_json`, the cases finished so far are written there after each
    whole-model or low-bit case, so a long run that is stopped still leaves its figures."""
    cfg.validate()
    set_quiet(cfg.quiet)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    results: list[dict] = []
    if "linear" in cfg.cases:
        results += linear_cases(cfg)
    if "cnn2" in cfg.cases:
        results += cnn_cases(cfg)
    layer_compile = sum(r["engine_compile_s"] for r in results[::2])
    done = list(results)

    def on_case(r: dict) -> None:
        done.append(r)
        if partial_json is not None:
            atomic_write_json(partial_json, {"partial": True, "machine": machine_info(), "cases": done})

    results += model_case_results(cfg, on_case)
    if any(g.startswith("lowbit") for g in cfg.cases):
        results += lowbit_case_results(cfg, on_case)
    out = {"config": asdict(cfg), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": machine_info(), "cases": results}
    if results and results[0].get("table") == "layers":
        out["engine_compile_s_total"] = layer_compile
    if cfg.cold_jit:
        out["jit"] = cold_jit_seconds(cfg.threads)
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`frugalnet bench` / benchmarks/sparse_inference.py); returns the exit status."""
    p = argparse.ArgumentParser(prog="frugalnet bench", description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                epilog="case groups: " + ", ".join(ALL_GROUPS))
    p.add_argument("--quick", action="store_true", help="fewer, shorter timing rounds")
    p.add_argument("--cases", default="all", help="comma-separated case groups or parts of names (default: all)")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    p.add_argument("--out", type=Path, default=None, help="report folder (default runs/bench/<time>)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch-compile", action="store_true", help="leave torch.compile out of the model cases")
    p.add_argument("--profile", action="store_true",
                   help="per model case, where the engine's time goes: ms per program node (ours / dense / fallback)")
    p.add_argument("--cold-jit", action="store_true", help="also time a cold JIT compile in a fresh numba cache")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = BenchConfig(quick=args.quick, threads=args.threads, seed=args.seed, repeats=args.repeats,
                          cold_jit=args.cold_jit, quiet=args.quiet, cases=select_groups(args.cases),
                          torch_compile=not args.no_torch_compile, profile=args.profile)
    except ValueError as exc:
        p.error(str(exc))
    folder = args.out or Path("runs") / "bench" / time.strftime("%Y%m%d-%H%M%S")
    result = run_benchmark(cfg, partial_json=Path(folder) / "results.partial.json")
    command = "frugalnet bench " + " ".join(argv if argv is not None else sys.argv[1:])
    result["command"] = command
    path = write_report(result, folder, command)
    atomic_write_json(Path(folder) / "results.json", result)
    if args.json:
        atomic_write_json(args.json, result)
    print(f"# {result['machine']['cpu']}, widest ISA {result['machine']['widest_isa']}, {result['threads']} threads")
    print_table(result)
    for case in result["cases"]:
        if case.get("engine_profile"):
            from frugalnet.engine.profile import NodeTime, format_profile

            print(f"\nwhere the engine's time goes, {case['case']} (median ms per call):")
            print(format_profile([NodeTime(**r) for r in case["engine_profile"]], top=8))
    print(f"\nreport: {path}" + (f"\njson:   {args.json}" if args.json else ""))
    return 0
