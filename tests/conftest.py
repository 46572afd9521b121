import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads sleep, as in the CLI
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _quiet_and_seeded():
    from frugalnet.utils.progress import set_quiet

    set_quiet(True)
    torch.manual_seed(0)
    yield
