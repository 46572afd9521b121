"""Accuracy with the sparse training kernels against the masked-dense path (issue 18: accuracy unchanged).

Trains the same sparse models from the same seeds three times, with SparseLinear on the kernels
(`set_kernel_mode('sparse')`), on the kernels in compact storage (`compact_layers_`: only the mask's values are
Parameters) and on PyTorch's masked-dense ops (`'dense'`), on the embedded mnist-5k, and prints test accuracy per
seed and the largest weight difference after training (the paths differ only in float summation order, so runs
drift apart slowly but should end at the same accuracy within noise).

Run: PYTHONPATH=src python benchmarks/train_accuracy.py [--epochs 1] [--seeds 0 1]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see train_step.py

import torch  # noqa: E402
from torch import nn  # noqa: E402


def sparse_mlp(seed: int) -> nn.Module:
    from frugalnet.nn import KWinners, SparseLinear
    return nn.Sequential(nn.Flatten(), SparseLinear(784, 1024, 0.9, seed=seed), KWinners(1024, 0.05),
                         SparseLinear(1024, 1024, 0.9, seed=seed + 1), KWinners(1024, 0.05), nn.Linear(1024, 10))


def gradient_check() -> None:
    """One step's gradients of the dendritic-shape MLP (784-2048-2048-10, 90% weights, KWinners 5%, batch 256) on
    the kernels against the masked-dense path, from the same weights and batch."""
    from frugalnet.nn import KWinners, SparseLinear
    from frugalnet.nn.sparse_functional import set_kernel_mode
    x, y = torch.rand(256, 784), torch.randint(0, 10, (256,))
    grads = {}
    for mode in ("sparse", "dense"):
        set_kernel_mode(mode)
        torch.manual_seed(1)
        model = nn.Sequential(SparseLinear(784, 2048, 0.9, seed=0), KWinners(2048, 0.05),
                              SparseLinear(2048, 2048, 0.9, seed=1), KWinners(2048, 0.05), nn.Linear(2048, 10))
        nn.functional.cross_entropy(model(x), y).backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters()}
    set_kernel_mode("auto")
    print("gradients, kernels against masked-dense (MLP 784-2048-2048-10, batch 256):")
    for n, g in grads["dense"].items():
        diff = float((grads["sparse"][n] - g).abs().max())
        print(f"  {n:10s} max |difference| {diff:.2e}   max |gradient| {float(g.abs().max()):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from frugalnet.data import load
    from frugalnet.experiment.training import FitConfig, evaluate, fit
    from frugalnet.kernels import set_threads
    from frugalnet.models.cnn import sparse_cnn2
    from frugalnet.nn.sparse_functional import set_kernel_mode
    torch.set_num_threads(args.threads)
    set_threads(args.threads)
    torch.manual_seed(0)
    gradient_check()
    data = load("mnist-5k")

    def transform(x):
        return (x - data.mean) / data.std
    builders = {"sparse CNN-2": lambda s: sparse_cnn2(seed=s), "sparse MLP 784-1024-1024-10": sparse_mlp}
    print(f"mnist-5k: {len(data.train)} train / {len(data.test)} test, {args.epochs} epoch(s), SGD momentum 0.9")
    from frugalnet.nn.sparse_compact import compact_layers_
    for name, build in builders.items():
        for seed in args.seeds:
            accs, weights = {}, {}
            for mode in ("sparse", "compact", "dense"):
                set_kernel_mode("dense" if mode == "dense" else "sparse")
                torch.manual_seed(seed)
                model = build(seed)
                if mode == "compact":
                    compact_layers_(model)
                fit(model, data.train, FitConfig(epochs=args.epochs, batch_size=64, lr=0.01), seed=seed,
                    transform=transform, desc=f"{name} {mode}")
                accs[mode] = evaluate(model, data.test, transform=transform)
                weights[mode] = {k: v.detach().clone() for k, v in model.state_dict().items()
                                 if v.is_floating_point()}

            def drift(a, b):
                return max(float((weights[a][k] - weights[b][k]).abs().max()) for k in weights[a])
            print(f"  {name:30s} seed {seed}: kernels {accs['sparse']:.4f}  compact {accs['compact']:.4f}  "
                  f"masked-dense {accs['dense']:.4f}  (max |weight difference| after training: kernels vs "
                  f"masked-dense {drift('sparse', 'dense'):.2e}, compact vs kernels {drift('compact', 'sparse'):.2e})")
    set_kernel_mode("auto")


if __name__ == "__main__":
    main()
