import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from frugalnet.kernels import kwta, reference
from frugalnet.nn.kwinners import topk_mask


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 6), n=st.integers(1, 80), kfrac=st.floats(0.01, 1.0), seed=st.integers(0, 2**16),
       ties=st.booleans())
def test_kwta_selects_exactly_the_torch_winners(batch, n, kfrac, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n)).astype(np.float32)
    if ties:  # many exact ties: the lower index must win, as in topk_mask
        x = np.round(x).astype(np.float32)
    boost = rng.uniform(0.5, 2.0, n).astype(np.float32)
    k = max(1, int(n * kfrac))
    aidx, aval = kwta.kwta(x, k, boost)
    mask = topk_mask(torch.from_numpy(x) * torch.from_numpy(boost), k).numpy()
    for b in range(batch):
        assert list(aidx[b]) == list(np.flatnonzero(mask[b]))
        np.testing.assert_array_equal(aval[b], x[b, aidx[b]])
    dense = kwta.densify(aidx, aval, n)
    np.testing.assert_array_equal(dense, reference.kwta(torch.from_numpy(x), k, torch.from_numpy(boost)).numpy())
