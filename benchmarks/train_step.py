"""Training-step time of sparse models against their dense twins, side by side in one run (issue 18).

A step is zero_grad + forward + cross-entropy + backward + SGD(momentum 0.9) step, mask enforcement included.
Configurations are timed in interleaved rounds (one step each per round, order rotated), so machine load hits them
alike; we print each one's median step time and the median and interquartile range of its per-round ratio to the
dense PyTorch model.

  MLP 784-2048-2048-10, batch 256: dense (nn.Linear + ReLU) against SparseLinear 90% sparse weights with
    KWinners 5% on (as in frugalnet.nn), and with a bare top-k k-WTA (torch.topk + scatter, no boosting, no duty
    cycles) in its place, so the share of KWinners is visible; `sparse layers, kernel_mode=dense` shows what the
    masked-dense path would cost; `compact` trains SparseLinear in compact storage (nn.sparse_compact: only the
    masks' values are Parameters, so the weight gradient and the optimizer touch nnz floats, not out x in).
  CNN-2, batch 64: frugalnet.models.sparse_cnn2 against dense_cnn2; also dense_cnn2 in channels_last memory
    format (SparseConv2d's outputs are channels-last, on which PyTorch's max-pool is much faster: this row shows
    how much of the sparse model's gain a dense model gets from the layout alone); `compact fc1`: its SparseLinear
    in compact storage.
  torch.compile of each dense model as a second baseline (--no-compile skips it).

  --only demo: the demo's own dense and sparse CNN-2 (demo recipe) on embedded MNIST, wall and CPU time per step
    (the demo meters training energy from CPU time); the sparse-vs-dense study trains the `compact fc1` form.

Measured (2-core AMD EPYC Zen4, AVX-512, 2 threads, --no-compile; ratios are per-round medians, interquartile
range in brackets; the machine is shared, so each figure carries the load average it was taken at):
  With nn.fused_blocks (sparse_cnn2 trains bn -> pool -> k-WTA and bn1d -> k-WTA as fused blocks) and
    utils.buffers, --only cnn --rounds 21, 2026-12-05 10:13-10:25 UTC, other processes paused (SIGSTOP), eight runs
    in separate processes, four of them with MALLOC_MMAP_THRESHOLD_=2000000000 MALLOC_TRIM_THRESHOLD_=2000000000
    (glibc then keeps freed memory: no page faults in any configuration; with the default allocator the dense
    model page-faulted 0-5,271 times a step from run to run, the sparse ones about 0): dense CNN-2 22.9-29.9 ms;
    compact fc1 and convs 1.41, 1.35, 1.36, 1.34x (default) and 1.26, 1.31, 1.36, 1.32x (malloc), median 1.34x;
    compact fc1 1.38, 1.34, 1.37, 1.29 / 1.18, 1.31, 1.39, 1.33x, median 1.33x; the default (non-compact) sparse
    CNN-2 1.29, 1.28, 1.30, 1.24 / 1.18, 1.20, 1.33, 1.26x, median 1.27x; blocks unfused 1.27, 1.20, 1.27, 1.19 /
    1.14, 1.19, 1.20, 1.14x; dense channels-last 1.29-1.34x. So the fused sparse model is at about the dense
    model's own channels-last speed. Same runs, first one (10:13): MLP compact 14.51 ms against 64.36 ms dense,
    4.26x (3.71-4.66), CPU time 4.20x; demo networks CPU time per step 1.16x (compact fc1), 1.17x (compact all).
  Latest, quiet (nothing else running), --rounds 9, 2026-12-05 07:57 UTC, load 1.1: dense MLP 51.69 ms; sparse
    KWinners 2.83x (2.61-2.86); compact 12.64 ms, 4.11x (3.99-4.20); process CPU time dense 98.2 ms, compact
    20.4 ms (4.81x). Dense CNN-2 21.65 ms; channels_last 1.32x; sparse 1.17x; compact fc1 1.22x; compact fc1 and
    convs 1.24x (1.22-1.25). After KWinners2d lost its layout copies (08:21, quiet): compact fc1 and convs 1.23x
    (1.21-1.26), dense 22.79 ms. The figures below are the history that led here.
  With k-WTA's winners handed to the sparse layers as active lists (nn.active_lists: no nonzero scans, no
    transposes of gy or of the first layer's output, per-block column scatter, faster k-WTA), --only mlp
    --rounds 9: quiet, 2026-12-05 07:52 UTC (final kernels), load 0.83-0.94 with no other process running:
    dense MLP 53.6 ms; sparse KWinners 18.8 ms, 2.84x (2.74-2.90); compact 14.6 ms, 3.69x (3.34-3.89); process
    CPU time per step dense 101.6 ms, compact 20.8 ms (4.89x; wall 53.7 and 13.1 ms). Repeated at once with
    --rounds 15 (load 0.79-1.06): dense 53.4 ms, compact 13.5 ms, 3.96x (3.80-4.01); CPU 4.78x. Two minutes earlier
    (07:50, load 0.85-1.04, nothing else running, before the timed gather build): dense 58.1 ms, compact 17.7 ms,
    3.29x (3.25-3.36). The quiet wall ratio is the lowest of these figures: PyTorch's GEMMs gain more from the
    second core than the kernels' parallel builds.
    07:30 UTC, load 2.9-3.0 (two other processes at nice 10 and 15): dense MLP 97.0 ms;
    sparse KWinners 3.82x (3.70-3.83); compact 18.9 ms, 5.16x (5.14-5.23); process CPU time per step (the
    second table) dense 98.7 ms, compact 19.2 ms (5.13x); wall was about CPU time for both, so each had about
    one core. At 07:27, load 4.0: compact 4.35x (4.27-4.59). Before these changes, at load 2.8, compact 3.23x;
    its CPU time measured the same way (a scratch copy of the second table), load 4.3: dense 106.5 ms, compact
    31.8 ms (3.35x). The code before these changes, quiet (05:53 UTC, below): compact 2.61x.
  quiet (load ~1, nothing else running), --rounds 9, 2026-12-05 05:53 UTC: dense MLP 50.6 ms; sparse KWinners
    2.11x (2.02-2.12); compact 2.61x (2.50-2.63); top-k 1.94x; kernel_mode=dense 0.76x. Dense CNN-2 21.2 ms;
    channels_last 1.31x; sparse 1.09x; compact fc1 1.13x (1.12-1.15). On a quiet machine PyTorch's dense GEMMs
    run about twice as fast as at load 2.7, so the loaded ratios below overstate the gain.
  load 2.7, --only mlp --rounds 21: dense MLP 97.8 ms; sparse KWinners 2.89x (2.87-2.92); sparse KWinners,
    compact 3.55x (3.48-3.57); top-k 2.36x; kernel_mode=dense 0.72x.
  load 2.7, --only cnn --rounds 21: dense CNN-2 38.5 ms; channels_last 1.36x (1.31-1.39); sparse 1.37x
    (1.33-1.42); sparse, compact fc1 1.41x (1.36-1.47); top-k 1.17x; conv2 alone 1.27x (1.25-1.30).
  load 2.7, --only demo --rounds 21: CPU time per step dense 35.40 ms, sparse 31.77 ms (1.11x), sparse with
    compact fc1 30.56 ms (1.16x) (wall within 0.3% of CPU: the process had its cores).
  Under heavier load (3-6.5) the same ratios moved by up to 15% either way between runs (MLP compact 2.81x-3.31x,
    CNN-2 compact fc1 1.24x-1.45x, demo compact 1.07x): dense GEMMs and the sparse kernels suffer from
    contention differently, and the timed kernel choices (3 repeats each) vary.
  CNN-2 after the winners-only conv2 backward (nn.sparse_conv_functional: conv2's input gradient only at
    KWinners2d's winners, fused with its weight gradient; oneDNN paths all channels-last; masks by torch.where),
    --only cnn --rounds 9, 2026-12-05 07:12 UTC, load 1.4-1.6 (another helper's job on the second core): dense
    CNN-2 42.5 ms; channels_last 1.33x (1.30-1.36); sparse 1.47x (1.38-1.54); compact fc1 1.58x (1.44-1.60);
    compact fc1 and convs 1.55x (1.54-1.63); conv2 alone 1.27x. Chosen for conv2's backward: fused/0 4.97 ms
    against split (PyTorch's gx + active gW) 7.63 and PyTorch's both 8.97. One thread, CPU time per module
    (thread_time around each module's forward and backward, load 2.1): the sparse step's k-WTA layers cost 3.7 ms
    where ReLU costs 0.6, and SparseLinear fc1 (12.5% input, 70% sparse weights) costs what dense fc1 does, so
    the sparse model's gain is conv2's.
    Same command at 07:38, load 2.5: compact fc1 1.40x (1.36-1.44), compact fc1 and convs 1.45x, channels_last
    1.36x; at 07:42, load 1.2-1.3 while the paths were timed (dense CNN-2 still 42.7 ms, so not quiet while
    stepping): compact fc1 1.35x (1.19-1.37), channels_last 1.32x; there conv2's backward fused/1 2.95 ms against
    split/1 4.09 and PyTorch's both 4.80, and conv2's forward active/1 2.18 against oneDNN channels-last 2.17:
    near quiet, oneDNN on channels-last operands matches the scatter kernel at 9.5% input density.
    --only demo (k-WTA 20% on: conv2's input is too dense for the kernels, all of conv2 runs on oneDNN), load 2.7,
    --rounds 11: CPU per step dense 36.8 ms, sparse compact fc1 36.6 ms (1.01x), compact all 37.1 ms (0.99x).
  Before compact storage, on a quiet machine (load 0.1), --only mlp --rounds 9: sparse KWinners 2.65x; that
    run's chosen kernels summed to 11.8 ms of a 36.8 ms step (the rest: dense-gradient writes, value gathers,
    transposes, the optimizer over full tensors, k-WTA); compact storage removes the first, second and fourth of
    these, PyTorch's blocked transpose shrinks the third.

Run: PYTHONPATH=src python benchmarks/train_step.py [--rounds 30] [--threads 2] [--no-compile] [--only mlp|cnn|demo]
"""
from __future__ import annotations

