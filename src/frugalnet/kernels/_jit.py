"""Shared numba settings and the serial/parallel kernel pairs.

Every kernel is compiled twice from one source: a serial build (prange runs as range; no thread wake-up, best for
small work and on loaded machines) and a parallel build (work split across cores). Both are cached on disk, with
strict IEEE float semantics (no fastmath), so JIT cost is paid once per machine.
"""
from __future__ import annotations

import types

import numba
from numba import njit

JIT = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")
# Only prange loops (and their reductions) are parallelised: the kernels are explicit loops, so numba's array-
# expression passes (fusion, numpy calls, setitem, ...) find nothing and only add compile time.
PARALLEL_PASSES = dict(prange=True, reduction=True, comprehension=False, inplace_binop=False, setitem=False,
                       numpy=False, stencil=False, fusion=False)
PJIT = dict(JIT, parallel=PARALLEL_PASSES)   # numba consumes the `parallel` dict: pass parallel_jit() to njit


def parallel_jit() -> dict:
    """njit options of a parallel build (a fresh copy: numba pops the keys of the `parallel` dict it is given)."""
    return dict(JIT, parallel=dict(PARALLEL_PASSES))


class KernelPair:
    """`pair(parallel)` gives the parallel or serial build of one kernel; calling the pair runs the parallel one."""

    def __init__(self, fn) -> None:
        serial_fn = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                       fn.__closure__)
        serial_fn.__qualname__ = fn.__qualname__ + "_serial"
        serial_fn.__doc__ = fn.__doc__
        self.serial = njit(**JIT)(serial_fn)
        self.parallel = njit(**parallel_jit())(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__

    def __call__(self, *args):
        return self.parallel(*args)

    def pick(self, parallel: bool):
        return self.parallel if parallel else self.serial


def kernel(fn) -> KernelPair:
    return KernelPair(fn)


def set_threads(n: int | None) -> int:
    """Use `n` numba threads (None: all configured); returns the number in use."""
    limit = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(limit if n is None else max(1, min(int(n), limit)))
    return numba.get_num_threads()


def threads() -> int:
    return numba.get_num_threads()
