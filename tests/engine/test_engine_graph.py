"""engine.compile on models beyond Sequential: residuals, attention with a KV cache, several inputs, branches."""
import pytest
import torch

import frugalnet.engine as E
from tests.engine.graph_models import TinyDecoder, branchy_cnn, decoder_inputs

torch.set_num_threads(2)
pytestmark = pytest.mark.usefixtures("one_thread")


def _close(out, ref):
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_branchy_cnn_compiles_and_matches_at_planned_and_other_batch_sizes():
    model = branchy_cnn()
    x = torch.randn(3, 3, 12, 12)
    engine = E.compile(model, x, batch_sizes=(1, 3), repeats=1)
    kinds = [c["kind"] for c in engine.summary(1)]
    assert kinds.count("conv2d") == 4 and "kwinners" in kinds and "batch_norm" not in str(engine.fallback_ops())
    assert {"aten::hardswish.default", "aten::silu.default", "aten::cat.default"} <= set(engine.fallback_ops())
    with torch.no_grad():
        for b in (1, 3, 5):
            xb = torch.randn(b, 3, 12, 12)
            _close(engine(xb), model(xb))


def test_decoder_with_kv_cache_compiles_matches_and_roundtrips(tmp_path):
    torch.manual_seed(0)
    model = TinyDecoder().eval()
    ids, cache = decoder_inputs(2)
    engine = E.compile(model, (ids, cache), batch_sizes=(1, 2), repeats=1)
    assert engine.batch_dims == [0] * 5      # ids and the four cache tensors all follow the batch
    assert [c["kind"] for c in engine.summary(1)].count("linear") == 9
    with torch.no_grad():
        for b in (1, 2, 3):
            ids, cache = decoder_inputs(b)
            _close(engine(ids, cache), model(ids, cache))
    loaded = E.load(engine.save(tmp_path / "dec.engine.npz"))
    ids, cache = decoder_inputs(2)
    # (not bitwise: MKL's GEMM may round differently with the buffers' alignment)
    torch.testing.assert_close(loaded(ids, cache), engine(ids, cache), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"input 1 of shape \(batch, 4, 7, 8\)"):
        engine(ids, ((cache[0][0][:, :2], cache[0][1]), cache[1]))


def test_bound_plans_are_an_lru_of_bounded_size():
    from frugalnet.engine.compiler import BOUND_CACHE

    model = branchy_cnn(1)
    engine = E.compile(model, torch.randn(2, 3, 12, 12), repeats=1)
    for b in range(1, BOUND_CACHE + 6):
        engine(torch.randn(b, 3, 12, 12))
    assert len(engine._bound) == BOUND_CACHE
    assert (BOUND_CACHE + 5, 3, 12, 12) == next(reversed(engine._bound))[0]
    assert ((1, 3, 12, 12),) not in engine._bound      # least recently used went first


def test_example_batch_of_one_fixes_the_batch_and_says_so():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="batch of 2 or more"):
        E.compile(model, torch.randn(1, 4), batch_sizes=(1, 4), repeats=1)
    engine = E.compile(model, torch.randn(1, 4), repeats=1)
    x = torch.randn(1, 4)
    _close(engine(x), model(x))
    with pytest.raises(ValueError, match="fixes its input shape"):
        engine(torch.randn(3, 4))
