"""Checks of a loaded engine's spec against its arrays, before any kernel sees them (numba does no bounds checks).

Every check raises ValueError naming the step and what is wrong. A step kind without a validator cannot be loaded.
"""
from __future__ import annotations

import math

import numpy as np

from frugalnet.engine.program import PY_OPS, aten_op

MAX_ELEMENTS = 1 << 31


def _fail(where: str, what: str) -> None:
    raise ValueError(f"engine file: {where}: {what}")


def _ints(where, name, v, n: int, low: int) -> list[int]:
    if not isinstance(v, list) or len(v) != n or not all(type(x) is int and x >= low for x in v):
        _fail(where, f"{name} must be {n} integers >= {low}, got {v!r}")
    return v


def _arr(where, arrays, name, ndim: int, dtype=np.float32) -> np.ndarray:
    a = arrays.get(name)
    if a is None or a.ndim != ndim or a.dtype != dtype:
        _fail(where, f"array {name!r} must be {ndim}-D {np.dtype(dtype).name}, got "
                     f"{None if a is None else (a.shape, a.dtype.name)}")
    return a


def _linear(where, p, a):
    w = _arr(where, a, "weight", 2)
    b = _arr(where, a, "bias", 1)
    if p.get("n_out") != w.shape[0] or p.get("n_in") != w.shape[1] or b.shape != (w.shape[0],):
        _fail(where, f"n_out={p.get('n_out')!r}, n_in={p.get('n_in')!r} do not match weight {w.shape} / bias "
                     f"{b.shape}")


def _conv(where, p, a):
    w = _arr(where, a, "weight", 4)
    b = _arr(where, a, "bias", 1)
    _ints(where, "stride", p.get("stride"), 2, 1)
    _ints(where, "dilation", p.get("dilation"), 2, 1)
    pad = _ints(where, "padding", p.get("padding"), 2, 0)
    g = p.get("groups")
    if type(g) is not int or g < 1 or w.shape[0] % g or b.shape != (w.shape[0],) or min(w.shape) < 1:
        _fail(where, f"groups={g!r} does not fit weight {w.shape} / bias {b.shape}")
    if max(pad) > 4096:
        _fail(where, f"padding {pad} out of range")
    if not isinstance(p.get("relu", False), bool):
        _fail(where, f"relu must be a boolean, got {p.get('relu')!r}")
    pool = p.get("pool", 1)
    if type(pool) is not int or not 1 <= pool <= 64:
        _fail(where, f"pool must be an integer in [1, 64], got {pool!r}")


def _kwinners(where, p, a):
    boost = _arr(where, a, "boost", 1)
    if not all(isinstance(p.get(k), bool) for k in ("two_d", "local")):
        _fail(where, "two_d and local must be booleans")
    po, f = p.get("percent_on"), p.get("k_inference_factor")
    if not isinstance(po, float) or not 0.0 < po < 1.0:
        _fail(where, f"percent_on must be in (0, 1), got {po!r}")
    if not isinstance(f, float) or not 1.0 <= f < 1e6:
        _fail(where, f"k_inference_factor must be >= 1, got {f!r}")
    if boost.size < 1 or not np.isfinite(boost).all() or (boost <= 0).any():
        _fail(where, "boost factors must be finite and positive")


def _pool(where, p, a):
    if p.get("mode") not in ("max", "avg"):
        _fail(where, f"mode must be 'max' or 'avg', got {p.get('mode')!r}")
    k = _ints(where, "kernel", p.get("kernel"), 2, 1)
    _ints(where, "stride", p.get("stride"), 2, 1)
    pad = _ints(where, "padding", p.get("padding"), 2, 0)
    if pad[0] * 2 > k[0] or pad[1] * 2 > k[1]:
        _fail(where, f"padding {pad} must be at most half the kernel {k}")
    if p["mode"] == "max":
        _ints(where, "dilation", p.get("dilation"), 2, 1)
    elif p.get("divisor_override") is not None and (type(p["divisor_override"]) is not int
                                                     or p["divisor_override"] < 1):
        _fail(where, f"divisor_override {p['divisor_override']!r} must be a positive integer")
    if not isinstance(p.get("ceil_mode"), bool) or not isinstance(p.get("numba_ok"), bool):
        _fail(where, "ceil_mode and numba_ok must be booleans")
    if p["numba_ok"] and (p["ceil_mode"] or p.get("dilation", [1, 1]) != [1, 1] or
                          (p["mode"] == "avg" and not (p.get("count_include_pad") is True
                                                       and p.get("divisor_override") is None))):
        _fail(where, "numba_ok is set for a pooling the numba kernel does not compute")


