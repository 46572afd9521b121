"""Every bad input the CLI gets ends in one line `frugalnet: error: ...` naming the file or option (exit 2), never a
traceback, and nothing bad is accepted silently."""
import gzip
import json
import struct

import numpy as np
import pytest

from frugalnet.cli import main
from frugalnet.experiment import run_study
from tests.trust import toystudy
from tests.trust.toystudy import TrustToyConfig


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def _error(capsys, *argv, match):
    code, err = _cli(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("frugalnet: error: ")]
    assert len(lines) == 1, err
    assert match in lines[0], lines[0]
    return lines[0]


def _interrupted(tmp_path):
    toystudy.STOP.update(unit=1, epoch=1)
    with pytest.raises(KeyboardInterrupt):
        run_study(TrustToyConfig(runs_dir=str(tmp_path), quiet=True))
    toystudy.STOP.clear()
    return next((tmp_path / "trust-toy").iterdir())


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated", None])
def test_resume_with_a_bad_checkpoint(tmp_path, capsys, damage):
    run_dir = _interrupted(tmp_path)
    ckpt = run_dir / "checkpoints" / "unit1.pt"
    ckpt.write_bytes(damage if damage is not None else ckpt.read_bytes()[:-100])
    _error(capsys, "resume", run_dir, match="unit1.pt")


def test_resume_with_a_bad_unit_file(tmp_path, capsys):
    run_dir = _interrupted(tmp_path)
    unit = run_dir / "units" / "unit0.json"
    unit.write_text(unit.read_text().replace('"i": 0', '"i": 7'))
    line = _error(capsys, "resume", run_dir, match="unit0.json fails its checksum")
    assert "delete it" in line


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("study"), "config.json must hold"),
    (lambda d: d["config"].update(epochs="3"), "epochs must be an integer"),
    (lambda d: d.update(study="no-such-study"), "unknown study"),
])
def test_resume_with_a_bad_config_json(tmp_path, capsys, edit, match):
    run_dir = _interrupted(tmp_path)
    cfg = run_dir / "config.json"
    data = json.loads(cfg.read_text())
    edit(data)
    cfg.write_text(json.dumps(data))
    _error(capsys, "resume", run_dir, match="config.json was changed since the run started")
    _error(capsys, "resume", run_dir, "--force", match=match)


def test_resume_with_malformed_json_names_the_file(tmp_path, capsys):
    run_dir = _interrupted(tmp_path)
    (run_dir / "config.json").write_text('{"study": "trust-toy", ')
    _error(capsys, "resume", run_dir, "--force", match="config.json is not valid JSON")


def test_resume_of_a_missing_folder(tmp_path, capsys):
    _error(capsys, "resume", tmp_path / "nope", match="nope")


def test_runs_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    _error(capsys, "run", "trust-toy", "--runs-dir", tmp_path / "f", match="--runs-dir")


@pytest.mark.parametrize("argv, match", [
    (["run", "trust-toy", "--lr", "inf"], "lr must be a finite number"),
    (["run", "trust-toy", "--lr", "nan"], "lr must be a finite number"),
    (["run", "trust-toy", "--lr", "-1"], "lr must be a finite number > 0"),
    (["run", "lowbit", "--tasks", "cifar10"], "--data-dir"),
    (["run", "sparse-vs-dense", "--dataset", "mnist"], "--data-dir"),
    (["run", "sparse-vs-dense", "--data-dir", "."], "--data-dir '.' was given but this run reads no local data"),
    (["run", "sparse-vs-dense", "--dataset", "mnist", "--data-dir", "/no/such/dir"], "--data-dir '/no/such/dir'"),
    (["run", "sparse-vs-dense", "--dataset", "nope"], "unknown dataset 'nope'"),
])
def test_bad_options_are_refused_up_front(tmp_path, capsys, argv, match):
    _error(capsys, *argv, "--runs-dir", tmp_path, match=match)
    assert not any(tmp_path.iterdir())        # refused before any run folder exists


def test_abbreviated_options_are_not_taken(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "trust-toy", "--epoch", "1", "--runs-dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["resume", str(tmp_path), "--qui"])


def _idx(path, dtype_byte, dims, payload):
    with gzip.open(path, "wb") as handle:
        handle.write(bytes([0, 0, dtype_byte, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload)


def _mnist_dir(tmp_path, labels=None, dtype_byte=0x08):
    tmp_path.mkdir(exist_ok=True)
    for prefix, n in (("train", 12), ("t10k", 6)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", dtype_byte, (n, 28, 28), bytes(n * 28 * 28))
        y = labels if labels is not None else [i % 10 for i in range(n)]
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 0x08, (n,), bytes(y[:n] + [0] * (n - len(y[:n]))))
    return tmp_path


@pytest.mark.parametrize("kind, match", [("dtype", "unknown data type byte 0x07"), ("labels", "label 255")])
def test_bad_idx_files_are_named(tmp_path, capsys, kind, match):
    data = _mnist_dir(tmp_path / "data", **({"dtype_byte": 0x07} if kind == "dtype" else {"labels": [255] * 12}))
    line = _error(capsys, "run", "sparse-vs-dense", "--dataset", "mnist", "--data-dir", data, "--runs-dir",
                  tmp_path / "runs", "--quiet", match=match)
    assert "idx" in line
    assert not (tmp_path / "runs" / "sparse-vs-dense").exists()   # the failed run left no folder


def test_read_idx_errors(tmp_path):
    from frugalnet.data import read_idx

    data = _mnist_dir(tmp_path)
    x = read_idx(data / "train-images-idx3-ubyte.gz")
    assert x.shape == (12, 28, 28) and x.dtype == np.uint8
    _idx(tmp_path / "short.gz", 0x08, (5, 4), bytes(7))
    with pytest.raises(ValueError, match="short.gz is truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "hdr").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="header"):
        read_idx(tmp_path / "hdr")


def test_energy_subcommand_takes_no_abbreviated_options():
    from frugalnet.energy.command import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--cpu-w", "5", "--", "true"])
    assert build_parser().parse_args(["--cpu-watts", "5", "--", "true"]).cpu_watts == 5.0
