"""The renderer as ONNX graphs: `python scripts/export_renderer.py out=DIR [batch=N] [opset=N]`.

Writes DIR/warp_decode.onnx (warping + SPADE decoder), DIR/appearance.onnx, DIR/motion.onnx and DIR/export.json
(opset, batch, inputs and outputs) from the official LivePortrait weights in checkpoint_dir/liveportrait; batch=null
(the default) gives a dynamic batch axis. With verify=true the warp+decode graph is run in onnxruntime on the
trace's inputs and its largest difference from PyTorch is printed. Settings: kdtalker/configs/export_renderer.yaml.
"""

from __future__ import annotations

from kdtalker.cli import run


def main(cfg) -> None:
    """Build the renderer from the config, export its graphs and say what was written."""
    from omegaconf import OmegaConf

    from kdtalker.errors import ConfigError
    from kdtalker.renderer import LivePortraitRenderer
    from kdtalker.renderer.export import export_renderer, verify_warp_decode

    if not cfg.out:
        raise ConfigError("out=DIR is required: python scripts/export_renderer.py out=exported")
    if cfg.batch is not None and int(cfg.batch) < 1:
        raise ConfigError(f"batch={cfg.batch} must be null (dynamic) or a positive number of frames")
    options = OmegaConf.to_container(cfg.renderer, resolve=True)
    options.pop("_target_")
    # traced in float32 on the CPU from the eager modules, whatever backend the renderer config names
    options.update(device="cpu", dtype="float32", backend="torch", graph=None, stitching=False, compile_modules=False)
    renderer = LivePortraitRenderer.from_checkpoints(**options)
    manifest = export_renderer(renderer, cfg.out, int(cfg.opset), cfg.batch, int(cfg.image_size))
    files = ", ".join(graph["file"] for graph in manifest["graphs"].values())
    print(f"wrote {cfg.out}: {files}, export.json (opset {manifest['opset']}, batch {manifest['batch']}, float32)")
    if cfg.verify:
        error = verify_warp_decode(renderer, cfg.out, int(cfg.image_size), cfg.batch)
        print(f"warp_decode.onnx in onnxruntime vs PyTorch: max |error| {error:.2e} (frames in [0, 1])")


if __name__ == "__main__":
    run(main, "export_renderer", usage=__doc__)
