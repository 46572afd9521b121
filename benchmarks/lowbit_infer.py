"""Low-bit inference, side by side in one run: Linear 4096 x 4096 at batch 1 and 64, dense and 90% sparse weights
(and 90% sparse inputs), frugalnet's packed low-bit engine steps against PyTorch FP32, PyTorch dynamic INT8, ONNX
Runtime INT8 (dynamic) and 4-bit (MatMulNBits), OpenVINO INT8/INT4 weight compression (when openvino and nncf are
importable) and our own sparse FP32 kernels on the same mask.

    python benchmarks/lowbit_infer.py [--threads 2] [--repeats 15] [--n 4096] [--batches 1 64] [--quick]
                                      [--cases dense sparse sparse-inputs] [--reference]

Each case's candidates are timed in interleaved rounds (order rotated every round); the table gives the median time
per call, its spread (10th-90th percentile over rounds), the weight bytes each call reads (and, for sparse weights,
per nonzero weight of the mask; GB/s = bytes / time, to tell memory- from compute-bound kernels) and the speed-up
over PyTorch FP32 on the same input. Sparse cases add the speed-up over our fastest sparse FP32 kernel on the same
mask, per round (median and 10th-90th percentile of the per-round ratios), and one summary line per recipe: its
fastest variant against our fastest sparse FP32 one. Every variant of our steps is timed and listed (engine.compile
picks the fastest the same way); each of our outputs is checked against the simulated quantized layer
(model.eval()(x) after quantize_) before timing. Ratios only mean something within one run: the machine may be shared.

Sparse weights x sparse inputs at batch 1 (issue 19: "90% sparse + 4-bit, 90% sparse inputs: at least 40x PyTorch
FP32 dense"), measured 2026-12-05 05:10 UTC, 2-core AMD EPYC (znver4), 2 threads, machine shared (load average 3.4-4):

    PYTHONPATH=src python benchmarks/lowbit_infer.py --batches 1 --repeats 31 --cases sparse-inputs --quick \
        --only csc colseg

int4-w [colseg:s] (kernels/quant_colseg.py: only the active columns' 8-row segments, one vector table lookup each)
98.7 us median against PyTorch FP32's 4977 us: 50.4x (per-round 49.1x, p10-p90 37.1-63.3); 1.49x (p10-p90
1.27-1.82) our FP32 csc_rows:s (147 us); the scalar 4-bit CSC kernel csc:s 218 us (22.9x). mxfp4-w colseg:s 141 us
(35x; block scales as uint8 exponents), ibm4-mid colseg:s 150 us (31x: PACT4 quantization of the input each call).
B/nnz counts the bytes of the active columns only (0.42); the whole colseg layout is ~4.3 bytes per nonzero, about
dense 4-bit's size (the windows layout is the compact one). The parallel builds lose on this shared machine.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
import warnings

# Idle OpenMP workers sleep instead of spinning (as in train_step.py): torch, numba, ONNX Runtime and OpenVINO each
# keep a pool, and on a shared machine a spinning pool steals the cores from the others and from the working thread.
# Set before torch loads its runtime; applies to every candidate alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

from frugalnet.bench.harness import machine_summary
from frugalnet.engine.act import Act
from frugalnet.engine.steps.linear import LinearStep
from frugalnet.engine.steps.lowbit_factory import lowbit_step_for
from frugalnet.engine.timing import interleaved_samples
from frugalnet.kernels import quant as quant_k
from frugalnet.kernels._jit import set_threads
from frugalnet.lowbit import QuantSpec, Recipe, quantize_
from frugalnet.nn import SparseLinear

W4 = Recipe(name="int4-w", weight=QuantSpec("int4-sawb"))                       # INT4 SAWB weights, FP32 inputs
MX4 = Recipe(name="mxfp4-w", weight=QuantSpec("mxfp4"))                         # MXFP4 weights, FP32 inputs
IBM4_MID = Recipe(name="ibm4-mid", weight=QuantSpec("int4-sawb"), activation=QuantSpec("pact4"))  # int x int


def cpu_info() -> str:
    isa = quant_k.isa()
    return f"{machine_summary()}; LLVM target {isa['cpu']}, VNNI {isa['vnni']}, AMX {isa['amx']}"


def timed(fns: dict, repeats: int, min_time: float = 0.02) -> dict[str, np.ndarray]:
    """{name: seconds per call in each round}, interleaved rounds with the order rotated every round."""
    samples = interleaved_samples(fns, repeats=repeats, warmup=1, min_time=min_time, max_seconds=float("inf"),
                                  min_rounds=repeats)
    return {n: np.asarray(v) for n, v in samples.items()}


def spread(v: np.ndarray) -> tuple[float, float, float]:
    """(median, 10th, 90th percentile)."""
    return float(np.median(v)), float(np.percentile(v, 10)), float(np.percentile(v, 90))


# --- baselines ------------------------------------------------------------------------------------------------------
def ort_sessions(weight: np.ndarray, x: np.ndarray, threads: int, tmp: str) -> dict:
    """ONNX Runtime: FP32, dynamic INT8 (QuantizeLinear + MatMulInteger) and MatMulNBits 4-bit (block 32)."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as exc:
        print(f"(onnxruntime cases skipped: {exc})")
        return {}
    n_out, n_in = weight.shape
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n_out])],
                              [numpy_helper.from_array(np.ascontiguousarray(weight.T), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    fp32 = os.path.join(tmp, "fp32.onnx")
    onnx.save(model, fp32, save_as_external_data=True, location="fp32.data")
    int8 = os.path.join(tmp, "int8.onnx")
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, use_external_data_format=True)
    q4 = MatMulNBitsQuantizer(onnx.load(fp32), block_size=32, is_symmetric=True, accuracy_level=4)
    q4.process()
    nbits = os.path.join(tmp, "nbits.onnx")
    q4.model.save_model_to_file(nbits, use_external_data_format=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    out = {}
    for name, path, nbytes in (("ORT FP32", fp32, 4 * weight.size), ("ORT INT8 dynamic", int8, weight.size + 8),
                               ("ORT 4-bit MatMulNBits", nbits, weight.size // 2 + weight.size // 32 * 4)):
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        out[name] = (lambda s=sess: s.run(None, {"x": x})[0], nbytes)
    return out


def openvino_models(weight: np.ndarray, x: np.ndarray, threads: int) -> dict:
    """OpenVINO FP32 and nncf weight compression INT8 (asymmetric, per channel) and INT4 (symmetric, group 32)."""
    try:
        import nncf
        import openvino as ov
        from openvino import opset13 as ops
    except ImportError as exc:
        print(f"(OpenVINO cases skipped: {exc})")
        return {}
    core = ov.Core()
    out = {}
    for name, mode, nbytes in (("OpenVINO FP32", None, 4 * weight.size),
                               ("OpenVINO INT8 weights", nncf.CompressWeightsMode.INT8_ASYM, weight.size + 8 * len(weight)),
                               ("OpenVINO INT4 weights", nncf.CompressWeightsMode.INT4_SYM,
                                weight.size // 2 + weight.size // 32 * 2)):
        p = ops.parameter([-1, weight.shape[1]], np.float32, name="x")
        y = ops.matmul(p, ops.constant(weight), transpose_a=False, transpose_b=True)
        model = ov.Model([y], [p], "linear")
        if mode is not None:
            kw = dict(group_size=32, ratio=1.0) if mode == nncf.CompressWeightsMode.INT4_SYM else {}
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                model = nncf.compress_weights(model, mode=mode, **kw)
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                     "PERFORMANCE_HINT": "LATENCY"})
        req = compiled.create_infer_request()
        out[name] = (lambda r=req: r.infer({0: x}), nbytes)
    return out


# --- our steps ------------------------------------------------------------------------------------------------------
def ours(layer: nn.Module, x: np.ndarray, label: str, reference: bool) -> dict:
    """Every variant of the low-bit step of a quantized layer, checked against the simulated layer's output (the
    "torch" reference variant timed only with `reference`: at 4096 x 4096 one call takes ~0.3 s, which stretches
    every interleaved round and so lets the machine's load drift within it)."""
    step = lowbit_step_for("fc", layer)
    act = Act(x.shape, dense=x)
    with torch.no_grad():
        ref = layer(torch.from_numpy(x)).numpy()
    out = {}
    for v in step.variants(act):    # "torch": the step's reference, the codes decoded 256 rows at a time + sgemm
        got = step.run(Act(x.shape, dense=x), v).dense()
        err = float(np.abs(got - ref).max() / max(1e-12, np.abs(ref).max()))
        if err > 1e-4:
            raise AssertionError(f"{label} {v}: output differs from the simulated layer by {err:.2e} (relative)")
        if v == "torch" and not reference:
            continue
        f = step.bind(v, x.shape)
        nbytes = step.weight_bytes(v)
        if v.startswith(("csc", "colseg")):          # only the columns of active inputs are read
            nbytes = int(nbytes * float(np.count_nonzero(x)) / x.size)
        out[f"{label} [{v}]"] = (lambda f=f: f(Act(x.shape, dense=x)), nbytes)
    return out


def our_sparse_fp32(weight: np.ndarray, x: np.ndarray) -> dict:
    step = LinearStep.build("fc", weight, None)
    act = Act(x.shape, dense=x)
    out = {}
    # the engine offers only the parallel builds of these; the serial ones are timed too, like ours
    for v in dict.fromkeys(step.variants(act) + ["csr_rows:s", "csc_rows:s"]):
        if v == "torch":
            continue
        f = step.bind(v, x.shape)
        nbytes = step.weight_bytes(v)
        if v.startswith("csc"):
            nbytes = int(nbytes * float(np.count_nonzero(x)) / x.size)
        out[f"ours sparse FP32 [{v}]"] = (lambda f=f: f(Act(x.shape, dense=x)), nbytes)
    return out


def run_case(title: str, weight_sparsity: float, x_sparsity: float, batch: int, n: int, args, tmp: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if weight_sparsity:
        base = SparseLinear(n, n, weight_sparsity, bias=False, seed=0)
    else:
        base = nn.Linear(n, n, bias=False)
    x = np.abs(rng.standard_normal((batch, n))).astype(np.float32)
    if x_sparsity:
        x[rng.random(x.shape) < x_sparsity] = 0.0
    w = base.weight.detach().clone()
    if weight_sparsity:
        w = w * base.weight_mask
    weight = w.numpy()
    xt = torch.from_numpy(x)
    cands = {"PyTorch FP32": (lambda: torch.nn.functional.linear(xt, w), 4 * weight.size)}
    dyn = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(n, n, bias=False)), {nn.Linear},
                                                 dtype=torch.qint8)
    with torch.no_grad():
        dyn[0].weight  # noqa: B018 (packed at conversion)
    cands["PyTorch dynamic INT8"] = (lambda: dyn(xt), weight.size)
    if not args.quick:
        cands.update(ort_sessions(weight, x, args.threads, tmp))
        cands.update(openvino_models(weight, x, args.threads))
    if weight_sparsity:
        cands.update(our_sparse_fp32(weight, x))
        # what streaming those bytes alone costs (numpy's vectorised sum, one thread): a kernel well under this
        # GB/s is bound by its work per nonzero, not by memory
        block = np.ones(max(v[1] for k, v in cands.items() if k.startswith("ours sparse FP32")) // 4, np.float32)
        cands["memory read: sum of FP32 CSR's bytes"] = (lambda: block.sum(), block.nbytes)
    for recipe in (W4, MX4, IBM4_MID):
        layer = quantize_(nn.Sequential(SparseLinear(n, n, weight_sparsity, bias=False, mask=base.weight_mask)
                                        if weight_sparsity else nn.Linear(n, n, bias=False)), recipe)[0]
        with torch.no_grad():
            layer.weight.copy_(w)
        layer.train()
        layer(torch.from_numpy(x))    # PACT clip from this batch
        layer.eval()
        cands.update(ours(layer, x, f"ours {recipe.name}", args.reference))
    if args.only:      # fewer candidates: shorter rounds, so the machine's load drifts less within one
        cands = {k: v for k, v in cands.items() if k == "PyTorch FP32" or any(o in k for o in args.only)}
    samples = timed({k: v[0] for k, v in cands.items()}, args.repeats)
    res = {k: spread(v) for k, v in samples.items()}
    base_t = res["PyTorch FP32"][0]
    nnz = int(np.count_nonzero(weight))
    fp32 = [k for k in res if k.startswith("ours sparse FP32")]
    best32 = min(fp32, key=lambda k: res[k][0]) if fp32 else None
    print(f"\n## {title}: batch {batch}, weight sparsity {weight_sparsity:.0%}, input sparsity {x_sparsity:.0%}"
          + (f" ({nnz} nonzero weights)" if weight_sparsity else ""))
    print(f"{'candidate':44s} {'median us':>10s} {'p10-p90 us':>17s} {'weight MB':>9s} {'GB/s':>6s}"
          + (f" {'B/nnz':>5s}" if weight_sparsity else "") + f" {'vs FP32':>8s}"
          + (f" {'vs sparse FP32 (p10-p90)':>25s}" if best32 else ""))
    for k, (med, lo, hi) in sorted(res.items(), key=lambda kv: kv[1][0]):
        nbytes = cands[k][1]
        line = (f"{k:44s} {1e6 * med:10.1f} {1e6 * lo:8.1f}-{1e6 * hi:<8.1f} {nbytes / 1e6:9.2f} "
                f"{nbytes / med / 1e9:6.1f}" + (f" {nbytes / nnz:5.2f}" if weight_sparsity else "")
                + f" {base_t / med:7.2f}x")
        if best32:
            r = spread(samples[best32] / samples[k])
            line += f" {r[0]:9.2f}x ({r[1]:5.2f}-{r[2]:<5.2f})"
        print(line)
    for recipe in (W4, MX4, IBM4_MID) if best32 else ():
        mine = [k for k in res if k.startswith(f"ours {recipe.name} [") and "[torch]" not in k]
        if not mine:
            continue
        best4 = min(mine, key=lambda k: res[k][0])
        r = spread(samples[best32] / samples[best4])
        rt = spread(samples["PyTorch FP32"] / samples[best4])
        print(f"-> {best4} vs {best32}: {r[0]:.2f}x (per-round p10-p90 {r[1]:.2f}-{r[2]:.2f}); weight bytes per "
              f"nonzero {cands[best4][1] / nnz:.2f} vs {cands[best32][1] / nnz:.2f}; vs PyTorch FP32 {rt[0]:.1f}x "
              f"(per-round p10-p90 {rt[1]:.1f}-{rt[2]:.1f})")

CASES = {"dense": ("dense", 0.0, 0.0), "sparse": ("sparse weights", 0.9, 0.0),
         "sparse-inputs": ("sparse weights and inputs", 0.9, 0.9)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--quick", action="store_true", help="PyTorch baselines only (no ONNX Runtime / OpenVINO)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="which cases to run")
    p.add_argument("--reference", action="store_true", help="also time our steps' slow 'torch' reference variants")
    p.add_argument("--only", nargs="+", help="time only candidates whose name contains one of these (and PyTorch FP32)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    logging.disable(logging.WARNING)            # ORT's and nncf's progress chatter
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"CPU: {cpu_info()}; {args.threads} threads (torch, numba, ORT, OpenVINO); "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            for case in args.cases:
                run_case(*CASES[case], batch, args.n, args, tmp)


if __name__ == "__main__":
    main()
