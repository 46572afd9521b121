"""Atomic writes with checksums, and loads that verify them.

A reader never sees a half-written file (write to a temporary file, then rename), and every file written here
carries a SHA-256 checksum that the matching reader verifies: JSON files hold it under the key "_sha256",
checkpoints wrap their content with a digest of it. A file that fails to parse or to verify raises
`FileCheckError` (a ValueError) naming the file and what to do. Checkpoints load with `weights_only=True` only.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

from frugalnet.utils.checksum import CHECKSUM_KEY, FileCheckError, content_digest, json_digest

_WRAPPED = "_value"          # a non-dict JSON value is stored as {"_value": v, "_sha256": ...}
_CKPT_FORMAT = "frugalnet-checkpoint-v1"


def atomic_replace(path: str | Path, write) -> None:
    """Call write(handle) on a temporary file beside `path`, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    """Make numpy/torch scalars and arrays JSON-serialisable."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_replace(Path(path), lambda h: h.write(text.encode("utf-8")))


def with_checksum(obj: Any) -> dict:
    """`obj` as plain JSON with its checksum added (non-dicts are wrapped as {"_value": obj})."""
    plain = json.loads(json.dumps(obj, default=_json_default))
    if not isinstance(plain, dict) or CHECKSUM_KEY in plain or _WRAPPED in plain:
        plain = {_WRAPPED: plain}
    return {**plain, CHECKSUM_KEY: json_digest(plain)}


def atomic_write_json(path: str | Path, obj: Any, *, checksum: bool = True) -> None:
    """Write `obj` as indented JSON, atomically, with a "_sha256" checksum that `read_json` verifies."""
    data = with_checksum(obj) if checksum else obj
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path, *, checksum: str = "required", fix: str = "") -> Any:
    """Read a JSON file; verify its checksum (`checksum`: "required", "optional" or "ignore").

    Raises FileCheckError naming the file for a missing, unreadable, malformed or changed file; `fix` is appended
    to the message (what the user should do).
    """
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found{hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileCheckError(f"{path} cannot be read ({type(exc).__name__}: {exc}){hint}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileCheckError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); it "
                             f"is truncated or was edited{hint}") from None
    except RecursionError:
        raise FileCheckError(f"{path} is nested too deeply to be a frugalnet file{hint}") from None
    if checksum == "ignore" or not isinstance(data, dict):
        if checksum == "required":
            raise FileCheckError(f"{path} holds a {type(data).__name__}, not a checksummed frugalnet record{hint}")
        return data
    stored = data.pop(CHECKSUM_KEY, None)
    if stored is None:
        if checksum == "required":
            raise FileCheckError(f"{path} has no checksum ({CHECKSUM_KEY!r}): it was not written by this frugalnet "
                                 f"or was edited{hint}")
    elif stored != json_digest(data):
        raise FileCheckError(f"{path} fails its checksum: it was edited or corrupted after it was written{hint}")
    if set(data) == {_WRAPPED}:
        return data[_WRAPPED]
    return data


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save `obj` (tensors, numpy arrays, plain scalars and containers of them) atomically, with a digest of
    its content that `load_checkpoint` verifies; loadable with `weights_only=True`."""
    import torch

    wrapped = {"format": _CKPT_FORMAT, CHECKSUM_KEY: content_digest(obj), "content": obj}
    atomic_replace(Path(path), lambda h: torch.save(wrapped, h))


def load_checkpoint(path: str | Path, map_location: Any = "cpu", *, fix: str = "") -> Any:
    """Load a file written by `atomic_torch_save`: `weights_only=True` (no code from the file runs), checksum
    verified. Raises FileCheckError naming the file when it is truncated, corrupted, edited or foreign."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    hint = f"; {fix}" if fix else "; delete it to recompute it"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found{hint}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileCheckError(f"checkpoint {path} was refused: it is corrupted or holds objects other than tensors "
                             f"and plain containers, which could run code ({first[:200]}){hint}") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            zipfile.BadZipFile, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise FileCheckError(f"checkpoint {path} cannot be read: it is truncated or corrupted "
                             f"({type(exc).__name__}: {first[:200]}){hint}") from None
    if not (isinstance(obj, dict) and obj.get("format") == _CKPT_FORMAT and CHECKSUM_KEY in obj
            and "content" in obj):
        raise FileCheckError(f"checkpoint {path} has no frugalnet checksum: it was not written by this frugalnet "
                             f"(atomic_torch_save) or was altered{hint}")
    try:
        ok = content_digest(obj["content"]) == obj[CHECKSUM_KEY]
    except TypeError:
        ok = False
    if not ok:
        raise FileCheckError(f"checkpoint {path} fails its checksum: its numbers differ from those written{hint}")
    return obj["content"]


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line; a killed run loses at most the line being written. A torn last line left by a killed
    run is ended first, so the new record starts on a line of its own."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write((json.dumps(record, default=_json_default) + "\n").encode("utf-8"))
        handle.flush()


def read_jsonl(path: str | Path, *, strict: bool = False) -> Iterator[dict]:
    """Read records. A torn line (a run killed mid-write) is skipped with a warning naming the file and line;
    `strict=True` raises FileCheckError for it instead."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                record = None
            if not isinstance(record, dict):
                msg = f"{path}, line {number}: not a JSON record (torn by an interrupted run, or edited)"
                if strict:
                    raise FileCheckError(msg)
                warnings.warn(msg + "; skipped", stacklevel=2)
                continue
            yield record
