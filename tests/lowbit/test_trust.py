"""What bad files and awkward models get (issue 17): checksummed packed files, a named recipe mismatch, in-place
activations after quantized layers, radix-4 ties, and fuzzing of packed files and of their records (no crash, no
silent difference)."""
import copy
import io
import os
import lzma

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from frugalnet.lowbit import formats as F
from frugalnet.lowbit import quantize_, quantized_layers
from frugalnet.lowbit.packing import HEADER, MAGIC, check_record, load_packed, packed_state, save_packed
from frugalnet.models.cnn import dense_cnn2

FUZZ_CASES = {"file": 0, "record": 0}
EXAMPLES = int(os.environ.get("FRUGALNET_FUZZ_EXAMPLES", "60"))   # raise for a longer fuzz run


def _model(recipe="nvfp4"):
    torch.manual_seed(0)
    model = quantize_(dense_cnn2(channels=(4, 8), hidden=24), recipe)
    model(torch.randn(2, 1, 28, 28))
    return model


@pytest.mark.parametrize("compress", [False, True])
def test_a_changed_byte_in_a_packed_file_is_refused(compress, tmp_path):
    save_packed(_model(), tmp_path / "m.fnp", compress=compress)
    data = bytearray((tmp_path / "m.fnp").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "bad.fnp").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        load_packed(tmp_path / "bad.fnp")
    (tmp_path / "short.fnp").write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="checksum"):
        load_packed(tmp_path / "short.fnp")


def test_version_1_files_still_load_with_a_warning(tmp_path):
    model = _model()
    buffer = io.BytesIO()
    torch.save(packed_state(model), buffer)
    (tmp_path / "v1.fnp").write_bytes(lzma.compress(buffer.getvalue()))
    with pytest.warns(UserWarning, match="without a checksum"):
        state = load_packed(tmp_path / "v1.fnp")
    name, layer = quantized_layers(model)[1]
    assert torch.equal(state[f"{name}.weight"], layer.quantized_weight())


def test_loading_into_a_model_with_another_recipe_names_both(tmp_path):
    save_packed(_model("nvfp4"), tmp_path / "m.fnp")
    other = quantize_(dense_cnn2(channels=(4, 8), hidden=24), "ibm4")
    with pytest.raises(ValueError, match="recipe 'nvfp4'.*uses recipe 'ibm4'"):
        load_packed(tmp_path / "m.fnp", other)
    wider = quantize_(dense_cnn2(channels=(4, 8), hidden=30), "nvfp4")
    with pytest.raises((ValueError, RuntimeError)):
        load_packed(tmp_path / "m.fnp", wider)
    plain = dense_cnn2(channels=(4, 8), hidden=24)
    with pytest.raises(ValueError, match="not quantized"):
        load_packed(tmp_path / "m.fnp", plain)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Hardswish, nn.ReLU6])
@pytest.mark.parametrize("recipe", ["ibm4", "nvfp4", "fp32"])
def test_inplace_activations_after_quantized_layers(act, recipe):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 4, 3), act(inplace=True), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), act(inplace=True),
              nn.Linear(8, 3)]
    model = quantize_(nn.Sequential(*layers), recipe)
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = torch.randn(5, 3, 8, 8)
    y, y2 = model(x), twin(x)
    y.square().sum().backward()
    y2.square().sum().backward()
    assert torch.equal(y, y2)
    for p, p2 in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, p2.grad)
    seq = quantize_(nn.Sequential(nn.Linear(6, 6), act(inplace=True)), recipe)
    seq(torch.randn(2, 3, 6)).sum().backward()         # 3-D input: the layer's output is reshaped


@pytest.mark.parametrize("kernels", [True, False])
def test_radix4_nearest_ties_go_down(kernels):
    """Halfway between two levels (or between 0 and the smallest) rounds to the smaller magnitude, as documented."""
    previous = F.set_kernels(kernels)
    try:
        smallest = 4.0 ** -6
        x = torch.tensor([1.0, 0.625, -0.625, 0.15625, smallest / 2, -smallest / 2, 0.6251])
        q = F.radix4_fp4(x, phase=0)
        assert q.tolist() == [1.0, 0.25, -0.25, 0.0625, 0.0, -0.0, 1.0]
    finally:
        F.set_kernels(previous)


# --- fuzzing ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "m.fnp"
    model = _model("ibm4")
    save_packed(model, path, compress=False)

    class Saved(tuple):
        def __repr__(self) -> str:      # keep hypothesis' failure reports short
            return "Saved(ibm4 CNN-2)"
    return Saved((path, path.read_bytes(), load_packed(path)))


