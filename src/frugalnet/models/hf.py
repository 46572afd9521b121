"""Hugging Face `transformers` BERT and GPT-2 built from small configs with weights drawn from a seed (no download),
wrapped to take token ids and return one tensor, so torch.export, the engine and the bench see a plain
tensor-in/tensor-out module. Needs the optional extra: pip install frugalnet[hf].

Note that GPT-2's projections are transformers' Conv1D (a transposed Linear), not nn.Linear.
"""
from __future__ import annotations

from torch import Tensor, nn

from frugalnet.models._seed import build_seeded


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("Hugging Face models need transformers: pip install frugalnet[hf]") from None
    return transformers


class TokensToTensor(nn.Module):
    """ids (B, T) -> the wrapped model's first output (last hidden states for BERT, logits for GPT-2)."""

    def __init__(self, model: nn.Module, **call_kwargs) -> None:
        super().__init__()
        self.model = model
        self.call_kwargs = call_kwargs

    def forward(self, ids: Tensor) -> Tensor:
        return self.model(input_ids=ids, **self.call_kwargs)[0]


def hf_bert(hidden: int = 768, ffn: int = 3072, layers: int = 4, heads: int = 12, seq: int = 128,
            vocab: int = 30522, *, seed: int | None = 0) -> TokensToTensor:
    """transformers.BertModel (no pooler) of these sizes in eval mode: ids (B, T) -> (B, T, hidden)."""
    tf = _transformers()
    cfg = tf.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, max_position_embeddings=seq)
    return build_seeded(seed, lambda: TokensToTensor(tf.BertModel(cfg, add_pooling_layer=False))).eval()


def hf_gpt2(hidden: int = 768, layers: int = 12, heads: int = 12, max_seq: int = 1024, vocab: int = 50257, *,
            seed: int | None = 0) -> TokensToTensor:
    """transformers.GPT2LMHeadModel of these sizes in eval mode, no KV cache: ids (B, T) -> logits (B, T, vocab)."""
    tf = _transformers()
    cfg = tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_seq,
                        bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    return build_seeded(seed, lambda: TokensToTensor(tf.GPT2LMHeadModel(cfg), use_cache=False)).eval()
