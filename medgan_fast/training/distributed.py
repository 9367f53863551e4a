"""One process or many: the device and torch.distributed process group of a training run.

``torchrun --nproc_per_node=N -m medgan_fast.train ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; :func:`setup` then joins the group (NCCL with one GPU per process, gloo on CPU)
and :meth:`Distributed.wrap` makes models DistributedDataParallel. A plain ``python -m``
run is a group of one, with no torch.distributed at all. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Distributed", "setup"]


@dataclass
class Distributed:
    """This process's place in the run: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, **ddp_options: Any) -> nn.Module:
        """`module` as DistributedDataParallel (with `ddp_options`) in a group of several, else
        as it is."""
        if not self.enabled:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids, **ddp_options)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each number over the ranks (one all-reduce)."""
        if not self.enabled or not values:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the ranks, in place."""
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def average_gradients_(self, parameters) -> None:
        """Each parameter's .grad replaced by its mean over the ranks, in one all-reduce (a
        parameter without a gradient counts as zeros), for tasks that step their own
        optimizers outside DDP: double backward (R1, path length) does not go through DDP."""
        if not self.enabled:
            return
        parameters = list(parameters)
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in parameters])
        dist.all_reduce(flat)
        flat /= self.world_size
        for p, grad in zip(parameters, flat.split([p.numel() for p in parameters])):
            p.grad.copy_(grad.view_as(p))

    def broadcast_module_(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers in `module` on every rank (what DDP does when it wraps)."""
        if self.enabled:
            with torch.no_grad():
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor, src=0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _want_cuda(n_gpu: int) -> bool:
    return n_gpu > 0 and torch.cuda.is_available()


def setup(n_gpu: int = 1) -> Distributed:
    """Joins the process group torchrun describes (if any) and picks this process's device:
    CUDA (the LOCAL_RANK-th GPU) when n_gpu > 0 and a GPU is visible, else the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = _want_cuda(n_gpu)
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank}: only {torch.cuda.device_count()} CUDA device(s) here; "
                               "start at most one process per GPU")
        torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                device_id=device if cuda else None)
    return Distributed(rank, world_size, local_rank, device)
