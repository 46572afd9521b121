import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The tiny tensors here gain nothing from threads, and on a shared 2-core machine torch's thread pool waiting
    for a core makes each small GEMM cost milliseconds: run single-threaded, restore afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
