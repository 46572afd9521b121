"""Compact sparse checkpoint of a CIFAR ResNet-18 pruned to 90% (magnitude) against its dense state_dict:
file sizes, ratio, and a bit-exact reload into a fresh dense model (every state entry and the outputs).

    python benchmarks/sparse_checkpoint_size.py [--sparsity 0.9]
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile

import torch

from frugalnet.models import resnet18_cifar
from frugalnet.sparsity import MagnitudeConfig, sparsify_
from frugalnet.sparsity.checkpoint import load_sparse, save_sparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsity", type=float, default=0.9)
    a = p.parse_args()
    model = resnet18_cifar(seed=0)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    dense_bytes = buf.tell()
    sparsify_(model, MagnitudeConfig(sparsity=a.sparsity))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    masked_bytes = buf.tell()
    with tempfile.TemporaryDirectory() as d:
        path = save_sparse(model, os.path.join(d, "r18"))
        size = os.path.getsize(path)
        fresh = load_sparse(path, resnet18_cifar(seed=1))
    a_sd, b_sd = model.state_dict(), fresh.state_dict()
    exact = a_sd.keys() == b_sd.keys() and all(torch.equal(a_sd[k], b_sd[k]) for k in a_sd)
    x = torch.randn(2, 3, 32, 32)
    model.eval(), fresh.eval()
    print(f"dense state_dict (torch.save): {dense_bytes / 1e6:.2f} MB")
    print(f"masked state_dict (dense zeros + bool masks): {masked_bytes / 1e6:.2f} MB")
    print(f"sparse checkpoint {path.suffix}: {size / 1e6:.2f} MB = {size / dense_bytes:.3f}x dense")
    print(f"reload into a fresh dense ResNet-18 bit-exact: state {exact}, outputs {torch.equal(model(x), fresh(x))}")


if __name__ == "__main__":
    main()
