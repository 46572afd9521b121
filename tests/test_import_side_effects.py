"""`import frugalnet` (and its studies, engine and bench) leaves matplotlib alone: pyplot is imported, and a backend
chosen, only when a figure is drawn; the user's backend choice stands."""
import os
import subprocess
import sys

CODE = """
import sys, matplotlib
matplotlib.use("svg")
import frugalnet, frugalnet.studies, frugalnet.engine, frugalnet.bench.sparse_inference, frugalnet.energy
assert "matplotlib.pyplot" not in sys.modules, "pyplot imported at import time"
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
from frugalnet.energy import Ledger
print("ok")
"""


def test_importing_frugalnet_leaves_the_matplotlib_backend_alone():
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
