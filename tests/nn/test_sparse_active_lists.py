"""k-WTA hands its winners to the sparse layers around it (nn.active_lists): gradients still equal PyTorch's
masked-dense ones, and a list is used only while its tensor is unchanged."""
import numpy as np
import pytest
import torch
from torch import nn

from frugalnet.nn import KWinners, SparseLinear
from frugalnet.nn import kwinners_functional as KF
from frugalnet.nn import sparse_functional as SF
from frugalnet.nn.active_lists import lists_of, tag
from frugalnet.nn.kwinners import topk_mask


def test_lists_are_trusted_only_on_the_unchanged_tensor():
    t = torch.zeros(2, 5)
    t[0, 1], t[1, 3] = 1.5, -2.0
    tag(t, np.array([[1], [3]], np.int32), np.array([[1.5], [-2.0]], np.float32))
    aidx, aval, counts = lists_of(t)
    assert aidx.tolist() == [[1], [3]] and aval.tolist() == [[1.5], [-2.0]] and counts.tolist() == [1, 1]
    assert lists_of(t.view(2, 5)) is None and lists_of(t.clone()) is None and lists_of(torch.zeros(2, 5)) is None
    t[0, 0] = 3.0                          # an in-place write: the lists no longer describe t
    assert lists_of(t) is None


def _model(compact, seed=0):
    torch.manual_seed(seed)
    l1 = SparseLinear(64, 160, 0.8, seed=0, compact=compact)
    l2 = SparseLinear(160, 96, 0.8, seed=1, compact=compact)
    l1.kernel_mode = l2.kernel_mode = "sparse"
    return nn.Sequential(l1, KWinners(160, 0.1, boost_strength=1.0), l2, KWinners(96, 0.1, boost_strength=1.0),
                         nn.Linear(96, 5))


@pytest.mark.parametrize("compact", [False, True])
def test_kwta_lists_path_gradients_equal_masked_dense_with_the_same_winners(compact, monkeypatch):
    monkeypatch.setattr(KF, "KERNEL_MIN_NUMEL", 1)          # k-WTA on the selection kernel at this small size
    SF.clear_choices()
    model = _model(compact)
    for m in (model[1], model[3]):                           # unequal duty cycles: boosting changes the ranking
        m.duty_cycle.copy_(torch.rand(m.duty_cycle.shape, generator=torch.Generator().manual_seed(3)) * 0.2)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 64, generator=g), torch.randint(0, 5, (32,), generator=g)
    boosts = [m._boost_factors(m.duty_cycle).clone() for m in (model[1], model[3])]
    l1, kw1, l2, kw2, head = model
    w1 = l1.weight.detach().clone()        # dense weights (built from the values for compact layers)
    w2 = l2.weight.detach().clone()
    outs = []
    h1 = l1(x)
    a1 = kw1(h1)
    outs.append(a1)
    h2 = l2(a1)
    a2 = kw2(h2)
    outs.append(a2)
    nn.functional.cross_entropy(head(a2), y).backward()
    wins = []
    for a, width in zip(outs, (160, 96)):
        lists = lists_of(a)
        assert lists is not None
        win = torch.zeros(32, width, dtype=torch.bool)
        win.scatter_(1, torch.from_numpy(lists[0]).long(), True)
        wins.append(win)
    # the sparse paths actually took the lists: the choice keys say the operands were tagged
    keys = SF.choices()
    assert any(k[0] == "fwd" and k[2] == 160 and k[4][1] for k in keys)
    assert any(k[0] == "gw" and k[2] == 64 and k[4][1] for k in keys)

    # PyTorch's masked-dense model with the same winners
    p = [t.clone().requires_grad_(True) for t in (w1, l1.bias.detach(), w2, l2.bias.detach())]
    hr1 = nn.functional.linear(x, p[0] * l1.weight_mask, p[1])
    ar1 = torch.where(wins[0], hr1, 0.0)
    hr2 = nn.functional.linear(ar1, p[2] * l2.weight_mask, p[3])
    ar2 = torch.where(wins[1], hr2, 0.0)
    hw, hb = head.weight.detach().clone().requires_grad_(True), head.bias.detach().clone().requires_grad_(True)
    nn.functional.cross_entropy(nn.functional.linear(ar2, hw, hb), y).backward()
    torch.testing.assert_close(a1.detach(), ar1.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a2.detach(), ar2.detach(), rtol=1e-5, atol=1e-5)
    for layer, gw, gb in ((l1, p[0].grad, p[1].grad), (l2, p[2].grad, p[3].grad)):
        got = layer.weight_values.grad if compact else layer.weight.grad
        ref = gw.reshape(-1)[torch.from_numpy(SF.layout_of(layer).layout.csr_flat)] if compact else gw
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.weight.grad, hw.grad, rtol=1e-5, atol=1e-6)

    # the winners are PyTorch's top-k of the boosted scores, except where the sparse kernels' summation order
    # moved a score across the k-th one: such a flip needs a score within float rounding of the k-th
    for h_ref, win, boost, k in ((hr1, wins[0], boosts[0], 16), (hr2, wins[1], boosts[1], 10)):
        scores = h_ref.detach() * boost
        ref_win = topk_mask(scores, k)
        kth = torch.topk(scores, k, dim=1).values[:, -1:]
        flips = ref_win != win
        assert bool((((scores - kth).abs() <= 1e-5 * kth.abs().clamp_min(1.0)) | ~flips).all())


