"""The reference models (frugalnet.models, tiny sizes) compile and match PyTorch, pruned and with k-WTA."""
import pytest
import torch

import frugalnet.engine as E
from frugalnet.models import bert_encoder, gpt_decoder, mobilenet_v2_cifar, resnet18_cifar
from frugalnet.nn import KWinners2d

torch.set_num_threads(2)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]   # whole models: minutes on 2 cores


def _close(out, ref):
    for a, b in zip(torch.utils._pytree.tree_leaves(out), torch.utils._pytree.tree_leaves(ref)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(b.abs().max())))


def _prune_(model, fraction=0.8):
    """Magnitude-prune every conv/linear weight (a mask the engine sees only as zeros)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.weight.numel() > 64:
                w = m.weight
                w.mul_(w.abs() > w.abs().flatten().kthvalue(int(fraction * w.numel())).values)
    return model


@pytest.mark.parametrize("build", [
    lambda: resnet18_cifar(num_classes=7, width=4),
    lambda: resnet18_cifar(num_classes=7, width=4,
                           activation=lambda c: KWinners2d(c, 0.25, k_inference_factor=1.0)),
    lambda: mobilenet_v2_cifar(num_classes=5, width_mult=0.25, last_channels=32)])
def test_cnns_compile_and_match(build):
    model = _prune_(build()).eval()
    x = torch.randn(2, 3, 32, 32)
    engine = E.compile(model, x, batch_sizes=(1, 2), repeats=1)
    with torch.no_grad():
        for b in (1, 2):
            _close(engine(x[:b]), model(x[:b]))
    assert sum(c["kind"] == "conv2d" for c in engine.summary(1)) >= 17


def test_bert_encoder_compiles_and_matches():
    model = _prune_(bert_encoder(hidden=32, ffn=64, layers=2, heads=4, seq=16, vocab=50)).eval()
    ids = torch.randint(0, 50, (2, 16))
    engine = E.compile(model, ids, batch_sizes=(1, 2), repeats=1)
    with torch.no_grad():
        _close(engine(ids), model(ids))
        _close(engine(ids[:1]), model(ids[:1]))


def test_gpt_decode_step_with_kv_cache_compiles_and_matches():
    model = _prune_(gpt_decoder(hidden=32, ffn=64, layers=2, heads=4, max_seq=24, vocab=40)).eval()
    with torch.no_grad():
        _, kv = model(torch.randint(0, 40, (2, 8)))
    tok = torch.randint(0, 40, (2, 1))
    engine = E.compile(model, (tok, kv), batch_sizes=(1, 2), repeats=1)
    assert engine.batch_dims == [0, 2]          # the cache's batch is its dim 2
    with torch.no_grad():
        _close(engine(tok, kv), model(tok, kv))
        _close(engine(tok[:1], kv[:, :, :1]), model(tok[:1], kv[:, :, :1]))
