import pytest
import torch
from torch import nn

from frugalnet.sparsity import RandomFanInConfig, sparsify_
from frugalnet.sparsity.dynamic import SET, RigL


def sparse_net() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    return sparsify_(model, RandomFanInConfig(sparsity=0.8))


def train_steps(model, dst, opt, n):
    moved = []
    for _ in range(n):
        loss = model(torch.randn(8, 1, 8, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        moved.append(dst.step())
    return moved


@pytest.mark.parametrize("method", [SET, RigL])
def test_drop_and_regrow_keeps_sparsity_and_moves_connections(method):
    model = sparse_net()
    before = [m.weight_mask.clone() for m in (model[0], model[3])]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dst = method(model, delta_t=3, end_step=100, alpha=0.3, optimizer=opt)
    moved = train_steps(model, dst, opt, 6)
    assert moved[2] and moved[5] and not moved[0]                      # updates every delta_t steps
    for m, b in zip((model[0], model[3]), before):
        assert int(m.weight_mask.sum()) == int(b.sum())                  # same sparsity
        assert (m.weight_mask != b).any()                               # connections moved
        assert (m.weight[~m.weight_mask] == 0).all()


def test_rigl_regrows_where_dense_gradient_is_largest():
    torch.manual_seed(0)
    model = sparsify_(nn.Sequential(nn.Linear(6, 2, bias=False)), RandomFanInConfig(sparsity=0.5))
    layer = model[0]
    dst = RigL(model, delta_t=1, end_step=10, alpha=1.0)
    x = torch.randn(16, 6)
    out = model(x)
    loss = (out * torch.tensor([1.0, -2.0])).sum()
    loss.backward()
    dense_grad = torch.tensor([[1.0, -2.0]]).repeat(16, 1).t() @ x     # d loss / d W, dense
    old = layer.weight_mask.clone()
    frac = dst.drop_fraction(1)
    dst.step()
    grown = layer.weight_mask & ~old
    k = int(frac * int(old.sum()))
    assert int(grown.sum()) == k
    candidates = dense_grad.abs()[~old]
    assert dense_grad.abs()[grown].min() >= candidates.sort(descending=True).values[k - 1] - 1e-6
    assert dst.drop_fraction(0) == pytest.approx(1.0) and dst.drop_fraction(10) == pytest.approx(0.0)


def test_dynamic_needs_a_sparse_model_and_valid_arguments():
    with pytest.raises(ValueError, match="sparsify_"):
        RigL(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="delta_t"):
        SET(sparse_net(), delta_t=0)
    state = SET(sparse_net(), delta_t=2).state_dict()
    other = SET(sparse_net(), delta_t=2)
    other.load_state_dict(state)
    assert other.step_count == 0


def test_rigl_on_attention_and_conv1d_layouts():
    torch.manual_seed(0)
    layer = sparsify_(nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True),
                      RandomFanInConfig(sparsity=0.75))
    before = {n: b.clone() for n, b in layer.named_buffers() if n.endswith("_mask")}
    dst = RigL(layer, delta_t=1, end_step=10, alpha=0.5)
    layer(torch.randn(2, 3, 16)).sum().backward()
    moved = dst.step()
    assert set(moved) >= {"self_attn.in_proj_weight", "self_attn.out_proj", "linear1", "linear2"}
    for n, b in layer.named_buffers():
        if n.endswith("_mask"):
            assert int(b.sum()) == int(before[n].sum()) and (b != before[n]).any()


def test_rigl_dense_gradient_of_hf_conv1d_layout():
    transformers = pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = sparsify_(nn.Sequential(Conv1D(3, 5)), RandomFanInConfig(sparsity=0.6))   # weight (in=5, out=3)
    dst = RigL(model, delta_t=1, end_step=10)
    x = torch.randn(4, 5)
    dense = nn.Parameter(model[0].weight.detach().clone())
    (x @ dense).sum().backward()                                    # the dense gradient, weight layout (5, 3)
    model(x).sum().backward()
    assert torch.allclose(dst._dense_grad(dst.targets[0]), dense.grad, atol=1e-6)