import argparse
import os

# Idle OpenMP workers sleep instead of spinning. torch and numba each keep a pool; on a shared machine a spinning
# pool steals the cores from the other and from the working thread (measured on the loaded 2-core machine: MLP
# steps 2.1x slower for sparse and 2.2x for dense with the default policy). Set before torch loads its runtime;
# applies to every configuration alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

from frugalnet.bench.harness import machine_summary
from frugalnet.engine.timing import interleaved_samples


class TopK(nn.Module):
    """Bare k-WTA: keep the k largest of each row (torch.topk), gradient to winners only."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x):
        idx = torch.topk(x.detach(), self.k, dim=1, sorted=False).indices
        return x * torch.zeros_like(x).scatter_(1, idx, 1.0)


class TopKFlat(nn.Module):
    """Bare k-WTA over all features of each sample of a (B, C, H, W) map (KWinners2d(local=False) without
    boosting): k = round(percent_on * C * H * W)."""

    def __init__(self, percent_on: float) -> None:
        super().__init__()
        self.percent_on = percent_on

    def forward(self, x):
        flat = x.reshape(x.shape[0], -1)
        k = max(1, round(self.percent_on * flat.shape[1]))
        idx = torch.topk(flat.detach(), k, dim=1, sorted=False).indices
        return (flat * torch.zeros_like(flat).scatter_(1, idx, 1.0)).view_as(x)


def compact(model: nn.Module, convs: bool = False) -> nn.Module:
    """The model with every SparseLinear (and SparseConv2d with `convs`) in compact storage (only the mask's
    values are trained)."""
    from frugalnet.nn.sparse_compact import compact_layers_

    compact_layers_(model, convs=convs)
    return model


def unfused(model: nn.Module) -> nn.Module:
    """The model as a plain nn.Sequential: its batch norm -> max-pool -> k-WTA blocks run module by module
    (nn.fused_blocks' share)."""
    model.__class__ = nn.Sequential
    return model


def cnn_sparse_topk() -> nn.Module:
    """sparse_cnn2 with each KWinners / KWinners2d replaced by a bare top-k of the same k."""
    from frugalnet.models.cnn import sparse_cnn2

    model = sparse_cnn2()
    model.act1, model.act2 = TopKFlat(model.act1.percent_on), TopKFlat(model.act2.percent_on)
    model.act3 = TopK(round(model.act3.n * model.act3.percent_on))
    return model


def mlp_dense() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def mlp_sparse(act: str, mode: str | None = None, compact: bool = False) -> nn.Module:
    from frugalnet.nn import KWinners, SparseLinear

    def a():
        return KWinners(2048, 0.05) if act == "kwinners" else TopK(round(2048 * 0.05))
    l1 = SparseLinear(784, 2048, 0.9, seed=0, compact=compact)
    l2 = SparseLinear(2048, 2048, 0.9, seed=1, compact=compact)
    l1.kernel_mode = l2.kernel_mode = mode
    return nn.Sequential(l1, a(), l2, a(), nn.Linear(2048, 10))


def cpu_info() -> str:
    import llvmlite.binding as llvm

    return f"{machine_summary()}; numba/LLVM target {llvm.get_host_cpu_name()}"


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, compiled: bool = False):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fwd = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(fwd(x), y).backward()
        opt.step()
    return step


