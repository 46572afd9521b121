"""Engine files: junk, corruption and crafted specs are refused with a clear error before any kernel runs; a fuzz
run over mutated files finds no crash and no silent difference from the original engine."""
import json
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from torch import nn

import frugalnet.engine as E
from frugalnet.engine.serialize import _digest
from frugalnet.nn import KWinners, KWinners2d, SparseConv2d, SparseLinear

torch.set_num_threads(2)
pytestmark = pytest.mark.usefixtures("one_thread")
# cases per fuzz test: a short run by default; FRUGALNET_FUZZ=N for N spec cases (and N/2 of each other kind)
FUZZ = int(os.environ.get("FRUGALNET_FUZZ", "40"))
X = torch.rand(2, 1, 10, 10)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([
        ("conv", SparseConv2d(1, 4, 3, 0.5, padding=1)), ("pool", nn.MaxPool2d(2)), ("act", KWinners2d(4, 0.3)),
        ("flat", nn.Flatten()), ("fc", SparseLinear(100, 32, 0.7)), ("kw", KWinners(32, 0.2)),
        ("ln", nn.LayerNorm(32)), ("out", nn.Linear(32, 10))])).eval()
    engine = E.compile(model, X, batch_sizes=(1, 2), repeats=1)
    path = engine.save(tmp_path_factory.mktemp("eng") / "m.engine.npz")
    return path, engine(X)


def _arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _write(arrays, path, spec=None, rechecksum=True):
    arrays = dict(arrays)
    if spec is not None:
        arrays["spec"] = np.array(json.dumps(spec))
    if rechecksum:
        arrays.pop("checksum", None)
        arrays["checksum"] = np.array(_digest(arrays))
    np.savez(path, **arrays)
    return path


def _crafted(saved, tmp_path, edit):
    arrays = _arrays(saved[0])
    spec = json.loads(str(arrays["spec"]))
    edit(spec, arrays)
    return _write(arrays, tmp_path / "crafted.npz", spec)


def _step(spec, kind):
    return next(s for s in spec["steps"] if s["kind"] == kind)


def test_roundtrip_is_exact(saved):
    torch.testing.assert_close(E.load(saved[0])(X), saved[1], rtol=0, atol=0)


def test_junk_and_foreign_files_are_not_engine_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"\x00garbage" * 50)
    np.save(tmp_path / "arr.npy", np.zeros(3))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    np.savez(tmp_path / "objs.npz", spec=np.array([{"a": 1}], dtype=object))
    for name in ("junk.npz", "arr.npy", "other.npz", "objs.npz"):
        with pytest.raises(ValueError, match="not a frugalnet engine file") as e:
            E.load(tmp_path / name)
        assert "allow_pickle" not in str(e.value)


def test_corruption_fails_the_checksum(saved, tmp_path):
    arrays = _arrays(saved[0])
    key = next(k for k in arrays if k.endswith(".val") and arrays[k].size)
    arrays[key] = arrays[key].copy()
    arrays[key][0] += 1.0
    with pytest.raises(ValueError, match="checksum"):
        E.load(_write(arrays, tmp_path / "c.npz", rechecksum=False))


@pytest.mark.parametrize("edit, message", [
    (lambda s, a: _step(s, "linear")["params"].update(n_out=100000), "n_out"),
    (lambda s, a: _step(s, "linear")["arrays"][0].__setitem__(1, [5000, 100]), "n_out"),
    (lambda s, a: _step(s, "kwinners")["params"].update(percent_on=7.5), "percent_on"),
    (lambda s, a: _step(s, "conv2d")["params"].update(groups=0), "groups"),
    (lambda s, a: _step(s, "conv2d")["params"].update(stride=[0, 1]), "stride"),
    (lambda s, a: s["plans"]["1"].__setitem__(0, "no_such:p"), "variant"),
    (lambda s, a: next(n for n in s["program"]["nodes"] if n["op"] == "aten").update(
        target="aten::as_strided.default"), "not allowed"),
    (lambda s, a: s["program"]["nodes"][-1]["args"].__setitem__(0, {"v": 999}), "undefined"),
])
def test_crafted_specs_are_refused(saved, tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        E.load(_crafted(saved, tmp_path, edit))


def test_crafted_arrays_are_refused(saved, tmp_path):
    def negative_index(spec, arrays):
        k = next(k for k in arrays if k.endswith(".idx") and arrays[k].size)
        arrays[k] = arrays[k].copy()
        arrays[k][0] = -1
    with pytest.raises(ValueError, match="out of range"):
        E.load(_crafted(saved, tmp_path, negative_index))

    def short_boost(spec, arrays):   # 7 boost factors for 32 units: caught at bind, before the kernel
        i = next(i for i, s in enumerate(spec["steps"]) if s["kind"] == "kwinners" and not s["params"]["two_d"])
        spec["steps"][i]["arrays"][0][1] = [7]
        arrays[f"s{i}.boost.idx"] = np.arange(7, dtype=np.int32)
        arrays[f"s{i}.boost.val"] = np.ones(7, np.float32)
    with pytest.raises(ValueError, match="boost factors for 32 units"):
        E.load(_crafted(saved, tmp_path, short_boost))


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))
    yield prefix


