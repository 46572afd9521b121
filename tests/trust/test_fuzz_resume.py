"""Fuzz `frugalnet resume` over mutated run folders (config.json, metrics.jsonl, a finished unit, a mid-training
checkpoint, energy_parts.json): every outcome is either a resume whose results equal an uninterrupted run's or one
line `frugalnet: error: ...` (exit 2); no traceback, no code from a file runs, no silent difference.

The default suite tries FAST_EXAMPLES cases (derandomized); `pytest -m slow` tries SLOW_EXAMPLES."""
import contextlib
import io
import json
import random
import shutil
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frugalnet.cli import main
from frugalnet.experiment import run_study
from tests.trust import toystudy
from tests.trust.toystudy import TrustToyConfig

FAST_EXAMPLES = 12
SLOW_EXAMPLES = 300
FILES = ("config.json", "metrics.jsonl", "units/unit0.json", "checkpoints/unit1.pt", "energy_parts.json")
MARK: list = []
TRIED: dict = {"cases": 0, "resumed": 0, "refused": 0}


class Payload:
    def __reduce__(self):
        return (MARK.append, ("code ran",))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    reference = run_study(TrustToyConfig(runs_dir=str(root / "full"), quiet=True)).results
    toystudy.STOP.update(unit=1, epoch=1)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(TrustToyConfig(runs_dir=str(root / "cut"), quiet=True))
    finally:
        toystudy.STOP.clear()
    base = next((root / "cut" / "trust-toy").iterdir())
    assert all((base / f).is_file() for f in FILES)
    return root, base, json.loads(json.dumps(reference))


def _edit_json_leaf(data, rng: random.Random, value):
    """Replace one randomly chosen leaf of a JSON value."""
    if isinstance(data, dict) and data:
        key = rng.choice(sorted(data))
        data[key] = _edit_json_leaf(data[key], rng, value)
        return data
    if isinstance(data, list) and data:
        i = rng.randrange(len(data))
        data[i] = _edit_json_leaf(data[i], rng, value)
        return data
    return value


def mutate(path, kind, pos, blob, value, seed):
    if kind == "delete":
        path.unlink()
        return
    raw = path.read_bytes()
    at = pos % (len(raw) + 1)
    if kind == "flip" and raw:
        b = bytearray(raw)
        b[at % len(raw)] ^= (blob[0] if blob and blob[0] else 0x41)
        raw = bytes(b)
    elif kind == "truncate":
        raw = raw[:at]
    elif kind == "insert":
        raw = raw[:at] + blob + raw[at:]
    elif kind == "payload":
        buf = io.BytesIO()
        torch.save({"model": Payload()}, buf) if path.suffix == ".pt" else buf.write(b"\x80\x04" + bytes(blob))
        raw = buf.getvalue()
    elif kind == "json" and path.suffix in (".json", ".jsonl"):
        rng = random.Random(seed)
        try:                              # an earlier mutation may have left no JSON to edit
            if path.suffix == ".json":
                raw = json.dumps(_edit_json_leaf(json.loads(raw), rng, value), indent=2).encode()
            else:
                lines = raw.decode().splitlines()
                i = rng.randrange(len(lines))
                lines[i] = json.dumps(_edit_json_leaf(json.loads(lines[i]), rng, value))
                raw = ("\n".join(lines) + "\n").encode()
        except (ValueError, UnicodeDecodeError):
            pass
    path.write_bytes(raw)


mutation = st.tuples(st.sampled_from(FILES), st.sampled_from(["flip", "truncate", "insert", "delete", "payload",
                                                                "json"]),
                     st.integers(0, 1 << 20), st.binary(min_size=1, max_size=12),
                     st.one_of(st.integers(-5, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.text(
                         max_size=6), st.none(), st.booleans()), st.integers(0, 1 << 30))


def check_case(folders, mutations, tmp_dir):
    root, base, reference = folders
    run_dir = tmp_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    shutil.copytree(base, run_dir)
    for file, kind, pos, blob, value, seed in mutations:
        if (run_dir / file).is_file():
            mutate(run_dir / file, kind, pos, blob, value, seed)
    MARK.clear()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["resume", str(run_dir), "--quiet"])
    text = err.getvalue()
    TRIED["cases"] += 1
    assert MARK == [], "code from a file ran"
    assert "Traceback" not in text and "unexpected" not in text, text
    if code == 0:
        TRIED["resumed"] += 1
        saved = json.loads((run_dir / "results.json").read_text())
        assert saved["results"] == reference, f"silent difference after {mutations}"
    else:
        TRIED["refused"] += 1
        assert code == 2, text
        assert [line for line in text.splitlines() if line.startswith("frugalnet: error: ")], text


@settings(max_examples=FAST_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=2))
def test_fuzz_resume(folders, tmp_path, mutations):
    check_case(folders, mutations, tmp_path)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=3))
def test_fuzz_resume_long(folders, tmp_path, mutations):
    check_case(folders, mutations, tmp_path)


def teardown_module(module):
    print(f"\nfuzz resume: {TRIED['cases']} cases, {TRIED['resumed']} resumed to identical results, "
          f"{TRIED['refused']} refused with one error line")