def run(configs: dict, rounds: int, warmup: int) -> dict:
    """Seconds per step of each configuration, one step per configuration per round, order rotated each round."""
    times = interleaved_samples(configs, repeats=rounds, warmup=warmup, max_seconds=float("inf"), min_rounds=rounds)
    return {n: np.array(v) for n, v in times.items()}


def page_faults(configs: dict, steps: int = 10) -> None:
    """Minor page faults per step of each configuration (getrusage): a fresh multi-MB tensor is new memory from the
    OS, each of its 4 KiB pages faults on first write, and in this VM a fault costs microseconds. glibc hands freed
    large blocks back to the OS, so a step that frees and allocates them pays again every step (the sparse layers'
    work arrays come from utils.buffers' pool). Run with MALLOC_MMAP_THRESHOLD_=2000000000
    MALLOC_TRIM_THRESHOLD_=2000000000 in the environment to take the faults out of every configuration alike."""
    import resource

    print("\nminor page faults per step (getrusage, " + str(steps) + " steps each)")
    for n, fn in configs.items():
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(steps):
            fn()
        print(f"  {n:46s} {(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps:10.0f}")


def report(title: str, times: dict, baseline: str) -> None:
    print(f"\n{title}")
    print(f"  {'configuration':46s} {'median ms':>10s} {'speed-up vs ' + baseline:>24s}  (IQR of per-round ratio)")
    base = times[baseline]
    for n, t in times.items():
        ratio = base / t
        q1, q3 = np.percentile(ratio, [25, 75])
        print(f"  {n:46s} {np.median(t) * 1e3:10.2f} {np.median(ratio):23.2f}x  ({q1:.2f}-{q3:.2f})")


