"""The column-segments layout of sparse 4-bit codes x sparse inputs (kernels/quant_colseg.py): every build (AVX-512,
AVX2, scalar; serial and parallel, one and several row parts) against a float64 reference of the simulated weight
(code value x scale, then @ x), the layout decoded back to the codes, its validation, and a fuzz of its arrays (a
mutated layout is refused, or read safely)."""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from frugalnet.kernels import quant as q, quant_colseg as cs
from tests.kernels.kernel_testutils import assert_close

INT4 = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, -7, -6, -5, -4, -3, -2, -1], np.int8)
E2M1 = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)
ISA = q.isa()
BUILDS = {"avx512": cs.colseg_avx512, "avx2": cs.colseg_avx2, "scalar": cs.colseg_scalar}
EXAMPLES = int(os.environ.get("FRUGALNET_FUZZ_EXAMPLES", "60"))


def _codes(rng, n_out, n, sparsity):
    mat = rng.integers(0, 16, (n_out, n)).astype(np.uint8)
    mat[rng.random(mat.shape) < sparsity] = 0
    return mat


def _layout(mat, lut, blk=0, nparts=1, seed=0):
    """(kernel weight arguments, scale (n_out, n_blocks), bias) of a code matrix (n_blocks * blk covers the width)."""
    ptr, idx, packed = q.compress_codes(mat, lut == 0, by_column=False, nibble=True)
    n_out, n = mat.shape
    n_blocks = -(-n // blk) if blk else 1
    rng = np.random.default_rng(seed)
    if blk == 32:      # powers of two, like MXFP4's: the layout keeps their exponents (uint8)
        scale = np.ldexp(np.float32(1.0), rng.integers(-20, 8, (n_out, n_blocks))).astype(np.float32)
    else:
        scale = rng.uniform(0.1, 1.0, (n_out, n_blocks)).astype(np.float32)
    bias = np.linspace(-1.0, 1.0, n_out).astype(np.float32)
    return cs.colseg_from_csr(ptr, idx, packed, lut == 0, n_out, n, scale, blk, bias, nparts), scale, bias


def _run(build, parallel, layout, lut, aidx, aval, counts, n_out):
    out = np.full((aidx.shape[0], n_out), np.nan, np.float32)
    split, seg, codes, row_scale, bias, bscale, shift = layout
    BUILDS[build].pick(parallel)(split, seg, codes, lut.astype(np.float32), row_scale, bias, bscale, shift, aidx,
                                 aval, counts, cs.scratch(aidx.shape[0], n_out), out)
    return out


def _reference(mat, lut, scale, blk, bias, x):
    n = mat.shape[1]
    w = lut[mat].astype(np.float32) * scale[:, np.arange(n) // blk if blk else np.zeros(n, int)]   # as simulated
    return (x.astype(np.float64) @ w.astype(np.float64).T + bias).astype(np.float32)


def _compact(x):
    """(aidx, aval, counts) of the nonzeros of each row of x, padded with junk past counts."""
    aidx = np.full(x.shape, 12345, np.int32)
    aval = np.full(x.shape, np.nan, np.float32)
    counts = np.zeros(x.shape[0], np.int32)
    for b, row in enumerate(x):
        nz = np.nonzero(row)[0]
        aidx[b, :len(nz)], aval[b, :len(nz)], counts[b] = nz, row[nz], len(nz)
    return aidx, aval, counts


def _available(build):
    return build == "scalar" or ISA[build]


@pytest.mark.parametrize("build", list(BUILDS))
@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("lut", [INT4, E2M1], ids=["int4", "e2m1"])
@pytest.mark.parametrize("blk", [0, 16, 32], ids=["row-scale", "blk16", "blk32"])
@pytest.mark.parametrize("nparts", [1, 3])
def test_colseg_builds_match_reference(build, parallel, lut, blk, nparts):
    if not _available(build):
        pytest.skip(f"this CPU lacks {build}")
    rng = np.random.default_rng(blk + nparts)
    n_out, n, batch = 53, 150, 4             # rows not a multiple of 16, width not a multiple of 32
    mat = _codes(rng, n_out, n, 0.85)
    mat[:, 7] = 0                            # an empty column
    mat[5] = 0                               # an empty row
    mat[:, 149] = rng.integers(1, 8, n_out)  # a full last column (every segment, odd counts per part)
    layout, scale, bias = _layout(mat, lut, blk, nparts, seed=blk)
    x = rng.standard_normal((batch, n)).astype(np.float32)
    x[rng.random(x.shape) < 0.8] = 0.0
    x[:, [7, 149]] = 1.5                     # the empty and the full column active
    x[2] = 0.0                               # an all-zero input
    ref = _reference(mat, lut, scale, blk, bias, x)
    assert_close(_run(build, parallel, layout, lut, *_compact(x), n_out), ref)
    # a dense row with every index (zeros skipped) gives the same
    every = np.broadcast_to(np.arange(n, dtype=np.int32), x.shape).copy()
    assert_close(_run(build, parallel, layout, lut, every, x, np.full(batch, n, np.int32), n_out), ref)


def test_colseg_layout_decodes_back_to_the_codes():
    rng = np.random.default_rng(3)
    n_out, n = 70, 90
    mat = _codes(rng, n_out, n, 0.9)
    for nparts in (1, 2, 4):
        (split, seg, codes, row_scale, _, bscale, _), scale, _ = _layout(mat, INT4, nparts=nparts)
        assert seg.dtype == np.uint16 and split.shape == (n, nparts + 1) and len(bscale) == 0
        np.testing.assert_array_equal(row_scale, scale[:, 0])
        back = np.zeros((n_out + 16, n), np.uint8)
        bounds = [2 * (p * 5 // nparts) for p in range(nparts + 1)]    # in 8-row blocks: parts of whole 16 rows
        for j in range(n):
            for p in range(nparts):
                for e in range(split[j, p], split[j, p + 1]):
                    for k in range(8):
                        s = int(seg[8 * e + k])
                        assert bounds[p] <= s < bounds[p + 1]                     # each part its own rows
                        nib = (codes[32 * e + k // 2:32 * e + 32:4] >> (4 * (k & 1))) & 15
                        assert not (back[8 * s:8 * s + 8, j] & (nib > 0)).any()   # each entry once
                        back[8 * s:8 * s + 8, j] |= nib
        np.testing.assert_array_equal(back[:n_out], np.where(INT4[mat] == 0, 0, mat))
        assert not back[n_out:].any()
    # at 90% sparsity ~57% of the 8-row segments hold a nonzero: ~4 bytes per nonzero (about dense 4-bit's size)
    nnz = int((INT4[mat] != 0).sum())
    assert cs.colseg_nbytes(split, seg, codes) > 2 * nnz


def test_block_scales_relaid_by_block():
    rng = np.random.default_rng(4)
    mat = _codes(rng, 20, 64, 0.7)
    (split, seg, codes, row_scale, _, bscale, shift), scale, _ = _layout(mat, E2M1, blk=32)
    assert shift == 5 and np.all(row_scale == 1) and len(bscale) == 2 * 32
    assert bscale.dtype == np.uint8            # powers of two: exponents only, 1 byte per scale
    np.testing.assert_array_equal(np.ldexp(np.float32(1.0), bscale.reshape(2, 32)[:, :20].astype(int) - 127),
                                  scale.T)
    (_, _, _, _, _, b16, shift16), s16, _ = _layout(mat, E2M1, blk=16)
    assert shift16 == 4 and b16.dtype == np.float32 and len(b16) == 4 * 32      # any other scales: float32
    np.testing.assert_array_equal(b16.reshape(4, 32)[:, :20], s16.T)
    with pytest.raises(ValueError, match="power of two"):
        cs.colseg_from_csr(*q.compress_codes(mat, E2M1 == 0, False, True), E2M1 == 0, 20, 64,
                           np.ones((20, 2), np.float32), 48, np.zeros(20, np.float32))
    with pytest.raises(ValueError, match="block scales"):
        cs.check_colseg(split, seg, codes, 20, 64, row_scale, np.zeros(20, np.float32), bscale[:-32], shift)


def test_empty_matrix():
    mat = np.zeros((5, 10), np.uint8)
    (split, seg, codes, *_), _, _ = _layout(mat, INT4)
    assert not split.any() and len(seg) == 0 and len(codes) == 0
    x = np.ones((2, 10), np.float32)
    layout, _, bias = _layout(mat, INT4)
    np.testing.assert_array_equal(_run("scalar", False, layout, INT4, *_compact(x), 5), np.tile(bias, (2, 1)))
    with pytest.raises(ValueError, match="column indices below the width"):
        cs.to_colseg(np.array([0, 1]), np.array([20]), np.array([1], np.uint8), INT4 == 0, 1, 16)


def _valid():
    mat = _codes(np.random.default_rng(5), 40, 60, 0.8)
    (split, seg, codes, row_scale, bias, bscale, shift), _, _ = _layout(mat, INT4, nparts=2)
    return split, seg, codes, row_scale, bias


@pytest.mark.parametrize("edit, match", [
    (lambda s, g, c: (s.astype(np.int32), g, c), "split must be int64"),
    (lambda s, g, c: (s[:-1], g, c), "split must be int64"),
    (lambda s, g, c: (s + 1, g, c), "rise from 0"),
    (lambda s, g, c: (s[::-1].copy(), g, c), "rise from 0"),
    (lambda s, g, c: (s, g.astype(np.int64), c), "seg must be"),
    (lambda s, g, c: (s, g[:-1], c), "seg must be"),
    (lambda s, g, c: (s, g[:-8], c), "split must rise"),
    (lambda s, g, c: (s, np.where(np.arange(len(g)) == 3, 5, g).astype(np.uint16), c), "below ceil"),
    (lambda s, g, c: (s, np.where(np.arange(len(g)) == 0, 2, g).astype(np.uint16), c), "its own row blocks"),
    (lambda s, g, c: (s, g, c[:-1]), "codes must be uint8"),
    (lambda s, g, c: (s, g, c.astype(np.int8)), "codes must be uint8"),
])
def test_bad_layouts_are_refused(edit, match):
    split, seg, codes, row_scale, bias = _valid()
    with pytest.raises(ValueError, match=match):
        cs.check_colseg(*edit(split, seg, codes), 40, 60, row_scale, bias, np.zeros(0, np.float32), 0)


def test_bad_scales_and_table_are_refused():
    split, seg, codes, row_scale, bias = _valid()
    args = (split, seg, codes, 40, 60)
    with pytest.raises(ValueError, match="row_scale must be float32"):
        cs.check_colseg(*args, row_scale[:-1], bias, np.zeros(0, np.float32), 0)
    with pytest.raises(ValueError, match="bias must be float32"):
        cs.check_colseg(*args, row_scale, bias.astype(np.float64), np.zeros(0, np.float32), 0)
    with pytest.raises(ValueError, match="lutf must be float32"):
        cs.check_colseg(*args, row_scale, bias, np.zeros(0, np.float32), 0, lutf=np.zeros(8, np.float32))


@settings(max_examples=EXAMPLES, deadline=None)
@given(array=st.sampled_from(["split", "seg", "codes"]), where=st.floats(0, 1), value=st.integers(-2 ** 17, 2 ** 17),
       cut=st.booleans())
def test_fuzzed_layouts_are_refused_or_read_safely(array, where, value, cut):
    """One value changed (or the array cut short): check_colseg raises ValueError, or every build reads the layout
    without leaving its arrays (numba does no bounds checks: a bad index here would read out of bounds)."""
    split, seg, codes, row_scale, bias = _valid()
    arrays = {"split": split.copy(), "seg": seg.copy(), "codes": codes.copy()}
    a = arrays[array].reshape(-1)          # a view: edits reach the array
    i = min(len(a) - 1, int(where * len(a)))
    if cut:                                # (split: whole rows)
        arrays[array] = arrays[array][:min(len(arrays[array]) - 1, int(where * len(arrays[array])))]
    else:
        a[i] = value % (np.iinfo(a.dtype).max + 1) if a.dtype.kind == "u" else value
    try:
        cs.check_colseg(arrays["split"], arrays["seg"], arrays["codes"], 40, 60, row_scale, bias,
                        np.zeros(0, np.float32), 0)
    except ValueError:
        return
    x = np.ones((1, 60), np.float32)
    for build in [b for b in BUILDS if _available(b)]:
        out = np.empty((1, 40), np.float32)
        BUILDS[build].pick(False)(arrays["split"], arrays["seg"], arrays["codes"], INT4.astype(np.float32),
                                  row_scale, bias, np.zeros(0, np.float32), 0, *_compact(x), cs.scratch(1, 40), out)
        assert np.isfinite(out).all()


def test_kernels_skip_active_indices_outside_the_width():
    """Active lists are not the layout's: an index past the width (or negative), a count past the lists, and a
    scratch too small for the batch read nothing out of bounds."""
    split, seg, codes, row_scale, bias = _valid()
    aidx = np.array([[0, 60, -1, 2 ** 30, 59]], np.int32)
    aval = np.ones((1, 5), np.float32)
    for build in [b for b in BUILDS if _available(b)]:
        out = np.zeros((1, 40), np.float32)
        k = BUILDS[build].pick(False)
        k(split, seg, codes, INT4.astype(np.float32), row_scale, bias, np.zeros(0, np.float32), 0, aidx, aval,
          np.array([99], np.int32), cs.scratch(1, 40), out)
        ref = np.zeros((1, 40), np.float32)
        k(split, seg, codes, INT4.astype(np.float32), row_scale, bias, np.zeros(0, np.float32), 0,
          np.array([[0, 59]], np.int32), np.ones((1, 2), np.float32), np.array([2], np.int32), cs.scratch(1, 40), ref)
        np.testing.assert_array_equal(out, ref)
        big = np.full((3, 40), -7.0, np.float32)          # scratch for one sample: only sample 0 is computed
        k(split, seg, codes, INT4.astype(np.float32), row_scale, bias, np.zeros(0, np.float32), 0,
          np.zeros((3, 1), np.int32), np.ones((3, 1), np.float32), np.ones(3, np.int32), cs.scratch(1, 40), big)
        assert (big[1:] == -7.0).all()


def test_more_than_65536_segments_per_column_use_uint32_ids():
    n_out = 8 * 65536 + 20                    # segment ids past uint16
    mat = np.zeros((n_out, 3), np.uint8)
    rows = np.array([0, 7, 8 * 65536 - 1, 8 * 65536 + 3, n_out - 1])
    mat[rows, 1] = [1, 2, 3, 4, 5]
    layout, scale, bias = _layout(mat, INT4)
    assert layout[1].dtype == np.uint32 and int(layout[1].max()) == (n_out - 1) // 8
    x = np.array([[0.0, 2.0, 0.0]], np.float32)
    ref = _reference(mat, INT4, scale, 0, bias, x)
    for build in [b for b in BUILDS if _available(b)]:
        assert_close(_run(build, False, layout, INT4, *_compact(x), n_out), ref)


@pytest.mark.parametrize("build", list(BUILDS))
def test_builds_refuse_strided_arrays_they_read_by_pointer(build):
    if not _available(build):
        pytest.skip(f"this CPU lacks {build}")
    split, seg, codes, row_scale, bias = _valid()
    x = np.ones((1, 60), np.float32)
    wide = np.zeros((1, 80), np.float32)
    strided_scales = np.ones(2 * 2 * 48, np.float32)[::2]
    k = BUILDS[build].pick(False)
    with pytest.raises(ValueError, match="C-contiguous"):
        k(split, seg, codes, INT4.astype(np.float32), row_scale, bias, strided_scales, 5, *_compact(x),
          cs.scratch(1, 40), np.zeros((1, 40), np.float32))
    if build != "scalar":
        with pytest.raises(ValueError, match="C-contiguous"):
            k(split, seg, codes, INT4.astype(np.float32), row_scale, bias, np.zeros(0, np.float32), 0, *_compact(x),
              cs.scratch(1, 40), wide[:, ::2])
