"""torchrun support for training: the process-group set-up (kdtalker.distributed) and a DistributedSampler that can
resume mid-epoch."""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import Dataset, DistributedSampler

from kdtalker.distributed import DistInfo, cleanup_distributed, setup_distributed

__all__ = ["DistInfo", "ResumableSampler", "cleanup_distributed", "setup_distributed"]


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
