"""A trained run -> a checkpoint folder for inference.py and scripts/evaluate.py (`checkpoint_dir=OUT`).

    python scripts/export_checkpoint.py run=runs/train base=checkpoints out=checkpoints/ablation_no_rope
    python scripts/export_checkpoint.py run=runs/train step=200000 ema=true out=checkpoints/ablation_no_rope

Writes OUT/KDTalker.pth (the run's model weights in the official layout, no training state), OUT/norm.npz (the
run's statistics), OUT/model.yaml (the run's model config, so that its architecture is rebuilt without overrides)
and links every other weight file of base. Settings: kdtalker/configs/export_checkpoint.yaml.
"""

from __future__ import annotations

from kdtalker.cli import run
from kdtalker.training.export_config import ExportConfig


def main(cfg) -> None:
    """Export the run and say what was written."""
    from kdtalker.errors import ConfigError
    from kdtalker.pipeline.weights import CROP_FILES, WEIGHT_FILES, check_checkpoint_dir, check_weight_file
    from kdtalker.training.export import MODEL_FILE, BaseFiles, export_checkpoint

    if not cfg.out:
        raise ConfigError("out=DIR is required: python scripts/export_checkpoint.py run=RUN_DIR out=checkpoints/NAME")
    specs = {spec.relpath: spec for spec in WEIGHT_FILES if spec.relpath != MODEL_FILE}
    files = BaseFiles(
        required=tuple(specs),
        optional=tuple(CROP_FILES.values()),
        check_file=lambda base, relpath: check_weight_file(base, specs[relpath]),
        check_folder=check_checkpoint_dir,
    )
    result = export_checkpoint(
        cfg.run, cfg.out, cfg.base, files, step=cfg.step, ema=cfg.ema, link=cfg.link, overwrite=cfg.overwrite
    )
    model = dict(result.model_config["model"])
    settings = " ".join(f"{k}={v}" for k, v in model.items() if k != "_target_")
    print(f"{'EMA weights' if result.ema else 'weights'} of {result.checkpoint} (step {result.step})")
    sampler = " + diffusion (its sampler)" if "diffusion" in result.model_config else ""
    print(f"model.yaml: {model['_target_']} {settings}{sampler}")
    if result.link_error:
        print(f"note: symlinks failed in {result.out} ({result.link_error}); the base files were copied")
    print(
        f"wrote {result.out}: KDTalker.pth, norm.npz (of {result.norm}), model.yaml, base files from {cfg.base}: "
        f"{len(result.linked)} linked, {len(result.copied)} copied"
    )


if __name__ == "__main__":
    run(main, "export_checkpoint", ExportConfig, usage=__doc__)