def test_an_edited_kwta_output_is_read_as_a_dense_input(monkeypatch):
    monkeypatch.setattr(KF, "KERNEL_MIN_NUMEL", 1)
    model = _model(False)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    a1 = model[1](model[0](x))
    assert lists_of(a1) is not None and lists_of(a1 + 0) is None
    a1 = a1.detach()                       # shares the version counter with the tagged tensor
    a1[:, 0] += 1.0                        # in place: the version moved
    assert lists_of(a1) is None
    ref = nn.functional.linear(a1, model[2].weight * model[2].weight_mask, model[2].bias)
    torch.testing.assert_close(model[2](a1), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compact", [False, True])
def test_every_candidate_with_listed_operands_equals_masked_dense(compact):
    layer = SparseLinear(90, 70, 0.8, seed=2, compact=compact)
    g = np.random.default_rng(11)
    lists = []
    for n, k in ((90, 9), (70, 7)):
        aidx = np.sort(np.stack([g.choice(n, k, replace=False) for _ in range(24)]), 1).astype(np.int32)
        aval = g.standard_normal((24, k)).astype(np.float32)
        dense = np.zeros((24, n), np.float32)
        np.put_along_axis(dense, aidx, aval, axis=1)
        lists.append((torch.from_numpy(dense), (aidx, aval, np.full(24, k, np.int32))))
    (x, xl), (gy, gl) = lists
    w = layer.weight.detach() * layer.weight_mask     # a compact layer builds its dense weight
    xr, wr = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y_ref = nn.functional.linear(xr, wr, layer.bias.detach())
    y_ref.backward(gy)
    lay = SF.layout_of(layer)
    params = layer.weight_values if compact else layer.weight
    vals = SF._Values(params, lay)
    xp, gyp = SF._Transposed(x.numpy(), xl), SF._Transposed(gy.numpy(), gl)
    fwd = SF._forward_candidates(x, xp, vals, layer.weight_mask, layer.bias, "auto")
    gx = SF._grad_input_candidates(gy, gyp, vals, layer.weight_mask, "auto")
    gw = SF._grad_weight_candidates(gy, gyp, x, xp, lay, layer.weight_mask, "auto", compact)
    assert {"csc_blk/0", "csc_blk/1"} <= set(fwd) and {"scatter_blk/0"} <= set(gx)
    assert {"sddmm_lists/0", "sddmm_lists_both/1"} <= set(gw) and not any(n.startswith("sddmm_both") for n in gw)
    gw_ref = wr.grad * layer.weight_mask
    if compact:
        gw_ref = gw_ref.reshape(-1)[torch.from_numpy(lay.layout.csr_flat)]
    for name, fn in fwd.items():
        torch.testing.assert_close(fn(), y_ref.detach(), rtol=1e-5, atol=1e-5, msg=f"forward {name}")
    for name, fn in gx.items():
        torch.testing.assert_close(fn(), xr.grad, rtol=1e-5, atol=1e-5, msg=f"grad_input {name}")
    for name, fn in gw.items():
        torch.testing.assert_close(fn(), gw_ref, rtol=1e-5, atol=1e-5, msg=f"grad_weight {name}")


def test_listed_tensors_save_and_load_with_weights_only_and_entries_go_with_them(monkeypatch, tmp_path):
    from frugalnet.nn import active_lists as AL

    monkeypatch.setattr(KF, "KERNEL_MIN_NUMEL", 1)
    kw = KWinners(40, 0.1)
    out = kw(torch.randn(8, 40, generator=torch.Generator().manual_seed(5)))
    assert lists_of(out) is not None
    torch.save(out, tmp_path / "act.pt")
    torch.testing.assert_close(torch.load(tmp_path / "act.pt", weights_only=True), out)
    before = len(AL._TABLE)
    del out
    assert len(AL._TABLE) == before - 1
