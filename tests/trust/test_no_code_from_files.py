"""No file frugalnet reads runs code: checkpoints load with weights_only=True, CIFAR pickles through a restricted
unpickler, and no other pickle of user files exists in the source."""
import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from frugalnet.data.safe_pickle import read_cifar_batch
from frugalnet.experiment import FitConfig, fit
from frugalnet.utils.checksum import FileCheckError
from frugalnet.utils.io import load_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src" / "frugalnet"
MARK: list = []


class Payload:
    """Unpickling this calls MARK.append: evidence that code from the file ran."""

    def __reduce__(self):
        return (MARK.append, ("code ran",))


def _calls(name_filter):
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and name_filter(node.func):
                yield path.relative_to(SRC), node


def test_every_torch_load_in_the_source_is_weights_only():
    bad = [f"{p}:{n.lineno}" for p, n in _calls(lambda f: f.attr == "load" and getattr(f.value, "id", "") == "torch")
           if not any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in n.keywords)]
    assert bad == []


def test_no_pickle_load_of_files_outside_the_restricted_reader():
    # engine/jit_warm reads pickles from its own child process's pipe, never from a file
    allowed = {Path("engine/jit_warm.py"), Path("data/safe_pickle.py")}
    hits = [f"{p}:{n.lineno}" for p, n in _calls(lambda f: f.attr in ("load", "loads", "Unpickler")
                                                  and getattr(f.value, "id", "") == "pickle") if p not in allowed]
    assert hits == []


def test_fit_refuses_a_checkpoint_holding_a_pickle_payload(tmp_path):
    MARK.clear()
    ckpt = tmp_path / "unit.pt"
    torch.save({"model": Payload()}, ckpt)
    x = torch.randn(16, 4)
    from frugalnet.data import Split

    with pytest.raises(FileCheckError, match="unit.pt.*refused"):
        fit(torch.nn.Linear(4, 2), Split(x, (x[:, 0] > 0).long()), FitConfig(epochs=1), checkpoint=str(ckpt))
    assert MARK == []


def test_load_checkpoint_refuses_a_payload_without_running_it(tmp_path):
    MARK.clear()
    torch.save(Payload(), tmp_path / "x.pt")
    with pytest.raises(FileCheckError, match="x.pt"):
        load_checkpoint(tmp_path / "x.pt")
    assert MARK == []


def _cifar_batch(n=20, labels=None, protocol=2):
    rng = np.random.default_rng(0)
    return pickle.dumps({b"batch_label": b"x", b"labels": labels if labels is not None else list(rng.integers(0, 10, n)),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [b"f"] * n}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_read_without_pickle_code(tmp_path, protocol):
    f = tmp_path / "data_batch_1"
    f.write_bytes(_cifar_batch(protocol=protocol))
    x, y = read_cifar_batch(f)
    ref = pickle.loads(f.read_bytes())
    assert x.shape == (20, 3, 32, 32) and np.array_equal(x.reshape(20, -1), ref[b"data"])
    assert y.tolist() == [int(v) for v in ref[b"labels"]]


def test_cifar_batch_with_a_payload_is_refused_and_runs_nothing(tmp_path):
    MARK.clear()
    f = tmp_path / "data_batch_1"
    f.write_bytes(pickle.dumps({b"data": Payload(), b"labels": [1]}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_1 was refused: refused global"):
        read_cifar_batch(f)
    assert MARK == []


def test_cifar_loader_reads_through_the_safe_reader(tmp_path):
    from frugalnet.data import load

    MARK.clear()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(_cifar_batch())
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Payload()}, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3 was refused"):
        load("cifar10", str(tmp_path))
    assert MARK == []
    (tmp_path / "data_batch_3").write_bytes(_cifar_batch())
    bundle = load("cifar10", str(tmp_path))
    assert len(bundle.train) == 100 and len(bundle.test) == 20


@pytest.mark.parametrize("labels, match", [([255] * 20, "labels must be in 0..9"), ([1] * 5, "labels of shape")])
def test_cifar_bad_labels_name_the_file(tmp_path, labels, match):
    f = tmp_path / "test_batch"
    f.write_bytes(_cifar_batch(labels=labels))
    with pytest.raises(ValueError, match=match):
        read_cifar_batch(f)


def test_cifar_truncated_file_names_the_file(tmp_path):
    f = tmp_path / "test_batch"
    f.write_bytes(_cifar_batch()[:1000])
    with pytest.raises(ValueError, match="test_batch is not a CIFAR-10 batch file"):
        read_cifar_batch(f)
