"""Streams, context providers, penalties, metrics: the parts of frugalnet.continual."""
import math

import pytest
import torch

from frugalnet.continual import (EWC, SI, OneHotContext, OnlinePrototypeContext, PrototypeContext, TrainSetup,
                                 accuracy_curve, average_accuracy, backward_transfer, evaluate_task, forgetting,
                                 make_context, make_stream, nearest, train_task)
from frugalnet.continual.networks import DenseMLP, XdGMLP
from frugalnet.continual.strategies import STRATEGIES, Hyper
from frugalnet.data import load
from frugalnet.data.core import DataBundle, Split


@pytest.fixture(scope="module")
def bundle():
    return load("mnist-5k")


def _toy_bundle(n=200, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % classes
    return DataBundle("toy", Split(x, y), Split(x[:50], y[:50]), classes, (1, 4, 4), 0.5, 0.3)


def test_permuted_stream_task0_unpermuted_and_tasks_are_permutations(bundle):
    s = make_stream("permuted", bundle, 3, seed=0)
    t0, t2 = s.train(0), s.train(2)
    assert t0.x.shape == (4000, 784)
    torch.testing.assert_close(t0.x, bundle.normalize(bundle.train.x).reshape(4000, -1))
    torch.testing.assert_close(t2.x, t0.x[:, s.permutations[2]])
    assert torch.equal(t2.y, t0.y)
    assert sorted(s.permutations[1].tolist()) == list(range(784))
    # same seed -> same permutations; batches that mix tasks match the per-task data
    assert torch.equal(make_stream("permuted", bundle, 3, seed=0).permutations, s.permutations)
    xb, yb = s.train_batch(torch.tensor([2, 0, 1]), torch.tensor([5, 6, 7]))
    torch.testing.assert_close(xb[0], t2.x[5])
    torch.testing.assert_close(xb[2], s.train(1).x[7])
    assert yb.tolist() == t0.y[5:8].tolist()


def test_split_stream_relabels_within_task():
    b = _toy_bundle()
    s = make_stream("split", b, 5)
    assert s.num_outputs == 2 and s.groups[1] == [2, 3]
    tr = s.train(1)
    assert set(tr.y.tolist()) == {0, 1}
    assert len(tr) == 40
    assert s.train_sizes() == [40] * 5
    xb, yb = s.train_batch(torch.tensor([1]), torch.tensor([3]))
    torch.testing.assert_close(xb[0], tr.x[3])
    with pytest.raises(ValueError, match="num_tasks"):
        make_stream("split", b, 11)
    with pytest.raises(ValueError, match="stream"):
        make_stream("rotated", b, 2)
    with pytest.raises(ValueError, match="task"):
        s.train(5)


def test_nearest_prototype():
    protos = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[1.0, 1.0], [9.0, 1.0], [1.0, 8.0], [6.0, 0.0]])
    assert nearest(x, protos).tolist() == [0, 1, 2, 1]
    with pytest.raises(ValueError, match="prototypes"):
        nearest(x, protos[:0])


def test_prototype_context_is_the_task_mean_and_infers_tasks(bundle):
    s = make_stream("permuted", bundle, 3)
    ctx = PrototypeContext(784, 3)
    for t in range(3):
        ctx.begin_task(t, s.train(t).x)
    torch.testing.assert_close(ctx.table()[1], s.train(1).x.mean(0))
    for t in range(3):
        assert (ctx.infer(s.test(t).x, t) == t).float().mean() > 0.99
    # state lives in buffers
    twin = PrototypeContext(784, 3)
    twin.load_state_dict(ctx.state_dict())
    torch.testing.assert_close(twin.table(), ctx.table())


