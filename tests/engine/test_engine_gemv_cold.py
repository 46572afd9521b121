"""The dense small-batch GEMV (kernels.dense) as a Linear variant, and cold-cache timing of the plan choice."""
import numpy as np
import pytest
import torch
from torch import nn

import frugalnet.engine as E
from frugalnet.engine.act import Act
from frugalnet.engine.steps import LinearStep
from frugalnet.engine.timing import cache_evictor, interleaved_samples, last_level_cache_bytes
from frugalnet.kernels.dense import check_gemv, gemv_rows


@pytest.mark.parametrize("n_out,n_in,batch", [(1, 1, 1), (5, 3, 1), (33, 130, 3), (64, 64, 2), (257, 768, 8)])
def test_gemv_rows_matches_pytorch(n_out, n_in, batch):
    g = torch.Generator().manual_seed(n_out + n_in)
    w, x, b = torch.randn(n_out, n_in, generator=g), torch.randn(batch, n_in, generator=g), torch.randn(n_out, generator=g)
    ref = torch.nn.functional.linear(x, w, b).numpy()
    for par in (False, True):
        out = np.empty((batch, n_out), np.float32)
        check_gemv(w.numpy(), x.numpy(), b.numpy(), out)
        gemv_rows.pick(par)(w.numpy(), x.numpy(), b.numpy(), out)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.sqrt(n_in))


def test_gemv_check_refuses_what_the_kernel_cannot_read():
    w, x, b = np.ones((4, 6), np.float32), np.ones((1, 6), np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="shapes do not fit"):
        check_gemv(w, np.ones((1, 5), np.float32), b, np.empty((1, 4), np.float32))
    with pytest.raises(ValueError, match="float32"):
        check_gemv(w.astype(np.float64), x, b, np.empty((1, 4), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        check_gemv(np.ones((6, 4), np.float32).T, x, b, np.empty((1, 4), np.float32))


def test_linear_step_offers_gemv_at_small_batches_and_it_matches():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(40, 24, generator=g).numpy(), torch.randn(40, generator=g).numpy()
    step = LinearStep.build("fc", w, b)
    x1 = torch.randn(1, 24, generator=g).numpy()
    assert {"gemv:s", "gemv:p"} <= set(step.variants(Act(x1.shape, dense=x1)))
    x64 = torch.randn(64, 24, generator=g).numpy()
    assert not any(v.startswith("gemv") for v in step.variants(Act(x64.shape, dense=x64)))
    for x in (x1, np.ascontiguousarray(x64[:3])):
        ref = step.run(Act(x.shape, dense=x), "torch").dense()
        for v in ("gemv:s", "gemv:p"):
            np.testing.assert_allclose(step.run(Act(x.shape, dense=x), v).dense(), ref, rtol=1e-5, atol=1e-5)


def test_timing_with_before_runs_it_untimed_before_every_call():
    calls = []
    got = interleaved_samples({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                              warmup=0, before=lambda: calls.append("evict"))
    assert len(got["a"]) == len(got["b"]) == 3
    assert calls == ["evict", "a", "evict", "b", "evict", "b", "evict", "a", "evict", "a", "evict", "b"]


def test_cache_evictor_and_llc_size():
    assert last_level_cache_bytes() >= 1 << 16
    ev = cache_evictor(1 << 16)
    assert ev() == float(1 << 13)       # it read every one of its 8-byte words


@pytest.mark.parametrize("cold", [True, False, None])
def test_cold_cache_compile_matches_and_says_so(cold):
    model = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)).eval()   # 0.5 MB: over 256 KB
    x = torch.randn(1, 512, generator=torch.Generator().manual_seed(3))
    eng = E.compile(model, x, repeats=2, cold_cache=cold, jit_workers=0)
    assert eng.cold_cache is (cold is True)         # None: auto, and 0.5 MB is under any last-level cache
    torch.testing.assert_close(eng(x), model(x), rtol=1e-4, atol=1e-5)
    assert set(eng.plans[1]) <= {"torch", "gemv:s", "gemv:p", "csr_rows:s", "csr_rows:p", "csc_rows:s", "csc_rows:p",
                                  "dense_active:s", "dense_active:p", "numba:s", "numba:p"}


def test_engine_forced_to_gemv_and_im2col_csr_saves_loads_and_matches(tmp_path):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16)).eval()
    with torch.no_grad():
        model[0].weight.mul_((torch.rand_like(model[0].weight) > 0.8).float())
    x = torch.randn(1, 3, 6, 6)
    eng = E.compile(model, x, repeats=1, jit_workers=0)
    kinds = [s.kind for s in eng.steps]
    forced = ["im2col_csr:s" if k == "conv2d" else "gemv:p" if k == "linear" else v
              for k, v in zip(kinds, eng.plans[1])]
    eng.plans[1] = forced
    eng._bound.clear()
    ref = model(x)
    torch.testing.assert_close(eng(x), ref, rtol=1e-4, atol=1e-5)
    back = E.load(eng.save(tmp_path / "m.engine.npz"))
    assert back.plans[1] == forced
    torch.testing.assert_close(back(x), ref, rtol=1e-4, atol=1e-5)


def test_cold_cache_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="cold_cache must be True, False or None"):
        E.compile(nn.Linear(4, 2), torch.randn(1, 4), cold_cache="yes")
