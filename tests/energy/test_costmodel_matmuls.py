"""model_cost counts every matrix product, checked against torch.utils.flop_counter.FlopCounterMode (MACs = flops / 2),
and accepts any output structure."""
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from frugalnet.energy.costmodel import model_cost


def torch_macs(model, args=(), kwargs=None, training=False):
    """FlopCounterMode's count / 2, with the attention math path (FlopCounter does not see the fused CPU kernel)
    and the fast path off (FlopCounter counts its fused op as 0)."""
    kwargs = kwargs or {}
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        model.train(training)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            if training:
                out = model(*args, **kwargs)
                out = out["logits"] if isinstance(out, dict) else (out[0] if isinstance(out, tuple) else out)
                out.float().sum().backward()
            else:
                with torch.no_grad():
                    model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops() // 2


def encoder_layer():
    torch.manual_seed(0)
    return nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)


@pytest.mark.parametrize("training", [False, True])
def test_transformer_encoder_layer_counts_attention_and_projections(training):
    layer, x = encoder_layer(), torch.randn(3, 10, 32)
    ours = model_cost(layer, x, training=training).dense_macs
    assert ours == torch_macs(layer, (x,), training=training)
    linear = 30 * 32 * (96 + 32 + 64 + 64)             # in_proj, out_proj, two feed-forward layers
    attention = 2 * 3 * 4 * 10 * 10 * 8                 # Q K^T and P V per head
    if not training:
        assert ours == linear + attention               # once counted at half (the attention products missing)


def test_eval_fast_path_is_counted_and_restored():
    layer, x = encoder_layer().eval(), torch.randn(2, 5, 32)
    assert torch.backends.mha.get_fastpath_enabled()
    cost = model_cost(layer, x)
    assert torch.backends.mha.get_fastpath_enabled()
    assert cost.dense_macs == 10 * 32 * 256 + 2 * 2 * 4 * 5 * 5 * 8


class Mixer(nn.Module):
    """Products outside Linear/Conv2d: a bare parameter matmul, einsum, bmm, a Conv1d, F.linear."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6))
        self.conv = nn.Conv1d(6, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):                                # x: (B, T, 8)
        h = x @ self.w                                   # (B, T, 6)
        a = torch.einsum("btc,bsc->bts", h, h)           # (B, T, T)
        h = torch.bmm(a.softmax(-1), h)                  # (B, T, 6)
        h = self.conv(h.transpose(1, 2)).mean(-1)        # (B, 4)
        return {"logits": self.head(h), "hidden": h}


@pytest.mark.parametrize("training", [False, True])
def test_bare_matmuls_einsum_bmm_and_conv1d_are_counted(training):
    torch.manual_seed(0)
    model, x = Mixer(), torch.randn(2, 7, 8)
    cost = model_cost(model, x, training=training, target=torch.tensor([0, 2]) if training else None)
    assert cost.dense_macs == torch_macs(model, (x,), training=training)
    kinds = {r.kind for r in cost.layers}
    assert {"matmul (aten)", "conv (aten)", "Linear"} <= kinds


def test_effective_macs_of_a_bare_matmul_skip_zeros():
    class M(nn.Module):
        def forward(self, a, b):
            return a @ b

    a = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 4.0]])
    cost = model_cost(M(), (a, b))
    assert cost.dense_macs == 12
    # k=0: 1 x 2, k=1: 0 x 2, k=2: 2 x 1
    assert cost.effective_macs == 4


@dataclass
class Out:
    logits: torch.Tensor
    extra: tuple


class Structured(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        return {"tuple": (y, [y * 2]), "dict": {"out": y}, "dataclass": Out(y, (y,)), "nested": ((y,), None)}[self.kind]


@pytest.mark.parametrize("kind", ["tuple", "dict", "dataclass", "nested"])
@pytest.mark.parametrize("training", [False, True])
def test_any_output_structure(kind, training):
    cost = model_cost(Structured(kind), torch.randn(5, 4), training=training,
                      target=torch.zeros(5, dtype=torch.long) if training else None)
    assert cost.layers[0].gemms["forward"].dense_macs == 5 * 4 * 3


def test_small_hf_bert_matches_flop_counter():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(0, 50, (2, 12))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for training in (False, True):           # the output is a SequenceClassifierOutput (an HF ModelOutput)
        cost = model_cost(model, inputs, training=training, target=torch.tensor([0, 1]) if training else None)
        assert cost.dense_macs == torch_macs(model, kwargs=inputs, training=training)
        assert any("(aten)" in r.kind for r in cost.layers)
