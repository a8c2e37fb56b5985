"""Normalisation statistics of extracted shards: `python scripts/compute_norm.py shards=DIR out=norm.npz`.

Writes the official norm.npz layout (float32 {yaw,pitch,roll,scale}_{mean,std} (1,), t_* (3,), exp_*/kp_* (63,),
c_lip_*/c_eye_* identity placeholders); a channel with zero std gets std 1. Face-vid2vid shards (extracted with
renderer=facevid2vid) give their own parts: {yaw,pitch,roll}_* (1,), t_* (3,), exp_*/kp_* (45,). The shards
record their layout: a folder mixing two is refused.
Settings: kdtalker/configs/compute_norm.yaml.
"""

from __future__ import annotations

from kdtalker.cli import run


def main(cfg) -> None:
    """Read every shard, write the statistics."""
    from kdtalker.data.norm_stats import write_norm
    from kdtalker.data.shards import shard_paths
    from kdtalker.errors import ConfigError

    if not cfg.shards or not cfg.out:
        raise ConfigError("usage: python scripts/compute_norm.py shards=DIR out=norm.npz")
    print(f"wrote {write_norm(shard_paths(cfg.shards), cfg.out)}")


if __name__ == "__main__":
    run(main, "compute_norm", usage=__doc__)
