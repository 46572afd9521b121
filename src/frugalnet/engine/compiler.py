"""engine.compile(model, example_input) -> Engine: a callable that runs a trained (sparse) model with the kernels.

For every layer, and for each batch size it is compiled for, the compiler runs each implementation on the layer's
real input (so the measured weight and activation sparsity decide), checks it against the PyTorch implementation
of the same layer, times all of them interleaved and keeps the fastest; PyTorch's own dense kernel is always one
of the candidates, so a layer never runs slower than dense. Running every candidate also JIT-compiles the numba
kernels (cached on disk across runs).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frugalnet.engine import steps as S
from frugalnet.engine.act import Act
from frugalnet.engine.jit_warm import WarmTask, warm
from frugalnet.engine.lower import lower
from frugalnet.engine.timing import interleaved_medians
from frugalnet.kernels import set_threads
from frugalnet.utils.progress import progress

FORMAT_VERSION = 2   # 2: conv + max pool fused into one step; Linear variant dense_batched removed


@dataclass
class LayerChoice:
    """What the compiler measured and chose for one layer at one batch size."""
    name: str
    kind: str
    variant: str
    seconds: dict[str, float] = field(default_factory=dict)
    input_density: float = 1.0
    dense_macs: float = 0.0
    effective_macs: float = 0.0
    weight_bytes: int = 0
    rejected: list[str] = field(default_factory=list)  # variants whose output did not match PyTorch's (a bug)


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(np.abs(b).max(initial=0.0))
    return bool(np.allclose(a, b, rtol=rtol, atol=1e-5 * max(1.0, scale)))


def resize_batch(x: torch.Tensor, batch: int) -> torch.Tensor:
    """The first `batch` samples of x, tiled if x has fewer."""
    reps = math.ceil(batch / x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch].contiguous()


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.float32 and x.is_cpu and not x.requires_grad and x.is_contiguous():
            return x.numpy()    # the common call, without the ~4 us of detach/cpu/float/asarray
        x = x.detach().cpu().float()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


class Engine:
    """A compiled model: call it on a (batch, *input_shape) tensor; returns a float32 tensor equal (to float
    rounding) to model.eval()(x). Plans exist per compiled batch size; other sizes use the nearest plan."""

    def __init__(self, steps: list[S.Step], plans: dict[int, list[str]], input_shape: tuple[int, ...],
                 threads: int, choices: dict[int, list[LayerChoice]] | None = None) -> None:
        self.steps = steps
        self.plans = {int(k): list(v) for k, v in plans.items()}
        self.input_shape = tuple(int(s) for s in input_shape)
        self.threads = int(threads)
        self.choices = choices or {}
        self._bound: dict[tuple[int, int], list] = {}  # (plan, batch) -> bound step callables
        self._by_batch: dict[tuple[int, ...], list] = {}  # input shape -> bound steps of its default plan

    def plan_for(self, batch: int) -> list[str]:
        best = min(self.plans, key=lambda b: (abs(math.log(max(batch, 1) / b)), b))
        return self.plans[best]

    def run_numpy(self, x: np.ndarray, plan: list[str] | None = None) -> np.ndarray:
        if plan is None:   # the common call: steps already bound for this batch size
            bound = self._by_batch.get(x.shape)
            if bound is not None:
                act = Act(x.shape, dense=x)
                for f in bound:
                    act = f(act)
                return act.dense()
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"engine expects input of shape (batch, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")
        default = plan is None
        plan = plan or self.plan_for(x.shape[0])
        key = (id(plan), x.shape[0])
        bound = self._bound.get(key)
        if bound is None:
            bound, shape = [], tuple(x.shape)
            for step, variant in zip(self.steps, plan):
                bound.append(step.bind(variant, shape))
                shape = step.out_shape(shape)
            self._bound[key] = bound
        if default:
            self._by_batch[tuple(x.shape)] = bound
        act = Act(x.shape, dense=x)
        for f in bound:
            act = f(act)
        return act.dense()

    def __call__(self, x) -> torch.Tensor:
        return torch.from_numpy(self.run_numpy(_as_numpy(x)))

    def summary(self, batch: int | None = None) -> list[dict]:
        """Per-layer choices (and timings) for a compiled batch size, as JSON-able dicts."""
        b = batch if batch is not None else min(self.choices or self.plans)
        if b in self.choices:
            return [asdict(c) for c in self.choices[b]]
        return [{"name": s.name, "kind": s.kind, "variant": v} for s, v in zip(self.steps, self.plans[b])]

    def weight_bytes(self, batch: int | None = None) -> int:
        plan = self.plan_for(batch or min(self.plans))
        return int(sum(s.weight_bytes(v) for s, v in zip(self.steps, plan)))

    def __repr__(self) -> str:
        lines = [f"Engine(input_shape={self.input_shape}, batch plans={sorted(self.plans)})"]
        for b, plan in sorted(self.plans.items()):
            lines.append(f"  batch {b}: " + ", ".join(f"{s.name}={v}" for s, v in zip(self.steps, plan)))
        return "\n".join(lines)

    # ---- persistence: one .npz, no pickle; weights stored as their nonzeros -------------------------------------
    def save(self, path: str | Path) -> Path:
        from frugalnet.utils.io import atomic_replace

        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        spec_steps = []
        for i, s in enumerate(self.steps):
            names = []
            for name, a in s.arrays.items():
                flat = a.reshape(-1)
                nz = np.flatnonzero(flat)
                arrays[f"s{i}.{name}.idx"] = nz.astype(np.int32 if flat.size < 2**31 else np.int64)
                arrays[f"s{i}.{name}.val"] = flat[nz]
                names.append([name, list(a.shape), str(a.dtype)])
            spec_steps.append({"kind": s.kind, "name": s.name, "params": s.params, "arrays": names})
        spec = {"format": "frugalnet-engine", "version": FORMAT_VERSION, "input_shape": list(self.input_shape),
                "threads": self.threads, "plans": {str(k): v for k, v in self.plans.items()}, "steps": spec_steps,
                "choices": {str(k): [asdict(c) for c in v] for k, v in self.choices.items()}}
        arrays["spec"] = np.array(json.dumps(spec))
        atomic_replace(path, lambda h: np.savez(h, **arrays))
        return path

    @classmethod
    def load(cls, path: str | Path, warmup: bool = True) -> "Engine":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no engine file at {path}")
        with np.load(path, allow_pickle=False) as z:
            if "spec" not in z.files:
                raise ValueError(f"{path} is not a frugalnet engine file (no spec)")
            spec = json.loads(str(z["spec"]))
            if spec.get("format") != "frugalnet-engine" or spec.get("version") != FORMAT_VERSION:
                raise ValueError(f"{path}: unsupported engine format {spec.get('format')!r} "
                                 f"version {spec.get('version')!r} (this frugalnet writes version {FORMAT_VERSION}); "
                                 f"compile the model again with frugalnet.engine.compile and save that")
            steps = []
            for i, st in enumerate(spec["steps"]):
                arrays = {}
                for name, shape, dtype in st["arrays"]:
                    flat = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=dtype)
                    flat[z[f"s{i}.{name}.idx"]] = z[f"s{i}.{name}.val"]
                    arrays[name] = flat.reshape(shape)
                if st["kind"] not in S.STEP_TYPES:
                    raise ValueError(f"{path}: unknown engine step kind {st['kind']!r}")
                steps.append(S.STEP_TYPES[st["kind"]](st["name"], st["params"], arrays))
        choices = {int(k): [LayerChoice(**c) for c in v] for k, v in spec.get("choices", {}).items()}
        set_threads(spec["threads"])
        engine = cls(steps, {int(k): v for k, v in spec["plans"].items()}, tuple(spec["input_shape"]),
                     spec["threads"], choices)
        if warmup:
            engine.warmup()
        return engine

    def warmup(self) -> None:
        """Run every plan once on zeros (loads the JIT-compiled kernels from the on-disk cache)."""
        for b, plan in self.plans.items():
            self.run_numpy(np.zeros((b, *self.input_shape), np.float32), plan)


def _warm_tasks(steps: list[S.Step], example_input: torch.Tensor, batch_sizes: tuple[int, ...]) -> list[WarmTask]:
    """Every numba candidate the compiler will try, once per (step kind, variant): kernels do not depend on the
    layer's sizes, so one layer of a kind compiles them for all. Inputs come from the PyTorch reference chain."""
    tasks, seen = [], set()
    for bs in batch_sizes:
        x = _as_numpy(resize_batch(example_input, bs))
        act = Act(x.shape, dense=x)
        for step in steps:
            for v in step.variants(act):
                if v != "torch" and (step.kind, v) not in seen:
                    seen.add((step.kind, v))
                    tasks.append(WarmTask(step, v, act.dense()))
            act = step.run(act, "torch")
    return tasks