def mlp_cpu_time(rounds: int, warmup: int) -> None:
    """Wall and process CPU time (all threads) per training step of the dense MLP and the compact sparse MLP,
    interleaved (order alternated each round): CPU time is what a CPU-time energy meter counts, and it is less
    distorted than wall time by other processes on a shared machine."""
    import time

    x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
    steps = {"dense MLP (PyTorch)": make_step(mlp_dense(), x, y),
             "sparse MLP, KWinners, compact": make_step(mlp_sparse("kwinners", compact=True), x, y)}
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    wall = {n: [] for n in steps}
    cpu = {n: [] for n in steps}
    names = list(steps)
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            steps[n]()
            cpu[n].append(time.process_time() - c0)
            wall[n].append(time.perf_counter() - t0)
    base = names[0]
    print("\nMLP training step, wall and process CPU time (all threads), medians over interleaved rounds")
    for n in names:
        print(f"  {n:30s} wall {np.median(wall[n]) * 1e3:8.2f} ms   CPU {np.median(cpu[n]) * 1e3:8.2f} ms   "
              f"CPU ratio dense/this {np.median(cpu[base]) / np.median(cpu[n]):.2f}x")


def mask_enforcement(rounds: int) -> None:
    """Per-step cost of keeping the stored weights of the MLP's two sparse layers zero outside their masks: the
    optimizer hooks as installed after a clean step (pre-step: gradient made by the Function, weight and momentum
    unchanged since, so the post-step re-zeroing is skipped), against re-zeroing the mask's gaps every step (the
    hooks before this change) and against multiplying gradient and weight by the bool mask (before that)."""
    from frugalnet.nn.sparse import _mask_grads_before_step, _rezero_after_step

    def trained():
        """A model and its optimizer after two steps (each configuration gets its own: the multiplies bump the
        weights' versions, which would make the hooks re-zero)."""
        model = mlp_sparse("topk")
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return model, opt
    (_, opt), (m_rezero, _), (m_mul, _) = trained(), trained(), trained()

    def now():
        _mask_grads_before_step(opt, (), {})
        _rezero_after_step(opt, (), {})

    def rezero():
        for m in (m_rezero[0], m_rezero[2]):
            m.apply_mask_()

    def multiply():
        with torch.no_grad():
            for m in (m_mul[0], m_mul[2]):
                m.weight.grad.mul_(m.weight_mask)
                m.weight.mul_(m.weight_mask)
    times = run({"hooks now": now, "re-zero the gaps": rezero, "mask multiplies": multiply}, rounds, 2)
    print("\nmask enforcement per MLP step (median ms): " + ", ".join(
        f"{n} {np.median(t) * 1e3:.3f}" for n, t in times.items()))


