"""torchrun support: process-group set-up from the environment and a DistributedSampler that can resume mid-epoch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from kdtalker.device import resolve_device


@dataclass
class DistInfo:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False  # in a torchrun process group (also with one process: DDP then runs as it does on many)

    @property
    def enabled(self) -> bool:
        return self.joined or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (a one-item list without torchrun)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) when torchrun started this process, also as
    its only process -> (info, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, joined=True), device


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group (no-op without torchrun)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffle per (seed, epoch), drop_last) that can skip the first `skip` indices of an epoch.

    With `with_epoch` it yields (epoch, index) pairs: persistent DataLoader workers hold copies of the dataset made
    once, so the epoch (which decides each window) must travel with the index.
    """

    def __init__(
        self, dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True, with_epoch: bool = False
    ) -> None:
        super().__init__(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.skip = 0
        self.with_epoch = with_epoch

    def __iter__(self) -> Iterator[Any]:
        indices = list(super().__iter__())[self.skip :]
        return iter([(self.epoch, i) for i in indices] if self.with_epoch else indices)

    def __len__(self) -> int:
        return self.num_samples - self.skip
