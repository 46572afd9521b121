"""DendriteSegments, DendriticLinear (gating rules) and DendriticMLP."""
import copy

import pytest
import torch

from frugalnet.nn.dendrites import (DendriteSegments, DendriticLinear, DendriticMLP, gate_abs_max, gate_bias,
                                    gate_max, scale_feedforward_init_)


def test_segments_shape_and_value():
    seg = DendriteSegments(num_units=3, num_segments=4, dim_context=5, sparsity=0.0, seed=0)
    ctx = torch.randn(2, 5)
    d = seg(ctx)
    assert d.shape == (2, 3, 4)
    expected = torch.einsum("usc,bc->bus", seg.weight, ctx)
    torch.testing.assert_close(d, expected)
    # A shared context gives the same activations for every sample, computed once.
    torch.testing.assert_close(seg(ctx[0]), d[0])


def test_segment_sparsity_is_per_segment_and_enforced_by_the_optimizer():
    seg = DendriteSegments(num_units=6, num_segments=3, dim_context=20, sparsity=0.75, seed=1)
    per_segment = seg.weight_mask.sum(-1)
    assert torch.all(per_segment == 5)                      # round(0.25 * 20) nonzeros in every segment
    assert torch.all(seg.weight[~seg.weight_mask] == 0)
    opt = torch.optim.Adam(seg.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        seg(torch.randn(4, 20)).pow(2).sum().backward()
        opt.step()
    assert torch.all(seg.weight[~seg.weight_mask] == 0)
    assert torch.any(seg.weight[seg.weight_mask] != 0)


def test_abs_max_keeps_the_sign_of_the_strongest_segment():
    y = torch.tensor([[2.0, 2.0]])
    d = torch.tensor([[[0.5, -3.0], [1.0, 0.2]]])           # unit 0: |-3| wins, unit 1: 1.0 wins
    out = gate_abs_max(y, d)
    torch.testing.assert_close(out, torch.tensor([[2.0 * torch.sigmoid(torch.tensor(-3.0)),
                                                   2.0 * torch.sigmoid(torch.tensor(1.0))]]))
    # "max" would pick 0.5 for unit 0 instead, "bias" adds the max.
    torch.testing.assert_close(gate_max(y, d)[0, 0], 2.0 * torch.sigmoid(torch.tensor(0.5)))
    torch.testing.assert_close(gate_bias(y, d), torch.tensor([[2.5, 3.0]]))


@pytest.mark.parametrize("gating", ["abs_max", "max", "bias"])
def test_dendritic_linear_matches_its_parts(gating):
    layer = DendriticLinear(7, 5, num_segments=3, dim_context=4, weight_sparsity=0.5, gating=gating, seed=2)
    x, ctx = torch.randn(6, 7), torch.randn(6, 4)
    y = layer.linear(x)
    d = layer.segments(ctx)
    ref = {"abs_max": gate_abs_max, "max": gate_max, "bias": gate_bias}[gating](y, d)
    torch.testing.assert_close(layer(x, ctx), ref)
    # feed-forward weights are sparse: every unit keeps round(0.5 * 7) = 4 inputs
    assert torch.all(layer.linear.weight_mask.sum(1) == 4)


def test_dendritic_linear_gradients_reach_the_winning_segment_only():
    layer = DendriticLinear(4, 3, num_segments=5, dim_context=6, weight_sparsity=0.0, seed=3)
    ctx = torch.randn(6)
    layer(torch.randn(8, 4), ctx).sum().backward()
    g = layer.segments.weight.grad.abs().sum(-1)             # (units, segments)
    winners = layer.segments(ctx).abs().argmax(-1)
    for u in range(3):
        assert g[u, winners[u]] > 0
        assert torch.all(g[u, torch.arange(5) != winners[u]] == 0)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="gating"):
        DendriticLinear(4, 3, 2, 5, gating="min")
    with pytest.raises(ValueError, match="sparsity"):
        DendriteSegments(3, 2, 5, sparsity=1.0)
    with pytest.raises(ValueError, match="num_segments"):
        DendriteSegments(3, 0, 5)
    seg = DendriteSegments(3, 2, 5)
    with pytest.raises(ValueError, match="context"):
        seg(torch.randn(2, 4))
    layer = DendriticLinear(4, 3, 2, 5)
    with pytest.raises(ValueError, match="contexts"):
        layer(torch.randn(3, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="hidden_sizes"):
        DendriticMLP(4, [], 2, 2, 5)


def test_mlp_shapes_kwta_sparsity_and_context_dependence():
    torch.manual_seed(0)
    net = DendriticMLP(20, [40, 30], 3, num_segments=2, dim_context=6, kw_percent_on=0.1, weight_sparsity=0.5,
                       seed=0)
    x = torch.randn(5, 20)
    out = net(x, torch.randn(6))
    assert out.shape == (5, 3)
    # k-WTA after each dendritic layer: at most k = 4 of 40 units on
    h = net.kwinners[0](net.layers[0](x, torch.randn(6)))
    assert int((h != 0).sum(1).max()) <= 4
    # a different context changes the output (the dendrites route the input)
    assert not torch.allclose(net(x, torch.randn(6) * 3), net(x, torch.randn(6) * 3))
    # state_dict round trip keeps masks and outputs
    twin = copy.deepcopy(net)
    twin.load_state_dict(net.state_dict())
    c = torch.randn(6)
    net.eval(), twin.eval()
    torch.testing.assert_close(net(x, c), twin(x, c))


def test_mlp_learns_two_tasks_that_only_the_context_separates():
    """Same inputs, opposite labels in two contexts: only the dendrites can tell them apart."""
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    y0 = (x[:, 0] > 0).long()
    contexts = torch.eye(2)
    net = DendriticMLP(10, [64], 2, num_segments=2, dim_context=2, kw_percent_on=0.25, weight_sparsity=0.0, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        for t in range(2):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x, contexts[t] * 4), y0 if t == 0 else 1 - y0).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc0 = (net(x, contexts[0] * 4).argmax(1) == y0).float().mean()
        acc1 = (net(x, contexts[1] * 4).argmax(1) == 1 - y0).float().mean()
    assert acc0 > 0.9 and acc1 > 0.9


