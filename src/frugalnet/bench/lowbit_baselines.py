"""Low-bit weight runners from the other runtimes, for `frugalnet bench`'s low-bit cases (issue 19) and for the
low-bit helper's own benchmarks: PyTorch dynamic INT8, ONNX Runtime dynamic INT8 and 4-bit MatMulNBits, OpenVINO
INT8/INT4 weight compression (through NNCF). Each takes an FP32 nn.Module and its example inputs and returns a
`Runner` (see baselines.py) whose `info["weight_bytes"]` is the bytes of weights the runtime holds; a runtime that
is missing or fails gives a Runner with fn None and the reason.

Outputs of quantized weights differ from FP32 by the quantization error, so these runners are checked by relative
L2 error (`max_rel_error`), not elementwise.
"""
from __future__ import annotations

import contextlib
import copy
import logging

import numpy as np
import torch
from torch import nn

from frugalnet.bench.baselines import (Runner, _reason, onnx_export, openvino_runner_from_compiled,
                                       ort_runner_from_bytes)
from frugalnet.nn.sparse import SparseWeightMixin

INT8_MAX_REL_ERROR = 0.02
INT4_MAX_REL_ERROR = 0.2


@contextlib.contextmanager
def _quiet_quantizers():
    """Hide the quantizers' INFO/WARNING chatter (NNCF's bit-width tables, ORT's pre-processing hint)."""
    logging.disable(logging.WARNING)
    try:
        try:
            import nncf

            nncf.set_log_level(logging.ERROR)
        except Exception:
            pass
        yield
    finally:
        logging.disable(logging.NOTSET)


def plain_linears(model: nn.Module) -> nn.Module:
    """A copy in which every SparseLinear is a plain nn.Linear with the same (masked) weights, so tools that match
    exact module types (torch's quantize_dynamic) see it."""
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, SparseWeightMixin) and isinstance(m, nn.Linear):
            new = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            with torch.no_grad():
                new.weight.copy_(m.weight)
                if m.bias is not None:
                    new.bias.copy_(m.bias)
            parent_name, _, attr = name.rpartition(".")
            setattr(out.get_submodule(parent_name) if parent_name else out, attr, new)
    return out.eval()


def torch_dynamic_int8(model: nn.Module, inputs: tuple) -> Runner:
    """torch.ao.quantization.quantize_dynamic: Linear weights INT8 per tensor, activations quantized per call."""
    try:
        from torch.ao.quantization import quantize_dynamic

        q = quantize_dynamic(plain_linears(model), {nn.Linear}, dtype=torch.qint8)
        with torch.no_grad():
            q(*inputs)
    except Exception as exc:
        return Runner(None, f"quantize_dynamic failed: {_reason(exc)}")
    nbytes = 0
    for m in q.modules():
        if hasattr(m, "_packed_params") and hasattr(m, "weight"):
            w = m.weight()
            nbytes += w.numel() + (4 * w.shape[0] if w.qscheme() == torch.per_channel_affine else 8)
        elif isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm)):
            nbytes += sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))

    def fn(*xs):
        with torch.no_grad():
            return q(*xs)

    return Runner(fn, f"torch.ao quantize_dynamic qint8 (engine {torch.backends.quantized.engine})", "int8", 1e-4,
                  max_rel_error=INT8_MAX_REL_ERROR, info={"weight_bytes": nbytes})


