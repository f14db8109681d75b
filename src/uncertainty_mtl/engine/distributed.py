"""One process, or one rank of a ``torchrun`` (or SLURM) job: setup, teardown and the few
collectives the loop needs."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from uncertainty_mtl.errors import ConfigError

__all__ = [
    "Process",
    "all_gather_objects",
    "broadcast_object",
    "check_device",
    "checksum",
    "setup_process",
    "shutdown_distributed",
    "sync_buffers",
]


@dataclass(frozen=True)
class Process:
    """This process's rank, the number of processes and the device it computes on."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def check_device(device: str) -> None:
    """Raises :class:`ConfigError` (key ``run.device``) when this machine lacks the device."""
    wanted = torch.device(device)
    if wanted.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (wanted.index or 0) >= count:
            raise ConfigError(
                f"run.device: {device!r}, but this machine has {count} CUDA device(s) "
                "(use run.device=cpu)"
            )
    elif wanted.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"run.device: {device!r}, but MPS is not available (use run.device=cpu)")


def setup_process(device: str) -> Process:
    """One process, or one rank of a ``torchrun`` job (gloo on CPU, NCCL on CUDA), from the
    environment variables ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Process(0, 1, torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return Process(rank, world, torch.device("cuda", local))
    return Process(rank, world, torch.device(device))


def shutdown_distributed(*, wait: bool = True) -> None:
    """Ends a distributed run cleanly: drops unreferenced DDP objects, waits for every rank
    (``wait``; not after a failure, when the other ranks may never arrive), destroys the process
    group. Left to interpreter shutdown, gloo's worker threads may still hold tensors and abort
    the process."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def sync_buffers(module: nn.Module, proc: Process) -> None:
    """Copies rank 0's buffers (BatchNorm statistics) to every rank. DDP broadcasts them only at
    the start of a forward pass, so after a step each rank holds those of its own batch."""
    if proc.world > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def checksum(module: nn.Module) -> float:
    """Sum of every floating-point entry of the state dict (to compare ranks)."""
    values = module.state_dict().values()
    return float(sum(p.detach().double().sum() for p in values if p.is_floating_point()))


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (just ``[obj]`` outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (``obj`` itself outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder)
    return holder[0]
