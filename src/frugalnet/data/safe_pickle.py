"""Reading the CIFAR python batch files without running code from them.

The files are Python 2 pickles of {b"data": uint8 array (N, 3072), b"labels": [int], b"batch_label": bytes,
b"filenames": [bytes]}. `pickle.load` would call any importable function a file names; `SafeUnpickler` resolves only
the numpy array constructors that this format needs (wrapped so they build plain numeric arrays of bounded size) and
refuses every other global, so a crafted file raises ValueError before any of its code runs.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

MAX_ELEMENTS = 1 << 28     # 256M elements: far above a CIFAR batch (30.7M bytes), below an allocation bomb


class Refused(pickle.UnpicklingError):
    """The file asked for something the CIFAR format never needs."""


def _dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise Refused(f"dtype {dt} is not a plain numeric type")
    return dt


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise Refused(f"array subclass {cls!r} is not allowed")
    if int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
        raise Refused(f"array shape {shape} is too large")
    return np.ndarray.__new__(np.ndarray, shape, _dtype(dtype))


def _frombuffer(buf, dtype, shape, order):
    dt = _dtype(dtype)
    if int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
        raise Refused(f"array shape {shape} is too large")
    return np.frombuffer(buf, dt).reshape(shape, order=order)


def _encode(text, encoding="utf-8"):
    """Python 3 pickles (protocol < 3) store bytes as `_codecs.encode(str, "latin1")`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("only latin1 text-to-bytes encoding is allowed")
    return text.encode("latin1")


def _scalar(dtype, data=b""):
    dt = _dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise Refused("a numpy scalar needs exactly itemsize bytes")
    return np.frombuffer(data, dt)[0]


_ALLOWED = {
    ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
    ("_codecs", "encode"): _encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
}


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the numpy array constructors in `_ALLOWED`."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"refused global {module}.{name}: the file asks to run code that the "
                                         "CIFAR format never needs") from None


def safe_loads(data: bytes):
    return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one CIFAR-10 python batch file, validated."""
    path = Path(path)
    try:
        batch = safe_loads(path.read_bytes())
    except Refused as exc:
        raise ValueError(f"{path} was refused: {exc}; replace it with a good copy of cifar-10-batches-py") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is not a CIFAR-10 batch file (truncated or corrupted: {type(exc).__name__}: "
                         f"{str(exc)[:200]}); replace it with a good copy") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR-10 batch file: it holds a {type(batch).__name__}, not a dict")
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be a uint8 array N x 3072, got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{path}: 'labels' must be a list of integers") from None
    if y.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: labels must be in 0..9, found {int(y.min())}..{int(y.max())}; the file is "
                         "corrupted: replace it with a good copy")
    return data.reshape(-1, 3, 32, 32), y