def gemm_to_matmul(proto) -> int:
    """Rewrite each Gemm(A, B const, C) with alpha = beta = 1, transA = 0 into MatMul(A, B') + C in place (the
    weight-only quantizers only take MatMul); returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    count = 0
    for idx in range(len(graph.node) - 1, -1, -1):
        node = graph.node[idx]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0) or \
                attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = np.ascontiguousarray(w.T)
        wname = node.input[1] + "_kn"
        graph.initializer.append(numpy_helper.from_array(w, wname))
        out = node.output[0]
        new = [helper.make_node("MatMul", [node.input[0], wname], [out + "_mm" if len(node.input) > 2 else out],
                                name=(node.name or f"gemm{idx}") + "_matmul")]
        if len(node.input) > 2 and node.input[2]:
            new.append(helper.make_node("Add", [out + "_mm", node.input[2]], [out], name=(node.name or "") + "_add"))
        else:
            new[0].output[0] = out
        del graph.node[idx]
        for j, n in enumerate(new):
            graph.node.insert(idx + j, n)
        count += 1
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return count


def _initializer_bytes(proto) -> int:
    from onnx import numpy_helper

    return int(sum(numpy_helper.to_array(t).nbytes for t in proto.graph.initializer))


def _exported_proto(model: nn.Module, inputs: tuple):
    import onnx

    data, note = onnx_export(model, inputs)
    if data is None:
        return None, note
    proto = onnx.load_from_string(data)
    n = gemm_to_matmul(proto)
    return proto, note + (f"; {n} Gemm as MatMul" if n else "")


def ort_int8(model: nn.Module, inputs: tuple, threads: int = 2) -> Runner:
    """ONNX Runtime dynamic quantization: MatMul weights INT8 (per tensor), activations quantized per call."""
    try:
        import tempfile

        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        proto, note = _exported_proto(model, inputs)
        if proto is None:
            return Runner(None, note)
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = f"{tmp}/fp32.onnx", f"{tmp}/int8.onnx"
            onnx.save(proto, src)
            with _quiet_quantizers():
                quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
            q = onnx.load(dst)
    except ImportError:
        return Runner(None, "onnxruntime/onnx not installed (pip install frugalnet[bench])")
    except Exception as exc:
        return Runner(None, f"ORT INT8 quantization failed: {_reason(exc)}")
    r = ort_runner_from_bytes(q.SerializeToString(), threads, note + "; ORT quantize_dynamic QInt8", "int8")
    r.max_rel_error, r.info = INT8_MAX_REL_ERROR, {"weight_bytes": _initializer_bytes(q)}
    return r


def ort_int4(model: nn.Module, inputs: tuple, threads: int = 2, block_size: int = 32,
             accuracy_level: int | None = None) -> Runner:
    """ONNX Runtime MatMulNBits: MatMul weights 4-bit symmetric in blocks of `block_size` along K. accuracy_level
    None computes in fp32 from the 4-bit weights; 4 quantizes activations to int8 too (ORT's fastest CPU path)."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        proto, note = _exported_proto(model, inputs)
        if proto is None:
            return Runner(None, note)
        quant = MatMulNBitsQuantizer(proto, bits=4, block_size=block_size, is_symmetric=True,
                                     accuracy_level=accuracy_level)
        with _quiet_quantizers():
            quant.process()
        q = quant.model.model
    except ImportError:
        return Runner(None, "onnxruntime/onnx not installed (pip install frugalnet[bench])")
    except Exception as exc:
        return Runner(None, f"ORT 4-bit quantization failed: {_reason(exc)}")
    how = f"MatMulNBits 4-bit sym, block {block_size}, accuracy_level {accuracy_level or 0}" + \
        (" (int8 activations)" if accuracy_level == 4 else " (fp32 compute)")
    r = ort_runner_from_bytes(q.SerializeToString(), threads, note + "; " + how,
                              "int4" if accuracy_level != 4 else "int4/a8")
    r.max_rel_error, r.info = INT4_MAX_REL_ERROR, {"weight_bytes": _initializer_bytes(q)}
    return r


def openvino_compressed(model: nn.Module, inputs: tuple, threads: int = 2, mode: str = "int8",
                        group_size: int = 32) -> Runner:
    """OpenVINO with weights compressed by NNCF (`mode` "int8": INT8 symmetric per channel; "int4": INT4 symmetric in
    groups of `group_size`, every layer, none kept at 8 bits), inference precision f32."""
    if mode not in ("int8", "int4"):
        raise ValueError(f"mode must be 'int8' or 'int4', got {mode!r}")
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        return Runner(None, f"{exc.name} not installed (pip install openvino nncf)")
    import os
    import tempfile

    proto, note = _exported_proto(model, inputs)
    if proto is None:
        return Runner(None, note)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(proto.SerializeToString())
            ov_model = ov.Core().read_model(path)
            with _quiet_quantizers():
                if mode == "int8":
                    ov_model = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_SYM)
                else:
                    ov_model = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT4_SYM, ratio=1.0,
                                                     group_size=group_size, all_layers=True)
            nbytes = int(sum(op.get_byte_size() for op in ov_model.get_ops() if op.get_type_name() == "Constant"))
            compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": str(threads),
                                                                 "PERFORMANCE_HINT": "LATENCY",
                                                                 "INFERENCE_PRECISION_HINT": "f32"})
    except Exception as exc:
        return Runner(None, f"OpenVINO {mode} compression failed: {_reason(exc)}")
    how = "INT8 sym per channel" if mode == "int8" else f"INT4 sym, group {group_size}, all layers"
    r = openvino_runner_from_compiled(compiled, f"{note}; NNCF compress_weights {how}; OpenVINO {threads} threads, "
                                                f"f32 compute", mode, 1e-4)
    r.max_rel_error = INT8_MAX_REL_ERROR if mode == "int8" else INT4_MAX_REL_ERROR
    r.info = {"weight_bytes": nbytes}
    return r


def lowbit_runtimes(model: nn.Module, inputs: tuple, threads: int = 2) -> dict[str, Runner]:
    """Every low-bit baseline on the same FP32 model: name -> Runner."""
    return {"torch_int8_dynamic": torch_dynamic_int8(model, inputs),
            "ort_int8": ort_int8(model, inputs, threads),
            "ort_int4": ort_int4(model, inputs, threads),
            "ort_int4_a8": ort_int4(model, inputs, threads, accuracy_level=4),
            "openvino_int8": openvino_compressed(model, inputs, threads, "int8"),
            "openvino_int4": openvino_compressed(model, inputs, threads, "int4")}
