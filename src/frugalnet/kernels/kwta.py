"""k-winners-take-all selection that reproduces frugalnet.nn.kwinners.topk_mask exactly, in O(n) per row.

A stable descending sort keeps every value above the k-th largest plus the lowest-indexed ties at it; we find the
k-th largest score as an order-preserving integer key (kth_largest_key), among the entries above a threshold
guessed from a sample when the row is long, and take the same set, returning winners as (index, raw value) pairs
in index order: the sparse form the sparse-input kernels consume. No loop has a data-dependent branch: rows change
from call to call, and a quickselect's or a sign test's mispredictions had doubled the time of the whole selection.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from frugalnet.kernels._jit import JIT, kernel, threads


@njit(**JIT)
def _order_key(v):
    """uint32 key with the order of float32 values, as torch's sort sees them: -0.0 and +0.0 share a key (they
    compare equal) and every NaN gets the largest key (NaN sorts above +inf, all NaNs alike)."""
    z = np.float32(np.float32(v) + np.float32(0.0))                     # -0.0 + 0.0 = +0.0
    b = np.int32(z.view(np.int32))
    # negative: flip every bit; positive: set the sign bit. Branch-free (an arithmetic shift makes the mask): a
    # branch on the sign mispredicted on every other score and, on rows that change from call to call, doubled
    # the time of a whole k-WTA
    key = np.uint32(b ^ ((b >> np.int32(31)) | np.int32(-2147483648)))
    nan = np.uint32(z != z)
    return np.uint32(key | (np.uint32(0) - nan))


SAMPLE = 512         # scores sampled to guess a threshold a little below the k-th largest


KEY_LEVEL = 4        # bits of the k-th largest key decided between compactions of the keys still in play
KEY_HIST_BITS = 11   # at most this many bits of it the first (histogram) step decides
GUESS_LOW_BIT = 16   # the sampled guess keeps a float's sign, exponent and 7 mantissa bits (it is a lower bound)


@njit(**JIT)
def kth_largest_key(keys, n, k, work, hist):
    """The k-th largest of keys[:n] (uint32, 1 <= k <= n): key_lower_bound to the last bit."""
    return key_lower_bound(keys, n, k, work, hist, 0)


@njit(**JIT)
def key_lower_bound(keys, n, k, work, hist, low):
    """The k-th largest of keys[:n] (uint32, 1 <= k <= n) with its bits below `low` cleared (a lower bound: at least
    k keys are >= it; exact for low = 0); work (n; may be keys itself, which it then overwrites) and hist
    (2^KEY_HIST_BITS) are scratch.

    Below the bits every key shares, a histogram of the next KEY_HIST_BITS bits finds the bin the answer lies in and
    how many keys lie above it; the keys of that bin are compacted into work, and the remaining bits are decided
    one at a time (the largest t with at least k keys >= t) with one counting pass each, compacting the keys
    still in play every KEY_LEVEL bits. No loop has a data-dependent branch but the histogram scan's exit: on
    rows that change from call to call a quickselect's branches mispredicted so often that they cost more than
    all of this."""
    lo_all = np.uint32(0xFFFFFFFF)
    hi_all = np.uint32(0)
    for j in range(n):
        lo_all = min(lo_all, keys[j])
        hi_all = max(hi_all, keys[j])
    diff = np.uint32(lo_all ^ hi_all)
    if diff == 0:
        return lo_all
    bit = 31
    while (diff >> np.uint32(bit)) == np.uint32(0):
        bit -= 1
    hb = 4
    while hb < KEY_HIST_BITS and (1 << (hb + 1)) <= n:
        hb += 1
    shift = max(0, bit + 1 - hb)
    nbins = 1 << (bit + 1 - shift)
    mask = np.uint32(nbins - 1)
    for b in range(nbins):
        hist[b] = 0
    for j in range(n):
        hist[(keys[j] >> np.uint32(shift)) & mask] += 1
    above = 0                       # keys known to lie above the answer's range
    target = 0
    for b in range(nbins - 1, -1, -1):
        if above + hist[b] >= k:
            target = b
            break
        above += hist[b]
    t = (np.int64(hi_all) & ~((np.int64(1) << (bit + 1)) - 1)) | (np.int64(target) << shift)
    if shift <= low:
        return np.uint32(t)
    lo = np.uint32(t)
    hi = t + (np.int64(1) << shift)
    m = 0
    for j in range(n):
        key = keys[j]
        work[m] = key
        m += np.int32(key >= lo) & np.int32(np.int64(key) < hi)
    bit = shift - 1
    while bit >= low:
        stop = max(low - 1, bit - KEY_LEVEL)
        while bit > stop:
            trial = np.uint32(t | (np.int64(1) << bit))
            cnt = 0
            for j in range(m):
                cnt += np.int32(work[j] >= trial)
            if cnt + above >= k:
                t = np.int64(trial)
            bit -= 1
        if bit < low:
            break
        lo = np.uint32(t)
        hi = t + (np.int64(1) << (bit + 1))
        o = 0
        for j in range(m):
            key = work[j]
            work[o] = key
            above += np.int32(np.int64(key) >= hi)
            o += np.int32(key >= lo) & np.int32(np.int64(key) < hi)
        m = o
    return np.uint32(t)


@njit(**JIT)
def _kwta_row(row, boost, k, oi, ov, bi, bk, work, hist, hint):
    """Winners of one row (score row x boost) into oi / ov (k each), in index order; bi, bk, work (n + 1 each) and
    hist (2^KEY_HIST_BITS) are scratch; hint (1,) carries a threshold guess from row to row (0: none). A plain
    function shared by the serial and the parallel builds, so its body is compiled once.

    1. Every score's order key (a vectorised pass).
    2. Rows of 2 x SAMPLE or more: a threshold guess a few standard deviations below the k-th largest. First the
       previous row's guess (rows of a batch are alike): one vectorised counting pass checks that between k and
       3k entries reach it. Otherwise a systematic sample of about SAMPLE keys gives one (its bits below
       GUESS_LOW_BIT cleared: a guess needs no more). A branch-free compaction keeps the indices of the entries at
       or above it (for CNN-2's 6,272-wide first layer about 1,200 of them for k = 894). Should fewer than k pass
       (an unlucky sample), every entry is kept instead. The previous row's guess spared the sample in 255 of 256
       rows of i.i.d. normal scores (256 x 2048, k = 102: 0.69 -> 0.47 ms a batch, one thread, loaded machine);
       storing only indices in the compaction (keys gathered after) took 0.29 -> 0.22 ms of it.
    3. The exact k-th largest key among the kept entries; those above it win, and ties at it go to the lowest
       indices, as topk_mask's stable sort does. The guess only decides which entries are looked at, so the
       winners never depend on it."""
    n = row.shape[0]
    if k >= n:
        for i in range(n):
            oi[i] = i
            ov[i] = row[i]
        return
    for i in range(n):
        bk[i] = _order_key(row[i] * boost[i])
    cand, scratch, c = bk, work, n               # the kept entries' keys (bi: their indices), and kth's scratch
    if n >= 2 * SAMPLE:
        guess = hint[0]
        if guess != 0:
            cnt = 0
            for i in range(n):
                cnt += np.int32(bk[i] >= guess)
            if cnt < k or cnt > 3 * k:
                guess = np.uint32(0)
        if guess == 0:
            step = (n // SAMPLE) | 1             # odd, so it does not fall in step with even channel/row sizes
            m = 0
            for i in range(0, n, step):
                work[m] = bk[i]
                m += 1
            f = k / n
            r = int(f * m + 3.0 * np.sqrt(f * (1.0 - f) * m)) + 2
            if r < m:
                guess = max(np.uint32(1), key_lower_bound(work, m, r, work, hist, GUESS_LOW_BIT))
        hint[0] = guess
        if guess != 0:
            kept = 0
            for i in range(n):                   # compaction of the indices, leaving bk whole
                bi[kept] = i
                kept += np.int32(bk[i] >= guess)
            if kept >= k:
                for j in range(kept):
                    work[j] = bk[bi[j]]
                cand, scratch, c = work, bk, kept
            # else the guess failed: every entry stays in play
    if c == n:
        for i in range(n):
            bi[i] = i
    thr = kth_largest_key(cand, c, k, scratch, hist)
    ties = k                                     # winners equal to thr: k minus those above it
    for j in range(c):
        ties -= np.int32(cand[j] > thr)
    o = 0                                        # compact the winners in place (o <= j), then copy them out
    for j in range(c):
        key = cand[j]
        tie = np.int32(key == thr) & np.int32(ties > 0)
        ties -= tie
        bi[o] = bi[j]
        o += np.int32(key > thr) | tie
    for j in range(k):
        oi[j] = bi[j]
        ov[j] = row[bi[j]]


@kernel
def kwta_rows(x, boost, k, aidx, aval, nchunks):
    """Winners of each row of x (B, n) by boosted score x * boost (boost (n,)): aidx/aval (B, k) in index order.
    Rows go in nchunks contiguous runs (one per thread), so each run allocates its scratch once."""
    batch, n = x.shape
    nchunks = max(1, min(batch, nchunks))
    for c in prange(nchunks):
        hist = np.empty(1 << KEY_HIST_BITS, np.int32)
        bi = np.empty(n + 1, np.int32)
        bk = np.empty(n + 1, np.uint32)
        work = np.empty(n + 1, np.uint32)
        hint = np.zeros(1, np.uint32)
        for b in range((c * batch) // nchunks, ((c + 1) * batch) // nchunks):
            _kwta_row(x[b], boost, k, aidx[b], aval[b], bi, bk, work, hist, hint)


@kernel
def kwta_rows_train(x, boost, k, aidx, aval, out, nchunks):
    """kwta_rows for training: the winners' indices aidx (B, k) (index order, kept for the backward) and raw values
    aval (B, k) (the lists the next sparse layer consumes as they are: no scan for nonzeros), and the dense output
    out (B, n): each winner's raw value, zero elsewhere, written while the row is in cache."""
    batch, n = x.shape
    nchunks = max(1, min(batch, nchunks))
    for c in prange(nchunks):
        hist = np.empty(1 << KEY_HIST_BITS, np.int32)
        bi = np.empty(n + 1, np.int32)
        bk = np.empty(n + 1, np.uint32)
        work = np.empty(n + 1, np.uint32)
        hint = np.zeros(1, np.uint32)
        for b in range((c * batch) // nchunks, ((c + 1) * batch) // nchunks):
            ai = aidx[b]
            av = aval[b]
            _kwta_row(x[b], boost, k, ai, av, bi, bk, work, hist, hint)
            o = out[b]
            for i in range(n):
                o[i] = 0.0
            for t in range(k):
                o[ai[t]] = av[t]


@kernel
def winners_grad_lists(gy, aidx, gx, gval):
    """Gradient of the k-WTA output: gx (B, n) = gy at each row's winners aidx (B, k), zero elsewhere; also hands
    out the gradient at the winners, gval (B, k): the per-sample lists of the gradient's only possible nonzeros,
    for the sparse layer before the k-WTA."""
    for b in prange(gy.shape[0]):
        g = gy[b]
        o = gx[b]
        for i in range(o.shape[0]):
            o[i] = 0.0
        ai = aidx[b]
        gv = gval[b]
        for t in range(ai.shape[0]):
            v = g[ai[t]]
            o[ai[t]] = v
            gv[t] = v


@njit(**JIT)
def count_positive_values(aidx, aval, group, wins):
    """wins[u // group] += 1 for every winner u (aidx (B, k)) whose value aval > 0: the duty cycle's count (group =
    H * W counts a KWinners2d map's positions per channel). One pass over the B x k winners."""
    for b in range(aidx.shape[0]):
        ai = aidx[b]
        av = aval[b]
        for t in range(ai.shape[0]):
            if av[t] > 0:
                wins[ai[t] // group] += 1.0


@kernel
def winners_grad_maps(gy, gy_cl, aidx, gx, gx_cl, channels):
    """winners_grad_lists' gx for KWinners2d maps, reading and writing either memory layout without a layout copy: gy and gx
    are (B, C*H*W) in memory order, NCHW (flat index c*HW + p) or, when gy_cl / gx_cl, channels-last (p*C + c);
    aidx holds each row's winners as NCHW flat indices. gx is zero except at the winners."""
    batch, n = gx.shape
    hw = n // channels
    for b in prange(batch):
        g = gy[b]
        o = gx[b]
        for i in range(n):
            o[i] = 0.0
        ai = aidx[b]
        for t in range(ai.shape[0]):
            f = ai[t]
            c = f // hw
            q = f - c * hw
            cl = q * channels + c
            o[cl if gx_cl else f] = g[cl if gy_cl else f]


@kernel
def channels_last_rows(src, dst):
    """dst (B, C, P) = src (B, P, C) transposed per sample: a channels-last map's rows in NCHW order (torch's
    layout copy of a (64, 32, 12, 12) map took 272 us against 104 us here, 2 threads against one)."""
    batch, npos, channels = src.shape
    for b in prange(batch):
        s = src[b]
        d = dst[b]
        for q in range(npos):
            for c in range(channels):
                d[c, q] = s[q, c]


@kernel
def scatter_rows(aidx, aval, counts, out):
    """Dense rows from active (index, value) lists: out (B, n) is zeroed, then filled."""
    for b in prange(aidx.shape[0]):
        o = out[b]
        for i in range(o.shape[0]):
            o[i] = 0.0
        for t in range(counts[b]):
            o[aidx[b, t]] = aval[b, t]


def kwta(x: np.ndarray, k: int, boost: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Winners of each row of x (B, n): (indices int32 (B, k), raw values (B, k)); boost defaults to ones."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"kwta expects a 2-D (batch, n) array, got shape {x.shape}")
    n = x.shape[1]
    if not 1 <= k:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), n)
    boost = np.ones(n, np.float32) if boost is None else np.ascontiguousarray(boost, dtype=np.float32)
    if boost.shape != (n,):
        raise ValueError(f"boost must have shape ({n},), got {boost.shape}")
    aidx = np.empty((x.shape[0], k), np.int32)
    aval = np.empty((x.shape[0], k), np.float32)
    kwta_rows(x, boost, k, aidx, aval, threads())
    return aidx, aval


def densify(aidx: np.ndarray, aval: np.ndarray, n: int, counts: np.ndarray | None = None) -> np.ndarray:
    """The dense (B, n) array whose nonzeros are the given active entries."""
    if counts is None:
        counts = np.full(aidx.shape[0], aidx.shape[1], np.int32)
    out = np.empty((aidx.shape[0], n), np.float32)
    scatter_rows(np.ascontiguousarray(aidx, np.int32), np.ascontiguousarray(aval, np.float32),
                 np.ascontiguousarray(counts, np.int32), out)
    return out
