"""Number formats: exact grids, idempotence, monotonicity, stochastic means, block-scale edge cases, NaN rule, and the
fused kernels against the plain torch code."""
import math

import pytest
import torch

from frugalnet.lowbit import formats as F


@pytest.fixture(params=[True, False], ids=["kernels", "torch"])
def kernels(request):
    previous = F.set_kernels(request.param)
    yield request.param
    F.set_kernels(previous)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


E2M1 = torch.tensor(F.E2M1_GRID)


def quantizers():
    """name -> nearest-rounding quantizer x -> q(x) with the scale derived from x."""
    return {
        "int4-sawb": F.int4_sawb,
        "int8": lambda x: F.int_max(x, 8),
        "radix4-even": lambda x: F.radix4_fp4(x, 0),
        "radix4-odd": lambda x: F.radix4_fp4(x, 1),
        "e2m1": F.e2m1,
        "fp8-e4m3": F.fp8,
        "fp8-e5m2": lambda x: F.fp8(x, F.E5M2),
        "mxfp4": lambda x: F.mxfp4(x, -1),
        "nvfp4": lambda x: F.nvfp4(x, -1),
    }


def test_e2m1_exact_values_and_ties_to_even(kernels):
    x = torch.tensor([0.0, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, 7.0, 100.0, -0.3, -2.6])
    expected = torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0, 6.0, -0.5, -3.0])
    assert torch.equal(F.e2m1(x), expected)


def test_e2m1_grid_membership(kernels):
    q = F.e2m1(torch.randn(10_000, generator=gen()) * 4)
    assert torch.isin(q.abs(), E2M1).all()


def test_int4_sawb_alpha_and_levels(kernels):
    w = torch.randn(4096, generator=gen(1))
    c1, c2 = 12.68, 12.80
    alpha = c1 * torch.sqrt((w * w).mean()) - c2 * w.abs().mean()
    assert torch.allclose(F.sawb_alpha(w), alpha)
    q = F.int4_sawb(w)
    levels = torch.unique(torch.round(q / (alpha / 7)))
    assert levels.min() >= -7 and levels.max() <= 7 and len(levels) == 15


def test_sawb_falls_back_to_max_when_alpha_not_positive():
    w = torch.tensor([1.0, 1.0, 1.0, -1.0])        # constant magnitude: 12.68 - 12.80 < 0
    assert float(F.sawb_alpha(w)) == 1.0
    with pytest.raises(ValueError, match="bits"):
        F.sawb_alpha(w, bits=3)


def test_radix4_grids_are_even_and_odd_powers(kernels):
    x = torch.rand(5000, generator=gen(2)) * 0.9 + 0.05
    for phase, top in ((0, 1.0), (1, 2.0)):
        q = F.radix4_fp4(x, phase)            # amax <= 1 -> scale s = 1
        allowed = torch.tensor([0.0] + [top * 4.0 ** -j for j in range(7)])
        assert torch.isin(q, allowed).all()
        nonzero = q[q > 0]
        exps = torch.log2(nonzero)
        assert torch.equal(exps % 2, torch.full_like(exps, float(phase)))


def test_radix4_exact_values(kernels):
    x = torch.tensor([1.0, 0.3, 0.05, -0.9, 0.001, 0.0])
    assert torch.equal(F.radix4_fp4(x, 0), torch.tensor([1.0, 0.25, 0.0625, -1.0, 2.0 ** -10, 0.0]))
    assert torch.equal(F.radix4_fp4(x, 1), torch.tensor([0.5, 0.125, 0.03125, -0.5, 2.0 ** -11, 0.0]))


def test_radix4_scale_is_power_of_two_equivariant(kernels):
    g = torch.randn(3000, generator=gen(3)) * 1e-3
    for phase in (0, 1):
        for m in (1, 2, 3, -5):
            assert torch.equal(F.radix4_fp4(g * 2.0 ** m, phase), F.radix4_fp4(g, phase) * 2.0 ** m)


@pytest.mark.parametrize("name", list(quantizers()))
def test_idempotent(name, kernels):
    q = quantizers()[name]
    x = torch.randn(64, 96, generator=gen(4)) * 3
    once = q(x)
    if name == "int4-sawb":       # SAWB recomputes its clip from the input; with the same clip it is idempotent
        alpha = F.sawb_alpha(x)
        assert torch.equal(F.int_symmetric(once, 4, alpha), once)
    elif name.startswith("radix4"):   # the scale comes from amax, which rounding may lower: keep the first one
        phase = 1 if name.endswith("odd") else 0
        assert torch.equal(F.radix4_fp4(once, phase, amax=x.abs().amax()), once)
    elif name == "nvfp4":         # the tensor scale is recomputed from q(x): equal up to one FP32 rounding
        assert torch.allclose(q(once), once, rtol=1e-6, atol=0)
    else:
        assert torch.equal(q(once), once)