def _affine(where, p, a):
    s, t = _arr(where, a, "scale", 1), _arr(where, a, "shift", 1)
    if s.shape != t.shape:
        _fail(where, f"scale {s.shape} and shift {t.shape} differ")


def _complementary(where, p, a):
    d = a.get("dense")
    o = a.get("owner")
    b = _arr(where, a, "bias", 2)
    if d is None or o is None or d.dtype != np.float32 or d.shape != o.shape or d.ndim not in (2, 4):
        _fail(where, "dense and owner must be float32 / integer arrays of one 2-D or 4-D shape")
    if o.dtype.kind not in "iu" or o.size and (int(o.min()) < 0 or int(o.max()) >= b.shape[0]):
        _fail(where, f"owner entries must be integers in [0, {b.shape[0]})")
    if b.shape[1] != d.shape[0] or not isinstance(p.get("conv"), bool) or p["conv"] != (d.ndim == 4):
        _fail(where, f"bias {b.shape} does not fit dense {d.shape}")
    if p["conv"]:
        _ints(where, "stride", p.get("stride"), 2, 1)
        _ints(where, "dilation", p.get("dilation"), 2, 1)
        _ints(where, "padding", p.get("padding"), 2, 0)


def _none(where, p, a):
    if a:
        _fail(where, f"unexpected arrays {sorted(a)}")


def _lowbit(kind: str):
    def check(where: str, params: dict, arrays: dict[str, np.ndarray]) -> None:
        from frugalnet.engine.steps import STEP_TYPES

        try:
            STEP_TYPES[kind](str(where), params, arrays).check()
        except (KeyError, TypeError, AttributeError, IndexError) as e:
            _fail(where, f"malformed low-bit step ({type(e).__name__}: {e})")
        except ValueError as e:
            _fail(where, str(e))
    return check


VALIDATORS = {"linear": _linear, "lowbit_linear": _lowbit("lowbit_linear"), "lowbit_conv2d": _lowbit("lowbit_conv2d"), "conv2d": _conv, "kwinners": _kwinners, "pool": _pool, "affine": _affine,
              "complementary": _complementary, "relu": _none, "flatten": _none}
VARIANTS = {   # variant bases each step kind can run (a plan naming another is refused)
    "linear": {"torch", "mkl", "gemv", "csr_rows", "csr_rows_t", "csc_rows", "csc_batched", "csc_active", "dense_active"},
    "conv2d": {"torch", "onednn", "im2col", "im2col_csr", "torch_conv", "sparse_w", "rows_w", "direct", "active_dense", "active_sparse"},
    "kwinners": {"torch", "numba"}, "pool": {"torch", "numba"}, "complementary": {"torch", "packed"},
    "relu": {"torch"}, "flatten": {"torch"}, "affine": {"torch"},
    "lowbit_linear": {"torch", "gemv", "int", "vnni", "gemm", "csr", "csc", "win512", "win256", "gemv512", "colseg"},
    "lowbit_conv2d": {"torch", "gemv", "int", "vnni", "gemm", "csr", "csc", "win512", "win256", "gemv512"}}


def check_step(i: int, kind: str, name, params, arrays: dict[str, np.ndarray]) -> None:
    where = f"step {i} ({name!r}, {kind!r})"
    if kind not in VALIDATORS or not isinstance(params, dict):
        _fail(where, f"unknown step kind (known: {sorted(VALIDATORS)})")
    for k, a in arrays.items():
        if a.dtype.kind == "f" and a.dtype != np.float32:
            _fail(where, f"array {k!r} has dtype {a.dtype.name}, expected float32")
        if a.dtype.kind == "f" and a.size and not np.isfinite(a).all() and kind != "affine":
            _fail(where, f"array {k!r} holds Inf or NaN")
    VALIDATORS[kind](where, params, arrays)


