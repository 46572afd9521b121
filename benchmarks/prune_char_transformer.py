"""Pruning the character Transformer of the `lowbit` study (frugalnet.models.small.CharTransformer on CPython's
bundled reference docs): dense, one-shot magnitude vs random masking (no fine-tuning), gradual magnitude pruning
(Zhu & Gupta) during fine-tuning, and RigL from scratch with the dense + fine-tuning budget. Validation loss and
next-character accuracy on fixed windows, per seed and mean over seeds. The transformer blocks' Linear layers
are pruned; the embeddings and the output head stay dense.

    python benchmarks/prune_char_transformer.py                      # 90%, 3 seeds, 400 + 200 steps
    python benchmarks/prune_char_transformer.py --sparsity 0.8 --seeds 1 --steps 100 --finetune 50
"""
from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from frugalnet.models.small import CharTransformer, char_corpus
from frugalnet.sparsity import MagnitudeConfig, RandomFanInConfig, sparsify_
from frugalnet.sparsity.dynamic import RigL
from frugalnet.sparsity.pruning import GradualMagnitudePruner, measured_sparsity
from frugalnet.utils.seeding import make_generator

CONTEXT, WIDTH, LAYERS, BATCH, LR = 64, 64, 2, 32, 3e-3


def data():
    text, _ = char_corpus()
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(vocab)


def batch(ids, gen):
    starts = torch.randint(0, len(ids) - CONTEXT - 1, (BATCH,), generator=gen)
    offsets = torch.arange(CONTEXT)
    return ids[starts[:, None] + offsets], ids[starts[:, None] + offsets + 1]


@torch.no_grad()
def evaluate(model, val, batches: int = 16) -> dict:
    model.eval()
    gen = make_generator(12345)
    loss, correct, n = 0.0, 0, 0
    for _ in range(batches):
        x, y = batch(val, gen)
        out = model(x)
        loss += float(F.cross_entropy(out.flatten(0, 1), y.flatten()))
        correct += int((out.argmax(-1) == y).sum())
        n += y.numel()
    model.train()
    return {"val_loss": loss / batches, "acc": correct / n}


def train(model, train_ids, steps: int, lr: float, seed: int, callbacks=(), warmup: bool = True) -> None:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    for cb in callbacks:
        if hasattr(cb, "optimizer"):
            cb.optimizer = opt
    w = max(1, steps // 20) if warmup else 0
    gen = make_generator(seed)
    model.train()
    for step in range(steps):
        cur = lr * (step + 1) / w if step < w else lr * 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))
        for g in opt.param_groups:
            g["lr"] = cur
        x, y = batch(train_ids, gen)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for cb in callbacks:
            cb.step()


def blocks_only(module, name: str) -> bool:
    return name.startswith("blocks.")


def run_seed(seed: int, a, train_ids, val, vocab) -> dict:
    torch.manual_seed(seed)
    dense = CharTransformer(vocab, CONTEXT, WIDTH, LAYERS)
    train(dense, train_ids, a.steps, LR, seed)
    state = {k: v.clone() for k, v in dense.state_dict().items()}
    res = {"dense": evaluate(dense, val)}

    def from_dense():
        m = CharTransformer(vocab, CONTEXT, WIDTH, LAYERS)
        m.load_state_dict(state)
        return m

    m = sparsify_(from_dense(), MagnitudeConfig(sparsity=a.sparsity), blocks_only)
    res["oneshot"] = evaluate(m, val)
    m = sparsify_(from_dense(), RandomFanInConfig(sparsity=a.sparsity, seed=seed), blocks_only)
    res["random"] = evaluate(m, val)
    m = from_dense()
    pruner = GradualMagnitudePruner(m, a.sparsity, begin_step=0, end_step=(2 * a.finetune) // 3,
                                    frequency=max(1, a.finetune // 40), filter_fn=blocks_only)
    train(m, train_ids, a.finetune, a.finetune_lr, seed + 1, callbacks=[pruner], warmup=False)
    res["gradual"] = {**evaluate(m, val), "sparsity": measured_sparsity(m)["total"]}
    torch.manual_seed(seed)
    m = sparsify_(CharTransformer(vocab, CONTEXT, WIDTH, LAYERS),
                  RandomFanInConfig(sparsity=a.sparsity, erk=True, seed=seed), blocks_only)
    total = a.steps + a.finetune
    rigl = RigL(m, delta_t=a.delta_t, end_step=int(0.75 * total), alpha=0.3, seed=seed)
    train(m, train_ids, total, LR, seed, callbacks=[rigl])
    res["rigl"] = {**evaluate(m, val), "sparsity": measured_sparsity(m)["total"]}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400, help="dense training steps (the lowbit study's lm_steps)")
    p.add_argument("--finetune", type=int, default=200, help="fine-tuning steps while pruning gradually")
    p.add_argument("--finetune-lr", type=float, default=1e-3)
    p.add_argument("--delta-t", type=int, default=25, help="RigL steps between updates")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"CPU: {platform.processor() or platform.machine()}; torch {torch.__version__}; threads {a.threads}")
    train_ids, val, vocab = data()
    t0 = time.perf_counter()
    runs = [run_seed(s, a, train_ids, val, vocab) for s in range(a.first_seed, a.first_seed + a.seeds)]
    print(f"\nsparsity {a.sparsity}, {a.seeds} seeds, dense {a.steps} steps, fine-tune {a.finetune}, RigL "
          f"{a.steps + a.finetune} ({time.perf_counter() - t0:.0f} s)")
    print(f"{'method':10s} {'val loss':>16s} {'next-char acc %':>18s} {'vs dense':>22s}")
    d_loss = statistics.mean(r["dense"]["val_loss"] for r in runs)
    d_acc = statistics.mean(r["dense"]["acc"] for r in runs)
    for method in ("dense", "oneshot", "random", "gradual", "rigl"):
        loss = [r[method]["val_loss"] for r in runs]
        acc = [100 * r[method]["acc"] for r in runs]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"{method:10s} {statistics.mean(loss):9.4f} ± {sd(loss):.4f} {statistics.mean(acc):11.2f} ± "
              f"{sd(acc):.2f}   {100 * (statistics.mean(loss) / d_loss - 1):+6.1f}% loss "
              f"{statistics.mean(acc) - 100 * d_acc:+6.2f} pts")
    for r in runs:
        print({m: {k: round(v, 4) for k, v in x.items()} for m, x in r.items()})


if __name__ == "__main__":
    main()
