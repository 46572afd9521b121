"""The layer cases of `frugalnet bench` (kept from its first version, with their ratios): Linear 4096x4096 at batch 1
and 64 (weight sparsity 0.9/0.95, input sparsity 0/0.9/0.95) and the sparse CNN-2 end to end at Speech Commands
(1x32x32) and MNIST (1x28x28) size, against PyTorch dense, PyTorch with masked weights, torch.sparse CSR, scipy.sparse
and ONNX Runtime (dense, CPU).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from frugalnet.bench.baselines import ort_session
from frugalnet.bench.config import BenchConfig
from frugalnet.bench.harness import interleaved_samples, spread
from frugalnet.engine.compiler import compile as compile_engine
from frugalnet.engine.speedup import outputs_match
from frugalnet.utils.progress import progress

METHODS = ("torch_dense", "torch_masked", "torch_csr", "scipy_csr", "onnxruntime", "frugalnet")


# ---- helpers -----------------------------------------------------------------------------------------------------

def _masked_weight(n_out: int, n_in: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Each row keeps exactly round((1 - sparsity) * n_in) nonzeros at random positions."""
    nnz = int(round((1 - sparsity) * n_in))
    keep = np.argpartition(rng.random((n_out, n_in), dtype=np.float32), nnz, axis=1)[:, :nnz]
    w = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)[:, None]
    w[rows, keep] = rng.uniform(-1, 1, (n_out, nnz)).astype(np.float32) / np.sqrt(nnz)
    return w