def check_variant(i: int, kind: str, params: dict, variant) -> None:
    base, _, mode = str(variant).partition(":")
    if not isinstance(variant, str) or base not in VARIANTS[kind] or mode not in ("", "s", "p") \
            or (base != "torch") != (mode != ""):
        raise ValueError(f"engine file: step {i} ({kind}): unknown variant {variant!r}")
    if kind == "kwinners" and params.get("local") and base != "torch":
        raise ValueError(f"engine file: step {i}: local k-WTA runs only as 'torch', not {variant!r}")
    if kind == "pool" and base == "numba" and not params.get("numba_ok"):
        raise ValueError(f"engine file: step {i}: this pooling cannot run as {variant!r}")


def check_shape(where: str, shape, dtype: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape) or len(shape) > 8:
        _fail(where, f"bad shape {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        _fail(where, f"shape {shape} too large")
    if dtype not in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint32", "uint16", "uint8",
                     "bool"):
        _fail(where, f"dtype {dtype!r} not allowed")
    return tuple(shape)


def check_nonzeros(where: str, idx: np.ndarray, val: np.ndarray, size: int, dtype: str) -> None:
    if idx.ndim != 1 or val.ndim != 1 or idx.shape != val.shape or idx.dtype.kind != "i" or val.dtype != dtype:
        _fail(where, "nonzero index/value arrays do not match")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= size):
        _fail(where, f"nonzero index out of range [0, {size})")


def check_program(spec: dict, n_steps: int, consts: set[str]) -> None:
    """Every node names a known op, reads only slots defined before it, and writes a fresh slot."""
    n_in = spec.get("n_inputs")
    if type(n_in) is not int or not 1 <= n_in <= 64:
        _fail("program", f"n_inputs {n_in!r}")
    defined = set(range(n_in))

    def refs(a, where):
        if isinstance(a, dict):
            if "v" in a:
                if type(a["v"]) is not int or a["v"] not in defined or len(a) != 1:
                    _fail(where, f"reads undefined value {a!r}")
            elif "c" in a:
                if not isinstance(a["c"], str) or a["c"] not in consts or len(a) != 1:
                    _fail(where, f"unknown constant {a['c']!r}")
            elif not (len(a) == 1 and next(iter(a)) in ("dtype", "device", "layout", "memory_format")):
                _fail(where, f"bad argument {a!r}")
        elif isinstance(a, list):
            for x in a:
                refs(x, where)
        elif a is not None and not isinstance(a, (bool, int, float, str)):
            _fail(where, f"bad argument {a!r}")

    seen_steps = set()
    for j, n in enumerate(spec.get("nodes", [])):
        where = f"program node {j}"
        if not isinstance(n, dict) or not isinstance(n.get("args"), list):
            _fail(where, "malformed")
        refs(n["args"], where)
        kw = n.get("kwargs", {})
        if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw) or (kw and n.get("op") != "aten"):
            _fail(where, "bad keyword arguments")
        refs(list(kw.values()), where)
        op, t = n.get("op"), n.get("target")
        if op == "step":
            if type(t) is not int or not 0 <= t < n_steps or t in seen_steps or len(n["args"]) != 1 \
                    or not isinstance(n["args"][0], dict) or "v" not in n["args"][0]:
                _fail(where, f"bad step node {n!r}")
            seen_steps.add(t)
        elif op == "aten":
            aten_op(t)
        elif op == "py":
            if t not in PY_OPS:
                _fail(where, f"unknown operator {t!r}")
        elif op == "getitem":
            if len(n["args"]) != 2 or type(n["args"][1]) is not int or "v" not in (n["args"][0] or {}):
                _fail(where, "bad getitem")
        else:
            _fail(where, f"node op {op!r} cannot be loaded")
        out = n.get("out")
        if type(out) is not int or out in defined or out < 0 or out > 1 << 20:
            _fail(where, f"bad output slot {out!r}")
        defined.add(out)
    if len(seen_steps) != n_steps:
        _fail("program", "some steps are not used by any node")
    outs = spec.get("outputs")
    if not isinstance(outs, list) or not outs or not all(isinstance(o, dict) and ("v" in o or "c" in o)
                                                          for o in outs):
        _fail("program outputs", f"must be a non-empty list of values, got {outs!r}")
    refs(outs, "program outputs")
