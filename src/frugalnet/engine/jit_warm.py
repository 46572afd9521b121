"""JIT-compile an engine's candidate kernels on several cores at once, before the compiler times them.

numba compiles one function at a time, under a lock, on one core: a cold compile of every kernel the engine tries
took about 30 s on this project's 2-core machine. Compiled kernels are cached on disk (`cache=True`), so a helper
process can compile some candidates while this process compiles the others; this process then loads the helper's
from the cache.

Helpers start at the first real compile (a numba "numba:compile" event): with a warm cache nothing compiles and no
helper starts. They are plain `python -m frugalnet.engine.jit_warm` subprocesses fed pickled steps over a pipe (not
multiprocessing, which would re-import a user's script). Anything a helper does not finish is compiled in this
process later, as before, so helpers can only save time.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frugalnet.engine.act import Act
from frugalnet.utils.progress import progress_bar

READY, DONE = b"frugalnet-jit-warm: ready", b"frugalnet-jit-warm: done"
HELPER_TASK_TIMEOUT_S = 600.0   # a helper still busy this long after this process ran out of tasks is killed


@dataclass
class WarmTask:
    """Run one variant of one engine step on an input (dense, as the PyTorch reference chain gives it)."""
    step: object          # an engine Step
    variant: str
    x: np.ndarray         # the step's input, (batch, *per-sample shape)


def run_task(step, variant: str, x: np.ndarray) -> None:
    """Run `variant` on x given dense and given as active indices, the two forms a step's input arrives in (after a
    dense step or after a k-WTA step), so every kernel and conversion it may call gets compiled."""
    act = Act(x.shape, dense=x)
    step.run(act, variant)
    step.run(Act(x.shape, sparse=act.active()), variant)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def default_workers(n_tasks: int) -> int:
    """Helper processes worth starting: one per spare core, at most 3 (each imports PyTorch), none without numba
    JIT."""
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return 0
    return max(0, min(n_tasks - 1, usable_cpus() - 1, 3))


class _Pool:
    """The task queue shared by this process and the helpers."""

    def __init__(self, tasks: list[WarmTask], on_done=lambda: None) -> None:
        self.queue = deque(tasks)
        self.lock = threading.Lock()
        self.closing = False
        self.helpers: list[_Helper] = []
        self.done_here = 0
        self.done_by_helpers = 0
        self.on_done = on_done

    def take(self, helper: "_Helper | None" = None) -> WarmTask | None:
        with self.lock:
            if self.closing or not self.queue:
                return None
            if helper is not None:
                helper.busy = True
            return self.queue.popleft()

    def finished(self, helper: "_Helper") -> None:
        with self.lock:
            helper.busy = False
            self.done_by_helpers += 1
        self.on_done()

    def start_helpers(self, n: int) -> None:
        with self.lock:
            if self.helpers or self.closing or len(self.queue) < 1:
                return
            self.helpers = [_Helper(self) for _ in range(n)]
            for h in self.helpers:
                h.start()

    def close(self, wait: bool = True) -> None:
        """Hand out no more tasks; end helpers that hold none (still starting) at once, wait for the others to finish
        theirs (unless `wait` is False)."""
        with self.lock:
            self.closing = True
            helpers = list(self.helpers)
        for h in helpers:
            if not (wait and h.busy):
                h.stop()
        for h in helpers:
            h.join(HELPER_TASK_TIMEOUT_S)
            h.stop()


class _Helper(threading.Thread):
    """Feeds tasks from the pool to one helper process, one at a time, and waits for each to be done."""

    def __init__(self, pool: _Pool) -> None:
        super().__init__(daemon=True)
        self.pool = pool
        self.proc: subprocess.Popen | None = None
        self.busy = False
        self._stopped = threading.Lock()
        self._sent: dict[int, int] = {}   # id(step) -> the step's number in the helper process

    def run(self) -> None:
        try:
            self.proc = _spawn()
            if self.pool.closing or not self._read_until(READY):
                return
            while (task := self.pool.take(self)) is not None:
                self._send(task)
                if not self._read_until(DONE):
                    return
                self.pool.finished(self)
        except Exception:   # noqa: BLE001 - a broken helper only means this process compiles what is left
            pass
        finally:
            self.busy = False
            self.stop()

    def _send(self, task: WarmTask) -> None:
        out = self.proc.stdin
        key = id(task.step)
        if key not in self._sent:
            self._sent[key] = len(self._sent)
            s = task.step
            pickle.dump(("step", self._sent[key], s.kind, s.name, s.params, s.arrays), out, protocol=5)
        pickle.dump(("run", self._sent[key], task.variant, task.x), out, protocol=5)
        out.flush()

    def _read_until(self, marker: bytes) -> bool:
        for line in self.proc.stdout:     # other lines (a library printing) are skipped
            if line.rstrip() == marker:
                return True
        return False                      # the process ended

    def stop(self) -> None:
        """End the helper process. Killing it is safe: numba writes each cache file whole (a temporary file, then a
        rename) before the helper reports its task done."""
        proc = self.proc
        if proc is None:
            return
        with self._stopped:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    stream.close()


def _spawn() -> subprocess.Popen:
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])   # so the helper imports this very frugalnet
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.Popen([sys.executable, "-m", "frugalnet.engine.jit_warm"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)


@contextlib.contextmanager
def _on_first_compile(callback):
    """Call `callback()` when numba starts compiling anything in this process (within the block)."""
    try:
        from numba.core import event
    except ImportError:   # an older/newer numba without the event API: start at once
        callback()
        yield
        return

    class _Listener(event.Listener):
        def on_start(self, ev) -> None:
            callback()

        def on_end(self, ev) -> None:
            pass

    listener = _Listener()
    event.register("numba:compile", listener)
    try:
        yield
    finally:
        event.unregister("numba:compile", listener)


def warm(tasks: list[WarmTask], workers: int | None = None, quiet: bool = True) -> dict[str, int]:
    """Run every task once, here and (once numba starts compiling) in up to `workers` helper processes (default:
    one per spare core). Returns when each task has run here or in a helper, so its kernels are compiled and in the
    cache: {"here": tasks run in this process, "helpers": tasks run by helpers, "started": helpers started}.
    Unless quiet, a progress bar counts the tasks."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"jit_workers must be None (one per spare core) or an integer >= 0, got {workers!r}")
    bar = progress_bar(len(tasks), desc="kernels (JIT on first use, then cached)", quiet=quiet)
    pool = _Pool(_slowest_first(tasks), on_done=lambda: bar.update(1))
    workers = default_workers(len(tasks)) if workers is None else workers
    start = (lambda: pool.start_helpers(workers)) if workers > 0 else (lambda: None)
    try:
        with _on_first_compile(start):
            while (task := pool.take()) is not None:
                run_task(task.step, task.variant, task.x)
                pool.done_here += 1
                bar.update(1)
    except BaseException:
        pool.close(wait=False)
        bar.close()
        raise
    pool.close()
    bar.close()
    return {"here": pool.done_here, "helpers": pool.done_by_helpers, "started": len(pool.helpers)}


def _slowest_first(tasks: list[WarmTask]) -> list[WarmTask]:
    """Parallel builds (the slowest to compile) first, so that the last tasks to finish are short ones."""
    return sorted(tasks, key=lambda t: not t.variant.endswith(":p"))


def _serve() -> None:
    """The helper process: read ("step", ...) and ("run", ...) messages from stdin until it closes."""
    from frugalnet.engine import steps as S

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    steps: dict[int, object] = {}

    def say(marker: bytes) -> None:
        out.write(marker + b"\n")
        out.flush()

    say(READY)
    while True:
        try:
            msg = pickle.load(inp)
        except EOFError:
            return
        if msg[0] == "step":
            _, sid, kind, name, params, arrays = msg
            steps[sid] = S.STEP_TYPES[kind](name, params, arrays)
            continue
        _, sid, variant, x = msg
        try:
            run_task(steps[sid], variant, x)
        except Exception:   # noqa: BLE001 - the compiler meets (and reports) the same error when it runs the variant
            pass
        say(DONE)


if __name__ == "__main__":
    _serve()
