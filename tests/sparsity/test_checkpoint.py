import os

import numpy as np
import pytest
import torch
from torch import nn

from frugalnet.models import dense_cnn2
from frugalnet.sparsity import KWinnersConfig, MagnitudeConfig, sparsify_
from frugalnet.sparsity.checkpoint import load_sparse, save_sparse


def sparse_cnn():
    torch.manual_seed(0)
    model = dense_cnn2(hidden=64)
    sparsify_(model, [MagnitudeConfig(sparsity=0.9), KWinnersConfig(percent_on=0.2)],
              example_input=torch.randn(2, 1, 28, 28))
    model(torch.randn(4, 1, 28, 28))      # duty cycles move
    return model.eval()


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip_into_a_fresh_dense_model_is_bit_exact(tmp_path, suffix):
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    model = sparse_cnn()
    path = save_sparse(model, tmp_path / f"m{suffix}")
    fresh = dense_cnn2(hidden=64)
    load_sparse(path, fresh)
    fresh.eval()
    a, b = model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), fresh(x))
    dense_bytes = sum(v.numel() * v.element_size() for v in dense_cnn2(hidden=64).state_dict().values())
    assert os.path.getsize(path) < 0.3 * dense_bytes


def test_corrupted_or_foreign_files_are_refused(tmp_path):
    model = sparse_cnn()
    path = save_sparse(model, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["fc1.weight.values"] = arrays["fc1.weight.values"] + 1
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="checksum"):
        load_sparse(tmp_path / "bad.npz", dense_cnn2(hidden=64))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_sparse(tmp_path / "junk.npz", dense_cnn2(hidden=64))
    with pytest.raises(ValueError, match="shape|architecture"):
        load_sparse(path, dense_cnn2(hidden=32))
