"""Runners for the dense runtimes `frugalnet bench` compares against, on the very weights of the model given:
PyTorch eager, torch.compile (inductor), ONNX Runtime and OpenVINO (f32, and its default precision).

Each builder takes an nn.Module and its example inputs (a tuple of tensors) and returns a `Runner`: `fn(*inputs)`
gives the outputs (tensor(s) or arrays), or `fn` is None and `note` says why the runtime is unavailable (not
installed, export failed, ...). Builders never raise for a failing runtime: the bench reports the reason instead.
"""
from __future__ import annotations

import io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class Runner:
    """A runtime's callable on one model (None if unavailable), why/how, its arithmetic precision and how its
    outputs are checked against the reference: elementwise at `rtol`, or, when `max_rel_error` is set (quantized
    weights), by relative L2 error. `info` holds figures such as weight_bytes."""

    fn: Callable[..., Any] | None
    note: str = ""
    precision: str = "fp32"
    rtol: float = 1e-4
    max_rel_error: float | None = None
    info: dict = field(default_factory=dict)


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:160]}"


def torch_eager(model: nn.Module, inputs: tuple) -> Runner:
    """PyTorch eager, no autograd (the reference every other method is checked against)."""
    model.eval()

    def fn(*xs):
        with torch.no_grad():
            return model(*xs)

    return Runner(fn, "PyTorch eager, torch.no_grad()")


def torch_compiled(model: nn.Module, inputs: tuple, mode: str | None = None) -> Runner:
    """torch.compile with the inductor backend; compiled and called once here, so a failure shows up as a note."""
    try:
        compiled = torch.compile(model.eval(), backend="inductor", mode=mode)
        with torch.no_grad():
            compiled(*inputs)
    except Exception as exc:  # e.g. no C++ compiler on the machine
        return Runner(None, f"torch.compile failed: {_reason(exc)}")

    def fn(*xs):
        with torch.no_grad():
            return compiled(*xs)

    return Runner(fn, f"torch.compile(backend='inductor'{f', mode={mode!r}' if mode else ''})")


def onnx_export(model: nn.Module, inputs: tuple) -> tuple[bytes | None, str]:
    """(ONNX bytes, note) for `model` on `inputs` (static shapes), trying the TorchScript exporter, then dynamo;
    (None, reasons) if both fail."""
    from frugalnet.bench.export_friendly import export_friendly

    errors = []
    names = [f"input{i}" for i in range(len(inputs))]
    model, swapped = export_friendly(model, inputs)
    how = f"; {swapped} k-WTA modules exported as TopK" if swapped else ""
    for dynamo in (False, True):
        try:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model.eval(), tuple(inputs), buf, input_names=names, dynamo=dynamo)
            return buf.getvalue(), f"exported with dynamo={dynamo}{how}"
        except Exception as exc:
            errors.append(f"dynamo={dynamo}: {_reason(exc)}")
    return None, "ONNX export failed: " + "; ".join(errors)


def _numpy_inputs(xs) -> list:
    return [x.detach().numpy() if isinstance(x, torch.Tensor) else x for x in xs]


def ort_session(onnx_bytes: bytes, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads and spinning off.

    Spinning off: busy-waiting ORT threads slowed the methods timed after them on the same cores (PyTorch dense
    CNN-2 at batch 1: 0.70 ms beside the engine alone, 0.85 ms with a spinning ORT beside it)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])


def ort_runner_from_bytes(onnx_bytes: bytes, threads: int, note: str = "", precision: str = "fp32",
                          rtol: float = 1e-4) -> Runner:
    try:
        sess = ort_session(onnx_bytes, threads)
    except Exception as exc:
        return Runner(None, f"ONNX Runtime session failed: {_reason(exc)}")
    names = [i.name for i in sess.get_inputs()]

    def fn(*xs):
        return sess.run(None, dict(zip(names, _numpy_inputs(xs))))

    return Runner(fn, (note + "; " if note else "") + f"ORT {threads} threads, intra-op spinning off", precision,
                  rtol)


