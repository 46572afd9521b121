"""sparsify_ on the reference models (ResNet-18, BERT-shaped encoder, GPT-shaped decoder) and HF GPT-2 from config:
every layer asked for is sparse at the asked sparsity, k-WTA sits at every activation, masks hold."""
import os

import pytest
import torch
from torch import nn

from frugalnet.nn import KWinners, KWinners2d, SparseConv2d, SparseLinear
from frugalnet.sparsity import KWinnersConfig, MagnitudeConfig, sparsify_
from frugalnet.sparsity.checkpoint import load_sparse, save_sparse
from frugalnet.sparsity.pruning import measured_sparsity

models = pytest.importorskip("frugalnet.models")


def _weights(model):
    """(zeros, numel) over all Linear/Conv/Conv1D/attention weights, and over embeddings, separately."""
    out = {"layers": [0, 0], "embeddings": [0, 0]}
    for name, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if p.dim() < 2:
                continue
            part = "embeddings" if isinstance(m, nn.Embedding) else "layers"
            out[part][0] += int((p == 0).sum())
            out[part][1] += p.numel()
    return {k: z / n if n else 0.0 for k, (z, n) in out.items()}


def test_resnet18_every_conv_and_activation():
    model = models.resnet18_cifar(width=8, seed=0)
    n_act = sum(type(m) is nn.ReLU for m in model.modules())
    sparsify_(model, [MagnitudeConfig(sparsity=0.9), KWinnersConfig(percent_on=0.25)],
              example_input=torch.randn(2, 3, 32, 32))
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, KWinners2d) for m in model.modules()) == n_act == 17
    assert _weights(model)["layers"] == pytest.approx(0.9, abs=0.005)
    assert all(s == pytest.approx(0.9, abs=0.01) for s in measured_sparsity(model).values())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("kind", ["bert", "gpt"])
def test_transformers_every_projection_and_gelu(kind):
    if kind == "bert":
        model = models.bert_encoder(hidden=32, ffn=64, layers=2, heads=2, seq=16, vocab=50, seed=0)
    else:
        model = models.gpt_decoder(hidden=32, ffn=64, layers=2, heads=2, max_seq=16, vocab=50, seed=0)
    ids = torch.randint(0, 50, (2, 8))
    n_gelu = sum(isinstance(m, nn.GELU) for m in model.modules())
    _, summary = sparsify_(model, [MagnitudeConfig(sparsity=0.9), KWinnersConfig(percent_on=0.1)],
                           example_input=ids, return_summary=True)
    assert not any(type(m) is nn.Linear for m in model.modules())
    kws = [m for m in model.modules() if isinstance(m, KWinners)]
    assert len(kws) == n_gelu == 2 and all(k.n == 64 for k in kws)
    frac = _weights(model)
    assert frac["layers"] == pytest.approx(0.9, abs=0.005) and frac["embeddings"] < 0.01   # embeddings apart
    out = model(ids)
    assert (out[0] if isinstance(out, tuple) else out).shape[:2] == (2, 8)


@pytest.mark.slow   # the full-width ResNet-18 (11.2 M weights): ~30 s on 2 shared cores
def test_resnet18_checkpoint_under_0_3x_and_bit_exact(tmp_path):
    model = models.resnet18_cifar(seed=0)
    dense_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    sparsify_(model, MagnitudeConfig(sparsity=0.9))
    path = save_sparse(model, tmp_path / "r18")
    ratio = os.path.getsize(path) / dense_bytes
    assert ratio <= 0.3, ratio
    fresh = load_sparse(path, models.resnet18_cifar(seed=1))
    a, b = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_hf_gpt2_conv1d_tied_head_kwinners_and_pretrained_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from frugalnet.sparsity.checkpoint import from_pretrained_sparse, save_pretrained_sparse

    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=60, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with pytest.raises(ValueError, match="tied"):
        sparsify_(model, MagnitudeConfig(sparsity=0.9))
    ids = torch.randint(0, 60, (2, 8))
    _, summary = sparsify_(model, [MagnitudeConfig(sparsity=0.9), KWinnersConfig(percent_on=0.1)],
                           exclude=["lm_head"], example_input=ids, return_summary=True)
    conv1d = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert len(conv1d) == 8 and all(summary["weights"][n]["sparsity"] == pytest.approx(0.9, abs=0.01)
                                    for n in conv1d)
    assert model.lm_head.weight is model.transformer.wte.weight          # the tie holds
    assert sum(isinstance(m, KWinners) for m in model.modules()) == 2    # NewGELUActivation -> k-WTA
    c_fc = model.transformer.h[0].mlp.c_fc
    with torch.no_grad():
        c_fc.weight.add_(1.0)                                            # a manual update outside the mask
    y = model(ids).logits
    assert (c_fc.weight[~c_fc.weight_mask] == 0).all()
    save_pretrained_sparse(model, tmp_path / "gpt2")
    again = from_pretrained_sparse(transformers.GPT2LMHeadModel, tmp_path / "gpt2").eval()
    assert torch.equal(again(ids).logits, y)
    assert again.lm_head.weight is again.transformer.wte.weight
