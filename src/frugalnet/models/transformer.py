"""Pieces shared by the BERT-shaped encoder and the GPT-shaped decoder: a config, self-attention and the FFN.

Every projection is an nn.Linear (q, k, v, out, fc1, fc2), so sparsify_ and quantize_ reach each one; the two
batched matmuls of attention run in F.scaled_dot_product_attention. The FFN's activation is a module built by
`activation(ffn)`, so a k-WTA conversion can swap it. No dropout: these models are for inference and benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frugalnet.utils.validation import check_positive_int

Activation = Callable[[int], nn.Module]


def gelu(features: int) -> nn.Module:
    """The default FFN activation factory: nn.GELU (exact, erf-based)."""
    return nn.GELU()


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes of a Transformer: vocabulary, model width, FFN width, depth, heads and the longest sequence."""

    vocab: int = 30522
    hidden: int = 768
    ffn: int = 3072
    layers: int = 12
    heads: int = 12
    max_seq: int = 512
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vocab", "hidden", "ffn", "layers", "heads", "max_seq"):
            check_positive_int(name, getattr(self, name))
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections and an optional KV cache.

    forward(x, past_k, past_v, causal, attn_mask) -> (out, k, v): x (B, T, hidden); past_k/past_v (B, heads, P,
    head_dim) or None; k, v returned include the past (B, heads, P + T, head_dim). With `causal`, query t attends to
    keys 0..P+t. `attn_mask` (bool, broadcastable to (B, heads, T, P+T), True = attend) is for padding.
    """

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, z: Tensor) -> Tensor:
        b, t, c = z.shape
        return z.view(b, t, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, past_k: Tensor | None = None, past_v: Tensor | None = None, causal: bool = False,
                attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        b, t, c = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        past = 0
        if past_k is not None and past_v is not None:
            past = past_k.shape[2]
            k = torch.cat([past_k, k], dim=2)
            v = torch.cat([past_v, v], dim=2)
        is_causal = False
        if causal and t > 1:
            if past == 0 and attn_mask is None:
                is_causal = True   # square causal mask: SDPA's own
            else:                  # query i sits at position past + i
                allowed = torch.arange(past + t, device=x.device)[None, :] <= \
                    (past + torch.arange(t, device=x.device))[:, None]
                attn_mask = allowed if attn_mask is None else attn_mask & allowed
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        return self.out(att.transpose(1, 2).reshape(b, t, c)), k, v


class FeedForward(nn.Module):
    """fc1 -> act -> fc2. Shape: (*, hidden) -> (*, hidden)."""

    def __init__(self, hidden: int, ffn: int, activation: Activation = gelu) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn)
        self.act = activation(ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """BERT/GPT-2 initialisation: normal(0, std) for Linear and Embedding weights, zero biases, unit LayerNorm."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_ids(ids: Tensor, config: TransformerConfig, offset: int = 0) -> None:
    """Token ids must be a (B, T) integer tensor with offset + T <= max_seq (ids themselves are checked by
    nn.Embedding)."""
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"ids must be a (batch, tokens) int64 tensor, got shape {tuple(ids.shape)} dtype {ids.dtype}")
    if offset + ids.shape[1] > config.max_seq:
        raise ValueError(f"sequence of {offset + ids.shape[1]} tokens exceeds max_seq={config.max_seq}; build the "
                         f"model with a larger max_seq")
