"""engine.compile(model, example_inputs) -> Engine: any model torch.export can capture, run with frugalnet's kernels
where they pay and PyTorch's ops elsewhere.

capture (torch.export, frugalnet layers kept whole) -> lower (program of steps and fallback aten ops) -> choose: for
every step, and for each batch size it is compiled for, the compiler runs each implementation on the step's real
input (so the measured weight and activation sparsity decide), checks it against the PyTorch implementation of the
same step, times all of them interleaved and keeps the fastest; PyTorch's own kernel is always a candidate, so a
step never runs slower than dense PyTorch.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frugalnet.engine import steps as S
from frugalnet.engine.act import Act
from frugalnet.engine.capture import capture
from frugalnet.engine.choice import LayerChoice, _choose, step_bytes
from frugalnet.engine.jit_warm import WarmTask, warm
from frugalnet.engine.lower import lower
from frugalnet.engine.plans import refine_plans
from frugalnet.engine.program import Program, as_tensor
from frugalnet.engine.timing import cache_evictor, interleaved_fastest, last_level_cache_bytes
from frugalnet.kernels import set_threads, threads as kernel_threads
from frugalnet.utils.progress import progress_bar

BOUND_CACHE = 16    # input shapes whose bound callables an engine keeps (least recently used dropped first)


def resize_batch(x: torch.Tensor, batch: int, dim: int = 0) -> torch.Tensor:
    """The first `batch` samples of x (along `dim`), tiled if x has fewer."""
    reps = [1] * x.dim()
    reps[dim] = math.ceil(batch / x.shape[dim])
    return x.repeat(*reps).narrow(dim, 0, batch).contiguous()


def _inputs(example) -> tuple:
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _flat(args: tuple) -> list:
    return [a.detach() if isinstance(a, torch.Tensor) else a for a in torch.utils._pytree.tree_leaves(args)]


class Engine:
    """A compiled model: call it like the model (positional inputs); returns what model.eval()(*inputs) returns,
    equal to float rounding. Plans exist per compiled batch size; other sizes use the nearest plan."""

    def __init__(self, program: Program, steps: list[S.Step], plans: dict[int, list[str]],
                 input_shapes: list[tuple[int, ...]], threads: int,
                 choices: dict[int, list[LayerChoice]] | None = None, dynamic_batch: bool = True,
                 batch_dims: list[int] | None = None) -> None:
        self.program = program
        self.steps = steps
        self.plans = {int(k): list(v) for k, v in plans.items()}
        self.input_shapes = [tuple(int(d) for d in s) for s in input_shapes]
        self.threads = int(threads)
        self.choices = choices or {}
        # (PyTorch threads, numba threads) while running each plan (0: leave as is), chosen by timing the whole
        # plan: on a loaded machine a second thread that is not scheduled makes every small parallel op wait for it
        self.run_threads: dict[int, tuple[int, int]] = {}
        self.cold_cache = False     # whether compile timed the layers with emptied caches (see compile)
        # per batch size: which whole plan compile kept ("per-layer", "serial", "parallel", "dense", "runner-up") and
        # every candidate plan's fastest interleaved time (see _refine_plans)
        self.plan_source: dict[int, str] = {}
        self.plan_seconds: dict[int, dict[str, float]] = {}
        self.dynamic_batch = bool(dynamic_batch)
        self.batch_dims = [int(d) for d in batch_dims] if batch_dims is not None else \
            [0 if self.dynamic_batch else -1] + [-1] * (len(self.input_shapes) - 1)
        # input shapes -> (generated runner, PyTorch threads, numba threads, per-node callables), LRU of BOUND_CACHE
        self._bound: OrderedDict = OrderedDict()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the first input."""
        return self.input_shapes[0][1:]

    def plan_batch(self, batch: int) -> int:
        """The compiled batch size whose plan runs `batch` (the nearest, in ratio)."""
        return min(self.plans, key=lambda b: (abs(math.log(max(batch, 1) / b)), b))

    def plan_for(self, batch: int) -> list[str]:
        return self.plans[self.plan_batch(batch)]

    def _check(self, flat: list) -> None:
        if len(flat) != len(self.input_shapes):
            raise ValueError(f"engine expects {len(self.input_shapes)} input tensor(s), got {len(flat)}")
        for i, (x, shape) in enumerate(zip(flat, self.input_shapes)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"engine input {i} must be a tensor, got {type(x).__name__}")
            bd = self.batch_dims[i]
            want = ", ".join("batch" if d == bd else str(n) for d, n in enumerate(shape))
            if x.dim() != len(shape) or any(a != b for d, (a, b) in enumerate(zip(x.shape, shape)) if d != bd):
                if bd == -1 and not self.dynamic_batch and x.dim() == len(shape):
                    raise ValueError(f"engine input {i}: the model fixes its input shape to {shape} (torch.export "
                                     f"could not make the batch dynamic), got {tuple(x.shape)}")
                raise ValueError(f"engine expects input {i} of shape ({want}), got {tuple(x.shape)}")

    def run(self, flat: list, plan: list[str] | None = None) -> list:
        """Flat outputs for flat inputs, with the default plan for their batch size (or the given plan)."""
        key = tuple(tuple(x.shape) for x in flat) if plan is None else None
        entry = self._bound.get(key) if key is not None else None
        if entry is not None:
            self._bound.move_to_end(key)
            runner, t, n, _ = entry
            if not t and not n:
                return runner(flat)
            return _with_threads(t, n, runner, flat)
        self._check(flat)
        outs, fns = self.program.bind(self.steps, plan or self.plan_for(int(flat[0].shape[0])), flat)
        if key is not None:
            self._bound[key] = (self.program.runner(fns),
                                *self.run_threads.get(self.plan_batch(int(flat[0].shape[0])), (0, 0)), fns)
            while len(self._bound) > BOUND_CACHE:
                self._bound.popitem(last=False)
        return outs

    def __call__(self, *inputs):
        if all(type(x) is torch.Tensor for x in inputs):   # the common case, without pytree's walk (~10 us)
            flat = [x.detach() if x.requires_grad else x for x in inputs]
        else:
            flat = [x.detach() if isinstance(x, torch.Tensor) and x.requires_grad else x
                    for x in torch.utils._pytree.tree_leaves(inputs)]
        with torch.no_grad():
            outs = [as_tensor(o) for o in self.run(flat)]
        spec = self.program.out_spec
        if spec is not None and not (len(outs) == 1 and spec.is_leaf()):
            return torch.utils._pytree.tree_unflatten(outs, spec)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    def summary(self, batch: int | None = None) -> list[dict]:
        """Per-step choices (and timings) for a compiled batch size, as JSON-able dicts."""
        b = batch if batch is not None else min(self.choices or self.plans)
        if b in self.choices:
            return [asdict(c) for c in self.choices[b]]
        return [{"name": s.name, "kind": s.kind, "variant": v} for s, v in zip(self.steps, self.plan_for(b))]

    def profile(self, *inputs, rounds: int = 20):
        """Median ms per call of every program node on these inputs (engine.profile.NodeTime rows): which steps
        run our kernels, which a dense PyTorch/oneDNN path, which fallback aten ops. format_profile() prints them."""
        from frugalnet.engine.profile import profile
        return profile(self, *inputs, rounds=rounds)

    def fallback_ops(self) -> list[str]:
        """The ops PyTorch runs (aten fallbacks and quantized layers' own forwards), in program order."""
        return [n.target if n.op == "aten" else f"module:{n.target}" for n in self.program.nodes
                if n.op in ("aten", "module")]

    def weight_bytes(self, batch: int | None = None) -> int:
        plan = self.plan_for(batch or min(self.plans))
        return int(sum(s.weight_bytes(v) for s, v in zip(self.steps, plan)))

    def __repr__(self) -> str:
        lines = [f"Engine(inputs={self.input_shapes}, batch plans={sorted(self.plans)}, "
                 f"fallback ops={len(self.fallback_ops())})"]
        for b, plan in sorted(self.plans.items()):
            lines.append(f"  batch {b}: " + ", ".join(f"{s.name}={v}" for s, v in zip(self.steps, plan)))
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        from frugalnet.engine.serialize import save_engine
        return save_engine(self, path)

    @classmethod
    def load(cls, path: str | Path, warmup: bool = True) -> "Engine":
        from frugalnet.engine.serialize import load_engine
        return load_engine(path, warmup=warmup)

    def warmup(self) -> None:
        """Run every plan once on zeros (loads the JIT-compiled kernels from the on-disk cache)."""
        for b, plan in self.plans.items():
            flat = [torch.zeros(tuple(b if d == self.batch_dims[i] else n for d, n in enumerate(s)),
                                dtype=self.program.input_dtypes[i] if self.program.input_dtypes else torch.float32)
                    for i, s in enumerate(self.input_shapes)]
            with torch.no_grad():
                self.run(flat, plan)


