"""Which clips a process extracts: a stable share of the sorted clip list, by torchrun rank or by job-array index."""

from __future__ import annotations

import itertools
import os
from typing import Callable, Hashable, Mapping, Sequence, TypeVar

from kdtalker.errors import ConfigError

T = TypeVar("T")


def job_position(
    shard: int | None, num_shards: int | None, env: Mapping[str, str] = os.environ
) -> tuple[int, int, int]:
    """(shard, num_shards, local_rank): given values, else torchrun's RANK / WORLD_SIZE / LOCAL_RANK, else (0, 1, 0)."""
    if (shard is None) != (num_shards is None):
        raise ConfigError("give both shard=i and num_shards=n (a job array), or neither")
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if shard is None:
        shard, num_shards = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard={shard} num_shards={num_shards}: need 0 <= shard < num_shards")
    return int(shard), int(num_shards), local_rank


def job_share(items: Sequence[T], shard: int, num_shards: int, group: Callable[[T], Hashable] | None = None) -> list[T]:
    """This job's items of a sorted list: the same list always splits the same way, and the shares are disjoint.

    With `group` (the video folder), whole groups go to one job each (in list order, each to the job with the
    fewest items so far): no two jobs then write into one folder, which on a file system shared by several nodes
    keeps one node from clearing another's temporary files as those of a dead process. With fewer groups than
    jobs (a flat folder), or without `group`, every `num_shards`-th item from `shard` on.
    """
    groups = [list(g) for _, g in itertools.groupby(items, key=group)] if group is not None else []
    if len(groups) < num_shards:
        return list(items[shard::num_shards])
    counts = [0] * num_shards
    mine: list[T] = []
    for members in groups:
        job = counts.index(min(counts))
        counts[job] += len(members)
        if job == shard:
            mine += members
    return mine