def onnxruntime(model: nn.Module, inputs: tuple, threads: int = 2, onnx_bytes: bytes | None = None,
                export_note: str = "") -> Runner:
    """ONNX Runtime (CPU, default graph optimisations) on the model exported by torch.onnx.export."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return Runner(None, "onnxruntime not installed (pip install frugalnet[bench])")
    if onnx_bytes is None:
        onnx_bytes, export_note = onnx_export(model, inputs)
        if onnx_bytes is None:
            return Runner(None, export_note)
    return ort_runner_from_bytes(onnx_bytes, threads, export_note)


def openvino_compiled(onnx_bytes: bytes, threads: int, config: dict[str, str]):
    """An OpenVINO CPU CompiledModel of an ONNX model with `threads` inference threads, latency hint, `config`."""
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with open(path, "wb") as f:
            f.write(onnx_bytes)
        ov_model = core.read_model(path)
        cfg = {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY", **config}
        return core.compile_model(ov_model, "CPU", cfg)


def _precision_label(ov_type) -> str:
    """'fp32', 'bf16', 'fp16' from an OpenVINO element type (its str is e.g. "<Type: 'bfloat16'>")."""
    text = str(ov_type).lower()
    for key, label in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float16", "fp16"), ("f16", "fp16"),
                       ("float32", "fp32"), ("f32", "fp32")):
        if key in text:
            return label
    return text


def openvino_runner_from_compiled(compiled, note: str, precision: str, rtol: float) -> Runner:
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)

    def fn(*xs):
        res = request.infer(_numpy_inputs(xs))
        return [res[o] for o in outputs]

    return Runner(fn, note, precision, rtol)


def openvino(model: nn.Module, inputs: tuple, threads: int = 2, precision: str | None = "f32",
             onnx_bytes: bytes | None = None) -> Runner:
    """OpenVINO on CPU from the ONNX export. precision "f32" forces exact float32 arithmetic; None keeps the
    plugin's default (bf16 on CPUs with AMX/AVX-512 BF16), labelled as such and checked at a loose tolerance."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return Runner(None, "openvino not installed (pip install openvino)")
    if onnx_bytes is None:
        onnx_bytes, note = onnx_export(model, inputs)
        if onnx_bytes is None:
            return Runner(None, note)
    try:
        config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
        compiled = openvino_compiled(onnx_bytes, threads, config)
        actual = _precision_label(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception as exc:
        return Runner(None, f"OpenVINO compile failed: {_reason(exc)}")
    label = actual
    rtol = 1e-4 if label == "fp32" else 5e-2
    note = f"OpenVINO {threads} threads, {'forced ' + precision if precision else 'default precision'} " \
           f"(runs as {actual})"
    return openvino_runner_from_compiled(compiled, note, label, rtol)


def dense_runtimes(model: nn.Module, inputs: tuple, threads: int = 2, compile_torch: bool = True) -> dict[str, Runner]:
    """Every dense runtime on the same model: name -> Runner (unavailable ones carry their reason)."""
    onnx_bytes, export_note = onnx_export(model, inputs)
    runners = {"torch_eager": torch_eager(model, inputs)}
    runners["torch_compile"] = torch_compiled(model, inputs) if compile_torch else \
        Runner(None, "skipped (--no-torch-compile)")
    if onnx_bytes is None:
        for name in ("onnxruntime", "openvino_f32", "openvino_default"):
            runners[name] = Runner(None, export_note)
        return runners
    runners["onnxruntime"] = onnxruntime(model, inputs, threads, onnx_bytes, export_note)
    runners["openvino_f32"] = openvino(model, inputs, threads, "f32", onnx_bytes)
    runners["openvino_default"] = openvino(model, inputs, threads, None, onnx_bytes)
    return runners
