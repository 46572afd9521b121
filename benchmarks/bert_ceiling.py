"""How fast can the bench's BERT case get, at best, with its FFN sparse and everything else dense?

The `frugalnet bench` BERT case (hidden 768, FFN 3072, 4 layers, sequence 128, batch 1) makes only the FFN sparse
(90% weights, k-WTA 10% on); the attention projections, attention, LayerNorms and embeddings stay dense. This script
times, interleaved in one run:

- the whole model in PyTorch eager (the bench's baseline);
- the same model with every FFN replaced by nothing (`ffn -> 0`): what is left if the sparse FFN cost no time at all,
  run by PyTorch eager (its GEMMs go to oneDNN/MKL);
- one 128 x 768 x 768 projection GEMM and one large square GEMM, as achieved FP32 GMAC/s.

ceiling = eager / (model without FFN) is the largest speed-up over eager any engine can reach on this case while it
runs the dense part at PyTorch's GEMM rate; the GEMM rates show how close that rate is to the machine's.

    PYTHONPATH=src python benchmarks/bert_ceiling.py [--threads 2] [--repeats 9]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

from frugalnet.bench import model_cases as MC
from frugalnet.bench.harness import machine_summary
from frugalnet.engine.timing import interleaved_samples


class _NoFFN(nn.Module):
    """Stands in for a FeedForward: contributes nothing (the residual add around it still runs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_summary())
    case = MC.bert_case(1)
    model = case.model.eval()
    no_ffn = MC.bert_case(1).model.eval()
    for layer in no_ffn.layers:
        layer.ffn = _NoFFN()
    (ids,) = case.inputs
    x = torch.randn(128, 768)
    w = torch.randn(768, 768)
    big_a, big_b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    with torch.no_grad():
        fns = {"eager": lambda: model(ids), "eager without FFN": lambda: no_ffn(ids),
               "GEMM 128x768x768": lambda: x @ w, "GEMM 1024^3": lambda: big_a @ big_b}
        s = interleaved_samples(fns, repeats=args.repeats, min_time=0.05)
    med = {k: statistics.median(v) for k, v in s.items()}
    for k, v in s.items():
        print(f"{k:20s} median {med[k] * 1e3:8.3f} ms  (p10-p90 {sorted(v)[len(v) // 10] * 1e3:.3f}-"
              f"{sorted(v)[(9 * len(v)) // 10] * 1e3:.3f})")
    print(f"projection GEMM: {128 * 768 * 768 / med['GEMM 128x768x768'] / 1e9:.1f} GMAC/s; "
          f"1024^3 GEMM: {1024 ** 3 / med['GEMM 1024^3'] / 1e9:.1f} GMAC/s ({args.threads} threads)")
    ratios = [a / b for a, b in zip(s["eager"], s["eager without FFN"])]
    print(f"ceiling = eager / without FFN = {med['eager'] / med['eager without FFN']:.2f}x "
          f"(per round {min(ratios):.2f}-{max(ratios):.2f}): the most any engine reaches over eager on this case "
          f"with the non-FFN part at PyTorch's GEMM rate")


if __name__ == "__main__":
    main()
