"""Training in several processes started by `torchrun`: who this process is, and helpers.

`torchrun --nproc-per-node N -m attd_cli run ...` sets WORLD_SIZE, RANK and LOCAL_RANK;
every process then trains on its share of each batch inside DistributedDataParallel
(gloo on CPU, nccl on GPU), and only rank 0 writes files and evaluates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place: `rank` of `world` processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, shows progress and evaluates."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every process (e.g. the run folder it chose)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def totals(self, *values: float) -> list[float]:
        """The sum of each of `values` over every process, in one collective call."""
        if not self.active:
            return list(values)
        summed = torch.tensor([float(value) for value in values], dtype=torch.float64)
        dist.all_reduce(summed)
        return summed.tolist()


SINGLE = Distributed()
"""One process, no process group."""


def start_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group `torchrun` describes, if any, and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def stop_distributed() -> None:
    """Leave the process group (after this process's last collective call)."""
    if dist.is_initialized():
        dist.destroy_process_group()
