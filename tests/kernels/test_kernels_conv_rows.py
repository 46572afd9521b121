"""kernels.conv_rows (sparse weights, output rows in registers) equals PyTorch's convolution, and refuses offsets
that would read outside its input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from frugalnet.kernels import conv_rows, layouts


@pytest.mark.parametrize("b,ci,h,w,co,k,pad,dil", [
    (1, 16, 32, 32, 8, 3, 1, 1),    # rows of 32: four registers
    (2, 8, 16, 16, 8, 3, 1, 1),     # two rows of two registers
    (1, 8, 9, 19, 8, 3, 1, 1),      # 19 wide: two registers and a scalar tail, an odd last row
    (1, 8, 8, 8, 8, 3, 1, 2),       # four rows of one register, dilation 2
    (2, 3, 13, 10, 4, 3, 1, 1),
    (3, 5, 11, 13, 7, 5, 0, 1),     # no padding, 5x5
    (1, 8, 4, 4, 8, 3, 1, 1),       # rows of 4: scalar
])
@pytest.mark.parametrize("parallel", [False, True])
def test_conv_rows_matches_torch(b, ci, h, w, co, k, pad, dil, parallel):
    g = np.random.default_rng(b * 100 + ci)
    wt = g.standard_normal((co, ci, k, k)).astype(np.float32)
    wt[g.random(wt.shape) < 0.85] = 0
    wt[0] = 0                                                  # an output channel without taps: bias only
    x = g.standard_normal((b, ci, h, w)).astype(np.float32)
    bias = g.standard_normal(co).astype(np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(bias), padding=pad,
                   dilation=dil).numpy()
    xp = np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))))
    ptr, taps, val = layouts.conv_nonzero_taps(wt)
    off = conv_rows.tap_offsets(ptr, taps, xp.shape[2:], (dil, dil))
    out = np.empty(ref.shape, np.float32)
    xf = xp.reshape(b, -1)
    conv_rows.check_conv_rows(xf, xp.shape[3], ptr, off, val, bias, out)
    conv_rows.conv_rows_sparse_w.pick(parallel)(xf, xp.shape[3], ptr, off, val, bias, out)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_check_conv_rows_refuses_reads_outside_the_input():
    wt = np.zeros((2, 1, 3, 3), np.float32)
    wt[1, 0, 2, 2] = 1.0
    ptr, taps, val = layouts.conv_nonzero_taps(wt)
    out = np.empty((1, 2, 4, 4), np.float32)
    xf = np.zeros((1, 36), np.float32)                        # a 6 x 6 padded sample
    off = conv_rows.tap_offsets(ptr, taps, (6, 6), (1, 1))
    conv_rows.check_conv_rows(xf, 6, ptr, off, val, np.zeros(2, np.float32), out)
    with pytest.raises(ValueError, match="outside"):
        conv_rows.check_conv_rows(xf[:, :30], 6, ptr, off, val, np.zeros(2, np.float32), out)
    with pytest.raises(ValueError, match="outside"):
        conv_rows.check_conv_rows(xf, 6, ptr, off + 40, val, np.zeros(2, np.float32), out)
    with pytest.raises(ValueError, match="tap lists"):
        conv_rows.check_conv_rows(xf, 6, ptr[:-1], off, val, np.zeros(2, np.float32), out)