def demo_steps(rounds: int, warmup: int) -> None:
    """The demo's own networks (studies.sparse_vs_dense.demo_config: CNN-2 dense and sparse with the demo recipe)
    on real embedded-MNIST batches of 64: wall and CPU time per training step, interleaved (order rotated each
    round). The demo's ledger meters training energy from CPU time (x 12 W per core where no RAPL counter is
    readable), so the CPU-time ratio is the figure its training-energy factor follows."""
    import time

    from frugalnet.data.embedded import load_mnist_5k
    from frugalnet.studies.sparse_vs_dense import build_model, demo_config

    bundle, cfg = load_mnist_5k(), demo_config()
    xs = [bundle.normalize(bundle.train.x[i * 64:(i + 1) * 64]) for i in range(16)]
    ys = [bundle.train.y[i * 64:(i + 1) * 64] for i in range(16)]

    def make(kind):
        model = build_model(kind.split("-")[0], bundle, cfg, seed=0)
        if "-compact" in kind:
            compact(model, convs=kind.endswith("-all"))
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        count = [0]

        def step():
            i = count[0] % len(xs)
            count[0] += 1
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xs[i]), ys[i]).backward()
            opt.step()
        return step
    steps = {"dense CNN-2 (demo)": make("dense"), "sparse CNN-2 (demo recipe)": make("sparse"),
             "sparse CNN-2 (demo), compact fc1": make("sparse-compact"),
             "sparse CNN-2 (demo), compact all": make("sparse-compact-all")}
    for fn in steps.values():
        for _ in range(max(warmup, len(xs))):
            fn()
    cpu = {n: [] for n in steps}
    wall = {n: [] for n in steps}
    names = list(steps)
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            steps[n]()
            cpu[n].append(time.process_time() - c0)
            wall[n].append(time.perf_counter() - t0)
    base = names[0]
    print("\nthe demo's networks, batch 64 (embedded MNIST): training step, medians over interleaved rounds")
    for n in names:
        print(f"  {n:30s} wall {np.median(wall[n]) * 1e3:8.2f} ms   CPU {np.median(cpu[n]) * 1e3:8.2f} ms   "
              f"CPU ratio dense/this {np.median(cpu[base]) / np.median(cpu[n]):.2f}x")


