"""The post-step re-zeroing is skipped only when the zeros provably held; every other route still re-zeroes."""
import pytest
import torch
from torch import nn

from frugalnet.nn import SparseLinear
from frugalnet.nn.sparse import SparseWeightMixin


def _count_rezeros(monkeypatch) -> list:
    calls = []
    original = SparseWeightMixin.apply_mask_

    def counting(self):
        calls.append(self)
        original(self)
    monkeypatch.setattr(SparseWeightMixin, "apply_mask_", counting)
    return calls


def _step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(SparseLinear(12, 16, 0.7, seed=0), nn.ReLU(), SparseLinear(16, 3, 0.5, seed=1))


def _zeros_hold(model) -> bool:
    return all(int((m.weight[~m.weight_mask] != 0).sum()) == 0 for m in model if isinstance(m, SparseLinear))


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
], ids=["sgd", "adam", "adamw"])
def test_rezero_skipped_once_clean_and_zeros_hold(make_opt, monkeypatch):
    model = _model()
    opt = make_opt(model.parameters())
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    calls = _count_rezeros(monkeypatch)
    for _ in range(4):
        _step(model, opt, x, y)
    assert calls == []                         # weights zeroed at construction, state born clean: never re-zeroed
    assert _zeros_hold(model)
    for m in (model[0], model[2]):
        for t in opt.state[m.weight].values():
            if t.shape == m.weight.shape:
                assert int((t[~m.weight_mask] != 0).sum()) == 0


def test_writes_between_steps_are_rezeroed(monkeypatch):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    _step(model, opt, x, y)
    with torch.no_grad():
        model[0].weight.add_(1.0)              # junk outside the mask, through PyTorch (version bumped)
    calls = _count_rezeros(monkeypatch)
    _step(model, opt, x, y)
    assert calls == [model[0]] and _zeros_hold(model)


def test_state_from_another_mask_is_cleared_on_mask_change():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    for _ in range(2):
        _step(model, opt, x, y)
    layer = model[0]
    new_mask = torch.roll(layer.weight_mask, 1, dims=1)     # momentum is nonzero where the new mask has gaps
    layer.set_mask_(new_mask)
    for _ in range(2):
        _step(model, opt, x, y)
    assert _zeros_hold(model)
    assert int((opt.state[layer.weight]["momentum_buffer"][~new_mask] != 0).sum()) == 0


def test_other_optimizers_rezero_every_step(monkeypatch):
    model = _model()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 12), torch.randint(0, 3, (8,))
    calls = _count_rezeros(monkeypatch)
    for _ in range(2):
        _step(model, opt, x, y)
    assert len(calls) == 4 and _zeros_hold(model)


def test_state_dict_holds_zeros_after_untracked_write():
    layer = SparseLinear(10, 4, 0.5, seed=0)
    layer.weight.data.add_(1.0)                # .data bypasses the version counter
    sd = layer.state_dict()
    assert int((sd["weight"][~sd["weight_mask"]] != 0).sum()) == 0
