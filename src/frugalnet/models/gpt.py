"""A GPT-shaped decoder (GPT-2 layout): token + position embeddings, pre-LN blocks with causal self-attention and a
GELU FFN, final LayerNorm and an untied LM head, with an explicit KV cache so one decode step is a plain function of
tensors that torch.export can capture.

    logits, kv = model(prompt)               # prefill: kv (layers, 2, B, heads, T, head_dim)
    logits, kv = model(next_token, kv)       # one decode step: attends to the T cached positions plus itself
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from frugalnet.models._seed import build_seeded
from frugalnet.models.transformer import (Activation, FeedForward, SelfAttention, TransformerConfig, check_ids, gelu,
                                          init_weights)


class DecoderLayer(nn.Module):
    """Pre-LN block: x = x + attn(LN(x)) (causal, cached); x = x + ffn(LN(x))."""

    def __init__(self, config: TransformerConfig, activation: Activation = gelu) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config.hidden, config.heads)
        self.ln2 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config.hidden, config.ffn, activation)

    def forward(self, x: Tensor, past_k: Tensor | None, past_v: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attn(self.ln1(x), past_k, past_v, causal=True)
        x = x + a
        return x + self.ffn(self.ln2(x)), k, v


class GPTDecoder(nn.Module):
    """forward(ids, past_kv=None) -> (logits, new_kv).

    Shape: ids (B, T) int64; past_kv None or (layers, 2, B, heads, P, head_dim) float; logits (B, T, vocab); new_kv
    (layers, 2, B, heads, P + T, head_dim). Positions continue from P, so P + T <= max_seq.
    """

    def __init__(self, config: TransformerConfig, activation: Activation = gelu) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab, config.hidden)
        self.pos_emb = nn.Embedding(config.max_seq, config.hidden)
        self.layers = nn.ModuleList(DecoderLayer(config, activation) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(config.hidden, config.vocab, bias=False)
        init_weights(self)

    def kv_shape(self, batch: int, length: int) -> tuple[int, ...]:
        c = self.config
        return (c.layers, 2, batch, c.heads, length, c.head_dim)

    def _check_past(self, past_kv: Tensor, batch: int) -> None:
        want = self.kv_shape(batch, past_kv.shape[-2] if past_kv.dim() == 6 else 0)
        if tuple(past_kv.shape) != want:
            raise ValueError(f"past_kv must have shape (layers, 2, batch, heads, past, head_dim) = {want[:4]} + "
                             f"(past, {want[5]}), got {tuple(past_kv.shape)}")

    def forward(self, ids: Tensor, past_kv: Tensor | None = None) -> tuple[Tensor, Tensor]:
        past = 0
        if past_kv is not None:
            self._check_past(past_kv, ids.shape[0])
            past = past_kv.shape[-2]
        check_ids(ids, self.config, offset=past)
        pos = torch.arange(past, past + ids.shape[1], device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(pos)[None]
        new_kv = []
        for i, layer in enumerate(self.layers):
            pk = pv = None
            if past_kv is not None:
                pk, pv = past_kv[i, 0], past_kv[i, 1]
            x, k, v = layer(x, pk, pv)
            new_kv.append(torch.stack([k, v]))
        return self.lm_head(self.ln_f(x)), torch.stack(new_kv)


def gpt_decoder(hidden: int = 768, ffn: int = 3072, layers: int = 12, heads: int = 12, max_seq: int = 1024,
                vocab: int = 50257, *, activation: Activation = gelu, seed: int | None = 0) -> GPTDecoder:
    """GPT-2-small-shaped decoder (124 M parameters at the defaults, LM head untied) with weights drawn from `seed`."""
    cfg = TransformerConfig(vocab=vocab, hidden=hidden, ffn=ffn, layers=layers, heads=heads, max_seq=max_seq)
    return build_seeded(seed, lambda: GPTDecoder(cfg, activation))
