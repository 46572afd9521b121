"""quantize_: in-place conversion, first/last policy, exclusion, gemm_bits, sparse composition, state round trips."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frugalnet.lowbit import IBM4, QuantConv2d, QuantLinear, QuantSparseLinear, get_recipe, quantize_, quantized_layers
from frugalnet.models.cnn import dense_cnn2
from frugalnet.sparsity.convert import sparsify_


def test_converts_in_place_with_first_last_at_8_bits():
    model = dense_cnn2(channels=(4, 8), hidden=16)
    conv1 = model.conv1
    out = quantize_(model, "ibm4")
    assert out is model and model.conv1 is conv1 and isinstance(conv1, QuantConv2d)
    assert isinstance(model.fc1, QuantLinear) and isinstance(model.fc1, nn.Linear)
    assert model.conv1.gemm_bits == {"forward": (8, 8), "grad_input": (8, 8), "grad_weight": (8, 8)}
    assert model.fc_out.gemm_bits["forward"] == (8, 8)
    assert model.conv2.gemm_bits == {"forward": (4, 4), "grad_input": (4, 4), "grad_weight": (4, 4)}
    assert model.fc1.lowbit.grad.format == "fp4-radix4"


def test_fp32_recipe_bits_and_all_layers_4_bit_variant():
    model = quantize_(dense_cnn2(channels=(4, 8), hidden=16), dataclasses.replace(IBM4, first_last=None))
    assert all(layer.gemm_bits["forward"] == (4, 4) for _, layer in quantized_layers(model))
    fp32 = quantize_(dense_cnn2(channels=(4, 8), hidden=16), "fp32")
    assert all(layer.gemm_bits["forward"] == (32, 32) for _, layer in quantized_layers(fp32))


def test_exclude_and_errors():
    model = quantize_(dense_cnn2(channels=(4, 8), hidden=16), "mxfp4", exclude=["fc_out"])
    assert type(model.fc_out) is nn.Linear
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(model, "mxfp4")
    with pytest.raises(ValueError, match="not in the model"):
        quantize_(dense_cnn2(), "ibm4", exclude=["nope"])
    with pytest.raises(ValueError, match="unknown recipe"):
        quantize_(dense_cnn2(), "int3")
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize_(nn.Sequential(nn.ReLU()), "ibm4")


def test_recipes_are_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        IBM4.name = "x"
    with pytest.raises(ValueError, match="format"):
        dataclasses.replace(IBM4, weight=dataclasses.replace(IBM4.weight, format="int3"))
    with pytest.raises(ValueError, match="activation format"):
        dataclasses.replace(IBM4, weight=IBM4.activation)
    assert get_recipe("nvfp4").grad.rounding == "stochastic" and get_recipe("nvfp4").hadamard


def test_composes_with_sparse_layers():
    torch.manual_seed(0)
    model = sparsify_(dense_cnn2(channels=(4, 8), hidden=32), weight_sparsity=0.5, exclude=["conv1", "fc_out"])
    quantize_(model, "ibm4")
    assert isinstance(model.fc1, QuantSparseLinear)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    masked = ~model.fc1.weight_mask
    assert torch.equal(model.fc1.weight[masked], torch.zeros(int(masked.sum())))
    assert torch.equal(model.fc1.quantized_weight()[masked], torch.zeros(int(masked.sum())))


def test_state_dict_and_deepcopy_round_trip():
    torch.manual_seed(1)
    model = quantize_(dense_cnn2(channels=(4, 8), hidden=16), "ibm4")
    x = torch.randn(4, 1, 28, 28)
    model(x)
    state = model.state_dict()
    assert "fc1.act_alpha" in state and "fc1.qstep" in state and "fc1.pact_signed" in state
    other = quantize_(dense_cnn2(channels=(4, 8), hidden=16), "ibm4")
    other.load_state_dict(state)
    model.eval()
    other.eval()
    assert torch.equal(model(x), other(x))
    twin = copy.deepcopy(model)
    assert torch.equal(twin(x), model(x)) and isinstance(twin.fc1, QuantLinear)


def test_trains_a_tiny_problem_under_every_recipe():
    torch.manual_seed(2)
    x = torch.randn(256, 20)
    y = (x[:, 0] + x[:, 1] > 0).long()
    for recipe in ("ibm4", "mxfp4", "nvfp4", "fp8", "int8"):
        torch.manual_seed(3)
        model = quantize_(nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                        nn.Linear(64, 2)), recipe)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(40):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        acc = float((model(x).argmax(1) == y).float().mean())
        assert acc > 0.9, (recipe, acc)
