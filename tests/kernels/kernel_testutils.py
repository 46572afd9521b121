import numpy as np
import torch


def sparse_array(rng: np.random.Generator, shape, sparsity: float) -> np.ndarray:
    a = rng.standard_normal(shape).astype(np.float32)
    a[rng.random(shape) < sparsity] = 0.0
    return a


def assert_close(actual, expected, rtol: float = 1e-4) -> None:
    expected = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale * 1e-1)


torch.set_num_threads(2)
