"""Progress bars (tqdm) with one global switch for --quiet."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False, **kwargs) -> Iterable[T]:
    """Wrap an iterable in a progress bar unless quiet mode is on (or stderr is not a terminal and CI is set)."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=_QUIET, file=sys.stderr,
                dynamic_ncols=True, **kwargs)


def progress_bar(total: int, desc: str = "", quiet: bool = False, leave: bool = False) -> tqdm:
    """A progress bar to update by hand (`bar.update(n)`, `bar.close()`), off in quiet mode or when `quiet`."""
    return tqdm(total=total, desc=desc, leave=leave, disable=_QUIET or quiet, file=sys.stderr, dynamic_ncols=True)
