import pytest
import torch
from torch import nn

from frugalnet.models import (ResNetConfig, TransformerConfig, bert_encoder, gpt_decoder, mobilenet_v2_cifar,
                              resnet18_cifar)
from frugalnet.nn import KWinners2d


def _tiny_resnet(**kw):
    return resnet18_cifar(num_classes=7, width=4, **kw).eval()


def _tiny_mobilenet(**kw):
    return mobilenet_v2_cifar(num_classes=5, width_mult=0.25, last_channels=32, **kw).eval()


def _tiny_bert(**kw):
    return bert_encoder(hidden=32, ffn=64, layers=2, heads=4, seq=16, vocab=50, **kw).eval()


def _tiny_gpt(**kw):
    return gpt_decoder(hidden=32, ffn=64, layers=2, heads=4, max_seq=24, vocab=40, **kw).eval()


def _export(model, args):
    ep = torch.export.export(model, args)
    with torch.no_grad():
        want = model(*args)
        got = ep.module()(*args)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", [_tiny_resnet, _tiny_mobilenet])
def test_cnns_shapes_export_and_seed(build):
    x = torch.randn(2, 3, 32, 32)
    m = build()
    assert m(x).shape[0] == 2 and m(x).dim() == 2
    _export(m, (x,))
    a, b, c = build(seed=3), build(seed=3), build(seed=4)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a(x), c(x))


def test_resnet18_is_resnet18():
    m = resnet18_cifar()
    assert sum(p.numel() for p in m.parameters()) == 11_173_962   # the CIFAR ResNet-18 count
    assert len(m.stages) == 4 and all(len(s) == 2 for s in m.stages)
    assert m.fc.out_features == 10


def test_mobilenet_has_depthwise_convs_and_relu6():
    m = _tiny_mobilenet()
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert any(c.groups == c.in_channels == c.out_channels and c.groups > 1 for c in convs)
    assert any(isinstance(a, nn.ReLU6) for a in m.modules())


def test_activation_factory_swaps_relu_for_kwta():
    m = resnet18_cifar(width=4, activation=lambda c: KWinners2d(c, 0.25, k_inference_factor=1.0)).eval()
    assert not any(isinstance(a, nn.ReLU) for a in m.modules())
    assert sum(isinstance(a, KWinners2d) for a in m.modules()) == 17
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_seed_leaves_global_rng_alone():
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    _tiny_bert(seed=5)
    assert torch.equal(torch.rand(3), want)


def test_bert_encoder_shapes_export_padding():
    m = _tiny_bert()
    ids = torch.randint(0, 50, (2, 16))
    assert m(ids).shape == (2, 16, 32)
    _export(m, (ids,))
    # padding: the first 10 tokens' states do not depend on masked tokens
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[:, 10:] = 0
    ids2 = ids.clone()
    ids2[:, 10:] = 0
    with torch.no_grad():
        torch.testing.assert_close(m(ids, mask)[:, :10], m(ids2, mask)[:, :10])
    assert all(isinstance(layer.ffn.act, nn.GELU) for layer in m.layers)
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 2 * 6


def test_gpt_decode_step_equals_full_forward():
    m = _tiny_gpt()
    ids = torch.randint(0, 40, (2, 12))
    with torch.no_grad():
        full, kv_full = m(ids)
        _, kv = m(ids[:, :11])
        step, kv2 = m(ids[:, 11:], kv)
        assert kv.shape == (2, 2, 2, 4, 11, 8) and kv2.shape == kv_full.shape
        torch.testing.assert_close(step[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(kv2, kv_full, rtol=1e-5, atol=1e-5)
        # a chunk of several tokens after a cache (causal mask offset by the past)
        _, kv = m(ids[:, :7])
        chunk, _ = m(ids[:, 7:], kv)
        torch.testing.assert_close(chunk, full[:, 7:], rtol=1e-5, atol=1e-5)
        # causal: the first positions do not see later tokens
        other = ids.clone()
        other[:, 6:] = 0
        torch.testing.assert_close(m(other)[0][:, :6], full[:, :6])


def test_gpt_decode_step_exports():
    m = _tiny_gpt()
    with torch.no_grad():
        _, kv = m(torch.randint(0, 40, (1, 9)))
    _export(m, (torch.randint(0, 40, (1, 1)), kv))


@pytest.mark.parametrize("kwargs", [dict(hidden=30, heads=4), dict(layers=0), dict(vocab=-1)])
def test_transformer_config_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        TransformerConfig(**kwargs)


def test_bad_inputs_say_what_is_wrong():
    with pytest.raises(ValueError, match="blocks"):
        ResNetConfig(blocks=(2, 2), widths=(8,))
    with pytest.raises(ValueError, match="max_seq"):
        _tiny_gpt()(torch.zeros(1, 25, dtype=torch.long))
    m = _tiny_gpt()
    with pytest.raises(ValueError, match="past_kv"):
        m(torch.zeros(1, 1, dtype=torch.long), torch.zeros(2, 2, 1, 3, 4, 8))
    with pytest.raises(ValueError, match="ids"):
        _tiny_bert()(torch.zeros(2, 3))
