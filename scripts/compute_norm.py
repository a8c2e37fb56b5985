"""Normalisation statistics of extracted shards: `python scripts/compute_norm.py shards=DIR out=norm.npz`.

Writes the official norm.npz layout (float32 {yaw,pitch,roll,scale}_{mean,std} (1,), t_* (3,), exp_*/kp_* (63,),
c_lip_*/c_eye_* identity placeholders); a channel with zero std gets std 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdtalker.cli import guarded
from kdtalker.data.norm_stats import write_norm
from kdtalker.data.shards import shard_paths
from kdtalker.errors import KDTalkerError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="shards=DIR (training shards, .npz/.mat) out=PATH (norm.npz)")
    args = dict(kv.split("=", 1) for kv in parser.parse_args(argv).overrides if "=" in kv)

    def compute() -> Path:
        if "shards" not in args or "out" not in args:
            raise KDTalkerError("usage: python scripts/compute_norm.py shards=DIR out=norm.npz")
        return write_norm(shard_paths(args["shards"]), args["out"])

    print(f"wrote {guarded(compute)}")


if __name__ == "__main__":
    main()
