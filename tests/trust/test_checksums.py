"""Every file frugalnet writes carries a checksum verified on load: a corrupted or edited file is refused with an
error naming it, never loaded with other numbers."""
import json
import warnings
import zipfile

import pytest
import torch
from torch import nn

from frugalnet.data import Split
from frugalnet.experiment import FitConfig, fit
from frugalnet.utils.checksum import FileCheckError
from frugalnet.utils.io import (append_jsonl, atomic_torch_save, atomic_write_json, load_checkpoint, read_json,
                                read_jsonl)


def _data_offset(path, suffix="data/0"):
    """Byte offset of a tensor's storage inside a torch zip file."""
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(suffix))
    raw = path.read_bytes()
    start = info.header_offset
    name_len = int.from_bytes(raw[start + 26:start + 28], "little")
    extra_len = int.from_bytes(raw[start + 28:start + 30], "little")
    return start + 30 + name_len + extra_len


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def test_checkpoint_round_trip_and_flipped_weight_is_refused(tmp_path):
    p = tmp_path / "c.pt"
    state = {"model": nn.Linear(3, 2).state_dict(), "epoch": 2, "history": [{"loss": 0.5}], "rng": torch.get_rng_state()}
    atomic_torch_save(state, p)
    back = load_checkpoint(p)
    assert back["epoch"] == 2 and torch.equal(back["model"]["weight"], state["model"]["weight"])
    _flip(p, _data_offset(p) + 1)
    torch.load(p, weights_only=True)   # the container still loads: only the checksum catches the change
    with pytest.raises(FileCheckError, match="c.pt fails its checksum"):
        load_checkpoint(p)


def test_fit_refuses_a_corrupted_checkpoint_instead_of_resuming_with_other_weights(tmp_path):
    x = torch.randn(32, 4)
    split = Split(x, (x[:, 0] > 0).long())
    ckpt = tmp_path / "m.pt"
    torch.manual_seed(0)
    fit(nn.Linear(4, 2), split, FitConfig(epochs=1, batch_size=8), checkpoint=str(ckpt))
    _flip(ckpt, _data_offset(ckpt) + 2)
    with pytest.raises(ValueError, match="m.pt"):
        fit(nn.Linear(4, 2), split, FitConfig(epochs=2, batch_size=8), checkpoint=str(ckpt))


@pytest.mark.parametrize("damage", ["empty", "truncated", "junk"])
def test_unreadable_checkpoints_name_the_file(tmp_path, damage):
    p = tmp_path / "c.pt"
    atomic_torch_save({"w": torch.ones(50)}, p)
    raw = p.read_bytes()
    p.write_bytes({"empty": b"", "truncated": raw[:len(raw) // 2], "junk": b"not a checkpoint at all"}[damage])
    with pytest.raises(FileCheckError, match="c.pt"):
        load_checkpoint(p)


def test_checkpoint_without_our_checksum_is_refused(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(FileCheckError, match="plain.pt has no frugalnet checksum"):
        load_checkpoint(tmp_path / "plain.pt")


def test_json_checksum_round_trip_and_edits(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"acc": 0.9, "list": (1, 2)})
    assert read_json(p) == {"acc": 0.9, "list": [1, 2]}
    atomic_write_json(tmp_path / "v.json", [1, 2, 3])
    assert read_json(tmp_path / "v.json") == [1, 2, 3]
    p.write_text(p.read_text().replace("0.9", "0.99"))
    with pytest.raises(FileCheckError, match="r.json fails its checksum"):
        read_json(p)
    p.write_text('{"acc": 0.9')
    with pytest.raises(FileCheckError, match=r"r.json is not valid JSON \(line 1"):
        read_json(p)
    p.write_text('{"acc": 0.9}')
    with pytest.raises(FileCheckError, match="r.json has no checksum"):
        read_json(p)
    assert read_json(p, checksum="optional") == {"acc": 0.9}


def test_torn_last_line_of_metrics_is_skipped_with_a_warning_and_appending_starts_a_new_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    append_jsonl(p, {"a": 1})
    with open(p, "a") as handle:
        handle.write('{"a": 2, "b"')          # killed mid-write
    with pytest.warns(UserWarning, match="metrics.jsonl, line 2"):
        assert list(read_jsonl(p)) == [{"a": 1}]
    append_jsonl(p, {"a": 3})
    with pytest.warns(UserWarning, match="line 2"):
        assert list(read_jsonl(p)) == [{"a": 1}, {"a": 3}]
    with pytest.raises(FileCheckError, match="line 2"):
        list(read_jsonl(p, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert json.loads(p.read_text().splitlines()[-1]) == {"a": 3}


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_fuzz_load_checkpoint_and_read_json(tmp_path):
    """Byte flips, truncations and insertions: either the exact original comes back or FileCheckError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    torch.manual_seed(0)
    state = {"model": nn.Linear(5, 3).state_dict(), "epoch": 3, "history": [{"loss": 0.25, "acc": 0.5}],
             "rng": torch.get_rng_state()[:64]}
    atomic_torch_save(state, tmp_path / "c.pt")
    atomic_write_json(tmp_path / "u.json", {"acc": 0.91, "rows": [1, 2, 3], "name": "x"})
    originals = {"c.pt": (tmp_path / "c.pt").read_bytes(), "u.json": (tmp_path / "u.json").read_bytes()}
    outcome = {"same": 0, "refused": 0}

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=st.sampled_from(sorted(originals)), kind=st.sampled_from(["flip", "truncate", "insert"]),
           pos=st.integers(0, 1 << 16), byte=st.integers(1, 255))
    def case(name, kind, pos, byte):
        raw = bytearray(originals[name])
        at = pos % len(raw)
        if kind == "flip":
            raw[at] ^= byte
        elif kind == "truncate":
            del raw[at:]
        else:
            raw.insert(at, byte)
        path = tmp_path / f"m-{name}"
        path.write_bytes(bytes(raw))
        try:
            back = load_checkpoint(path) if name.endswith(".pt") else read_json(path)
        except FileCheckError:
            outcome["refused"] += 1
            return
        assert _equal(state, back) if name.endswith(".pt") else back == {"acc": 0.91, "rows": [1, 2, 3], "name": "x"}
        outcome["same"] += 1

    case()
    assert outcome["refused"] > 0 and sum(outcome.values()) == 150
