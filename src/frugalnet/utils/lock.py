"""A lock file that keeps two processes out of one run folder (two `frugalnet resume` of the same run would run all
remaining work twice and interleave their metrics)."""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path


class LockedError(ValueError):
    """The folder is in use by another live process. The message names it and the lock file."""


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by another user
        return True
    return True


class FileLock:
    """`with FileLock(folder / "run.lock"):` holds the lock while the block runs.

    The file is created exclusively and holds this process's pid and host. A lock whose process is gone (same host,
    pid not running) is stale: it is taken over with a warning. A lock held by a live process raises LockedError.
    """

    def __init__(self, path: str | Path, what: str = "run folder") -> None:
        self.path = Path(path)
        self.what = what
        self._held = False

    def acquire(self) -> None:
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_holder()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self._held = True
            return
        raise LockedError(f"could not take the lock {self.path}; if no frugalnet process uses "
                          f"{self.path.parent}, delete {self.path}")

    def _check_holder(self) -> None:
        """Raise if a live process holds the lock; remove a stale one."""
        try:
            info = json.loads(self.path.read_text())
            pid, host = int(info["pid"]), str(info["host"])
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, OSError):   # unreadable lock (torn, edited): treat as stale
            pid, host = -1, socket.gethostname()
        if host != socket.gethostname():
            raise LockedError(f"{self.what} {self.path.parent} is locked by process {pid} on host {host} "
                              f"({self.path}); wait for it to finish, or delete {self.path} if that run is gone")
        if _alive(pid) and pid != os.getpid():
            raise LockedError(f"{self.what} {self.path.parent} is in use by process {pid} ({self.path}); wait for "
                              f"it to finish (two runs in one folder would do the work twice), or stop it first")
        warnings.warn(f"taking over the stale lock {self.path} (process {pid} is gone)", stacklevel=3)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self._held:
            self._held = False
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
