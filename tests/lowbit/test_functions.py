"""Autograd Functions: FP32-mode gradients against finite differences, operand grids in each backward GEMM,
two-phase rounding, power-of-two equivariance (what DDP needs), reproducible stochastic rounding, Hadamard."""
import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frugalnet.lowbit import IBM4, NVFP4, QuantSpec, Recipe, quantize_
from frugalnet.lowbit import formats as fmt
from frugalnet.lowbit.functions import QuantConv2dFunction, QuantLinearFunction

FP32_ONLY = Recipe(name="fp32-test")


def _layer(module, recipe=FP32_ONLY):
    model = nn.Sequential(module)
    quantize_(model, recipe)
    return model[0]


def test_linear_fp32_mode_matches_finite_differences():
    torch.manual_seed(0)
    layer = _layer(nn.Linear(5, 3).double())
    x = torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w, b: QuantLinearFunction.apply(a, w, b, None, layer.gemm_state()),
                                    (x, layer.weight, layer.bias))


def test_conv_fp32_mode_matches_finite_differences():
    torch.manual_seed(0)
    layer = _layer(nn.Conv2d(2, 3, 3, stride=2, padding=1).double())
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    conv = ((2, 2), (1, 1), (1, 1), 1)
    state = layer.gemm_state()
    assert torch.autograd.gradcheck(lambda a, w, b: QuantConv2dFunction.apply(a, w, b, None, state, conv),
                                    (x, layer.weight, layer.bias))


@pytest.mark.parametrize("padding,mode", [("same", "zeros"), (1, "reflect"), ("valid", "zeros")])
def test_conv_fp32_mode_equals_torch(padding, mode):
    torch.manual_seed(1)
    ref = nn.Conv2d(3, 4, 3, padding=padding, padding_mode=mode)
    layer = _layer(copy.deepcopy(ref))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    ref(x).square().sum().backward()
    layer(x2).square().sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    assert torch.allclose(ref.weight.grad, layer.weight.grad, atol=1e-4)
    assert torch.allclose(ref.bias.grad, layer.bias.grad, atol=1e-4)


def test_backward_gemms_take_two_phase_radix4_gradients():
    """W = I and X = I expose the quantized dY: dX = q0(dY) (even powers), dW^T = q1(dY) (odd powers)."""
    recipe = Recipe(name="g-only", grad=QuantSpec("fp4-radix4"))
    layer = _layer(nn.Linear(8, 8, bias=False), recipe)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(8))
    x = torch.eye(8, requires_grad=True)
    g = torch.rand(8, 8, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05   # amax <= 1: scale 1
    g[0, 0] = 0.99
    layer(x).backward(g)
    for grid, phase in ((x.grad, 0), (layer.weight.grad.T, 1)):
        exps = torch.log2(grid[grid != 0])
        assert torch.equal(exps % 2, torch.full_like(exps, float(phase)))
        assert torch.equal(grid, fmt.radix4_fp4(g, phase))


def test_forward_gemm_uses_quantized_operands():
    torch.manual_seed(2)
    layer = _layer(nn.Linear(16, 4), dataclasses.replace(IBM4, first_last=None))
    x = torch.relu(torch.randn(8, 16))
    out = layer(x)
    alpha = layer.act_alpha.detach()
    xq = fmt.pact_forward(x, alpha, 4)
    wq = fmt.int4_sawb(layer.weight)
    assert torch.allclose(out, F.linear(xq, wq, layer.bias), atol=1e-6)
    assert torch.equal(layer.quantized_weight(), wq)


def test_pact_alpha_learns_from_clipped_inputs():
    layer = _layer(nn.Linear(4, 2), dataclasses.replace(IBM4, first_last=None))
    layer(torch.ones(3, 4))                          # initialises alpha = 1 (max of the first batch)
    x = torch.full((3, 4), 2.0)                      # every input clipped
    layer(x).sum().backward()
    expected = layer.quantized_weight().sum(0).sum() * 3 + IBM4.pact_decay * 1.0
    assert torch.allclose(layer.act_alpha.grad, expected)


def test_power_of_two_loss_scale_gives_exactly_scaled_gradients():
    """DDP scales each rank's loss by world size: deterministic recipes must scale gradients exactly."""
    torch.manual_seed(3)
    base = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(),
                         nn.Linear(8, 3))
    x = torch.randn(6, 1, 8, 8)
    y = torch.randint(0, 3, (6,))
    # (PACT's L2 term on alpha is added per rank and averaged by DDP, so it needs no scaling: left out here)
    for recipe in (dataclasses.replace(IBM4, pact_decay=0.0), "mxfp4", "fp8", "int8"):
        grads = []
        for scale in (1.0, 4.0):
            model = quantize_(copy.deepcopy(base), recipe)
            (F.cross_entropy(model(x), y) * scale).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for g1, g4 in zip(*grads):
            assert torch.equal(g1 * 4, g4), recipe


def test_stochastic_rounding_is_seeded_and_stepped():
    torch.manual_seed(4)
    base = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    x, y = torch.randn(20, 32), torch.randint(0, 4, (20,))

    def grads(model):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return model[2].weight.grad.clone()

    a, b = quantize_(copy.deepcopy(base), "nvfp4"), quantize_(copy.deepcopy(base), "nvfp4")
    first_a, first_b = grads(a), grads(b)
    assert torch.equal(first_a, first_b)
    assert not torch.equal(grads(a), first_a)         # the next step draws new numbers
    c = quantize_(copy.deepcopy(base), dataclasses.replace(NVFP4, seed=7))
    assert not torch.equal(grads(c), first_a)


def test_hadamard_transform_leaves_fp32_gradients_unchanged():
    torch.manual_seed(5)
    ref = nn.Linear(12, 5)
    layer = _layer(copy.deepcopy(ref), Recipe(name="h", hadamard=True))
    x = torch.randn(3, 7, 12)                        # 21 tokens: padded to 32 inside the transform
    ref(x).square().sum().backward()
    layer(x).square().sum().backward()
    assert torch.allclose(ref.weight.grad, layer.weight.grad, atol=1e-4)
    conv_ref = nn.Conv2d(2, 3, 3)
    conv = _layer(copy.deepcopy(conv_ref), Recipe(name="h", hadamard=True))
    xc = torch.randn(5, 2, 6, 6)
    conv_ref(xc).square().sum().backward()
    conv(xc).square().sum().backward()
    assert torch.allclose(conv_ref.weight.grad, conv.weight.grad, atol=1e-4)


def test_non_finite_activation_raises_clear_error():
    layer = _layer(nn.Linear(4, 2), dataclasses.replace(IBM4, first_last=None))
    layer(torch.ones(2, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))


def test_shape_errors():
    layer = _layer(nn.Linear(4, 2))
    with pytest.raises(ValueError, match="in_features=4"):
        layer(torch.ones(2, 5))
    conv = _layer(nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match="in_channels=3"):
        conv(torch.ones(1, 2, 5, 5))
