"""Pack extracted shards for training: `python scripts/pack.py shards=DIR out=DIR`.

Writes three flat float32 files (motion, canonical keypoints, audio features over each clip's aligned frames) and an
index (name, offset, length, speaker, video, SyncNet offset/confidence) that training maps instead of loading
(kdtalker/data/packed.py); `python train.py data.train_dir=DIR` then reads it. Settings: kdtalker/configs/pack.yaml.
"""

from __future__ import annotations

from kdtalker.cli import run


def main(cfg) -> None:
    """Pack the shards, say where."""
    from kdtalker.data.packed import PackedClips, pack_shards
    from kdtalker.errors import ConfigError

    if not cfg.shards or not cfg.out:
        raise ConfigError("usage: python scripts/pack.py shards=DIR out=DIR")
    packed = PackedClips(pack_shards(cfg.shards, cfg.out))
    print(f"packed {len(packed)} clips ({packed.frames} frames) into {cfg.out}")


if __name__ == "__main__":
    run(main, "pack", usage=__doc__)
