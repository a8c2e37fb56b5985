"""torchrun support shared by every stage that runs on several processes (training, evaluation).

- `setup_distributed` joins the process group torchrun describes in the environment (and does nothing without
  torchrun: one process, rank 0 of 1, so single-process runs are unchanged);
- `shard` is the stable split of a sorted list over the ranks (item i -> rank i % world);
- `DistInfo.gather_json` exchanges JSON-able values (no pickle);
- `run_on_every_rank` runs one rank's share and stops every rank when any rank fails, so that no rank waits
  forever for one that will never arrive.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from kdtalker.device import resolve_device
from kdtalker.errors import KDTalkerError, PeerFailed

T = TypeVar("T")


class DistributedError(KDTalkerError):
    """The ranks of a torchrun job lost contact (a rank stopped, or waited longer than its timeout)."""


@dataclass
class DistInfo:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False  # in a torchrun process group (also with one process: DDP then runs as it does on many)

    @property
    def enabled(self) -> bool:
        """True when collective calls are needed (torchrun started this process)."""
        return self.joined or self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints and writes what the job shares."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op without torchrun)."""
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (a one-item list without torchrun)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather_json(self, value: Any) -> list[Any]:
        """Every rank's JSON-able `value`, in rank order, sent as JSON text (a one-item list without torchrun)."""
        if not self.enabled:
            return [json.loads(json.dumps(value))]  # the same round trip as on several ranks: tuples become lists
        data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
        longest = max(int(s) for s in sizes)
        # all_gather needs tensors of one size: pad to the longest, cut each back to its own length
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: data.numel()] = data
        parts = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return [json.loads(p[: int(n)].numpy().tobytes().decode()) for p, n in zip(parts, sizes)]


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This rank's share of `items`: item i goes to rank i % world_size (stable; empty when world > len(items))."""
    return list(items[info.rank :: info.world_size])


def setup_distributed(
    device_name: str, backend: str | None = None, timeout_minutes: float | None = None
) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group when torchrun started this process, also as its only process -> (info,
    device): on CUDA each rank takes its local GPU (cuda:LOCAL_RANK). `backend` None = NCCL on CUDA, gloo on CPU;
    `timeout_minutes` None = torch's default wait for a collective."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return DistInfo(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = resolve_device(f"cuda:{local_rank}")  # a clear error when a node has fewer GPUs than processes
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        options: dict[str, Any] = {"backend": backend or ("nccl" if device.type == "cuda" else "gloo")}
        if timeout_minutes is not None:
            options["timeout"] = timedelta(minutes=float(timeout_minutes))
        dist.init_process_group(**options)
    return DistInfo(rank, world_size, local_rank, joined=True), device


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group (no-op without torchrun)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def run_on_every_rank(
    info: DistInfo, work: Callable[[], Any], what: str = "its share", timeout_setting: str = "the timeout"
) -> list[Any]:
    """Run `work()` (this rank's share) on every rank -> every rank's JSON-able result, in rank order.

    A failure anywhere stops every rank at the exchange that follows: the lowest failing rank raises its own error
    (its one line, or its traceback), every other rank raises PeerFailed (exit 1 without a line of its own), so
    the job prints each failure once and no rank waits for a rank that stopped. A rank that waits longer than the
    process group's timeout (named by `timeout_setting` in the message) stops with a DistributedError."""
    if not info.enabled:
        return [work()]
    failure: Exception | None = None
    result = None
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - reported to the other ranks, then raised again below
        failure = exc
    report = None if failure is None else f"{type(failure).__name__}: {failure}"
    try:
        gathered = info.gather_json({"failure": report, "result": result})
    except RuntimeError as exc:  # gloo/NCCL: a peer's connection closed, or the wait timed out
        raise DistributedError(
            f"rank {info.rank} lost contact with the other ranks after {what} ({exc}); "
            f"a rank stopped (see its error) or took longer than {timeout_setting}"
        ) from failure
    failed = [r for r, g in enumerate(gathered) if g["failure"] is not None]
    if failed:
        if failed[0] == info.rank and failure is not None:
            raise failure
        raise PeerFailed(f"rank {failed[0]} failed during {what}: {gathered[failed[0]]['failure']}")
    return [g["result"] for g in gathered]
