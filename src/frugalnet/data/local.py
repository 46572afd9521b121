"""Loaders for local copies of the standard data sets (nothing is downloaded at run time).

Each names the file it could not find and where to get it.
"""
from __future__ import annotations

import gzip
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from frugalnet.data.core import DataBundle, Split, register_dataset
from frugalnet.data.safe_pickle import read_cifar_batch
from frugalnet.utils.checksum import content_digest

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


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array; ValueError naming the file if it is not one."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc}); replace it with a good copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number); replace it with a good copy")
    if raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not a valid IDX file: unknown data type byte 0x{raw[2]:02X} (known: "
                         f"{', '.join(f'0x{k:02X}' for k in _IDX_DTYPES)}); replace it with a good copy")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path} is not a valid IDX file: its header (ndim={ndim}) is truncated or wrong")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=object))
    if (len(raw) - 4 - 4 * ndim) != expected * dtype.itemsize:
        raise ValueError(f"{path} is truncated or padded: its header says {'x'.join(map(str, dims))} values "
                         f"({expected * dtype.itemsize} bytes), the file holds {len(raw) - 4 - 4 * ndim} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


def _labels(y: np.ndarray, path: Path, n: int, num_classes: int) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{path}: expected {n} labels in one dimension (one per image), got shape {y.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise ValueError(f"{path}: label {bad} is outside 0..{num_classes - 1}; the file is corrupted or not a "
                         f"label file: replace it with a good copy")
    return torch.from_numpy(y)


def _idx_bundle(name: str, data_dir: str | Path) -> DataBundle:
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise _missing(name, root)
    paths = {k: _find(root, stem, name) for k, stem in _MNIST_FILES.items()}
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for k in ("train_x", "test_x"):
        if arrays[k].ndim != 3 or arrays[k].dtype != np.uint8:
            raise ValueError(f"{paths[k]}: expected uint8 images N x H x W, got {arrays[k].dtype} with shape "
                             f"{arrays[k].shape}")
    xtr = torch.from_numpy(arrays["train_x"].astype(np.float32) / 255.0).unsqueeze(1)
    xte = torch.from_numpy(arrays["test_x"].astype(np.float32) / 255.0).unsqueeze(1)
    train = Split(xtr, _labels(arrays["train_y"], paths["train_y"], len(xtr), 10))
    test = Split(xte, _labels(arrays["test_y"], paths["test_y"], len(xte), 10))
    return DataBundle(name, train, test, 10, tuple(xtr.shape[1:]), float(xtr.mean()), float(xtr.std()),
                      source=str(root))


@register_dataset("mnist", needs_data_dir=True, description="full MNIST, 60,000 / 10,000 (IDX files)")
def load_mnist(data_dir: str | Path) -> DataBundle:
    return _idx_bundle("mnist", data_dir)


@register_dataset("fashion-mnist", needs_data_dir=True, description="Fashion-MNIST, 60,000 / 10,000 (IDX files)")
def load_fashion_mnist(data_dir: str | Path) -> DataBundle:
    return _idx_bundle("fashion-mnist", data_dir)


@register_dataset("cifar10", needs_data_dir=True, description="CIFAR-10 python version (cifar-10-batches-py), read "
                  "without running pickle code")
def load_cifar10(data_dir: str | Path) -> DataBundle:
    """CIFAR-10 from the python version's batch files. They are pickles, but read with `read_cifar_batch`'s
    restricted unpickler, which builds only the dicts, lists, bytes and uint8 arrays the format holds: a file that
    asks for anything else is refused before any of its code could run, so no opt-in is needed."""
    root = Path(data_dir).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    for f in files:
        if not f.is_file():
            raise _missing("cifar10", f)
    parts = [read_cifar_batch(f) for f in files[:5]]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = read_cifar_batch(files[5])
    xtr_t = torch.from_numpy(xtr.astype(np.float32) / 255.0)
    xte_t = torch.from_numpy(xte.astype(np.float32) / 255.0)
    return DataBundle("cifar10", Split(xtr_t, torch.from_numpy(ytr)), Split(xte_t, torch.from_numpy(yte)), 10,
                      (3, 32, 32), float(xtr_t.mean()), float(xtr_t.std()), source=str(root))


def _read_feature_cache(path: Path) -> tuple[np.ndarray, ...] | None:
    """The cached features if the file is whole and its checksum holds; else None (they are recomputed)."""
    keys = ("xtr", "ytr", "xte", "yte")
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {k: saved[k] for k in keys}
            ok = str(saved["sha256"]) == content_digest(arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"{path} is unreadable ({type(exc).__name__}); recomputing the features", stacklevel=3)
        return None
    if not ok or len(arrays["xtr"]) != len(arrays["ytr"]) or len(arrays["xte"]) != len(arrays["yte"]):
        warnings.warn(f"{path} fails its checksum; recomputing the features", stacklevel=3)
        return None
    return tuple(arrays[k] for k in keys)


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
    cached = _read_feature_cache(cache) if cache.is_file() else None
    if cached is not None:
        xtr, ytr, xte, yte = cached
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
            arrays = {"xtr": xtr, "ytr": ytr, "xte": xte, "yte": yte}
            np.savez(cache, **arrays, sha256=np.array(content_digest(arrays)))
        except OSError:
            pass  # read-only copy: recompute next time
    xtr_t = torch.from_numpy(xtr).float().unsqueeze(1)
    xte_t = torch.from_numpy(xte).float().unsqueeze(1)
    return DataBundle("speech-commands", Split(xtr_t, torch.from_numpy(ytr).long()),
                      Split(xte_t, torch.from_numpy(yte).long()), len(SPEECH_WORDS), (1, 32, 32),
                      float(xtr_t.mean()), float(xtr_t.std()), source=str(root))
