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


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7000), kfrac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16),
       style=st.sampled_from(["normal", "ties", "signed-zeros", "wide", "one-bin"]))
def test_kwta_large_rows_match_topk_mask(n, kfrac, seed, style):
    """Rows long enough for many entries per radix bin: ties at the threshold, +-0, wide exponents, and values that
    all share the top key bits (so the whole row is one bin)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n).astype(np.float32)
    if style == "ties":
        a = np.round(a * 2).astype(np.float32)
    elif style == "signed-zeros":
        a[rng.random(n) < 0.5] = 0.0
        a[rng.random(n) < 0.3] = -0.0
    elif style == "wide":
        a = (a * 10.0 ** rng.integers(-30, 30, n)).astype(np.float32)
    elif style == "one-bin":
        a = (1.0 + rng.random(n) * 1e-3).astype(np.float32)
    k = min(n, max(1, int(round(n * kfrac))))
    boost = np.ones(n, np.float32)
    aidx, aval = kwta.kwta(a[None], k, boost)
    mask = topk_mask(torch.from_numpy(a[None]), k).numpy()[0]
    assert list(aidx[0]) == list(np.flatnonzero(mask))
    np.testing.assert_array_equal(aval[0], a[aidx[0]])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(8, 3000), kfrac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), nan=st.booleans())
def test_kwta_rows_with_infinities_and_nan_match_topk_mask(n, kfrac, seed, nan):
    """Scores in the extreme radix bins (infinities, |x| near float32's max, NaN) take the order-key compaction
    instead of the float-threshold one; both must pick topk_mask's winners."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n).astype(np.float32)
    u = rng.random(n)
    a[u < 0.03] = np.inf
    a[(u >= 0.03) & (u < 0.06)] = -np.inf
    a[(u >= 0.06) & (u < 0.08)] = np.float32(3e38)
    if nan:   # both signs of NaN: torch sorts every NaN above +inf
        a[(u >= 0.08) & (u < 0.1)] = np.nan
        a[(u >= 0.1) & (u < 0.11)] = -np.float32(np.nan)
    k = min(n, max(1, int(round(n * kfrac))))
    aidx, _ = kwta.kwta(a[None], k)
    mask = topk_mask(torch.from_numpy(a[None]), k).numpy()[0]
    assert list(aidx[0]) == list(np.flatnonzero(mask))


def test_kwta_keeps_every_entry_when_the_sampled_guess_misses():
    """A row whose sampled entries (every step-th) are its largest: the guessed threshold lets fewer than k entries
    through, and the selection must fall back to all entries and still pick topk_mask's winners."""
    n = 4 * kwta.SAMPLE
    step = (n // kwta.SAMPLE) | 1
    rng = np.random.default_rng(3)
    a = rng.random(n).astype(np.float32)
    a[::step] += 10.0
    for k in (n // 3, n // 10, step):            # more winners than sampled entries, fewer, very few
        aidx, aval = kwta.kwta(a[None], k)
        mask = topk_mask(torch.from_numpy(a[None]), k).numpy()[0]
        assert list(aidx[0]) == list(np.flatnonzero(mask))
        np.testing.assert_array_equal(aval[0], a[aidx[0]])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16), spread=st.sampled_from([1, 3, 1000, 2**32]),
       base=st.sampled_from([0, 0x3F800000, 0xBF800000, 0xFFFFFF00]))
def test_kth_largest_key_matches_sorting(n, seed, spread, base):
    """Keys sharing none, some or all of their top bits, ties included, at every rank kind."""
    rng = np.random.default_rng(seed)
    keys = np.minimum(base + rng.integers(0, spread, n, dtype=np.uint64), 0xFFFFFFFF).astype(np.uint32)
    work, hist = np.empty(n, np.uint32), np.empty(1 << kwta.KEY_HIST_BITS, np.int32)
    for k in {1, min(2, n), n, max(1, n - 1), (n + 1) // 2, max(1, n // 7)}:
        assert kwta.kth_largest_key(keys.copy(), n, k, work, hist) == np.sort(keys)[::-1][k - 1]