def test_kwta_init_scales_layers_fed_by_kwta_and_gain_scales_all():
    """init="kwta": layers after k-WTA start 1/sqrt(kw) larger than plain fan-in init; init_gain multiplies all."""
    kw = 0.04
    kwargs = dict(num_segments=2, dim_context=6, kw_percent_on=kw, weight_sparsity=0.5, seed=3)
    nets = []
    for init, gain in (("fan_in", 1.0), ("kwta", 1.0), ("kwta", 2.0)):
        torch.manual_seed(0)                               # same weight draws (the seed fixes the masks)
        nets.append(DendriticMLP(30, [40, 50], 4, init=init, init_gain=gain, **kwargs))
    plain, modified, doubled = nets
    for net in (plain, modified, doubled):                   # same masks, masked weights still zero
        for layer in net.layers:
            assert torch.all(layer.linear.weight[~layer.linear.weight_mask] == 0)
        torch.testing.assert_close(net.layers[1].linear.weight_mask, plain.layers[1].linear.weight_mask)
    w = lambda net, i: net.layers[i].linear.weight.abs().max()      # noqa: E731
    # the first layer reads the (dense) input: unchanged by "kwta", doubled by the gain
    torch.testing.assert_close(w(modified, 0), w(plain, 0))
    torch.testing.assert_close(w(doubled, 0), 2 * w(plain, 0))
    # the second hidden layer reads a k-WTA output: 1/sqrt(kw) = 5x larger (same seed, same draws)
    torch.testing.assert_close(w(modified, 1), 5 * w(plain, 1))
    torch.testing.assert_close(w(doubled, 1), 10 * w(plain, 1))
    # classifier: uniform in +-gain/sqrt(kw * fan_in)
    bound = 2.0 / (kw * 50) ** 0.5
    assert doubled.classifier.weight.abs().max() <= bound
    assert doubled.classifier.weight.abs().max() > 0.8 * bound
    # segments are not touched by the feed-forward init
    torch.testing.assert_close(doubled.layers[0].segments.weight, plain.layers[0].segments.weight)
    with pytest.raises(ValueError, match="init"):
        DendriticMLP(30, [40], 4, init="xavier", **kwargs)
    with pytest.raises(ValueError, match="init_gain"):
        DendriticMLP(30, [40], 4, init_gain=0.0, **kwargs)
    with pytest.raises(ValueError, match="init"):
        scale_feedforward_init_(plain.layers, plain.classifier, kw, init="nope")