@pytest.mark.parametrize("name", ["int4-sawb", "int8", "radix4-even", "radix4-odd", "e2m1", "fp8-e4m3", "fp8-e5m2"])
def test_monotone(name, kernels):
    x = torch.linspace(-3, 3, 20001)
    q = quantizers()[name](x)
    assert (q[1:] >= q[:-1]).all()


def test_block_formats_monotone_within_a_block(kernels):
    x = torch.linspace(-3, 3, 32).reshape(1, 32)
    for fn in (lambda v: F.mxfp4(v, -1), lambda v: F.nvfp4(v, -1, amax=torch.tensor(3.0))):
        q = fn(x)
        assert (q[0, 1:] >= q[0, :-1]).all()


@pytest.mark.parametrize("name,fn", [
    ("int4", lambda x, g: F.int_symmetric(x, 4, 4.0, "stochastic", g)),
    ("radix4", lambda x, g: F.radix4_fp4(x, 0, "stochastic", g, amax=torch.tensor(1.0))),
    ("radix4-odd", lambda x, g: F.radix4_fp4(x, 1, "stochastic", g, amax=torch.tensor(1.0))),
    ("e2m1", lambda x, g: F.e2m1(x, "stochastic", g)),
    ("mxfp4", lambda x, g: F.mxfp4(x, -1, "stochastic", g)),
    ("nvfp4", lambda x, g: F.nvfp4(x, -1, "stochastic", g)),
])
def test_stochastic_rounding_is_unbiased(name, fn, kernels):
    values = torch.tensor([0.013, 0.3, 0.77, 1.9, -2.6, 3.3])
    n = 32 * 640
    x = values.repeat(n, 1).T.contiguous()            # each row one value, blocks along the row ...
    x[:, ::16] = 4.0                                  # ... each block anchored by a 4, so nothing saturates
    keep = torch.ones(n, dtype=torch.bool)
    keep[::16] = False
    q = fn(x, gen(5))[:, keep]
    mean = q.mean(1)
    spread = q.std(1) / math.sqrt(q.shape[1])
    assert (mean - values).abs().le(5 * spread + 1e-6).all(), (mean, values)


def test_stochastic_rounding_reproducible(kernels):
    x = torch.randn(1000, generator=gen(6))
    a = F.nvfp4(x, -1, "stochastic", gen(7))
    b = F.nvfp4(x, -1, "stochastic", gen(7))
    c = F.nvfp4(x, -1, "stochastic", gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_mx_block_scales_edge_cases(kernels):
    x = torch.zeros(3, 32)
    x[1, 5] = 3e38                      # a single huge value
    x[2, :] = 1e-40                     # subnormal float32 block
    q = F.mxfp4(x, -1)
    assert torch.equal(q[0], torch.zeros(32))
    assert q[1, 5] == 6.0 * 2.0 ** 125 and q[1].count_nonzero() == 1   # 3e38 / 2^125 = 7.05 saturates to 6
    assert torch.equal(F.mx_block_scales(torch.tensor([0.0, 3e38, 1e-40, 6.0])),
                       torch.tensor([2.0 ** -127, 2.0 ** 125, 2.0 ** -127, 1.0]))
    assert torch.isfinite(q).all()
    # saturation: elements in (6, 8) times the scale go to 6
    y = torch.tensor([[7.9] + [1.0] * 31])
    assert F.mxfp4(y, -1)[0, 0] == 6.0


def test_nvfp4_edge_cases(kernels):
    assert torch.equal(F.nvfp4(torch.zeros(2, 16), -1), torch.zeros(2, 16))
    x = torch.zeros(2, 16)
    x[0, 0] = 1e30                     # one block with a huge value, one block tiny: its scale underflows E4M3
    x[1, :] = 1e-12
    q = F.nvfp4(x, -1)
    assert torch.allclose(q[0, 0], torch.tensor(1e30), rtol=1e-6)
    assert torch.equal(q[1], torch.zeros(16))
    block = torch.arange(16.0).reshape(1, 16)
    q = F.nvfp4(block, -1)            # amax 15 -> block scale e4m3(15/6/s) with s = 15/2688: exact top value
    assert torch.allclose(q[0, -1], torch.tensor(15.0), rtol=1e-6)


def test_blocks_follow_dim(kernels):
    x = torch.randn(32, 48, generator=gen(9))
    x[0, 0] = 100.0
    q_rows = F.mxfp4(x, 1)        # blocks along dim 1: only row 0's first block sees the outlier
    q_cols = F.mxfp4(x, 0)        # blocks along dim 0: only column 0 sees it
    assert (q_rows[1:] != 0).float().mean() > 0.8
    assert (q_rows[0, 1:32] == 0).float().mean() > 0.5
    assert (q_cols[1:, 0] == 0).float().mean() > 0.5
    assert torch.equal(F.mxfp4(x.T.contiguous(), 0).T, q_rows)


@pytest.mark.parametrize("name", list(quantizers()))
def test_nan_and_inf_raise(name, kernels):
    q = quantizers()[name]
    for bad in (float("nan"), float("inf")):
        x = torch.randn(4, 32)
        x[1, 3] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            q(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        F.pact_forward(torch.tensor([1.0, float("nan")]), torch.tensor(2.0), 4)


def test_fp8_exact_values(kernels):
    v = torch.tensor([448.0, 500.0, 0.0, 2.0 ** -9, 2.0 ** -10 * 1.01, 1.0625, 1.1875])
    assert torch.equal(F.minifloat(v, F.E4M3), torch.tensor([448.0, 448.0, 0.0, 2.0 ** -9, 2.0 ** -9, 1.0, 1.25]))
    w = torch.tensor([57344.0, 1e6, 2.0 ** -16, 1.125, 1.375])
    assert torch.equal(F.minifloat(w, F.E5M2), torch.tensor([57344.0, 57344.0, 2.0 ** -16, 1.0, 1.5]))


def test_pact_forward_and_straight_through_gradients(kernels):
    x = torch.tensor([-1.0, 0.0, 0.4, 1.0, 1.5, 3.0])
    alpha = torch.tensor(1.5)
    q = F.pact_forward(x, alpha, 4)
    assert torch.equal(q, torch.round(torch.clamp(x, 0, 1.5) / 0.1) * 0.1) or torch.allclose(
        q, torch.round(torch.clamp(x, 0, 1.5) / 0.1) * 0.1)
    grad = torch.ones(6)
    gx, ga = F.pact_backward(grad, x, alpha)
    assert torch.equal(gx, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0]))
    assert float(ga) == 2.0           # x >= alpha at 1.5 and 3.0
    gx, ga = F.pact_backward(torch.ones(3), torch.tensor([-2.0, -0.5, 2.0]), alpha, signed=True)
    assert torch.equal(gx, torch.tensor([0.0, 1.0, 0.0])) and float(ga) == 0.0   # -1 + 1
    with pytest.raises(ValueError, match="alpha"):
        F.pact_forward(x, torch.tensor(0.0), 4)


