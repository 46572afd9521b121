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

import torch

from frugalnet.bench.harness import machine_summary
from frugalnet.engine.timing import interleaved_samples
from frugalnet.nn.kwinners import KWinners


def previous_forward(kw: KWinners, x: torch.Tensor) -> torch.Tensor:
    """The version before this change: boost, stable descending sort, scatter, multiply."""
    boosted = x.detach() * kw._boost_factors(kw.duty_cycle)
    k = kw._k(kw.n)
    order = torch.sort(boosted, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros_like(boosted, dtype=torch.bool)
    mask.scatter_(1, order, True)
    return x * mask


def time_and_print(title: str, fns: dict, reps: int, repeats: int, base: str, base_label: str) -> None:
    """Time `fns` side by side with the project's one interleaved timer (blocks of `reps` calls, `repeats` rounds
    in rotating order) and print medians, spread and ratios to `fns[base]`."""
    blocks = {name: (lambda f=f: [f() for _ in range(reps)]) for name, f in fns.items()}
    times = {name: [t / reps for t in ts]
             for name, ts in interleaved_samples(blocks, repeats=repeats, max_seconds=float("inf")).items()}
    print(f"\n{title}: median us per call [min, max]")
    ref = statistics.median(times[base])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:24s} {1e6 * med:9.1f}  [{1e6 * min(ts):.1f}, {1e6 * max(ts):.1f}]  "
              f"{med / ref:5.2f}x of {base_label}")


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
        time_and_print(f"training forward + backward, batch {b}, n {a.n}, k {kernel_kw.k}", fns,
                       max(5, int(500 / b)), a.repeats, "KWinners, kernel", "the kernel")


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
        time_and_print(f"batch {b}, n {a.n}, eval k {k}", fns, max(20, int(2000 / b)), a.repeats,
                       "KWinners (now)", "now")


if __name__ == "__main__":
    main()
