import pytest

from tests.trust import toystudy


@pytest.fixture(autouse=True)
def _reset_toy():
    toystudy.STOP.clear()
    toystudy.FAIL.clear()
    yield
    toystudy.STOP.clear()
    toystudy.FAIL.clear()