def test_kernels_match_torch_bit_for_bit():
    xs = [torch.randn(64, 100, generator=gen(10)) * 3, torch.randn(8, 40, 5, 3, generator=gen(11)) * 1e-3,
          torch.cat([torch.zeros(40), torch.randn(60, generator=gen(12)) * 1e3]).reshape(4, 25),
          torch.randn(64, 48, 7, 7, generator=gen(13))]           # above PARALLEL_MIN: the parallel builds
    cases = {
        "int8s": lambda x: F.int_max(x, 8, "stochastic", gen(1)),
        "pact": lambda x: F.pact_forward(x, torch.tensor(1.5), 4, True, "stochastic", gen(2)),
        "r4": lambda x: F.radix4_fp4(x, 1, "stochastic", gen(3)),
        "r4n": lambda x: F.radix4_fp4(x, 0),
        "e4m3": lambda x: F.fp8(x), "e5m2s": lambda x: F.fp8(x, F.E5M2, "stochastic", gen(4)),
        "mx": lambda x: F.mxfp4(x, 1), "mxs": lambda x: F.mxfp4(x, 0, "stochastic", gen(5)),
        "nv": lambda x: F.nvfp4(x, 1), "nvs": lambda x: F.nvfp4(x, 0, "stochastic", gen(6)),
    }
    previous = F.set_kernels(True)
    try:
        for x in xs:
            for name, fn in cases.items():
                F.set_kernels(True)
                a = fn(x)
                F.set_kernels(False)
                b = fn(x)
                assert torch.equal(a.view(torch.int32), b.view(torch.int32)), name
    finally:
        F.set_kernels(previous)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rounding"):
        F.e2m1(torch.ones(3), "up")
    with pytest.raises(ValueError, match="phase"):
        F.radix4_fp4(torch.ones(3), 2)
    with pytest.raises(ValueError, match="power of two"):
        F.hadamard_matrix(12)


def test_random_hadamard_is_orthogonal():
    a, b = torch.randn(40, 7, generator=gen(13)), torch.randn(40, 5, generator=gen(14))
    signs = torch.tensor([1.0, -1.0] * 8)
    ra, rb = F.random_hadamard(a, signs, 0), F.random_hadamard(b, signs, 0)
    assert ra.shape == (48, 7)
    assert torch.allclose(ra.T @ rb, a.T @ b, atol=1e-4)


@pytest.mark.parametrize("dim", [0, 1])
def test_block_formats_reject_nan_and_inf_along_either_dim(dim, kernels):
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.randn(40, 24, generator=gen(14))
        x[17, 5] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            F.mxfp4(x, dim)


