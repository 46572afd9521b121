import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _quiet_and_seeded():
    from frugalnet.utils.progress import set_quiet

    set_quiet(True)
    torch.manual_seed(0)
    yield
