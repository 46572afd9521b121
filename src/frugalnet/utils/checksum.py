"""Checksums of what frugalnet writes, so that a corrupted or edited file is refused on load instead of giving other
numbers silently.

Two digests, both SHA-256:
- `json_digest(obj)`: of a JSON value in canonical form (sorted keys, no spaces), so key order and indentation
  do not matter but every value does.
- `content_digest(obj)`: of a checkpoint's content (nested dicts/lists/tuples of tensors, numpy arrays and plain
  scalars): each tensor's dtype, shape and bytes, each scalar's type and value, each container's keys in order.
  It is computed on what `torch.load` returns, so it checks the numbers themselves, not the zip container.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

CHECKSUM_KEY = "_sha256"


class FileCheckError(ValueError):
    """A file frugalnet wrote is corrupted, truncated, edited, or not what it should be. The message names the
    file and what to do."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def json_digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def arrays_digest(arrays) -> str:
    """SHA-256 of named arrays (a dict or an open .npz), each with its name, dtype and shape, in name order: the
    checksum of engine files and sparse checkpoints."""
    import numpy as np

    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(k.encode() + b"\0" + str(a.dtype).encode() + b"\0" + str(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def content_digest(obj: Any) -> str:
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    import numpy as np
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(f"A{a.dtype.str}{a.shape}|".encode())
        h.update(a.tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}|".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):   # torch.Size is a tuple
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}|".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, str, bytes, torch.dtype, torch.device, np.generic)):
        h.update(f"S{type(obj).__name__}:{obj!r}|".encode())
    elif isinstance(obj, float):
        h.update(f"F{obj.hex() if math.isfinite(obj) else repr(obj)}|".encode())
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__} in a checkpoint: store tensors, numpy arrays, "
                        "plain scalars and dicts/lists/tuples of them")