_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 100001), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-2, 12), max_size=5),
                    st.sampled_from([{"v": 3}, {"c": "x"}, "aten::relu.default", "numba:p", "torch", [1, 1]]))
FUZZ_CASES = {"spec": 0, "bytes": 0, "arrays": 0}
CRAFTED = {"refused": 0, "same": 0, "another valid model": 0}


def _accept_or_refuse(path, expected):
    """Loading either refuses with ValueError/TypeError, or gives an engine whose outputs equal the original's."""
    try:
        engine = E.load(path)
    except (ValueError, TypeError, FileNotFoundError):
        return
    out = engine(X)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def _crafted_outcome(path, expected) -> None:
    """A crafted file (valid checksum): refused with ValueError/TypeError, or an engine that runs (a crafted file
    can describe another valid model: counted, not an error)."""
    try:
        engine = E.load(path)
    except (ValueError, TypeError):
        CRAFTED["refused"] += 1
        return
    try:
        out = engine(X)
    except (ValueError, TypeError, RuntimeError, IndexError):   # a clear error at call time, not a crash
        CRAFTED["refused"] += 1
        return
    same = isinstance(out, torch.Tensor) and out.shape == expected.shape and torch.allclose(out, expected,
                                                                                            rtol=1e-4, atol=1e-5)
    CRAFTED["same" if same else "another valid model"] += 1


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_spec_mutations(saved, tmp_path_factory, data):
    arrays = _arrays(saved[0])
    spec = json.loads(str(arrays["spec"]))
    original = json.dumps(spec, sort_keys=True)
    paths = [p for p in _paths(spec) if p and p[0] != "choices"]
    for _ in range(data.draw(st.integers(1, 3))):
        p = data.draw(st.sampled_from(paths))
        node = spec
        try:
            for k in p[:-1]:
                node = node[k]
            node[p[-1]] = data.draw(_values)
        except (KeyError, IndexError, TypeError):
            pass
    assume(json.dumps(spec, sort_keys=True) != original)   # a "mutation" that changed nothing is no test
    FUZZ_CASES["spec"] += 1
    with pytest.raises(ValueError, match="checksum"):
        E.load(_write(arrays, tmp_path_factory.mktemp("f") / "n.npz", spec, rechecksum=False))
    _crafted_outcome(_write(arrays, tmp_path_factory.mktemp("f") / "m.npz", spec), saved[1])


@settings(max_examples=max(1, FUZZ // 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_array_mutations(saved, tmp_path_factory, data):
    """Arrays edited: without a new checksum always refused; with one (a crafted file) never a crash."""
    arrays = _arrays(saved[0])
    key = data.draw(st.sampled_from(sorted(k for k in arrays if k not in ("spec", "checksum"))))
    a = arrays[key]
    choice = data.draw(st.integers(0, 3))
    if choice == 0 and a.size:
        a = a.copy()
        a.flat[data.draw(st.integers(0, a.size - 1))] = data.draw(st.sampled_from([-1, 10**6, 0, 2**31 - 1]))
    elif choice == 1:
        a = a.reshape(-1)[: data.draw(st.integers(0, max(0, a.size - 1)))]
    elif choice == 2:
        a = a.astype(data.draw(st.sampled_from([np.float64, np.int64, np.int8, np.float32, np.bool_])))
    else:
        a = np.concatenate([a.reshape(-1), a.reshape(-1)])
    old = arrays[key]
    assume(not (a.dtype == old.dtype and a.shape == old.shape and a.tobytes() == old.tobytes()))
    arrays[key] = a
    FUZZ_CASES["arrays"] += 1
    with pytest.raises(ValueError, match="checksum|not a frugalnet"):
        E.load(_write(arrays, tmp_path_factory.mktemp("f") / "n.npz", rechecksum=False))
    path = _write(arrays, tmp_path_factory.mktemp("f") / "m.npz")
    _crafted_outcome(path, saved[1])


@settings(max_examples=max(1, FUZZ // 2), deadline=None, suppress_health_check=list(HealthCheck))
@given(pos=st.floats(0, 1, exclude_max=True), byte=st.integers(0, 255), n=st.integers(1, 8))
def test_fuzz_byte_mutations(saved, tmp_path_factory, pos, byte, n):
    raw = bytearray(saved[0].read_bytes())
    i = int(pos * len(raw))
    raw[i:i + n] = bytes([byte]) * len(raw[i:i + n])
    path = tmp_path_factory.mktemp("f") / "m.npz"
    path.write_bytes(bytes(raw))
    FUZZ_CASES["bytes"] += 1
    _accept_or_refuse(path, saved[1])


def test_fuzz_case_count_reported():
    print(f"\nengine-file fuzz cases tried: {FUZZ_CASES}; crafted (re-checksummed) outcomes: {CRAFTED}")