def test_online_prototypes_find_task_boundaries_without_labels(bundle):
    s = make_stream("permuted", bundle, 4)
    ctx = OnlinePrototypeContext(784, 4)
    assigned = []
    for t in range(4):
        x = s.train(t).x
        for epoch in range(2):
            for start in range(0, 1024, 256):
                assigned.append((t, ctx.train_context(-1, x[start:start + 256])))
    assert int(ctx.num) == 4
    assert all(t == i for t, i in assigned)
    inferred = torch.cat([ctx.infer(s.test(t).x, t) for t in range(4)])
    truth = torch.arange(4).repeat_interleave(len(s.test(0)))
    assert (inferred == truth).float().mean() > 0.99
    with pytest.raises(ValueError, match="threshold"):
        OnlinePrototypeContext(784, 4, threshold=0.5)


def test_onehot_context_reads_the_true_task():
    ctx = make_context("onehot", 784, 5)
    assert isinstance(ctx, OneHotContext) and ctx.dim == 5
    assert ctx.infer(torch.zeros(3, 784), 4).tolist() == [4, 4, 4]
    torch.testing.assert_close(ctx.table()[2], torch.eye(5)[2])
    with pytest.raises(ValueError, match="context"):
        make_context("oracle", 784, 5)


def test_metrics_on_a_known_matrix():
    r = [[0.9, None, None],
         [0.7, 0.8, None],
         [0.6, 0.5, 0.95]]
    assert math.isclose(average_accuracy(r), (0.6 + 0.5 + 0.95) / 3)
    assert math.isclose(backward_transfer(r), ((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    assert math.isclose(forgetting(r), ((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    assert accuracy_curve(r) == pytest.approx([0.9, 0.75, (0.6 + 0.5 + 0.95) / 3])
    # rows measured only now and then: the curve is None there, forgetting uses what was measured
    sparse = [[0.9, None, None], [None, 0.8, None], [0.6, 0.5, 0.95]]
    assert accuracy_curve(sparse)[1] is None
    assert math.isclose(forgetting(sparse), ((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    with pytest.raises(ValueError, match="R\\[2\\]\\[0\\]"):
        average_accuracy([[0.9, None, None], [0.7, 0.8, None], [None, 0.5, 0.95]])
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[0.9, 0.1]])


def _toy_task(seed, n=256, d=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    return Split(x, (x @ w > 0).long())


def test_si_accumulates_importance_and_penalises_moving_important_weights():
    torch.manual_seed(0)
    net = DenseMLP(8, (16,), 2)
    si = SI(net, c=1.0)
    assert si.penalty(net) == 0.0
    train_task(net, si, None, _toy_task(0), 0, TrainSetup(epochs=3, batch_size=32, lr=0.01))
    assert int(si.tasks) == 1
    importance = si.importance_classifier__weight
    assert torch.all(importance >= 0) and importance.sum() > 0
    assert float(si.penalty(net).detach()) == pytest.approx(0.0, abs=1e-9)   # anchored at the current weights
    with torch.no_grad():
        net.classifier.weight.add_(0.1)
    expected = (importance * 0.01).sum()
    assert float(si.penalty(net).detach()) >= float(expected) * 0.999


def test_ewc_fisher_is_positive_and_penalty_grows_with_distance():
    torch.manual_seed(0)
    net = DenseMLP(8, (16,), 2)
    ewc = EWC(net, lam=10.0, fisher_samples=64)
    task = _toy_task(1)
    train_task(net, ewc, None, task, 0, TrainSetup(epochs=2, batch_size=32, lr=0.01))
    assert ewc.fisher_classifier__weight.sum() > 0
    with torch.no_grad():
        net.classifier.weight.add_(0.1)
    p1 = float(ewc.penalty(net).detach())
    with torch.no_grad():
        net.classifier.weight.add_(0.1)
    assert float(ewc.penalty(net).detach()) > p1 > 0
    with pytest.raises(ValueError, match="lam"):
        EWC(net, lam=-1.0)


def test_xdg_gates_keep_one_fifth_of_units_per_context():
    net = XdGMLP(8, (50, 50), 3, max_contexts=4, gate_fraction=0.8, seed=0)
    assert torch.all(net.gates0.sum(1) == 10)
    assert not torch.equal(net.gates0[0], net.gates0[1])
    with pytest.raises(ValueError, match="index"):
        net(torch.randn(2, 8), None, None)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_builds_trains_and_evaluates(name):
    torch.manual_seed(0)
    strategy = STRATEGIES[name]
    h = Hyper(input_size=8, output_size=2, hidden_sizes=(32, 32), max_tasks=2, dim_context=8, num_segments=2,
              kw_percent_on=0.25)
    net = strategy.build_net(h)
    reg = strategy.build_regularizer(net, h)
    provider = PrototypeContext(8, 2) if strategy.uses_context else None
    task = _toy_task(2)
    train_task(net, reg, provider, task, 0, TrainSetup(epochs=3, batch_size=32, lr=0.01))
    out = evaluate_task(net, provider, task, 0)
    assert out["acc"] > 0.7
    assert (out["context_acc"] == 1.0) if strategy.uses_context else out["context_acc"] is None


def test_adam_eps_shrinks_the_steps_of_weights_with_tiny_gradients():
    """make_adam's eps: with the default a weight with a tiny gradient still moves ~lr; with eps=1e-3 it barely
    moves, while a weight with a large gradient keeps a step of about lr."""
    from frugalnet.continual.learner import make_adam

    def first_step(eps):
        net = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            net.weight.zero_()
        opt = make_adam(net, lr=0.01, eps=eps)
        net(torch.tensor([[1e-6, 1.0]])).sum().backward()    # gradients 1e-6 and 1.0
        opt.step()
        return net.weight.detach().abs().flatten()

    small_default, large_default = first_step(1e-8)
    small_eps, large_eps = first_step(1e-3)
    assert small_default > 0.009 and large_default > 0.009      # Adam: ~lr whatever the gradient
    assert small_eps < 1e-4 and large_eps > 0.009                # eps=1e-3: tiny gradient, tiny step
    with pytest.raises(ValueError, match="adam_eps"):
        TrainSetup(adam_eps=0.0).validate()


def test_kwta_ablation_shares_the_dendritic_network_init():
    from frugalnet.continual.networks import SparseKWMLP

    torch.manual_seed(0)                                   # same weight draws for both (the seed fixes the masks)
    plain = SparseKWMLP(20, (40, 40), 3, kw_percent_on=0.25, weight_sparsity=0.5, seed=1, init="fan_in")
    torch.manual_seed(0)
    scaled = SparseKWMLP(20, (40, 40), 3, kw_percent_on=0.25, weight_sparsity=0.5, seed=1, init="kwta",
                         init_gain=3.0)
    torch.testing.assert_close(scaled.body[0].weight, 3 * plain.body[0].weight)     # first layer: the gain
    torch.testing.assert_close(scaled.body[2].weight, 6 * plain.body[2].weight)     # gain / sqrt(0.25)
    assert torch.all(scaled.body[2].weight[~scaled.body[2].weight_mask] == 0)


def test_si_penalty_value_and_gradient_match_the_plain_expression():
    torch.manual_seed(0)
    net = DenseMLP(6, (5,), 3)
    si = SI(net, c=0.7)
    si.begin_task(net)
    with torch.no_grad():
        for n, p in net.named_parameters():
            si._buf("importance", n).uniform_(0, 2)
            si._buf("anchor", n).copy_(p + torch.randn_like(p))
    si.tasks.fill_(1)
    got = si.penalty(net)
    g_got = torch.autograd.grad(got, list(net.parameters()))
    want = 0.7 * sum((si._buf("importance", n) * (p - si._buf("anchor", n)) ** 2).sum()
                     for n, p in net.named_parameters())
    g_want = torch.autograd.grad(want, list(net.parameters()))
    torch.testing.assert_close(got, want)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)
