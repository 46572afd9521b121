import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from frugalnet import data


def test_embedded_mnist_split_is_fixed_and_balanced():
    a, b = data.load("mnist-5k"), data.load("mnist-5k")
    assert a.train.x.shape == (4000, 1, 28, 28) and a.test.x.shape == (1000, 1, 28, 28)
    assert torch.equal(a.test.y, b.test.y) and torch.equal(a.train.x[:5], b.train.x[:5])
    assert (torch.bincount(a.test.y) == 100).all()
    assert 0.0 <= float(a.train.x.min()) and float(a.train.x.max()) <= 1.0
    assert abs(a.mean - 0.13) < 0.02 and abs(a.std - 0.31) < 0.02


def test_digits():
    d = data.load("digits")
    assert d.input_shape == (1, 8, 8) and len(d.train) + len(d.test) == 1797 and len(d.test) == 360


def test_noise_sets_exact_fraction_of_pixels_to_value():
    x = torch.zeros(4, 1, 10, 10)
    noisy = data.add_pixel_noise(x, 0.25, 0.75, torch.Generator().manual_seed(0))
    assert ((noisy == 0.75).flatten(1).sum(1) == 25).all()
    assert (x == 0).all()                                   # input untouched
    assert torch.equal(data.add_pixel_noise(x, 0.0, 0.75), x)
    with pytest.raises(ValueError, match="noise fraction"):
        data.add_pixel_noise(x, 1.5, 0.75)


def _write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())


def test_local_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 20))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 5))
    d = data.load("mnist", tmp_path)
    assert d.train.x.shape == (20, 1, 28, 28) and d.test.y.shape == (5,)


def test_missing_local_data_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load("fashion-mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        data.load("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        data.load("speech-commands", tmp_path)
    with pytest.raises(FileNotFoundError, match="data_dir"):
        data.load("mnist")
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load("mnist", tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("imagenet")


def test_cifar10_reads_pickles(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as handle:
            pickle.dump({b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [1, 2, 3, 4]}, handle)
    d = data.load("cifar10", tmp_path)
    assert d.train.x.shape == (20, 3, 32, 32) and d.test.x.shape == (4, 3, 32, 32)


def test_speech_commands_reads_wavs(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    for word in data.local.SPEECH_WORDS:
        (tmp_path / word).mkdir()
        for i in range(2):
            wavfile.write(tmp_path / word / f"s{i}.wav", 16000, (rng.standard_normal(16000) * 1000).astype(np.int16))
    (tmp_path / "testing_list.txt").write_text("yes/s1.wav\nno/s1.wav\n")
    d = data.load("speech-commands", tmp_path)
    assert d.input_shape == (1, 32, 32) and len(d.test) == 2 and len(d.train) == 18
    assert torch.isfinite(d.train.x).all()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_speech_feature_cache_is_checksummed(tmp_path, damage):
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    for word in data.local.SPEECH_WORDS:
        (tmp_path / word).mkdir()
        wavfile.write(tmp_path / word / "s0.wav", 16000, (rng.standard_normal(16000) * 1000).astype(np.int16))
    (tmp_path / "testing_list.txt").write_text("yes/s0.wav\n")
    first = data.load("speech-commands", tmp_path)
    cache = tmp_path / ".frugalnet_gsc_32x32.npz"
    again = data.load("speech-commands", tmp_path)                  # read back from the cache
    assert torch.equal(first.train.x, again.train.x)
    raw = bytearray(cache.read_bytes())
    if damage == "flip":                                              # one feature value changed
        import zipfile

        with zipfile.ZipFile(cache) as z:
            info = z.getinfo("xtr.npy")
        raw[info.header_offset + 30 + len("xtr.npy") + 200] ^= 0x40
    else:
        raw = raw[:len(raw) // 2]
    cache.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="recomputing"):
        fixed = data.load("speech-commands", tmp_path)
    assert torch.equal(first.train.x, fixed.train.x)
