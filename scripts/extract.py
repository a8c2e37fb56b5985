"""Extract training shards: `python scripts/extract.py videos=DIR out=DIR` (`mat_dir=DIR`: official .mat files).

One .npz per clip with per-frame LivePortrait motion and Wav2Lip audio features (format: kdtalker/data/__init__.py).
"""

from __future__ import annotations

from omegaconf import DictConfig

from kdtalker.cli import run
from kdtalker.data.config import ExtractConfig
from kdtalker.data.extract import extract_folder, import_official
from kdtalker.errors import ConfigError


def extract(cfg: DictConfig) -> str:
    """Wire the config to extract_folder / import_official; returns the summary line."""
    if not cfg.out:
        raise ConfigError("give the shard folder: out=DIR")
    if cfg.mat_dir:
        return import_official(cfg.mat_dir, cfg.out, overwrite=cfg.overwrite).check_any_usable().summary()
    if not cfg.videos:
        raise ConfigError("give the folder of clips: videos=DIR (or mat_dir=DIR for official .mat files)")
    from kdtalker.audio import SAMPLE_RATE, load_audio
    from kdtalker.audio.checkpoint import load_audio_encoder
    from kdtalker.data.extractors import liveportrait_motion_fn, wav2lip_audio_fn
    from kdtalker.device import resolve_device
    from kdtalker.renderer.checkpoints import load_motion_extractor

    device = resolve_device(cfg.device)
    motion_fn = liveportrait_motion_fn(load_motion_extractor(cfg.motion_extractor, device))
    audio_fn = wav2lip_audio_fn(load_audio_encoder(cfg.wav2lip, device), cfg.fps, cfg.audio.batch_size)
    report = extract_folder(
        cfg.videos,
        cfg.out,
        motion_fn,
        audio_fn,
        lambda p: load_audio(p, SAMPLE_RATE, kind="video"),
        fps=cfg.fps,
        size=cfg.size,
        min_frames=cfg.min_frames,
        batch_size=cfg.batch_size,
        overwrite=cfg.overwrite,
    )
    return report.check_any_usable().summary()


if __name__ == "__main__":
    run(lambda cfg: print(extract(cfg)), "extract", ExtractConfig, usage=__doc__)
