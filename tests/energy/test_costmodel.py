"""MAC counts (hand counts, torch's FlopCounterMode, brute force), measured sparsity, bits, memory, energy tables."""
import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from frugalnet.energy.costmodel import model_cost
from frugalnet.energy.tables import HOROWITZ_45NM, EnergyTable
from frugalnet.models.cnn import dense_cnn2, sparse_cnn2
from frugalnet.nn.sparse import SparseConv2d, SparseLinear


def flops(model, x, training):
    with FlopCounterMode(display=False) as counter:
        if training:
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()


def test_linear_hand_count():
    torch.manual_seed(0)
    layer = nn.Linear(20, 7)
    cost = model_cost(layer, torch.randn(5, 3, 20))  # 15 rows x 20 x 7
    assert cost.dense_macs == 15 * 20 * 7
    assert cost.effective_macs == 15 * 20 * 7  # random normal input and weights have no zeros


def test_conv_hand_count_stride_padding_groups():
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 9, 9)
    # output 5x5; each output sums 4/2 channels x 3 x 3 taps
    cost = model_cost(conv, x)
    assert cost.dense_macs == 2 * 6 * 5 * 5 * (2 * 3 * 3)


def test_conv_effective_excludes_padding_zeros():
    conv = nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=False)
    x = torch.ones(1, 1, 3, 3)
    cost = model_cost(conv, x)
    assert cost.dense_macs == 9 * 9
    # taps landing on real pixels: corners 4, edges 6, centre 9 -> 4*4 + 4*6 + 9
    assert cost.effective_macs == 4 * 4 + 4 * 6 + 9


@pytest.mark.parametrize("training", [False, True])
def test_dense_cnn_matches_flop_counter(training):
    torch.manual_seed(0)
    model = dense_cnn2()
    x = torch.rand(4, 1, 28, 28)
    cost = model_cost(model, x, training=training)
    assert 2 * cost.dense_macs == flops(model, x, training)