def try_compiled(configs: dict, name: str, make) -> None:
    try:
        step = make()
        step()
        configs[name] = step
    except Exception as e:  # noqa: BLE001 - reported, the benchmark goes on without this baseline
        print(f"  torch.compile baseline unavailable: {type(e).__name__}: {str(e).splitlines()[0][:150]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--only", choices=("mlp", "cnn", "demo"), default=None,
                    help="one section (default: mlp and cnn; demo only when asked)")
    args = ap.parse_args()

    import numba

    from frugalnet.kernels import set_threads
    from frugalnet.models.cnn import dense_cnn2, sparse_cnn2
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    print(f"CPU: {cpu_info()}")
    print(f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; torch {torch.__version__}")
    torch.manual_seed(0)

    if args.only in (None, "mlp"):
        x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
        configs = {"dense MLP (PyTorch)": make_step(mlp_dense(), x, y),
                   "sparse MLP, KWinners": make_step(mlp_sparse("kwinners"), x, y),
                   "sparse MLP, KWinners, compact": make_step(mlp_sparse("kwinners", compact=True), x, y),
                   "sparse MLP, top-k k-WTA (sparse layers' share)": make_step(mlp_sparse("topk"), x, y),
                   "sparse MLP, top-k k-WTA, kernel_mode=dense": make_step(mlp_sparse("topk", "dense"), x, y)}
        if not args.no_compile:
            try_compiled(configs, "dense MLP, torch.compile", lambda: make_step(mlp_dense(), x, y, compiled=True))
        report("MLP 784-2048-2048-10, batch 256, 90% sparse weights, 5% k-WTA: training step",
               run(configs, args.rounds, args.warmup), "dense MLP (PyTorch)")

    if args.only in (None, "cnn"):
        x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
        cl = torch.channels_last
        configs = {"dense CNN-2 (PyTorch)": make_step(dense_cnn2(), x, y),
                   "dense CNN-2, channels_last (PyTorch)": make_step(
                       dense_cnn2().to(memory_format=cl), x.contiguous(memory_format=cl), y),
                   "sparse CNN-2": make_step(sparse_cnn2(), x, y),
                   "sparse CNN-2, compact fc1": make_step(compact(sparse_cnn2()), x, y),
                   "sparse CNN-2, compact fc1 and convs": make_step(compact(sparse_cnn2(), convs=True), x, y),
                   "sparse CNN-2, compact fc1, blocks unfused": make_step(unfused(compact(sparse_cnn2())), x, y),
                   "sparse CNN-2, top-k k-WTA (sparse layers' share)": make_step(cnn_sparse_topk(), x, y)}
        if not args.no_compile:
            try_compiled(configs, "dense CNN-2, torch.compile", lambda: make_step(dense_cnn2(), x, y, compiled=True))
        report("CNN-2, batch 64: training step", run(configs, args.rounds, args.warmup), "dense CNN-2 (PyTorch)")
        page_faults(configs)

        from frugalnet.nn import SparseConv2d
        xc = torch.rand(64, 32, 12, 12) * (torch.rand(64, 32, 12, 12) < 0.095)
        yc = torch.randint(0, 10, (64,))

        def conv(layer):
            return nn.Sequential(layer, nn.Flatten(), nn.Linear(64 * 8 * 8, 10))
        configs = {"nn.Conv2d(32, 64, 5)": make_step(conv(nn.Conv2d(32, 64, 5)), xc, yc),
                   "SparseConv2d(32, 64, 5), 50% (masked at forward)": make_step(
                       conv(SparseConv2d(32, 64, 5, 0.5, seed=0)), xc, yc)}
        report("CNN-2's conv2 layer alone (+ a linear head), batch 64, 9.5% nonzero input: training step",
               run(configs, args.rounds, args.warmup), "nn.Conv2d(32, 64, 5)")

    if args.only in (None, "mlp"):
        mlp_cpu_time(args.rounds, args.warmup)
        mask_enforcement(args.rounds)

    if args.only == "demo":
        demo_steps(args.rounds, args.warmup)

    from frugalnet.nn.sparse_functional import choices, timings
    print("\nchosen paths (product, out, in, batch, density bucket(s), mode) -> path [candidates' fastest ms]:")
    t = timings()
    for k, v in sorted(choices().items(), key=str):
        cands = ", ".join(f"{n} {s * 1e3:.2f}" for n, s in sorted(t.get(k, {}).items(), key=lambda kv: kv[1]))
        print(f"  {k} -> {v}  [{cands}]")


if __name__ == "__main__":
    main()
