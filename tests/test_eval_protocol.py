"""The protocol's bookkeeping: skipped videos counted per metric and shown under the tables, the FID distance
passed through to the row values, choice settings validated before any work, and FID's real-frame framing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from kdtalker.config import CONFIG_DIR
from kdtalker.errors import ConfigError
from kdtalker.eval import tables
from kdtalker.eval.fid import FIDInceptionV3, fid_from_features, image_features, resized_frame_matrix, warp_frames
from kdtalker.eval.protocol import Evaluation, aggregate, check_settings
from kdtalker.media import read_video, write_video
from kdtalker.pipeline.face import crop_face
from kdtalker.pipeline.image import load_image

REPO = Path(__file__).resolve().parent.parent


def _per_video(**lists) -> dict:
    base = {m: [] for m in ("lse", "pose", "cpbd", "csim", "beat_align", "fid", "fps")}
    return {**base, **lists}


def _pose(stds):
    return {"detections": 5, "std_logits": stds, "std_degrees": stds}


def test_skipped_videos_are_counted_and_left_out_of_the_means():
    per_video = _per_video(
        lse=[{"conf": 2.0, "min_dist": 8.0}, {"skipped": "too short", "frames": 3}, {"conf": 4.0, "min_dist": 6.0}],
        pose=[{"detections": 0, "std_logits": None, "std_degrees": None}, _pose([1.0, 2.0, 3.0]), _pose([3, 2, 1])],
        csim=[0.5, {"skipped": "no face"}, None],  # None: a value cached before skips carried their reason
        beat_align=[0.25, 0.75, 0.5],
    )
    values = aggregate(per_video, {}, videos=3)
    assert values["lse_c"] == 3.0 and values["lse_d"] == 7.0 and values["csim"] == 0.5 and values["beat_align"] == 0.5
    assert values["diversity"] == 2.0
    assert values["videos"] == 3
    assert values["skipped"] == {"lse": 1, "diversity": 1, "csim": 2}  # only metrics that skipped something
    assert values["skip_reasons"] == {"lse": "too short", "diversity": "no face", "csim": "no face"}

    md = tables.to_markdown("T", [("Ours", values)])
    assert md.endswith(
        "\n\nSkipped videos: LSE 1 of 3 (too short); Diversity 1 of 3 (no face); CSIM 2 of 3 (no face)\n"
    )
    clean = aggregate(_per_video(csim=[0.5, 0.7]), {}, videos=2)
    assert "skipped" not in clean and "Skipped" not in tables.to_markdown("T", [("Ours", clean)])
    two = tables.to_markdown("T", [("A", values), ("B", clean)])
    assert "Skipped videos (A): LSE 1 of 3" in two and "(B)" not in two
    lines = tables.to_csv([("A", values), ("B", clean)], ["csim"]).splitlines()
    assert lines == [
        "Method,CSIM,Skipped",
        "A,0.5,LSE 1 of 3 (too short); Diversity 1 of 3 (no face); CSIM 2 of 3 (no face)",
        "B,0.6,",
    ]


def test_every_video_skipped_leaves_the_cell_empty():
    values = aggregate(_per_video(lse=[{"skipped": "too short"}], beat_align=[{"skipped": "no audio beats"}]), {})
    assert values["lse_c"] is None and values["beat_align"] is None
    assert tables.skipped_text(values) == "LSE 1 (too short); BA 1 (no audio beats)"  # no total given
    assert "| T | - | - |" in tables.to_markdown("x", [("T", values)], ["lse_c", "beat_align"])


def test_fid_distance_is_passed_through(tmp_path):
    rs = np.random.RandomState(0)
    real, gen = rs.randn(40, 6), rs.randn(30, 6) * 1.5 + 0.3
    np.save(tmp_path / "r.npy", real), np.save(tmp_path / "g.npy", gen)
    per_video = _per_video(fid=[(str(tmp_path / "g.npy"), str(tmp_path / "r.npy"))])
    assert aggregate(per_video, {})["fid"] == fid_from_features(real, gen, "sqrtm")
    assert aggregate(per_video, {}, fid_distance="eigh")["fid"] == fid_from_features(real, gen, "eigh")
    with pytest.raises(ConfigError, match="fid.distance"):
        aggregate(per_video, {}, fid_distance="svd")


def test_generation_fps_column_and_a_rows_fixed_fps():
    fps = [{"frames": 50, "wall_seconds": 10.0, "generation_seconds": 2.0}]
    assert aggregate(_per_video(fps=fps), {}) == {"fps": 25.0, "fps_wall": 5.0}
    assert aggregate(_per_video(fps=fps), {"fps": 1.9})["fps"] == 1.9  # another method's published speed
    assert tables.COLUMNS["fps"][0] == "FPS (gen)" and tables.COLUMNS["fps_wall"][0] == "FPS (wall)"


@pytest.mark.parametrize(
    "override, message",
    [
        ("fid.distance=svd", "fid.distance='svd' is not valid"),
        ("fid.real_crop=face", "fid.real_crop"),
        ("lse.frames=png", "lse.frames"),
        ("lse.audio=sync", "lse.audio"),
        ("lse.crop=s3fd", "lse.crop"),
        ("csim.landmarks=scrfd", "SCRFD's five keypoints are not decoded"),
    ],
)
def test_bad_choice_settings_raise_before_any_work(override, message):
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    check_settings(cfg)  # the shipped config is valid
    cfg.merge_with_dotlist([override, "videos=/nonexistent"])
    with pytest.raises(ConfigError, match=message):
        Evaluation(cfg)


def test_fid_real_frames_cropped_as_the_reference(tmp_path):
    face = cv2.resize(load_image(REPO / "examples" / "astronaut.png"), (320, 240))
    (tmp_path / "gt").mkdir()
    sf.write(tmp_path / "a.wav", 0.1 * np.sin(np.arange(3200) / 5.0), 16000)
    frames_in = np.stack([np.roll(face, 3 * t, axis=1) for t in range(4)])
    write_video(tmp_path / "gt" / "clip.mp4", frames_in, audio=tmp_path / "a.wav")
    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    cfg.merge_with_dotlist([f"videos={tmp_path / 'gt'}", f"output_dir={tmp_path / 'out'}", "device=cpu"])
    cfg.merge_with_dotlist(["fid.dims=64", "fid.real_crop=source", "seconds=0.16"])
    ev = Evaluation(cfg)
    # the framing is under test, not the network: torch's default init (seeded) stands in for the weight file
    ev.scorer.__dict__["inception"] = FIDInceptionV3().eval()
    clip = ev.clips[0]
    generated = write_video(tmp_path / "gen.mp4", np.zeros((2, 128, 96, 3), np.uint8))  # 96 wide, 128 high

    path = Path(ev._fid_real(clip, generated))
    assert path.name == "clip.real_fid64_crop96x128.npy"
    # expected: the pipeline's crop of the reference frame, applied to every real frame at the generated size
    matrix = crop_face(load_image(clip.reference), face_index=0).matrix
    frames = read_video(clip.video, fps=25.0, max_seconds=0.16)
    crops = warp_frames(frames, resized_frame_matrix(matrix, 96, 128), 96, 128)
    assert crops.shape == (4, 128, 96, 3) and crops.std() > 10  # a picture, not the black border
    np.testing.assert_array_equal(np.load(path), image_features(ev.scorer.inception, crops, dims=64))
    # real_crop=none: the native frames, under its own cache entry (and the crop's entry stays)
    cfg.fid.real_crop = "none"
    ev2 = Evaluation(cfg)
    ev2.scorer.__dict__["inception"] = ev.scorer.inception
    native = Path(ev2._fid_real(clip, generated))
    assert native.name == "clip.real_fid64.npy"
    np.testing.assert_array_equal(np.load(native), image_features(ev.scorer.inception, frames, dims=64))
    cache = (tmp_path / "out" / "inputs" / "clip.metrics.json").read_text()
    assert '"fid_features_crop96x128"' in cache and '"real_crop": "source"' in cache and '"real_crop": "none"' in cache


def test_every_configured_row_composes_with_the_inference_config():
    from hydra import compose, initialize_config_dir

    cfg = OmegaConf.load(CONFIG_DIR / "evaluate.yaml")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for table in cfg.tables:
            for row in table.rows:
                composed = compose(
                    "inference", overrides=[o for o in row.overrides if not o.startswith("checkpoint_dir")]
                )
                one_pass = composed.diffusion._target_.endswith("OneStepSampler")
                assert one_pass == (composed.generator.kind != "diffusion"), row.label
                assert one_pass == row.name.startswith("table4_"), row.label
