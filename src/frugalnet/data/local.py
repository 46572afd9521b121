"""Loaders for local copies of the standard data sets (nothing is downloaded at run time).

Each names the file it could not find and where to get it.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from frugalnet.data.core import DataBundle, Split, register_dataset

_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
_WHERE = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or any mirror of the four IDX files)",
    "fashion-mnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpack it)",
    "speech-commands": "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz (unpack it)",
}


def _missing(dataset: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{dataset}: {path} not found. Put a local copy there; get it from {_WHERE[dataset]}")


def _find(root: Path, stem: str, dataset: str) -> Path:
    for candidate in (root / stem, root / (stem + ".gz"), root / stem.replace("-idx", ".idx"),
                      root / (stem.replace("-idx", ".idx") + ".gz")):
        if candidate.is_file():
            return candidate
    raise _missing(dataset, root / (stem + "[.gz]"))


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[raw[2]]
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def _idx_bundle(name: str, data_dir: str | Path) -> DataBundle:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise _missing(name, root)
    arrays = {k: read_idx(_find(root, stem, name)) for k, stem in _MNIST_FILES.items()}
    xtr = torch.from_numpy(arrays["train_x"].astype(np.float32) / 255.0).unsqueeze(1)
    xte = torch.from_numpy(arrays["test_x"].astype(np.float32) / 255.0).unsqueeze(1)
    train = Split(xtr, torch.from_numpy(arrays["train_y"].astype(np.int64)))
    test = Split(xte, torch.from_numpy(arrays["test_y"].astype(np.int64)))
    return DataBundle(name, train, test, 10, tuple(xtr.shape[1:]), float(xtr.mean()), float(xtr.std()),
                      source=str(root))


@register_dataset("mnist", needs_data_dir=True, description="full MNIST, 60,000 / 10,000 (IDX files)")
def load_mnist(data_dir: str | Path) -> DataBundle:
    return _idx_bundle("mnist", data_dir)


@register_dataset("fashion-mnist", needs_data_dir=True, description="Fashion-MNIST, 60,000 / 10,000 (IDX files)")
def load_fashion_mnist(data_dir: str | Path) -> DataBundle:
    return _idx_bundle("fashion-mnist", data_dir)


@register_dataset("cifar10", needs_data_dir=True, description="CIFAR-10 python pickles (cifar-10-batches-py)")
def load_cifar10(data_dir: str | Path) -> DataBundle:
    root = Path(data_dir).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    for f in files:
        if not f.is_file():
            raise _missing("cifar10", f)

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        return np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)

    parts = [read(f) for f in files[:5]]
    xtr = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read(files[5])
    xtr_t = torch.from_numpy(xtr.astype(np.float32) / 255.0)
    xte_t = torch.from_numpy(xte.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    return DataBundle("cifar10", Split(xtr_t, torch.from_numpy(ytr)), Split(xte_t, torch.from_numpy(yte)), 10,
                      (3, 32, 32), float(xtr_t.mean()), float(xtr_t.std()), source=str(root))


SPEECH_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def log_mel_32x32(wave: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """A 32 (mel bands) x 32 (frames) log-mel spectrogram of one second of audio, as in Numenta's GSC setup."""
    wave = np.asarray(wave, dtype=np.float32)
    wave = np.pad(wave[:sample_rate], (0, max(0, sample_rate - len(wave))))
    n_fft, hop = 1024, sample_rate // 32
    padded = np.pad(wave, (n_fft // 2, n_fft // 2), mode="reflect")
    frames = np.stack([padded[i * hop:i * hop + n_fft] for i in range(32)]) * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = _mel_filterbank(32, n_fft, sample_rate) @ power.T
    return np.log(mel + 1e-6).astype(np.float32)


def _mel_filterbank(n_mels: int, n_fft: int, sr: int) -> np.ndarray:
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    mel_pts = np.linspace(hz_to_mel(20.0), hz_to_mel(sr / 2), n_mels + 2)
    hz_pts = 700.0 * (10 ** (mel_pts / 2595.0) - 1.0)
    bins = np.floor((n_fft + 1) * hz_pts / sr).astype(int)
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(1, n_mels + 1):
        lo, mid, hi = bins[m - 1], bins[m], bins[m + 1]
        for k in range(lo, mid):
            bank[m - 1, k] = (k - lo) / max(1, mid - lo)
        for k in range(mid, hi):
            bank[m - 1, k] = (hi - k) / max(1, hi - mid)
    return bank


@register_dataset("speech-commands", needs_data_dir=True,
                  description="Google Speech Commands, 10 words, 1x32x32 log-mel features")
def load_speech_commands(data_dir: str | Path) -> DataBundle:
    from scipy.io import wavfile

    root = Path(data_dir).expanduser()
    test_list = root / "testing_list.txt"
    if not test_list.is_file():
        raise _missing("speech-commands", test_list)
    cache = root / ".frugalnet_gsc_32x32.npz"
    if cache.is_file():
        saved = np.load(cache)
        xtr, ytr, xte, yte = (saved[k] for k in ("xtr", "ytr", "xte", "yte"))
    else:
        testing = set(test_list.read_text().split())
        feats = {True: ([], []), False: ([], [])}
        for label, word in enumerate(SPEECH_WORDS):
            folder = root / word
            if not folder.is_dir():
                raise _missing("speech-commands", folder)
            for wav in sorted(folder.glob("*.wav")):
                rate, wave = wavfile.read(wav)
                wave = wave.astype(np.float32) / (32768.0 if wave.dtype == np.int16 else 1.0)
                bucket = feats[f"{word}/{wav.name}" in testing]
                bucket[0].append(log_mel_32x32(wave, rate))
                bucket[1].append(label)
        xtr, ytr = np.stack(feats[False][0]), np.array(feats[False][1])
        xte, yte = np.stack(feats[True][0]), np.array(feats[True][1])
        try:
            np.savez(cache, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
        except OSError:
            pass  # read-only copy: recompute next time
    xtr_t = torch.from_numpy(xtr).float().unsqueeze(1)
    xte_t = torch.from_numpy(xte).float().unsqueeze(1)
    return DataBundle("speech-commands", Split(xtr_t, torch.from_numpy(ytr).long()),
                      Split(xte_t, torch.from_numpy(yte).long()), len(SPEECH_WORDS), (1, 32, 32),
                      float(xtr_t.mean()), float(xtr_t.std()), source=str(root))
