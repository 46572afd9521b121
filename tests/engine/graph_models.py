"""Small models for the engine's graph tests: the ops real CNNs and transformers use, in a few hundred weights."""
import torch
import torch.nn.functional as F
from torch import nn

from frugalnet.nn import KWinners, SparseLinear


class Block(nn.Module):
    """Pre-LN transformer block: fused QKV, SDPA over an optional KV cache, sparse GELU FFN, residual adds."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = SparseLinear(d, 4 * d, 0.7), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x, cache=None):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = [z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v)]
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyDecoder(nn.Module):
    """Token ids + a KV cache per block ((B, heads, T, d/heads) pairs) -> next-token probabilities."""

    def __init__(self, vocab: int = 50, d: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(16, d) * 0.1)
        self.b1, self.b2 = Block(d), Block(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids, cache):
        x = self.emb(ids) + self.pos[:ids.shape[1]]
        x = self.b2(self.b1(x, cache[0]), cache[1])
        return self.head(x)[:, -1].softmax(-1)


def decoder_inputs(batch: int = 2, cached: int = 7, heads: int = 4, d: int = 32):
    ids = torch.randint(0, 50, (batch, 1))
    cache = tuple(tuple(torch.randn(batch, heads, cached, d // heads) for _ in range(2)) for _ in range(2))
    return ids, cache


class BranchyCNN(nn.Module):
    """BN, depthwise dilated conv, 1x1, strided conv, Hardswish/SiLU, adaptive pooling, concatenation, k-WTA."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.c2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 + 8, 32)
        self.kw = KWinners(32, 0.25)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.c1(x)))
        y = F.silu(self.c2(F.hardswish(self.pw(self.dw(x)))))
        z = torch.cat([F.adaptive_avg_pool2d(y, 1).flatten(1), F.adaptive_max_pool2d(x, 1).flatten(1)], 1)
        return self.out(self.kw(self.fc(z)))


def branchy_cnn(seed: int = 0) -> BranchyCNN:
    torch.manual_seed(seed)
    m = BranchyCNN()
    m.bn.running_mean.uniform_(-0.5, 0.5)
    m.bn.running_var.uniform_(0.5, 2.0)
    m.kw.duty_cycle.uniform_(0.0, 0.4)
    return m.eval()
