import pytest
import torch


@pytest.fixture
def one_thread():
    """One PyTorch (and so numba) thread for the test: on a shared, overloaded 2-core machine a second OpenMP
    thread that is not scheduled makes every barrier wait (a tiny depthwise conv took 57 ms instead of 0.5 ms)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
