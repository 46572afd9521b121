"""csr_rows_cols (sparse W x row-major X, columns in lanes) and the engine's im2col_csr conv built on it."""
import numpy as np
import pytest
import torch

from frugalnet.engine.act import Act
from frugalnet.engine.steps import ConvStep
from frugalnet.kernels import layouts
from frugalnet.kernels.sparse_rows import check_csr_rows_cols, csr_rows_cols


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (5, 7, 16), (9, 33, 17), (4, 50, 64), (6, 20, 100), (3, 8, 0)])
def test_csr_rows_cols_matches_dense(m, k, n):
    rng = np.random.default_rng(m * 100 + k + n)
    w = rng.standard_normal((m, k)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    w[0] = 0                                            # an empty row gives its bias
    x = rng.standard_normal((k, n)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    c = layouts.to_csr(w)
    ref = w @ x + b[:, None]
    for par in (False, True):
        out = np.empty((m, n), np.float32)
        check_csr_rows_cols(c.ptr, c.idx, c.val, x, b, out)
        csr_rows_cols.pick(par)(c.ptr, c.idx, c.val, x, b, out, 2 if par else 1)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_check_refuses_bad_indices_and_shapes():
    w = np.eye(4, dtype=np.float32)
    c = layouts.to_csr(w)
    x, b, out = np.ones((4, 3), np.float32), np.zeros(4, np.float32), np.empty((4, 3), np.float32)
    bad = c.idx.copy()
    bad[-1] = 4
    with pytest.raises(ValueError, match="column indices"):
        check_csr_rows_cols(c.ptr, bad, c.val, x, b, out)
    with pytest.raises(ValueError, match="shapes do not fit"):
        check_csr_rows_cols(c.ptr, c.idx, c.val, x, b, np.empty((4, 2), np.float32))
    with pytest.raises(ValueError, match="ptr must rise"):
        check_csr_rows_cols(c.ptr[::-1].copy(), c.idx, c.val, x, b, out)


@pytest.mark.parametrize("cin,cout,k,s,p,d,groups,relu,pool,batch,hw", [
    (6, 8, 3, 1, 1, 1, 1, False, 1, 1, 8), (6, 8, 3, 2, 1, 1, 1, True, 1, 3, 9), (8, 8, 3, 1, 2, 2, 2, True, 2, 2, 8),
    (4, 4, 1, 1, 0, 1, 1, False, 1, 1, 5), (8, 8, 3, 1, 1, 1, 8, True, 1, 2, 6), (16, 16, 3, 1, 1, 1, 1, True, 1, 1, 4)])
def test_im2col_csr_conv_matches_pytorch(cin, cout, k, s, p, d, groups, relu, pool, batch, hw):
    g = torch.Generator().manual_seed(cin + hw)
    w = torch.randn(cout, cin // groups, k, k, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.7] = 0
    step = ConvStep.build("c", w.numpy(), torch.randn(cout, generator=g).numpy(), (s, s), (p, p), (d, d), groups)
    step.params["relu"] = relu
    if pool > 1:
        step.params["pool"] = pool
    x = torch.randn(batch, cin, hw, hw, generator=g).numpy()
    act = Act(x.shape, dense=x)
    assert any(v.startswith("im2col_csr") for v in step.variants(act))
    ref = step.run(act.fresh(), "torch").dense()
    for v in ("im2col_csr:s", "im2col_csr:p"):
        np.testing.assert_allclose(step.bind(v, x.shape)(act.fresh()).dense(), ref, rtol=1e-5, atol=1e-5)
