"""k-WTA on the numba selection kernel (kernels.kwta) for KWinners / KWinners2d: forward, backward and the
duty-cycle win counts, each one pass over the rows, instead of torch.topk + comparisons + where + sums.

The kernel picks exactly topk_mask's winners (torch.topk's order, +Inf and NaN as it ranks them, ties to the lower
index; tested), so both paths give the same output, gradient and duty cycles. Measured in one interleaved run
(benchmarks/kwinners_speed.py --train --n 2048 --percent-on 0.05 --batches 256 --threads 2) on the MLP's
KWinners(2048, 0.05), batch 256, training forward + backward, loaded 2-core machine: 1.89 ms against 8.92 ms for
the PyTorch path and 6.04 ms for a bare torch.topk + scatter. Used for float32 CPU rows of at least
KERNEL_MIN_NUMEL entries outside tracing/export/compile (small inputs keep PyTorch: there the call overhead is the
cost, and tests of toy models never load numba).

Serial or parallel build, for KWinners' 2-D (per-sample) rows: chosen per shape by timing both on the first
call (the lower minimum of three interleaved repeats, as sparse_functional chooses its kernels). On the shared
2-core machine the parallel selection was no faster at best (1.12 ms against 1.08 ms, 256 x 2048, k = 102) and
5x slower at the median whenever the second thread waited on a descheduled core; on the quiet machine (load
0.9) the timing took the parallel selection and the serial gradient. Rows smaller than PARALLEL_MIN_NUMEL
entries in all, and KWinners2d's maps, stay serial. `clear_choices()` forgets the choices (e.g. after changing
the number of threads).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

KERNEL_MIN_NUMEL = 1 << 12
PARALLEL_MIN_NUMEL = 1 << 16
_TUNE_REPEATS = 3
_PARALLEL: dict[tuple, bool] = {}


def clear_choices() -> None:
    _PARALLEL.clear()


def choices() -> dict[tuple, bool]:
    """The serial/parallel choices so far: (kernel, rows, n, k) -> parallel."""
    return dict(_PARALLEL)


def _run_chosen(key: tuple, numel: int, run) -> None:
    """run(parallel) with the build chosen for `key`: timed on the first call when threads > 1 and the work is
    large enough (the last call's results are the outputs)."""
    import time

    import numba

    par = _PARALLEL.get(key)
    if par is None:
        if numel < PARALLEL_MIN_NUMEL or numba.get_num_threads() < 2:
            par = False
        else:
            times = {False: [], True: []}
            for p in (False, True):
                run(p)
            for _ in range(_TUNE_REPEATS):
                for p in (False, True):
                    t0 = time.perf_counter()
                    run(p)
                    times[p].append(time.perf_counter() - t0)
            par = min(times[True]) < min(times[False])
        _PARALLEL[key] = par
    run(par)


def kernel_eligible(x: Tensor) -> bool:
    """float32 on CPU, large enough, and not under compile/export/tracing/autocast."""
    if (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling()):
        return False   # checked first: under tracing numel() is a traced value
    return (x.dtype == torch.float32 and x.device.type == "cpu" and x.numel() >= KERNEL_MIN_NUMEL
            and not torch.is_autocast_enabled("cpu"))


def _select(xn: np.ndarray, boost: np.ndarray, k: int, timed: bool,
            pooled: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dense output (R, n), winners' indices (R, k), their raw values (R, k)) of the rows of xn; `timed`: the
    build (serial or parallel over rows) chosen by timing per shape, else serial. Rows are independent, so both
    builds give the same winners. `pooled`: the output array from utils.buffers' pool (reused once free)."""
    from frugalnet.kernels import kwta as K

    aidx = np.empty((xn.shape[0], k), np.int32)
    aval = np.empty((xn.shape[0], k), np.float32)
    if pooled:
        from frugalnet.utils.buffers import POOL
        out = POOL.empty(xn.shape, np.float32)
    else:
        out = np.empty(xn.shape, np.float32)

    def run(par: bool) -> None:
        K.kwta_rows_train.pick(par)(xn, boost, k, aidx, aval, out, _threads() if par else 1)
    if timed:
        _run_chosen(("select",) + xn.shape + (k,), xn.size, run)
    else:
        run(False)
    return out, aidx, aval


def _is_channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _is_map(shape: tuple, n: int) -> bool:
    """Rows of n entries that are whole (C, H, W) maps of a 4-D tensor (KWinners2d)."""
    return len(shape) == 4 and shape[1] * shape[2] * shape[3] == n


def _rows(x: Tensor, n: int) -> np.ndarray:
    """x's rows of n entries in its logical (NCHW) order as a float32 array; a channels-last map is transposed by
    a numba kernel (kernels.kwta.channels_last_rows) rather than torch's layout copy."""
    if not (_is_channels_last(x) and _is_map(tuple(x.shape), n)):
        return x.detach().contiguous().reshape(-1, n).numpy()
    from frugalnet.kernels import kwta as K

    b, c, h, w = x.shape
    src = x.detach().permute(0, 2, 3, 1).numpy().reshape(b, h * w, c)
    dst = np.empty((b, c, h * w), np.float32)
    _run_chosen(("cl_rows",) + src.shape, src.size, lambda par: K.channels_last_rows.pick(par)(src, dst))
    return dst.reshape(b, n)


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def _output(out: np.ndarray, shape: tuple, aidx: np.ndarray, aval: np.ndarray) -> Tensor:
    """The output tensor; a 2-D one (rows = samples) carries its winners' lists for the next sparse layer."""
    from frugalnet.nn.active_lists import tag

    t = torch.from_numpy(out).view(shape)
    return tag(t, aidx, aval) if len(shape) == 2 else t


class KWTAFunction(torch.autograd.Function):
    """out = x at the k winners of each row of n entries of x (any shape, rows in its logical order) by score
    x * boost (boost (n,) float32 numpy), else 0, shaped and laid out contiguous like x; the winners' (indices,
    values) are appended to `sink` (the duty cycle counts them). For 2-D x the output and the input gradient carry
    their per-sample active lists (nn.active_lists) for the sparse layers around. The input gradient takes x's
    memory format: a channels-last max-pool's backward fed an NCHW gradient took 2.9 ms against 0.6 ms fed a
    channels-last one ((64, 32, 24, 24), CPU time, 2 threads)."""

    @staticmethod
    def forward(ctx, x: Tensor, n: int, boost: np.ndarray, k: int, sink: list):
        out, aidx, aval = _select(_rows(x, n), boost, k, True)
        ctx.aidx, ctx.n, ctx.shape = aidx, n, tuple(x.shape)
        ctx.channels_last = _is_channels_last(x)
        sink.append((aidx, aval))
        return _output(out, tuple(x.shape), aidx, aval)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor):
        from frugalnet.kernels import kwta as K

        if _is_map(ctx.shape, ctx.n):   # KWinners2d: either layout in and out, no layout copies
            b, c, h, w = ctx.shape
            gy_cl = _is_channels_last(gy)
            gn = (gy.permute(0, 2, 3, 1) if gy_cl else gy.contiguous()).numpy().reshape(b, ctx.n)
            gx = np.empty((b, ctx.n), np.float32)
            _run_chosen(("grad_maps",) + gn.shape + (ctx.aidx.shape[1], gy_cl, ctx.channels_last), gn.size,
                        lambda par: K.winners_grad_maps.pick(par)(gn, gy_cl, ctx.aidx, gx, ctx.channels_last, c))
            out = torch.from_numpy(gx)
            out = out.view(b, h, w, c).permute(0, 3, 1, 2) if ctx.channels_last else out.view(ctx.shape)
            return out, None, None, None, None
        gn = gy.contiguous().reshape(-1, ctx.n).numpy()
        gx = np.empty(gn.shape, np.float32)
        gval = np.empty(ctx.aidx.shape, np.float32)
        _run_chosen(("grad",) + gn.shape + (ctx.aidx.shape[1],), gn.size,
                    lambda par: K.winners_grad_lists.pick(par)(gn, ctx.aidx, gx, gval))
        out = _output(gx, ctx.shape, ctx.aidx, gval)   # rows of a 2-D x carry their lists
        if ctx.channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out, None, None, None, None


def kwta_train(x: Tensor, n: int, boost: np.ndarray, k: int, wins: np.ndarray | None, group: int) -> Tensor:
    """k-WTA of the rows of n entries of x (float32, any shape and layout); when `wins` is given, adds to
    wins[u // group] the rows in which unit u won with an output > 0 (the duty cycle's count)."""
    if torch.is_grad_enabled() and x.requires_grad:
        sink: list = []
        out = KWTAFunction.apply(x, n, boost, k, sink)
        aidx, aval = sink[0]
    else:
        o, aidx, aval = _select(_rows(x, n), boost, k, True)
        out = _output(o, tuple(x.shape), aidx, aval)
    if wins is not None:
        from frugalnet.kernels.kwta import count_positive_values

        count_positive_values(aidx, aval, group, wins)
    return out
