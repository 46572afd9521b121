"""BatchNorm whose batch statistics span every rank, on CPU (gloo) as well as GPU.

torch.nn.SyncBatchNorm runs on GPUs only. Under torchrun the study runner swaps every BatchNorm for this module, so a
2-process run normalises with the statistics of the whole global batch, exactly like a 1-process run. The sums are
all-reduced with torch.distributed.nn's differentiable all_reduce, so gradients flow through the global statistics
too. Single-process (or in eval mode) it is plain batch norm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

_GROUP = None


def _stats_group():
    """A process group of its own, so these all-reduces never interleave with DDP's gradient buckets."""
    global _GROUP
    if _GROUP is None:
        _GROUP = dist.new_group()
    return _GROUP


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for BatchNorm1d/2d (same parameters, buffers and state_dict keys) with statistics over all ranks."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"DistributedBatchNorm expects (batch, channels, ...) input, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum(dims), (x * x).sum(dims), count])
        total = all_reduce(local, group=_stats_group())
        c = x.shape[1]
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_to_distributed_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm1d/2d/3d in `model` (in place) for DistributedBatchNorm, keeping its state."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, DistributedBatchNorm):
                new = DistributedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                           child.track_running_stats)
                # Share the very same tensors, so an optimizer built before the swap still trains them.
                for pname, param in child.named_parameters(recurse=False):
                    setattr(new, pname, param)
                for bname, buf in child.named_buffers(recurse=False):
                    new.register_buffer(bname, buf)
                new.train(child.training)
                setattr(parent, name, new)
    if dist.is_available() and dist.is_initialized():
        _stats_group()   # every rank creates the group together, before training starts
    return model
