"""torchrun support for training: the process-group set-up (kdtalker.distributed) and a DistributedSampler that can
resume mid-epoch."""

from __future__ import annotations

from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler

from kdtalker.distributed import DistInfo, cleanup_distributed, setup_distributed

__all__ = ["DistInfo", "ResumableSampler", "cleanup_distributed", "setup_distributed"]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffle per (seed, epoch), drop_last) that can skip the first `skip` indices of an epoch."""

    def __init__(self, dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True) -> None:
        super().__init__(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip
