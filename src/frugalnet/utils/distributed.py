"""torch.distributed plumbing shared by every study: detect a torchrun launch, ranks, reductions.

The same code path runs single-process: every helper here is a no-op when torch.distributed is not initialised.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_if_launched(device: str = "cpu") -> bool:
    """Initialise the process group from torchrun's environment (gloo on CPU, nccl on CUDA). True if distributed."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce `tensor` over ranks in place ("sum" or "max") and return it; a no-op in a single process. The one
    place frugalnet reduces across processes (k-WTA win counts, context statistics, quantizer amax, metrics)."""
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}
    if op not in ops:
        raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
    if is_distributed():
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few floats over ranks (metrics: loss sums, correct counts)."""
    if not is_distributed():
        return list(values)
    return all_reduce_(torch.tensor(values, dtype=torch.float64)).tolist()


def check_same_on_all_ranks(name: str, tensor: torch.Tensor) -> None:
    """Raise if `tensor` differs between ranks (e.g. sparse masks built from the same seed)."""
    if not is_distributed():
        return
    local = tensor.detach().double().flatten().cpu()
    ref = local.clone()
    dist.broadcast(ref, src=0)
    if not torch.equal(local, ref):
        raise RuntimeError(f"{name} differs between rank 0 and rank {rank()}: every rank must build it from the same "
                           f"seed")
