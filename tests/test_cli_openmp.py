"""The command restarts itself once with passive OpenMP threads, unless the user chose a policy or opted out."""
import sys

import pytest

from frugalnet import cli


@pytest.fixture
def execs(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("FRUGALNET_KEEP_OPENMP", raising=False)
    return calls


@pytest.mark.skipif(sys.platform == "win32", reason="posix exec only")
def test_restarts_with_passive_policy(execs):
    cli._restart_with_passive_openmp(["run", "demo", "--seeds", "1"])
    assert len(execs) == 1
    exe, args, env = execs[0]
    assert exe == sys.executable and args == [sys.executable, "-m", "frugalnet", "run", "demo", "--seeds", "1"]
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.parametrize("setup", ["user_policy", "opt_out", "energy"])
def test_leaves_the_process_alone(execs, monkeypatch, setup):
    argv = ["list"]
    if setup == "user_policy":
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    elif setup == "opt_out":
        monkeypatch.setenv("FRUGALNET_KEEP_OPENMP", "1")
    else:
        argv = ["energy", "--", "true"]
    cli._restart_with_passive_openmp(argv)
    assert execs == []


def test_main_called_from_python_never_restarts(execs, capsys):
    assert cli.main(["list"]) == 0
    assert execs == []
