"""JIT warm-up across processes (frugalnet.engine.jit_warm): every candidate runs once, here or in a helper process,
and helpers never outlive the warm-up."""
import numpy as np
import pytest
import torch
from numba import njit
from torch import nn

import frugalnet.engine as E
from frugalnet.engine import jit_warm as W
from frugalnet.engine.capture import capture
from frugalnet.engine.compiler import _examples, _warm_tasks
from frugalnet.engine.lower import lower
from frugalnet.models import sparse_cnn2
from frugalnet.nn import SparseLinear

torch.set_num_threads(2)


def _tasks(model, x, batch_sizes=(1, 2)):
    cap = capture(model.eval(), (x,))
    program, steps = lower(cap)
    cap.release()
    return _warm_tasks(program, steps, _examples((x,), batch_sizes))


def _cnn():
    return sparse_cnn2((1, 16, 16), num_classes=5, channels=(4, 8), hidden=24, seed=0).eval()


def test_warm_tasks_name_each_numba_candidate_once():
    tasks = _tasks(_cnn(), torch.rand(2, 1, 16, 16))
    keys = [(t.step.kind, t.variant) for t in tasks]
    assert len(keys) == len(set(keys))
    assert "torch" not in {t.variant for t in tasks}
    assert {"conv2d", "kwinners", "linear"} <= {k for k, _ in keys}
    for t in tasks:   # each input is what the PyTorch chain feeds that step: a dense float32 batch
        assert t.x.dtype == np.float32 and t.x.shape[0] in (1, 2)


def test_warm_without_helpers_runs_every_task_here():
    tasks = _tasks(_cnn(), torch.rand(2, 1, 16, 16))
    stats = W.warm(tasks, workers=0)
    assert stats == {"here": len(tasks), "helpers": 0, "started": 0}


def test_a_helper_process_runs_the_tasks_it_is_given():
    torch.manual_seed(0)
    model = nn.Sequential(SparseLinear(32, 16, 0.8), nn.ReLU(), SparseLinear(16, 8, 0.5))
    tasks = _tasks(model, torch.relu(torch.randn(2, 32) - 1))
    assert len(tasks) >= 2
    pool = W._Pool(tasks)
    pool.start_helpers(1)
    helper = pool.helpers[0]
    helper.join(300)            # the helper drains the queue, then ends its process
    assert pool.done_by_helpers == len(tasks) and not pool.queue
    assert helper.proc is not None and helper.proc.poll() is not None
    pool.close()


def test_close_ends_a_helper_that_is_still_starting():
    tasks = _tasks(nn.Sequential(SparseLinear(8, 4, 0.5)), torch.relu(torch.randn(2, 8)))
    pool = W._Pool(tasks)
    pool.start_helpers(1)
    pool.close()                # before the helper has even imported frugalnet
    helper = pool.helpers[0]
    assert not helper.is_alive()
    assert helper.proc is None or helper.proc.poll() is not None
    assert pool.take() is None  # nothing more is handed out


def test_helpers_start_at_the_first_real_compile_only():
    calls = []
    with W._on_first_compile(lambda: calls.append(1)):
        pass
    assert calls == []

    @njit(cache=False)
    def fresh(a):   # defined here, so never in any cache: this compiles
        return a + 1

    with W._on_first_compile(lambda: calls.append(1)):
        assert fresh(1) == 2
    assert calls
    n = len(calls)
    assert fresh(2) == 3        # the listener is gone after the block
    assert len(calls) == n


def test_compile_with_and_without_helpers_gives_the_same_engine_outputs():
    model = _cnn()
    x = torch.rand(3, 1, 16, 16)
    outs = [E.compile(model, x, batch_sizes=(1, 3), repeats=1, jit_workers=w)(x) for w in (0, 1)]
    with torch.no_grad():
        ref = model(x)
    for out in outs:
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_default_workers_leave_a_core_and_respect_disabled_jit(monkeypatch):
    monkeypatch.setattr(W, "usable_cpus", lambda: 2)
    assert W.default_workers(10) == 1
    assert W.default_workers(1) == 0
    monkeypatch.setattr(W, "usable_cpus", lambda: 64)
    assert W.default_workers(10) == 3
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "1")
    assert W.default_workers(10) == 0


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_compile_rejects_a_bad_jit_workers_value(bad):
    model = nn.Sequential(SparseLinear(8, 4, 0.5))
    with pytest.raises(ValueError, match="jit_workers"):
        E.compile(model, torch.randn(2, 8), jit_workers=bad)


def test_warm_counts_tasks_on_a_progress_bar(capsys):
    from frugalnet.utils.progress import set_quiet

    tasks = _tasks(nn.Sequential(SparseLinear(16, 8, 0.7)), torch.relu(torch.randn(2, 16)))
    set_quiet(False)
    try:
        stats = W.warm(tasks, workers=0, quiet=False)
    finally:
        set_quiet(True)
    assert stats["here"] == len(tasks)
    assert "kernels (JIT on first use" in capsys.readouterr().err
