"""Whole-model cases of `frugalnet bench` (issue 15): reference models pruned and given to every runtime with the
same weights, side by side with the frugalnet engine.

Each case builder returns a `ModelCase` (name, model in eval mode, example inputs, notes); `run_model_case` times
it. Sizes are arguments so tests can build tiny ones; the defaults are the issue's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from frugalnet.bench.pruning import magnitude_prune_
from frugalnet.models import bert_encoder, gpt_decoder, resnet18_cifar
from frugalnet.nn.kwinners import KWinners, KWinners2d

KWTA_ON = 0.1   # fraction of units a k-WTA keeps on (k_inference_factor 1, boosting off: a trained net's inference)


@dataclass
class ModelCase:
    name: str
    group: str
    model: nn.Module
    inputs: tuple
    batch: int
    notes: dict[str, str] = field(default_factory=dict)


class PerToken(nn.Module):
    """Applies a (batch, n) k-WTA to each token of a (..., n) input by flattening the leading dims (used only where
    KWinners itself rejects (..., n) inputs; the per-token KWinners of issue 15 item 3 makes it unnecessary)."""

    def __init__(self, kwta: KWinners) -> None:
        super().__init__()
        self.kwta = kwta

    def forward(self, x: Tensor) -> Tensor:
        return self.kwta(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def token_kwinners(n: int, percent_on: float = KWTA_ON) -> nn.Module:
    """A KWinners over the last dim of (..., n) inputs: KWinners itself if it takes them, else wrapped in PerToken."""
    kwta = KWinners(n, percent_on, k_inference_factor=1.0, boost_strength=0.0).eval()
    try:
        kwta(torch.zeros(1, 2, n))
        return kwta
    except ValueError:
        return PerToken(kwta)


def kwinners2d(channels: int, percent_on: float = KWTA_ON) -> nn.Module:
    return KWinners2d(channels, percent_on, k_inference_factor=1.0, boost_strength=0.0)


def _not_stem(name: str, m: nn.Module) -> bool:
    return name != "stem"


def _randomize_bn_(model: nn.Module, seed: int) -> None:
    """Give BatchNorm running statistics and affine parameters of a trained-looking spread (a fresh BN is the
    identity, which would hide BN folding mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def resnet_case(batch: int, activation: str = "relu", sparsity: float = 0.9, width: int = 64,
                seed: int = 0) -> ModelCase:
    """CIFAR ResNet-18 (3x32x32 input), every conv but the stem and the classifier magnitude-pruned to `sparsity`;
    activations ReLU or k-WTA (KWinners2d over each sample's map, 10% on)."""
    act = {"relu": lambda c: nn.ReLU(), "kwta": kwinners2d}[activation]
    model = resnet18_cifar(10, width=width, activation=act, seed=seed)
    _randomize_bn_(model, seed)
    magnitude_prune_(model, sparsity, _not_stem).eval()
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed + 1))
    tag = "ReLU" if activation == "relu" else f"k-WTA {KWTA_ON:.0%} on"
    return ModelCase(f"resnet18-cifar {activation} pruned{sparsity:.0%} b={batch}", f"resnet-{activation}", model,
                     (x,), batch, {"model": f"CIFAR ResNet-18 width {width}, {tag}, all convs but the stem and the fc "
                                            f"magnitude-pruned to {sparsity:.0%} per layer"})


def bert_case(batch: int = 1, hidden: int = 768, ffn: int = 3072, layers: int = 4, heads: int = 12, seq: int = 128,
              sparsity: float = 0.9, seed: int = 0) -> ModelCase:
    """BERT-shaped encoder, FFN weights magnitude-pruned to `sparsity`, k-WTA FFN activations (10% on per token);
    attention projections dense."""
    model = bert_encoder(hidden, ffn, layers, heads, seq, activation=token_kwinners, seed=seed)
    magnitude_prune_(model, sparsity, lambda name, m: ".ffn." in name).eval()
    ids = torch.randint(0, model.config.vocab, (batch, seq), generator=torch.Generator().manual_seed(seed + 1))
    wrapped = isinstance(model.layers[0].ffn.act, PerToken)
    return ModelCase(f"bert-encoder L{layers} h{hidden} seq{seq} ffn{sparsity:.0%}+kwta b={batch}", "bert", model,
                     (ids,), batch, {"model": f"BERT-shaped encoder, {layers} layers, hidden {hidden}, FFN {ffn}, "
                                              f"seq {seq}; FFN weights {sparsity:.0%} sparse, k-WTA FFN "
                                              f"{KWTA_ON:.0%} on" + (" (KWinners per token via reshape)" if wrapped
                                                                     else "")})


class DecodeStep(nn.Module):
    """One decode step of a GPTDecoder as a module of (ids (B, 1), past_kv) -> (logits, new_kv)."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, ids: Tensor, past_kv: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder(ids, past_kv)


def gpt_case(batch: int = 1, hidden: int = 768, ffn: int = 3072, layers: int = 12, heads: int = 12, kv: int = 128,
             vocab: int = 50257, ffn_sparsity: float = 0.9, attn_sparsity: float = 0.75, kwta: bool = True,
             seed: int = 0) -> ModelCase:
    """One decode step of a GPT-shaped decoder with a `kv`-token KV cache (filled by a prefill of random tokens):
    FFN weights `ffn_sparsity` sparse with k-WTA FFN activations (10% on), q/k/v/out projections `attn_sparsity`
    sparse, embeddings and the LM head dense. Sparsity 0 leaves those layers dense nn.Linear; kwta False keeps GELU."""
    act = token_kwinners if kwta else (lambda n: nn.GELU())
    model = gpt_decoder(hidden, ffn, layers, heads, max_seq=kv + 8, vocab=vocab, activation=act, seed=seed)
    if ffn_sparsity > 0:
        magnitude_prune_(model, ffn_sparsity, lambda name, m: ".ffn." in name)
    if attn_sparsity > 0:
        magnitude_prune_(model, attn_sparsity, lambda name, m: ".attn." in name)
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        _, past = model(torch.randint(0, vocab, (batch, kv), generator=g))
    ids = torch.randint(0, vocab, (batch, 1), generator=g)
    act_tag = f"+kwta{KWTA_ON:.0%}" if kwta else " gelu"
    return ModelCase(f"gpt-decode L{layers} h{hidden} kv{kv} ffn{ffn_sparsity:.0%}{act_tag} attn{attn_sparsity:.0%} "
                     f"b={batch}", "gpt", DecodeStep(model).eval(), (ids, past), batch,
                     {"model": f"GPT-shaped decoder, {layers} layers, hidden {hidden}, vocab {vocab}, one decode step "
                               f"with a {kv}-token KV cache; FFN {ffn_sparsity:.0%} sparse"
                               f"{f' + k-WTA {KWTA_ON:.0%} on' if kwta else ', GELU'}, "
                               f"attention projections {attn_sparsity:.0%} sparse, LM head dense"})


# group name -> case builders (called one at a time, so only one model is alive); `--cases` filters on the names
MODEL_GROUPS: dict[str, list[Callable[[], ModelCase]]] = {
    "resnet-relu": [lambda: resnet_case(1, "relu"), lambda: resnet_case(64, "relu")],
    "resnet-kwta": [lambda: resnet_case(1, "kwta"), lambda: resnet_case(64, "kwta")],
    "bert": [lambda: bert_case(1)],
    "gpt": [lambda: gpt_case(1)],
}
