"""A BERT-shaped encoder (Devlin et al. 2019): token + position embeddings, post-LN Transformer blocks, GELU FFN.

Built from a TransformerConfig with weights drawn from a seed (no pretrained weights, no downloads). The output is
the last hidden states; put any head on top. Token types and dropout are left out.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from frugalnet.models._seed import build_seeded
from frugalnet.models.transformer import (Activation, FeedForward, SelfAttention, TransformerConfig, check_ids, gelu,
                                          init_weights)


class EncoderLayer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, config: TransformerConfig, activation: Activation = gelu) -> None:
        super().__init__()
        self.attn = SelfAttention(config.hidden, config.heads)
        self.ln1 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config.hidden, config.ffn, activation)
        self.ln2 = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = self.ln1(x + self.attn(x, attn_mask=attn_mask)[0])
        return self.ln2(x + self.ffn(x))


class BertEncoder(nn.Module):
    """Shape: ids (B, T) int64 and optional attention_mask (B, T) (1 = token, 0 = padding) -> (B, T, hidden)."""

    def __init__(self, config: TransformerConfig, activation: Activation = gelu) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab, config.hidden)
        self.pos_emb = nn.Embedding(config.max_seq, config.hidden)
        self.emb_ln = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(EncoderLayer(config, activation) for _ in range(config.layers))
        init_weights(self)

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        check_ids(ids, self.config)
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.emb_ln(self.tok_emb(ids) + self.pos_emb(pos)[None])
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        return x


def bert_encoder(hidden: int = 768, ffn: int = 3072, layers: int = 4, heads: int = 12, seq: int = 128,
                 vocab: int = 30522, *, activation: Activation = gelu, seed: int | None = 0) -> BertEncoder:
    """BERT-base-shaped encoder (4 layers by default) for sequences up to `seq` tokens, weights drawn from `seed`."""
    cfg = TransformerConfig(vocab=vocab, hidden=hidden, ffn=ffn, layers=layers, heads=heads, max_seq=seq,
                            layer_norm_eps=1e-12)
    return build_seeded(seed, lambda: BertEncoder(cfg, activation))