_MUTATION = st.tuples(st.sampled_from(["flip", "set", "cut", "insert"]), st.floats(0, 1), st.integers(0, 255))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_MUTATION, min_size=1, max_size=4), redo_checksum=st.booleans())
def test_fuzzed_packed_files_give_a_clean_error_or_the_same_weights(saved, mutations, redo_checksum, tmp_path):
    """Random byte edits, truncations and insertions; with `redo_checksum` the attacker also rewrites the header's
    SHA-256 so the edited body reaches the parser and the record checks."""
    import hashlib

    path, data, reference = saved
    body = bytearray(data[data.index(b"\n") + 1:])
    for kind, where, value in mutations:
        i = min(max(0, len(body) - 1), int(where * len(body)))
        if not body and kind != "insert":
            continue
        if kind == "flip":
            body[i] ^= 1 << (value % 8)
        elif kind == "set":
            body[i] = value
        elif kind == "cut":
            del body[i:]
        else:
            body.insert(i, value)
    digest = hashlib.sha256(bytes(body)).hexdigest().encode() if redo_checksum else data[len(HEADER):][:64]
    bad = tmp_path / "fuzz.fnp"
    bad.write_bytes(HEADER + digest + b"\n" + bytes(body))
    FUZZ_CASES["file"] += 1
    try:
        state = load_packed(bad)
    except ValueError:
        return
    if redo_checksum:       # a re-signed file is the attacker's own model: it must only load cleanly or not at all
        assert all(isinstance(v, torch.Tensor) for v in state.values())
        return
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in state)


_FIELDS = ["codes", "scales", "step", "tensor_scale", "shape", "blocked_shape", "format"]


@settings(max_examples=EXAMPLES + 20, deadline=None)
@given(fmt=st.sampled_from(["int4-sawb", "int8", "mxfp4", "nvfp4", "fp8-e4m3"]), field=st.sampled_from(_FIELDS),
       edit=st.sampled_from(["drop", "shrink", "grow", "dtype", "nan", "negative", "huge", "junk"]))
def test_crafted_records_are_refused_before_any_kernel(fmt, field, edit):
    """Each edit of one field of a valid record: check_record raises ValueError, or the record still decodes and
    builds an engine step that runs (no crash, no out-of-bounds read: numba does no bounds checks)."""
    from frugalnet.engine.act import Act
    from frugalnet.engine.steps.lowbit import LowbitLinearStep
    from frugalnet.lowbit.unpack import codes_from_record
    from frugalnet.lowbit.packing import encode_weight

    rec = encode_weight(torch.randn(24, 40), fmt)
    FUZZ_CASES["record"] += 1
    if field not in rec:
        return
    v = rec[field]
    if edit == "drop":
        del rec[field]
    elif isinstance(v, torch.Tensor):
        rec[field] = {"shrink": v.reshape(-1)[:-1] if v.numel() > 1 else v.reshape(-1)[:0],
                      "grow": torch.cat([v.reshape(-1), v.reshape(-1)[:1]]), "dtype": v.double(),
                      "nan": v.float() * float("nan"), "negative": -v.float() - 1,
                      "huge": v.float() * 1e38 * 1e38, "junk": torch.zeros(3, 3)}[edit]
    else:
        rec[field] = {"shrink": tuple(v)[:-1] if isinstance(v, tuple) else "x", "grow": (10 ** 9, 10 ** 9),
                      "dtype": 3.5, "nan": (-1, 40), "negative": (-24, 40), "huge": (2 ** 40, 1),
                      "junk": "../../etc/passwd"}[edit]
    try:
        check_record(rec)
    except ValueError:
        return
    codes = codes_from_record(rec)
    step = LowbitLinearStep.build("fc", codes, None, {"format": "fp32", "rounding": "nearest", "seed": 0,
                                                      "step": 0, "pact_signed": False}, None, n_in=40)
    x = np.ones((2, 40), np.float32)
    for variant in step.variants(Act(x.shape, dense=x)):
        assert step.run(Act(x.shape, dense=x), variant).dense().shape == (2, 24)


def test_fuzz_counts():
    """Runs last in this module: the number of fuzz cases tried (printed with -s)."""
    print(f"\nfuzz cases tried: {FUZZ_CASES}")
    assert FUZZ_CASES["file"] >= 1 and FUZZ_CASES["record"] >= 1
