"""Random masks draw from a stream of their own, not the weights' initialisation stream of the same seed."""
import torch

from frugalnet.nn import SparseLinear
from frugalnet.utils.seeding import make_generator, mask_generator


def test_mask_stream_differs_from_the_weight_stream_and_is_reproducible():
    a = torch.rand(1000, generator=mask_generator(3))
    assert torch.equal(a, torch.rand(1000, generator=mask_generator(3)))
    assert not torch.equal(a, torch.rand(1000, generator=make_generator(3)))
    assert not torch.equal(a, torch.rand(1000, generator=mask_generator(4)))


def test_random_mask_keeps_about_its_share_of_the_weights_norm():
    shares = []
    for seed in range(3):
        torch.manual_seed(seed)
        layer = SparseLinear(256, 256, sparsity=0.75, seed=seed)
        torch.manual_seed(seed)
        w = torch.nn.Linear(256, 256).weight.detach()      # what the layer's weights were before masking
        shares.append(float((w * layer.weight_mask).pow(2).sum() / w.pow(2).sum()))
    assert all(0.2 < s < 0.3 for s in shares), shares     # ~25% kept, not the larger weights
