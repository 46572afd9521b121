"""The same results on a CUDA GPU as on the CPU: quantizers (torch code on the GPU, fused numba kernels on the CPU),
low-bit training steps, and the sparse / k-WTA / dendritic modules. Skipped on machines without CUDA (CI)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from frugalnet.lowbit import formats, quantize_
from frugalnet.models import sparse_cnn2
from frugalnet.nn import DendriticMLP, KWinners, KWinners2d, SparseConv2d, SparseLinear

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

QUANTIZERS = {
    "int4_sawb": lambda x, r, g: formats.int4_sawb(x, r, g),
    "radix4_phase0": lambda x, r, g: formats.radix4_fp4(x, 0, r, g),
    "radix4_phase1": lambda x, r, g: formats.radix4_fp4(x, 1, r, g),
    "e2m1": lambda x, r, g: formats.e2m1(x, r, g),
    "fp8": lambda x, r, g: formats.fp8(x, rounding=r, generator=g),
    "mxfp4": lambda x, r, g: formats.mxfp4(x, rounding=r, generator=g),
    "nvfp4": lambda x, r, g: formats.nvfp4(x, rounding=r, generator=g),
}


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name", sorted(QUANTIZERS))
def test_quantizer_on_gpu_is_bit_identical_to_cpu_kernel(name, rounding):
    torch.manual_seed(0)
    x = torch.randn(96, 128) * torch.logspace(-3, 2, 128)      # many binades
    x[0, :5] = torch.tensor([0.0, -0.0, 1e-40, -3e37, 2.0 ** -126])   # zeros, a subnormal, extremes
    if not name.startswith("radix4"):   # radix-4's range ends at 2^126 (it rejects more, tested on CPU)
        x[1, 0] = -3e38
    fn = QUANTIZERS[name]
    cpu = fn(x, rounding, torch.Generator().manual_seed(11))
    gpu = fn(x.cuda(), rounding, torch.Generator().manual_seed(11))   # same seed: same hash noise on both
    assert gpu.device.type == "cuda"
    assert torch.equal(cpu, gpu.cpu()), f"{name}/{rounding}: {(cpu != gpu.cpu()).sum()} elements differ"


def test_hash_noise_is_identical_on_gpu():
    cpu = formats.uniform_noise((1000, 37), torch.Generator().manual_seed(3))
    gpu = formats.uniform_noise((1000, 37), torch.Generator().manual_seed(3), device="cuda")
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("recipe", ["ibm4", "ibm4-nearest", "mxfp4", "nvfp4", "fp8", "int8"])
def test_low_bit_training_step_on_gpu_tracks_cpu(recipe):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 14 * 14, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    quantize_(model, recipe)
    gpu_model = copy.deepcopy(model).cuda()
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    losses = []
    for m, dev in ((model, "cpu"), (gpu_model, "cuda")):
        opt = torch.optim.SGD(m.parameters(), lr=0.05)
        for _ in range(3):
            loss = F.cross_entropy(m(x.to(dev)), y.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
        assert all(torch.isfinite(p).all() for p in m.parameters())
    # GEMMs differ in summation order between devices; the quantized results then differ in a few codes
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_sparse_and_kwta_modules_match_cpu_and_keep_masks_on_gpu():
    torch.manual_seed(0)
    model = sparse_cnn2((1, 28, 28), num_classes=10, seed=0)
    gpu = copy.deepcopy(model).cuda()
    x = torch.randn(8, 1, 28, 28)
    model.train()
    gpu.train()
    out_cpu, out_gpu = model(x), gpu(x.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-3, atol=1e-3)
    out_gpu.sum().backward()
    for m in gpu.modules():
        if isinstance(m, (SparseLinear, SparseConv2d)):
            assert m.weight.grad.device.type == "cuda"
            assert (m.weight[m.weight_mask == 0] == 0).all()
        if isinstance(m, (KWinners, KWinners2d)):
            assert m.duty_cycle.device.type == "cuda"
    model.eval()
    gpu.eval()
    torch.testing.assert_close(gpu(x.cuda()).cpu(), model(x), rtol=1e-3, atol=1e-3)


def test_dendritic_mlp_matches_cpu():
    torch.manual_seed(0)
    net = DendriticMLP(input_size=20, output_size=5, hidden_sizes=(32, 32), num_segments=4, dim_context=6)
    gpu = copy.deepcopy(net).cuda()
    x, ctx = torch.randn(10, 20), torch.randn(10, 6)
    torch.testing.assert_close(gpu(x.cuda(), ctx.cuda()).cpu(), net(x, ctx), rtol=1e-4, atol=1e-4)
