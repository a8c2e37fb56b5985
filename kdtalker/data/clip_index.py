"""The extraction index: one JSON line per finished clip, appended per job to `out/index-RRRRR-of-NNNNN.jsonl`.

A record is appended only after its shard is renamed into place, as one `os.write` of a whole line to a file
opened for appending; a line without its newline (a run killed mid-write) is never counted, and the next writer
ends it first so that its own line starts clean. Readers merge every job's file (the last record of a clip wins):
resuming costs one read of these small files, not a read of every shard.

Record keys: clip (the shard name: the video's path under the input folder, no suffix, '/'-separated), speaker and
video (the first two path components in the VoxCeleb layout `id/video/00001.mp4`, else null), frames (T),
audio_frames (Ta), aligned (min(T - 1, Ta - 2)), bytes (the shard's size: a shorter file is redone), sync_offset
(frames) and sync_conf (SyncNet's, null without SyncNet weights), layout (the motion layout's name; records
without it are LivePortrait's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

INDEX_GLOB = "index-*-of-*.jsonl"


def index_path(out_dir: str | os.PathLike, shard: int, num_shards: int) -> Path:
    """The index file job `shard` of `num_shards` appends to."""
    return Path(out_dir) / f"index-{shard:05d}-of-{num_shards:05d}.jsonl"


def speaker_and_video(clip: str) -> tuple[str | None, str | None]:
    """'id10001/1zcIwhmdeo4/00001' -> ('id10001', '1zcIwhmdeo4'); fewer folders -> None for the missing ones."""
    parts = clip.split("/")[:-1]
    return (parts[0] if parts else None, parts[1] if len(parts) > 1 else None)


def _records(path: Path) -> list[dict[str, Any]]:
    """Whole, parseable lines of one index file; a torn last line (no newline) is left out."""
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # the part after the last newline is torn (or empty)
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a torn line that a later writer ended with a newline
            continue
        if isinstance(record, dict) and isinstance(record.get("clip"), str):
            out.append(record)
    return out


def read_index(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every job's index file under `out_dir` merged -> {clip: record} (last record wins); {} when there is none."""
    merged: dict[str, dict[str, Any]] = {}
    root = Path(out_dir)
    if not root.is_dir():
        return merged
    for path in sorted(root.glob(INDEX_GLOB)):
        for record in _records(path):
            merged[record["clip"]] = record
    return merged


class IndexWriter:
    """Appends whole records to one job's index file (see the module docstring for why a kill cannot tear one)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.fd = -1  # opened on the first record: a run that finishes no clip leaves no file

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        size = os.fstat(self.fd).st_size
        if size:
            with open(self.path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":  # a killed writer's torn line: end it, it stays unparseable and uncounted
                    os.write(self.fd, b"\n")

    def append(self, record: dict[str, Any]) -> None:
        """Write `record` as one line with one system call."""
        if self.fd < 0:
            self._open()
        os.write(self.fd, (json.dumps(record, sort_keys=True) + "\n").encode())

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