def _sparse_input(batch: int, n: int, sparsity: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round((1 - sparsity) * n) nonzero (positive, as after k-WTA/ReLU) entries per row."""
    x = np.zeros((batch, n), np.float32)
    k = int(round((1 - sparsity) * n))
    for b in range(batch):
        x[b, rng.choice(n, k, replace=False)] = rng.uniform(0.1, 1.0, k)
    return x


def _onnx_session(model: nn.Module, example: torch.Tensor, threads: int):
    """(callable numpy->numpy, note) running `model` in ONNX Runtime on CPU with a dynamic batch axis, or (None,
    reason) if unavailable."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None, "onnxruntime not installed (pip install frugalnet[bench])"
    errors = []
    for dynamo in (False, True):
        try:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), buf, input_names=["x"], output_names=["y"],
                                  dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=dynamo)
            sess = ort_session(buf.getvalue(), threads)   # intra-op spinning off (see ort_session)
            return (lambda x: sess.run(None, {"x": x})[0]), f"exported with dynamo={dynamo}; intra-op spinning off"
        except Exception as exc:  # report, do not fail the benchmark
            errors.append(f"dynamo={dynamo}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    return None, "; ".join(errors)


def _run_case(name: str, fns: dict[str, Callable[[], object]], ref: np.ndarray, outputs: dict[str, np.ndarray],
              dense_macs: float, eff_macs: float, memory: dict[str, int], cfg: BenchConfig, extra: dict) -> dict:
    samples = interleaved_samples(fns, repeats=cfg.reps, min_time=cfg.block, max_seconds=2 if cfg.quick else 60)
    spreads = {m: spread(v) for m, v in samples.items()}
    secs = {m: s["median"] for m, s in spreads.items()}
    base = secs["torch_dense"]
    limit = dense_macs / max(eff_macs, 1.0)
    methods = {}
    for m in METHODS:
        if m not in secs:
            methods[m] = {"available": False, "note": extra.get("notes", {}).get(m, "not applicable")}
            continue
        sp = base / secs[m]
        match = None
        if m in outputs:
            match, diff = outputs_match(torch.from_numpy(np.asarray(outputs[m], np.float32)), torch.from_numpy(ref))
        methods[m] = {"available": True, "seconds": secs[m], "spread": spreads[m], "speedup": sp,
                      "fraction_of_limit": sp / limit, "weight_bytes": memory.get(m), "outputs_match": match,
                      "note": extra.get("notes", {}).get(m, "")}
    return {"case": name, "reference": "torch_dense", "table": "layers", "dense_macs": dense_macs,
            "effective_macs": eff_macs, "limit": limit, "methods": methods,
            **{k: v for k, v in extra.items() if k != "notes"}}


# ---- Linear cases ------------------------------------------------------------------------------------------------

def linear_cases(cfg: BenchConfig) -> list[dict]:
    import scipy.sparse as sp

    from frugalnet.nn.sparse import SparseLinear

    rng = np.random.default_rng(cfg.seed)
    n = 4096
    dense_w = torch.from_numpy(rng.uniform(-1, 1, (n, n)).astype(np.float32) / 64)
    bias = torch.zeros(n)
    results = []
    combos = [(ws, xs) for ws in (0.9, 0.95) for xs in (0.0, 0.9, 0.95)]
    for ws, xs in progress(combos, desc="linear cases"):
        w = _masked_weight(n, n, ws, rng)
        wt = torch.from_numpy(w)
        layer = SparseLinear(n, n, ws, mask=wt != 0)
        with torch.no_grad():
            layer.weight.copy_(wt)
            layer.bias.zero_()
        model = nn.Sequential(layer).eval()
        xs_np = {b: _sparse_input(b, n, xs, rng) if xs > 0 else rng.standard_normal((b, n)).astype(np.float32)
                 for b in (1, 64)}
        t0 = time.perf_counter()
        engine = compile_engine(model, torch.from_numpy(xs_np[64]), batch_sizes=(1, 64), threads=cfg.threads,
                                repeats=2 if cfg.quick else 5)
        compile_s = time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            w_csr = wt.to_sparse_csr()
        w_sp = sp.csr_matrix(w)
        # the same masked weights, run densely by ONNX Runtime
        onnx_fn, onnx_note = _onnx_session(model, torch.zeros(1, n), cfg.threads)
        mem = {"torch_dense": dense_w.numel() * 4, "torch_masked": wt.numel() * 4,
               "torch_csr": sum(t.numel() * t.element_size() for t in (w_csr.crow_indices(), w_csr.col_indices(),
                                                                        w_csr.values())),
               "scipy_csr": w_sp.data.nbytes + w_sp.indices.nbytes + w_sp.indptr.nbytes,
               "onnxruntime": wt.numel() * 4}
        for batch in (1, 64):
            x_np = xs_np[batch]
            x = torch.from_numpy(x_np)
            mem["frugalnet"] = engine.weight_bytes(batch)
            with torch.no_grad():
                fns = {"torch_dense": lambda: F.linear(x, dense_w, bias),
                       "torch_masked": lambda: F.linear(x, wt, bias),
                       "torch_csr": lambda: torch.sparse.mm(w_csr, x.T).T,
                       "scipy_csr": lambda: (w_sp @ x_np.T).T,
                       "frugalnet": lambda: engine(x)}
                if onnx_fn is not None:
                    fns["onnxruntime"] = lambda: onnx_fn(x_np)
                ref = F.linear(x, wt, bias).numpy()
                outputs = {"torch_masked": ref, "torch_csr": fns["torch_csr"]().contiguous().numpy(),
                           "scipy_csr": np.asarray(fns["scipy_csr"]()), "frugalnet": engine(x).numpy()}
                if onnx_fn is not None:
                    outputs["onnxruntime"] = fns["onnxruntime"]()
                dense_macs = float(batch * n * n)
                eff = float(((x_np != 0).astype(np.float64) @ (w != 0).sum(0).astype(np.float64)).sum())
                res = _run_case(f"linear4096 b={batch} w={ws} x={xs}", fns, ref, outputs, dense_macs, eff, mem, cfg,
                                {"kind": "linear", "batch": batch, "weight_sparsity": ws, "input_sparsity": xs,
                                 "engine_compile_s": compile_s, "engine_plan": engine.plans[batch],
                                 "notes": {"onnxruntime": onnx_note, "frugalnet": ", ".join(engine.plans[batch])}})
            results.append(res)
    return results


# ---- CNN-2 cases -------------------------------------------------------------------------------------------------

def _cnn_input(shape: tuple[int, int, int], batch: int, rng: np.random.Generator) -> torch.Tensor:
    if shape == (1, 28, 28):
        try:
            from frugalnet.data import load

            bundle = load("mnist-5k")
            x = bundle.normalize(bundle.test.x[:batch].float())
            if x.shape[0] == batch:
                return x.contiguous()
        except Exception:  # fall back to noise if the data set is unavailable
            pass
    return torch.from_numpy(rng.standard_normal((batch, *shape)).astype(np.float32))


def _conv_linear_macs(model: nn.Module, x: torch.Tensor) -> float:
    total = 0.0
    h = x
    with torch.no_grad():
        for m in model:
            out = m(h)
            if isinstance(m, nn.Conv2d):
                total += float(out.numel() * m.weight[0].numel())
            elif isinstance(m, nn.Linear):
                total += float(out.numel() * m.in_features)
            h = out
    return total


def cnn_cases(cfg: BenchConfig) -> list[dict]:
    from frugalnet.models import dense_cnn2, sparse_cnn2
    from frugalnet.nn.kwinners import KWinners, KWinners2d

    rng = np.random.default_rng(cfg.seed + 1)
    results = []
    for shape, label, classes in progress([((1, 32, 32), "speech-commands 1x32x32", 12),
                                           ((1, 28, 28), "mnist 1x28x28", 10)], desc="cnn cases"):
        torch.manual_seed(cfg.seed)
        model = sparse_cnn2(shape, num_classes=classes, seed=cfg.seed).eval()
        for m in model.modules():  # trained networks have nonuniform duty cycles; give boosting something to do
            if isinstance(m, (KWinners, KWinners2d)):
                m.duty_cycle.copy_(torch.rand(m.duty_cycle.shape, generator=torch.Generator().manual_seed(7)) * 0.3)
        dense = dense_cnn2(shape, num_classes=classes).eval()
        x64 = _cnn_input(shape, 64, rng)
        t0 = time.perf_counter()
        engine = compile_engine(model, x64, batch_sizes=(1, 64), threads=cfg.threads, repeats=2 if cfg.quick else 5)
        compile_s = time.perf_counter() - t0
        onnx_fn, onnx_note = _onnx_session(dense, x64[:1], cfg.threads)
        onnx_note = "dense CNN-2 (ReLU) in ONNX Runtime; " + onnx_note
        mem_dense = sum(p.numel() * 4 for p in dense.parameters())
        mem_masked = sum(p.numel() * 4 for p in model.parameters())
        for batch in (1, 64):
            x = x64[:batch].contiguous()
            x_np = x.numpy()
            with torch.no_grad():   # (the timing below runs in it too: PyTorch is timed without autograd)
                fns = {"torch_dense": lambda: dense(x), "torch_masked": lambda: model(x),
                       "frugalnet": lambda: engine(x)}
                if onnx_fn is not None:
                    fns["onnxruntime"] = lambda: onnx_fn(x_np)
                ref = model(x).numpy()
                outputs = {"torch_masked": ref, "frugalnet": engine(x).numpy()}
                dense_macs = _conv_linear_macs(dense, x)
                eff = sum(c.effective_macs for c in engine.choices[batch])
                mem = {"torch_dense": mem_dense, "torch_masked": mem_masked, "onnxruntime": mem_dense,
                       "frugalnet": engine.weight_bytes(batch)}
                notes = {"torch_dense": "dense CNN-2 of the same shapes (ReLU in place of k-WTA)",
                         "torch_masked": "the sparse CNN-2 (k-WTA, masked weights) run by PyTorch",
                         "torch_csr": "not applicable end to end", "scipy_csr": "not applicable end to end",
                         "onnxruntime": onnx_note, "frugalnet": ", ".join(engine.plans[batch])}
                res = _run_case(f"cnn2 {label} b={batch}", fns, ref, outputs, dense_macs, eff, mem, cfg,
                                {"kind": "cnn2", "batch": batch, "input_shape": list(shape),
                                 "engine_compile_s": compile_s, "engine_plan": engine.plans[batch],
                                 "engine_layers": engine.summary(batch), "notes": notes})
                res["speedup_vs_torch_masked"] = res["methods"]["torch_masked"]["seconds"] / \
                    res["methods"]["frugalnet"]["seconds"]
                results.append(res)
    return results


# ---- cold JIT ----------------------------------------------------------------------------------------------------

_COLD_JIT_SCRIPT = """
import time, torch
t0 = time.perf_counter()
torch.set_num_threads({threads})
from torch import nn
import frugalnet.engine as E
from frugalnet.models import sparse_cnn2
from frugalnet.nn import SparseLinear
t1 = time.perf_counter()
m = sparse_cnn2((1, 16, 16), channels=(4, 8), hidden=24).eval()
E.compile(m, torch.rand(2, 1, 16, 16), batch_sizes=(1, 2), repeats=1)
x = torch.relu(torch.randn(2, 64) - 1)
E.compile(nn.Sequential(SparseLinear(64, 64, 0.9)), x, batch_sizes=(1, 2), repeats=1)
E.compile(nn.Sequential(SparseLinear(64, 64, 0.9)), torch.randn(2, 64), batch_sizes=(1, 2), repeats=1)
print(time.perf_counter() - t1)
"""


def cold_jit_seconds(threads: int = 2) -> dict:
    """Seconds to JIT-compile every kernel the benchmark's engines use, in a fresh process with an empty numba cache,
    and then again with that cache filled (what a second run pays)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            proc = subprocess.run([sys.executable, "-c", _COLD_JIT_SCRIPT.format(threads=threads)], env=env,
                                  capture_output=True, text=True, check=True)
            out.append(float(proc.stdout.strip().splitlines()[-1]))
    return {"cold_s": out[0], "cached_s": out[1]}


