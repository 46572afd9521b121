import torch
from torch import nn

from frugalnet.nn.sync_batchnorm import DistributedBatchNorm, convert_to_distributed_batchnorm


def test_conversion_keeps_tensors_and_single_process_numerics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3),
                          nn.BatchNorm1d(3, affine=False))
    reference = nn.Sequential(*[m for m in model])          # same modules, before conversion
    bn_weight = model[1].weight
    x = torch.randn(5, 2, 4, 4)
    ref_out = reference(x).detach().clone()
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ref_state)
    convert_to_distributed_batchnorm(model)
    assert isinstance(model[1], DistributedBatchNorm) and isinstance(model[5], DistributedBatchNorm)
    assert model[1].weight is bn_weight                      # an optimizer built before still trains it
    assert set(model.state_dict()) == set(ref_state)
    for k, v in ref_state.items():                           # undo the reference pass's running-stat update
        model.state_dict()[k].copy_(v)
    assert torch.allclose(model(x), ref_out, atol=1e-6)
    model.eval()
    assert model(x).shape == (5, 3)