def compile(model: nn.Module, example_input: torch.Tensor, batch_sizes: tuple[int, ...] | None = None,
            threads: int | None = None, repeats: int = 5, max_seconds_per_layer: float = 10.0,
            quiet: bool = True, jit_workers: int | None = None) -> Engine:
    """Compile `model` for inputs shaped like `example_input` (batch, ...).

    batch_sizes: batch sizes to plan for (default: the example's); each plan times the candidates on the example
        samples tiled/truncated to that size, so give an example with representative data (activation sparsity).
    threads: numba threads (default: torch.get_num_threads()).
    jit_workers: helper processes that JIT-compile candidate kernels alongside this one on first use (default: one
        per spare core, at most 3; 0: compile here only). See frugalnet.engine.jit_warm.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"engine.compile expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise ValueError("example_input must be a tensor of shape (batch, ...), got "
                         f"{getattr(example_input, 'shape', type(example_input).__name__)}")
    batch_sizes = tuple(batch_sizes or (example_input.shape[0],))
    if any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes}")
    threads = set_threads(threads if threads is not None else torch.get_num_threads())
    pairs = lower(model)
    steps = [s for s, _ in pairs]
    was_training = model.training
    model.eval()
    plans: dict[int, list[str]] = {}
    choices: dict[int, list[LayerChoice]] = {}
    try:
        warm(_warm_tasks(steps, example_input, batch_sizes), jit_workers, quiet=quiet)
        for bs in batch_sizes:
            x = _as_numpy(resize_batch(example_input, bs))
            act = Act(x.shape, dense=x)
            plan, chosen = [], []
            for step in (steps if quiet else progress(steps, desc=f"compile b={bs}")):
                variants = step.variants(act)
                ref = step.run(act.fresh(), "torch")
                outs, rejected = {"torch": ref}, []
                for v in variants:
                    if v != "torch":
                        out = step.run(act.fresh(), v)
                        if _close(out.dense(), ref.dense()):
                            outs[v] = out
                        else:
                            rejected.append(v)
                if len(outs) > 1:
                    # time the bound callables inference will run (run() would redo bind's set-up every call)
                    bound = {v: step.bind(v, act.shape) for v in outs}
                    fns = {v: (lambda f=f: f(act.fresh())) for v, f in bound.items()}
                    secs = interleaved_medians(fns, repeats=repeats, min_time=0.002,
                                               max_seconds=max_seconds_per_layer)
                    best = min(secs, key=secs.get)
                else:
                    secs, best = {}, "torch"
                dense_macs, eff_macs = step.macs(act)
                chosen.append(LayerChoice(step.name, step.kind, best, secs, act.density(), dense_macs, eff_macs,
                                          step.weight_bytes(best), rejected))
                plan.append(best)
                act = outs[best]
            plans[bs] = plan
            choices[bs] = chosen
    finally:
        model.train(was_training)
    for s in steps:  # keep only the layouts the chosen variants use (rebuilt lazily on first call)
        s._cache.clear()
    engine = Engine(steps, plans, tuple(example_input.shape[1:]), threads, choices)
    engine.warmup()
    return engine
