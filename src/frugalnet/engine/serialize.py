"""Engine files: one .npz (no pickle) holding a JSON spec, the steps' weights as their nonzeros, the program's
constant tensors and a SHA-256 checksum over all of it.

Load order: the archive is opened without pickle; a file that is not a zip of arrays, or lacks our spec, is "not a
frugalnet engine file"; the checksum is verified; the spec is validated against its arrays (engine/validate.py)
before any step is built; finally every plan is run once on a seeded input and compared with the all-PyTorch plan
of the same program, so a crafted plan that names the wrong kernel cannot give silently different outputs.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from frugalnet.engine import steps as S
from frugalnet.engine import validate as V
from frugalnet.engine.program import DTYPES, Node, Program
from frugalnet.utils.checksum import arrays_digest

FORMAT = "frugalnet-engine"
FORMAT_VERSION = 3   # 3: a program of steps and aten ops captured by torch.export; checksum


_digest = arrays_digest   # the file's checksum (utils.checksum)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise ValueError("engine.save: bfloat16 constants cannot be stored in .npz; compile the model in float32")
    return t.detach().cpu().contiguous().numpy()


def save_engine(engine, path: str | Path) -> Path:
    from frugalnet.engine.compiler import Engine  # noqa: F401
    from frugalnet.utils.io import atomic_replace

    path = Path(path)
    prog: Program = engine.program
    if prog.modules:
        raise ValueError(f"engine.save: layers {sorted(prog.modules)} run through their own (quantized) forward, "
                         f"which an engine file cannot hold without pickle; save the model itself "
                         f"(frugalnet.lowbit packing) and compile it after loading")
    arrays: dict[str, np.ndarray] = {}
    spec_steps = []
    for i, s in enumerate(engine.steps):
        names = []
        for name, a in s.arrays.items():
            flat = a.reshape(-1)
            nz = np.flatnonzero(flat)
            arrays[f"s{i}.{name}.idx"] = nz.astype(np.int32 if flat.size < 2**31 else np.int64)
            arrays[f"s{i}.{name}.val"] = flat[nz]
            names.append([name, list(a.shape), str(a.dtype)])
        spec_steps.append({"kind": s.kind, "name": s.name, "params": s.params, "arrays": names})
    consts = []
    for name, t in prog.consts.items():
        arrays[f"c.{name}"] = _to_numpy(t)
        consts.append(name)
    try:
        out_spec = torch.utils._pytree.treespec_dumps(prog.out_spec) if prog.out_spec is not None else None
    except Exception:   # an output type pytree cannot serialise: outputs come back as a flat tuple
        out_spec = None
    spec = {"format": FORMAT, "version": FORMAT_VERSION, "input_shapes": [list(s) for s in engine.input_shapes],
            "input_dtypes": [str(d).removeprefix("torch.") for d in prog.input_dtypes],
            "dynamic_batch": engine.dynamic_batch, "batch_dims": engine.batch_dims, "threads": engine.threads,
            "plans": {str(k): v for k, v in engine.plans.items()}, "steps": spec_steps,
            "run_threads": {str(k): list(v) for k, v in engine.run_threads.items()},
            "program": {"n_inputs": prog.n_inputs, "nodes": [n.to_json() for n in prog.nodes],
                        "outputs": prog.outputs, "consts": consts, "out_spec": out_spec},
            "choices": {str(k): [asdict(c) for c in v] for k, v in engine.choices.items()}}
    arrays["spec"] = np.array(json.dumps(spec))
    arrays["checksum"] = np.array(_digest(arrays))
    atomic_replace(path, lambda h: np.savez(h, **arrays))
    return path


def _read(path: Path) -> dict[str, np.ndarray]:
    not_engine = f"{path} is not a frugalnet engine file"
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{not_engine} (a single array, not an engine archive)")
        with z:
            files = z.files
            if "spec" not in files or "checksum" not in files:
                raise ValueError(f"{not_engine} (no spec/checksum)")
            return {k: z[k] for k in files}
    except ValueError as e:
        if str(e).startswith(not_engine):
            raise
        # (numpy's own message suggests allow_pickle=True: exactly what a file of unknown origin must not get)
        raise ValueError(f"{not_engine} (it holds Python objects or is not an .npz archive)") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError) as e:
        raise ValueError(f"{not_engine} (unreadable: {type(e).__name__})") from None


def load_engine(path: str | Path, warmup: bool = True):
    from frugalnet.engine.compiler import Engine, LayerChoice
    from frugalnet.kernels import set_threads

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no engine file at {path}")
    z = _read(path)
    checksum = z.pop("checksum")
    if checksum.dtype.kind != "U" or checksum.shape != () or str(checksum) != _digest(z):
        raise ValueError(f"{path}: checksum mismatch: the engine file is corrupted or was edited; compile and "
                         f"save the model again")
    try:
        spec = json.loads(str(z["spec"]))
    except (ValueError, TypeError):
        raise ValueError(f"{path} is not a frugalnet engine file (spec is not JSON)") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise ValueError(f"{path} is not a frugalnet engine file")
    if spec.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported engine format version {spec.get('version')!r} (this frugalnet "
                         f"reads version {FORMAT_VERSION}); compile the model again and save that")
    try:
        return _build(path, spec, z, warmup, Engine, LayerChoice, set_threads)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: malformed engine spec ({type(e).__name__}: {e})") from None


def _build(path, spec, z, warmup, Engine, LayerChoice, set_threads):
    steps = []
    for i, st in enumerate(spec["steps"]):
        arrays = {}
        for name, shape, dtype in st["arrays"]:
            where = f"step {i} array {name!r}"
            shape = V.check_shape(where, shape, dtype)
            idx, val = z[f"s{i}.{name}.idx"], z[f"s{i}.{name}.val"]
            size = int(np.prod(shape, dtype=np.int64))
            V.check_nonzeros(where, idx, val, size, dtype)
            flat = np.zeros(size, dtype=dtype)
            flat[idx] = val
            arrays[name] = flat.reshape(shape)
        V.check_step(i, st["kind"], st["name"], st["params"], arrays)
        steps.append(S.STEP_TYPES[st["kind"]](str(st["name"]), st["params"], arrays))
    p = spec["program"]
    consts = {}
    for name in p["consts"]:
        a = z[f"c.{name}"]
        if a.dtype.name not in DTYPES or a.dtype.kind not in "fiub":
            raise ValueError(f"{path}: constant {name!r} has dtype {a.dtype}")
        consts[name] = torch.from_numpy(np.array(a))
    V.check_program(p, len(steps), set(consts))
    nodes = [Node(n["op"], n["target"], n["args"], n["out"], str(n.get("name", "")), bool(n.get("rows", False)),
                  dict(n.get("kwargs", {}))) for n in p["nodes"]]
    out_spec = None
    if p.get("out_spec") is not None:
        try:
            out_spec = torch.utils._pytree.treespec_loads(p["out_spec"])
        except Exception:
            out_spec = None
        if out_spec is not None and out_spec.num_leaves != len(p["outputs"]):
            raise ValueError(f"{path}: output structure has {out_spec.num_leaves} leaves for "
                             f"{len(p['outputs'])} outputs")
    prog = Program(p["n_inputs"], nodes, p["outputs"], consts, {}, out_spec)
    shapes = [V.check_shape("input_shapes", s, "float32") for s in spec["input_shapes"]]
    dtypes = spec["input_dtypes"]
    if len(shapes) != prog.n_inputs or len(dtypes) != prog.n_inputs or any(d not in DTYPES for d in dtypes) \
            or any(len(s) < 1 for s in shapes):
        raise ValueError(f"{path}: input shapes/dtypes do not match the program's {prog.n_inputs} inputs")
    prog.input_dtypes = [DTYPES[d] for d in dtypes]
    plans = {}
    for k, v in spec["plans"].items():
        if not k.isdigit() or not 1 <= int(k) <= 1 << 20 or not isinstance(v, list) or len(v) != len(steps):
            raise ValueError(f"{path}: plan {k!r} does not list one variant per step")
        for i, (s, var) in enumerate(zip(steps, v)):
            V.check_variant(i, s.kind, s.params, var)
        plans[int(k)] = v
    if not plans:
        raise ValueError(f"{path}: no plans")
    threads = spec["threads"]
    if type(threads) is not int or threads < 1:
        raise ValueError(f"{path}: threads {threads!r}")
    choices = {int(k): [LayerChoice(**c) for c in v] for k, v in spec.get("choices", {}).items()}
    bdims = spec["batch_dims"]
    if not isinstance(bdims, list) or len(bdims) != len(shapes) or \
            not all(type(d) is int and -1 <= d < len(s) for d, s in zip(bdims, shapes)):
        raise ValueError(f"{path}: 'batch_dims' must give one dim (or -1) per input")
    engine = Engine(prog, steps, plans, shapes, set_threads(threads), choices, bool(spec["dynamic_batch"]), bdims)
    rt = spec.get("run_threads", {})
    if not isinstance(rt, dict) or not all(k.isdigit() and int(k) in plans and isinstance(v, list) and len(v) == 2
                                           and all(type(t) is int and 0 <= t <= 1024 for t in v)
                                           for k, v in rt.items()):
        raise ValueError(f"{path}: 'run_threads' must map compiled batch sizes to [PyTorch, numba] thread counts")
    engine.run_threads = {int(k): tuple(v) for k, v in rt.items()}
    _verify_plans(path, engine)
    if warmup:
        engine.warmup()
    return engine


def _verify_plans(path, engine) -> None:
    """Every plan against the all-PyTorch plan on one seeded input: equal to float rounding, or refused."""
    from frugalnet.engine.choice import _close

    reference = ["torch"] * len(engine.steps)
    for b, plan in engine.plans.items():
        # a k-WTA near-tie may flip between two correct kernels on one input: refuse only if 3 seeds all differ
        if not any(_plan_matches(path, engine, b, plan, reference, seed) for seed in range(3)):
            raise ValueError(f"{path}: plan for batch {b} does not reproduce the PyTorch plan's outputs "
                             f"(a kernel choice was edited); compile the model again")
    engine._bound.clear()


def _plan_matches(path, engine, b: int, plan: list[str], reference: list[str], seed: int) -> bool:
    from frugalnet.engine.choice import _close
    from frugalnet.engine.program import as_tensor

    g = torch.Generator().manual_seed(seed)
    flat = []
    for s, dt, bd in zip(engine.input_shapes, engine.program.input_dtypes, engine.batch_dims):
        shape = tuple(b if d == bd else n for d, n in enumerate(s))
        flat.append(torch.randn(shape, generator=g).to(dt) if dt.is_floating_point else torch.zeros(shape, dtype=dt))
    try:
        with torch.no_grad():
            ref = engine.run(flat, reference)
            got = engine.run(flat, plan)
    except (ValueError, TypeError, IndexError, RuntimeError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(f"{path}: the engine does not run on its own input shapes ({type(e).__name__}: "
                         f"{msg})") from None
    for r, o in zip(ref, got):
        r, o = as_tensor(r), as_tensor(o)
        if isinstance(r, torch.Tensor) and r.is_floating_point() and not _close(o.numpy(), r.numpy()):
            return False
    return True