def _examples(example_inputs: tuple, batch_sizes: tuple[int, ...], batch_dims: list[int] | None = None
              ) -> dict[int, list]:
    flat = _flat(example_inputs)
    batch_dims = batch_dims if batch_dims is not None else [0] + [-1] * (len(flat) - 1)
    return {bs: [resize_batch(x, bs, d) if d >= 0 else x for x, d in zip(flat, batch_dims)] for bs in batch_sizes}


def _warm_tasks(program: Program, steps: list[S.Step], examples: dict[int, list]) -> list[WarmTask]:
    """Every numba candidate the compiler will try, once per (step kind, variant): kernels do not depend on the
    layer's sizes, so one layer of a kind compiles them for all. Inputs come from the PyTorch reference chain."""
    tasks, seen = [], set()
    for flat in examples.values():
        def on_step(n, act):
            step = steps[n.target]
            for v in step.variants(act):
                if v != "torch" and not v.startswith(("onednn", "mkl")) and (step.kind, v) not in seen:
                    seen.add((step.kind, v))
                    tasks.append(WarmTask(step, v, act.dense()))
            return step.run(act, "torch")
        with torch.no_grad():
            program.walk(flat, on_step)
    return tasks


def compile(model: nn.Module, example_inputs, batch_sizes: tuple[int, ...] | None = None,
            threads: int | None = None, repeats: int = 7, max_seconds_per_layer: float = 10.0,
            quiet: bool = True, jit_workers: int | None = None, tie_margin: float = 0.1,
            cold_cache: bool | None = None) -> Engine:
    """Compile `model` for inputs like `example_inputs` (a tensor, or a tuple of the model's positional inputs,
    each (batch, ...)).

    batch_sizes: batch sizes to plan for (default: the example's); each plan times the candidates on the example
        samples tiled/truncated to that size, so give examples with representative data (activation sparsity).
    threads: numba threads (default: torch.get_num_threads()).
    jit_workers: helper processes that JIT-compile candidate kernels alongside this one on first use (default: one
        per spare core, at most 3; 0: compile here only). See frugalnet.engine.jit_warm.
    tie_margin: a sparse variant is kept over the fastest dense one (oneDNN / PyTorch) only when it is faster by
        more than this fraction (default 10%), which makes the plan the same from compile to compile.
    cold_cache: time each layer's candidates with the CPU caches emptied before every call (True), or warm
        (False). Default: cold when the model's weights are larger than the last-level cache, for then each layer's
        weights come from DRAM when the whole model runs, and a variant timed warm (dense PyTorch on weights
        sitting in L2/L3) would be chosen over a sparse one that reads a third of the bytes (a GPT decode step's
        768 x 768 projections: 0.05 ms warm, 0.23 ms with its weights in DRAM). Layers under 256 KB are timed warm.
    """
    if cold_cache is not None and not isinstance(cold_cache, bool):
        raise TypeError(f"cold_cache must be True, False or None (automatic), got {cold_cache!r}")
    if not 0.0 <= tie_margin < 10.0:
        raise ValueError(f"tie_margin must be in [0, 10), got {tie_margin!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"engine.compile expects a torch.nn.Module, got {type(model).__name__}")
    args = _inputs(example_inputs)
    tensors = [a for a in torch.utils._pytree.tree_leaves(args) if isinstance(a, torch.Tensor)]
    if not tensors or any(t.dim() < 1 for t in tensors):
        raise ValueError("example_inputs must be a tensor of shape (batch, ...) or a tuple of such tensors, got "
                         f"{getattr(example_inputs, 'shape', type(example_inputs).__name__)}")
    if len(tensors) == 1 and tensors[0].dim() < 2 and isinstance(example_inputs, torch.Tensor):
        raise ValueError(f"example_input must have a batch dimension: (batch, ...), got {tuple(tensors[0].shape)}")
    batch_sizes = tuple(batch_sizes or (int(tensors[0].shape[0]),))
    if any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got {batch_sizes}")
    threads = set_threads(threads if threads is not None else torch.get_num_threads())
    was_training = model.training
    model.eval()
    try:
        cap = capture(model, args)
        fixed = int(tensors[0].shape[0])
        if not cap.dynamic_batch and set(batch_sizes) != {fixed}:
            cap.release()
            raise ValueError(
                f"engine.compile: torch.export fixed the batch size of {type(model).__name__} to {fixed} (an example "
                f"batch of 1 is always specialised, and some models fix it themselves), so batch_sizes={batch_sizes} "
                f"cannot be planned: give example inputs with a batch of 2 or more, or compile one engine per batch "
                f"size with batch_sizes=({fixed},)")
        try:
            program, steps = lower(cap)
        finally:
            cap.release()
        program.out_spec = cap.program.call_spec.out_spec
        program.input_dtypes = [t.dtype for t in _flat(args)]
        examples = _examples(args, batch_sizes, cap.batch_dims)
        plans: dict[int, list[str]] = {}
        choices: dict[int, list[LayerChoice]] = {}
        chosen_at: dict[int, dict[int, LayerChoice]] = {}
        warm(_warm_tasks(program, steps, examples), jit_workers, quiet=quiet)
        if cold_cache is None:
            cold_cache = sum(step_bytes(s) for s in steps) > last_level_cache_bytes()
        evict = cache_evictor() if cold_cache else None
        bar = None if quiet else progress_bar(len(steps) * len(batch_sizes), desc="compile")
        for bs, flat in examples.items():
            chosen: dict[int, LayerChoice] = {}

            def on_step(n, act):
                out, c = _choose(steps[n.target], act, repeats, max_seconds_per_layer, tie_margin, evict)
                chosen[n.target] = c
                if bar is not None:
                    bar.update(1)
                return out
            with torch.no_grad():
                program.walk(flat, on_step)
            plans[bs] = [chosen[i].variant if i in chosen else "torch" for i in range(len(steps))]
            choices[bs] = [chosen[i] for i in sorted(chosen)]
            chosen_at[bs] = dict(chosen)
        if bar is not None:
            bar.close()
    finally:
        model.train(was_training)
    for s in steps:  # keep only the layouts the chosen variants use (rebuilt lazily on first call)
        s._cache.clear()
    engine = Engine(program, steps, plans, [tuple(x.shape) for x in _flat(args)], threads, choices,
                    cap.dynamic_batch, cap.batch_dims)
    engine.cold_cache = bool(cold_cache)
    engine.warmup()
    if refine_plans(engine, examples, chosen_at, repeats, tie_margin, evict):
        for s in steps:  # the other plans' layouts go again
            s._cache.clear()
        engine.warmup()
    _choose_run_threads(engine, examples, repeats)
    return engine


def _with_threads(t: int, n: int, fn, *args):
    """fn(*args) with t PyTorch threads and n numba threads (0: unchanged), restored after."""
    tb, nb = torch.get_num_threads(), kernel_threads()
    t = t if t and t != tb else 0      # switching costs several us per call: only when the count differs
    n = n if n and n != nb else 0
    if not t and not n:
        return fn(*args)
    if t:
        torch.set_num_threads(t)
    if n:
        set_threads(n)
    try:
        return fn(*args)
    finally:
        if t:
            torch.set_num_threads(tb)
        if n:
            set_threads(nb)


def _choose_run_threads(engine: Engine, examples: dict[int, list], repeats: int) -> None:
    """Per plan, the (PyTorch, numba) thread counts among one and the caller's that the whole plan runs fastest
    with, timed interleaved on the example."""
    tc, nc = torch.get_num_threads(), kernel_threads()
    pairs = sorted({(t, n) for t in (1, tc) for n in (1, nc)})
    if len(pairs) == 1:
        return
    for bs, flat in examples.items():
        key = tuple(tuple(x.shape) for x in flat)
        with torch.no_grad():
            engine.run(flat)
        runner = engine._bound[key][0]

        def timed(p):
            def f():
                with torch.no_grad():
                    _with_threads(p[0], p[1], runner, flat)
            return f
        secs = interleaved_fastest({f"{t},{n}": timed((t, n)) for t, n in pairs}, repeats=max(3, repeats),
                                   min_time=0.01, max_seconds=10.0)
        engine.run_threads[bs] = tuple(int(v) for v in min(secs, key=secs.get).split(","))
    engine._bound.clear()