@pytest.mark.parametrize("training", [False, True])
def test_mlp_with_reflect_conv_matches_flop_counter(training):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=2, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
                          nn.Linear(5 * 10 * 10, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(3, 3, 8, 8, requires_grad=training)
    cost = model_cost(model, x, training=training)
    assert 2 * cost.dense_macs == flops(model, x, training)
    if training:  # input requires grad: all three GEMMs everywhere
        assert all(set(r.gemms) == {"forward", "grad_input", "grad_weight"} for r in cost.layers)


def test_first_layer_has_no_grad_input_gemm():
    cost = model_cost(dense_cnn2(), torch.rand(2, 1, 28, 28), training=True)
    first = cost.layers[0]
    assert set(first.gemms) == {"forward", "grad_weight"}
    assert set(cost.layers[1].gemms) == {"forward", "grad_input", "grad_weight"}


def brute_force_linear(x, w, g=None, keep=None):
    xn, wn = (x != 0).double(), (w != 0).double()
    fwd = torch.einsum("ri,oi->", xn, wn)
    if g is None:
        return fwd
    gn = (g != 0).double()
    gi = torch.einsum("ro,oi->", gn, wn)
    gw = torch.einsum("ro,ri,oi->", gn, xn, keep.double())
    return fwd, gi, gw


def test_effective_macs_follow_measured_sparsity_linear():
    torch.manual_seed(0)
    layer = SparseLinear(64, 32, sparsity=0.75, seed=3)
    x = torch.relu(torch.randn(10, 64))  # about half zeros
    cost = model_cost(layer, x)
    row = cost.layers[0]
    assert row.weight_density == pytest.approx(0.25)
    assert row.input_density == pytest.approx(float((x != 0).float().mean()))
    assert cost.effective_macs == int(brute_force_linear(x, layer.weight.detach()))
    assert cost.effective_macs / cost.dense_macs == pytest.approx(0.25 * row.input_density, rel=0.15)


def test_effective_training_macs_match_brute_force():
    torch.manual_seed(0)
    layer = SparseLinear(12, 6, sparsity=0.5, seed=1)
    x = torch.relu(torch.randn(7, 12)).requires_grad_(True)
    captured = {}

    def grab(module, inputs, out):
        out.register_hook(lambda g: captured.setdefault("g", g.clone()))

    layer.register_forward_hook(grab)
    target = torch.relu(torch.randn(7, 6))
    loss_fn = lambda out, t: ((out - t) * (t != 0)).pow(2).sum()  # sparse grad_output  # noqa: E731
    cost = model_cost(layer, x, training=True, target=target, loss_fn=loss_fn)
    fwd, gi, gw = brute_force_linear(x.detach(), layer.weight.detach(), captured["g"], layer.weight_mask)
    gemms = cost.layers[0].gemms
    assert gemms["forward"].effective_macs == int(fwd)
    assert gemms["grad_input"].effective_macs == int(gi)
    assert gemms["grad_weight"].effective_macs == int(gw)
    assert gemms["grad_weight"].effective_macs < gemms["grad_weight"].dense_macs * 0.5 + 1


def test_effective_conv_macs_match_brute_force():
    torch.manual_seed(0)
    conv = SparseConv2d(3, 4, 3, sparsity=0.6, padding=1, seed=2)
    x = torch.relu(torch.randn(2, 3, 6, 6))
    cost = model_cost(conv, x)
    xn = nn.functional.unfold((x != 0).double(), 3, padding=1)  # (B, 27, L)
    wn = (conv.weight != 0).double().view(4, -1)
    assert cost.effective_macs == int(torch.einsum("bkl,ok->", xn, wn))


def test_sparse_cnn_costs_less_than_dense_and_restores_state():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    dense, sparse = dense_cnn2(), sparse_cnn2()
    duty_before = sparse.act3.duty_cycle.clone()
    rng_before = torch.get_rng_state()
    d, s = model_cost(dense, x, training=True), model_cost(sparse, x, training=True)
    assert d.dense_macs == s.dense_macs
    assert s.effective_macs < d.effective_macs
    assert s.energy_j < d.energy_j
    assert torch.equal(sparse.act3.duty_cycle, duty_before)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert all(p.grad is None for p in sparse.parameters())
    fc1 = next(r for r in s.layers if r.name == "fc1")
    assert fc1.weight_density == pytest.approx(float(sparse.fc1.weight_mask.float().mean()))


def test_gemm_bits_change_precision_energy_not_macs():
    torch.manual_seed(0)
    fp32 = nn.Linear(32, 16)
    low = nn.Linear(32, 16)
    low.load_state_dict(fp32.state_dict())
    low.gemm_bits = {"forward": (4, 4), "grad_input": (8, 4), "grad_weight": (8, 4)}
    x = torch.randn(8, 32)
    a, b = model_cost(fp32, x, training=True, target=torch.zeros(8, dtype=torch.long)), \
        model_cost(low, x, training=True, target=torch.zeros(8, dtype=torch.long))
    assert a.effective_macs == b.effective_macs
    assert a.energy_per_mac_j == pytest.approx((3.7 + 0.9) * 1e-12)
    fwd_macs = b.layers[0].gemms["forward"].effective_macs
    rest = b.effective_macs - fwd_macs
    expected = (fwd_macs * (0.05 + 0.015) + rest * (0.2 + 0.03)) * 1e-12
    assert b.compute_energy_j == pytest.approx(expected)
    assert b.bits_used()["forward"] == ["4x4"]
    assert b.memory_energy_j < a.memory_energy_j


def test_bad_gemm_bits_and_inputs_raise():
    layer = nn.Linear(4, 2)
    layer.gemm_bits = {"forward": (4, 4)}
    with pytest.raises(ValueError, match="gemm_bits"):
        model_cost(layer, torch.randn(1, 4))
    with pytest.raises(ValueError, match="ran no matrix product"):
        model_cost(nn.ReLU(), torch.randn(1, 4))
    with pytest.raises(ValueError, match="tensor"):
        model_cost(nn.Linear(4, 2), [1, 2])


def test_energy_table_json_roundtrip_and_validation(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"name": "toy", "source": "made up for a test", "mult_pj": {"32": 1.0, "8": 0.5},
                                "add_pj": {"32": 1.0, "8": 0.5}, "memory_pj_per_byte": {"dram": 0, "sram": 0}}))
    x = torch.randn(3, 10)
    cost = model_cost(nn.Linear(10, 4), x, energy_table=str(path))
    assert cost.compute_energy_j == pytest.approx(3 * 10 * 4 * 2.0e-12)
    assert cost.memory_energy_j == 0
    assert EnergyTable.from_dict(HOROWITZ_45NM.to_dict()) == HOROWITZ_45NM
    assert HOROWITZ_45NM.width(6) == 8
    with pytest.raises(ValueError, match="no entry for 64-bit"):
        HOROWITZ_45NM.mac_pj(64, 64)
    with pytest.raises(FileNotFoundError):
        EnergyTable.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="missing"):
        EnergyTable.from_dict({"name": "x"})


def test_report_rows_and_dict_are_labelled_modelled():
    cost = model_cost(dense_cnn2(), torch.rand(2, 1, 28, 28))
    d = cost.to_dict()
    assert d["label"] == "modelled"
    json.dumps(d)
    assert cost.table_rows()[-1][0] == "total"
    assert d["dense_macs"] == sum(r["dense_macs"] for r in d["layers"])
