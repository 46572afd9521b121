"""FRUGALNET_KERNEL_MODE sets the process default of the sparse layers' path, and a bad value says what is allowed."""
import subprocess
import sys

import pytest


def _mode_in_child(value: str) -> subprocess.CompletedProcess:
    code = "import frugalnet.nn.sparse_functional as SF; print(SF.kernel_mode())"
    return subprocess.run([sys.executable, "-c", code], env={"FRUGALNET_KERNEL_MODE": value, "PATH": ""},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("value,expected", [("dense", "dense"), ("Sparse", "sparse"), ("", "auto")])
def test_environment_sets_the_default(value, expected):
    proc = _mode_in_child(value)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected


def test_bad_value_names_the_choices():
    proc = _mode_in_child("fast")
    assert proc.returncode != 0
    assert "FRUGALNET_KERNEL_MODE must be one of" in proc.stderr
