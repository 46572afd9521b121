"""KWinners forward in PyTorch: the present topk-threshold version against the previous stable-sort version and
against a bare torch.topk, timed interleaved in one run (medians and spread of per-call times).

    python benchmarks/kwinners_speed.py                    # n = 2048, batch 1 and 64
    python benchmarks/kwinners_speed.py --n 700 --batches 1 64 256 --repeats 15
    python benchmarks/kwinners_speed.py --train --n 2048 --percent-on 0.05 --batches 256 --threads 2
        # training forward + backward + duty cycles: the numba selection kernel against the PyTorch path
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from frugalnet.bench.harness import machine_summary
from frugalnet.nn.kwinners import KWinners


def previous_forward(kw: KWinners, x: torch.Tensor) -> torch.Tensor:
    """The version before this change: boost, stable descending sort, scatter, multiply."""
    boosted = x.detach() * kw._boost_factors(kw.duty_cycle)
    k = kw._k(kw.n)
    order = torch.sort(boosted, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros_like(boosted, dtype=torch.bool)
    mask.scatter_(1, order, True)
    return x * mask


def time_call(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def train_main(a) -> None:
    """KWinners in training (forward, backward, duty-cycle update) on the selection kernel against the PyTorch
    path (topk threshold + where), and a bare torch.topk forward + backward, interleaved."""
    from frugalnet.kernels import set_threads
    from frugalnet.nn import kwinners_functional as KF

    set_threads(a.threads)
    kernel_kw, torch_kw = KWinners(a.n, a.percent_on), KWinners(a.n, a.percent_on)
    limit = KF.KERNEL_MIN_NUMEL

    def step(kw, min_numel):
        def fn():
            KF.KERNEL_MIN_NUMEL = min_numel
            try:
                kw(x).backward(g)
            finally:
                KF.KERNEL_MIN_NUMEL = limit
        return fn

    def topk():
        idx = torch.topk(x.detach(), kernel_kw.k, dim=1, sorted=False).indices
        (x * torch.zeros_like(x).scatter_(1, idx, 1.0)).backward(g)
    for b in a.batches:
        x = torch.randn(b, a.n, requires_grad=True)
        g = torch.randn(b, a.n)
        fns = {"KWinners, kernel": step(kernel_kw, 1), "KWinners, PyTorch path": step(torch_kw, 1 << 62),
               "bare topk + scatter": topk}
        reps = max(5, int(500 / b))
        for f in fns.values():
            time_call(f, reps)
        times = {name: [] for name in fns}
        for _ in range(a.repeats):
            for name, f in fns.items():
                times[name].append(time_call(f, reps))
        print(f"\ntraining forward + backward, batch {b}, n {a.n}, k {kernel_kw.k}: median us per call [min, max]")
        base = statistics.median(times["KWinners, kernel"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:24s} {1e6 * med:9.1f}  [{1e6 * min(ts):.1f}, {1e6 * max(ts):.1f}]  "
                  f"{med / base:5.2f}x of the kernel")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--percent-on", type=float, default=0.1)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=11, help="interleaved rounds (median and spread over them)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train", action="store_true", help="time training forward + backward instead of eval")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"CPU: {machine_summary()}; torch {torch.__version__}; threads {a.threads}")
    if a.train:
        train_main(a)
        return
    kw = KWinners(a.n, a.percent_on).eval()
    for b in a.batches:
        x = torch.randn(b, a.n)
        k = kw.k
        assert torch.equal(kw(x), previous_forward(kw, x)), "the two versions disagree"
        fns = {"KWinners (now)": lambda: kw(x), "previous (stable sort)": lambda: previous_forward(kw, x),
               "torch.topk alone": lambda: torch.topk(x, k, dim=-1)}
        reps = max(20, int(2000 / b))
        for f in fns.values():
            time_call(f, reps)                                          # warm up
        times = {name: [] for name in fns}
        for _ in range(a.repeats):                                      # interleaved rounds
            for name, f in fns.items():
                times[name].append(time_call(f, reps))
        print(f"\nbatch {b}, n {a.n}, eval k {k}: median us per call [min, max]")
        base = statistics.median(times["KWinners (now)"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:24s} {1e6 * med:9.1f}  [{1e6 * min(ts):.1f}, {1e6 * max(ts):.1f}]  "
                  f"{med / base:5.2f}x of now")


if __name__ == "__main__":
    main()