def test_uniform_noise_is_seeded_uniform_and_the_same_in_numba_and_torch():
    shape = (300, 701)                                         # above PARALLEL_MIN: the parallel numba build
    previous = F.set_kernels(True)
    try:
        a = F.uniform_noise(shape, gen(21))
        F.set_kernels(False)
        b = F.uniform_noise(shape, gen(21))
    finally:
        F.set_kernels(previous)
    assert a.shape == shape and a.dtype == torch.float32
    assert torch.equal(a, b)                                   # numba kernel == torch reference, bit for bit
    assert torch.equal(a, F.uniform_noise(shape, gen(21)))     # same seed, same draws
    assert not torch.equal(a, F.uniform_noise(shape, gen(22)))
    assert float(a.min()) >= 0.0 and float(a.max()) < 1.0
    assert torch.equal(a * 2 ** 24, torch.floor(a * 2 ** 24))  # on the 2^-24 grid
    flat = a.reshape(-1).double()
    assert abs(float(flat.mean()) - 0.5) < 0.003 and abs(float(flat.var()) - 1 / 12) < 0.002
    counts = torch.histc(flat, bins=20, min=0.0, max=1.0)      # chi-square over 20 bins, 19 dof: 99.9% point 43.8
    expected = flat.numel() / 20
    assert float(((counts - expected) ** 2 / expected).sum()) < 43.8
    lag = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1]
    assert abs(float(lag)) < 0.01                              # neighbours uncorrelated


def test_minifloat_kernel_matches_torch_on_edge_values():
    specs = (F.E2M1, F.E4M3, F.E5M2)
    edges = [0.0, -0.0, 1e-45, -1e-40, 2.0 ** -126, 2.0 ** -20, 2.0 ** -16, 2.0 ** -14, 2.0 ** -9, 2.0 ** -6,
             2.0 ** -6 * 0.999, 0.25, 0.75, 1.0, 1.25, 2.5, 5.0, 6.0, 7.0, 448.0, 464.0, 500.0, 57344.0, 61440.0,
             1e6, 3e38]
    x = torch.tensor(edges + [-v for v in edges], dtype=torch.float32)
    x = torch.cat([x, torch.randn(4000, generator=gen(31)) * 10.0 ** torch.randint(-8, 6, (4000,), generator=gen(32))])
    previous = F.set_kernels(True)
    try:
        for spec in specs:
            for rounding in ("nearest", "stochastic"):
                F.set_kernels(True)
                a = F.minifloat(x, spec, rounding, gen(33))
                F.set_kernels(False)
                b = F.minifloat(x, spec, rounding, gen(33))
                assert torch.equal(a.view(torch.int32), b.view(torch.int32)), (spec.name, rounding)
    finally:
        F.set_kernels(previous)


def test_radix4_rejects_gradients_beyond_its_range_with_a_clear_error():
    x = torch.tensor([1.0, -2.0 ** 127])
    with pytest.raises(ValueError, match="beyond radix-4 FP4's range"):
        F.radix4_fp4(x, 1)
    q = F.radix4_fp4(torch.tensor([1.0, -2.0 ** 126]), 1)     # the largest allowed: 2s = 2^127 is finite
    assert torch.isfinite(q).all() and float(q[1]) in (-2.0 ** 125, -2.0 ** 127)


def test_sawb_clip_of_weights_near_the_float32_limit_does_not_overflow():
    w = torch.tensor([3e38, -1e38, 1.0, 0.5])
    alpha = F.sawb_alpha(w)
    assert torch.isfinite(alpha) and 0 < alpha <= 3e38
    assert torch.isfinite(F.int4_sawb(w)).all()
    g = torch.randn(1000)
    assert F.sawb_alpha(g) < g.abs().max()          # Gaussian weights: the usual clip, well inside max|w|


def test_one_number_format_table():
    """Recipes, the autograd Functions and packing read one table: each entry is frozen and self-consistent."""
    import dataclasses

    from frugalnet.lowbit import FORMATS, NumberFormat, QuantSpec, get_format

    for name, nf in FORMATS.items():
        assert isinstance(nf, NumberFormat) and nf.name == name
        assert QuantSpec(name).bits == nf.bits and QuantSpec(name).kind == nf.kind
        assert (nf.encode is None) == (nf.decode is None) == (nf.check is None)
        with pytest.raises(dataclasses.FrozenInstanceError):
            nf.bits = 3
    assert FORMATS["pact4"].trainable_clip and not FORMATS["int8"].trainable_clip
    with pytest.raises(ValueError, match="format must be one of"):
        get_format("int3")
    with pytest.raises(ValueError, match="kind"):
        NumberFormat("x", 4, "weird")
