"""Hugging Face BERT and GPT-2 (tiny configs, random weights, no download) compile and match."""
import pytest
import torch

import frugalnet.engine as E

transformers = pytest.importorskip("transformers")
torch.set_num_threads(2)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]   # whole models: minutes on 2 cores


def _close(out, ref):
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_hf_bert_compiles_and_matches():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 12))
    engine = E.compile(model, ids, batch_sizes=(1, 2), repeats=1)
    assert [c["kind"] for c in engine.summary(1)].count("linear") >= 12
    with torch.no_grad():
        ref = model(ids)
    out = engine(ids)
    _close(out.last_hidden_state, ref.last_hidden_state)
    _close(out.pooler_output, ref.pooler_output)


def test_hf_gpt2_compiles_and_matches():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                  use_cache=False)   # a DynamicCache output is no pytree torch.export knows
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 10))
    engine = E.compile(model, ids, batch_sizes=(2,), repeats=1)
    with torch.no_grad():
        ref = model(ids).logits
    out = engine(ids)
    _close(out.logits if hasattr(out, "logits") else out[0], ref)
