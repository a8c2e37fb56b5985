"""`inference.py renderer=facevid2vid` end to end (paper Table 5's F.V. renderer) on a tiny checkpoint folder.

The folder holds what a Face-vid2vid run reads: SadTalker's safetensors layout (`kp_extractor.*`, `he_estimator.*`,
`generator.*`) of networks with small widths (the renderer's `configs` overridden to match), a 51-d denoiser with its
model.yaml, 51-d norm statistics and Wav2Lip's audio encoder (fixture weights). Crop and frames are the real 256 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from reference import ReferenceSet
from test_inference_e2e import REPO, run_inference, short_speech

from kdtalker.diffusion import MotionNorm
from kdtalker.errors import CheckpointError, ConfigError
from kdtalker.facevid2vid import (
    FACEVID2VID_LAYOUT,
    HeadExpressionEstimator,
    KeypointDetector,
    OcclusionAwareSPADEGenerator,
)
from kdtalker.facevid2vid.checkpoints import PARTS
from kdtalker.media import probe_video
from kdtalker.pipeline.build import default_controls, inference_config, pipeline_arguments
from kdtalker.pipeline.face import FaceCrop, box_matrix, frame_corners
from kdtalker.pipeline.hub import fetch_missing
from kdtalker.pipeline.request import Request
from kdtalker.pipeline.weights import FACEVID2VID_WEIGHTS, NORM_FILE
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT

EXAMPLE = REPO / "examples" / "astronaut.png"
# small widths for every network (the released ones: renderer/facevid2vid.yaml); the 256 px geometry is kept
SMALL_RENDERER = {
    "common": {"feature_channel": 4},
    "kp_detector": {"block_expansion": 4, "max_features": 16, "reshape_channel": 64, "reshape_depth": 4},
    "he_estimator": {"block_expansion": 4, "max_features": 32},
    "generator": {
        "block_expansion": 4,
        "max_features": 16,
        "reshape_channel": 4,
        "reshape_depth": 4,
        "num_resblocks": 1,
        "dense_motion_params": {"block_expansion": 4, "max_features": 16, "reshape_depth": 4},
    },
}
SMALL_MODEL = {"width": 32, "depth": 1, "heads": 2, "head_dim": 16, "motion_dim": FACEVID2VID_LAYOUT.dim}


def _flat(node: dict, prefix: str) -> list[str]:
    out = []
    for key, value in node.items():
        out += _flat(value, f"{prefix}.{key}") if isinstance(value, dict) else [f"{prefix}.{key}={value}"]
    return out


RENDERER_OVERRIDES = ["renderer=facevid2vid", *_flat(SMALL_RENDERER, "renderer.configs")]


def write_facevid2vid_checkpoints(root: Path) -> Path:
    """A Face-vid2vid checkpoint folder of small seeded networks under `root` -> root."""
    from hydra.utils import instantiate
    from safetensors.torch import save_file

    torch.manual_seed(0)
    configs = OmegaConf.to_container(
        OmegaConf.merge(OmegaConf.load(REPO / "kdtalker/configs/renderer/facevid2vid.yaml").configs, SMALL_RENDERER)
    )
    builders = {
        "kp_detector": KeypointDetector,
        "he_estimator": HeadExpressionEstimator,
        "generator": OcclusionAwareSPADEGenerator,
    }
    # their PyTorch initialisation (BatchNorm statistics 0 and 1): frames vary, motion stays finite
    states = {part: build(**configs["common"], **configs[part]).state_dict() for part, build in builders.items()}
    flat = {PARTS[part][0] + k: v.contiguous() for part, state in states.items() for k, v in state.items()}
    (root / FACEVID2VID_WEIGHTS).parent.mkdir(parents=True)
    save_file(flat, str(root / FACEVID2VID_WEIGHTS))
    model = OmegaConf.merge(OmegaConf.load(REPO / "kdtalker/configs/model/kdtalker.yaml"), SMALL_MODEL)
    instantiate(model).save_pretrained(root / "KDTalker.pth")
    OmegaConf.save({"model": model}, root / "model.yaml")
    # statistics of plausible motion: a few degrees of head turn, small translations and expression offsets
    rs = np.random.RandomState(0)
    scale = np.r_[[5.0] * 3, [0.05] * 3, [0.02] * 45].astype(np.float32)
    motion = rs.standard_normal((200, FACEVID2VID_LAYOUT.dim)).astype(np.float32) * scale
    kp = 0.1 * rs.standard_normal((200, FACEVID2VID_LAYOUT.kp_dim)).astype(np.float32)
    MotionNorm.fit(motion, kp, FACEVID2VID_LAYOUT).save(root / NORM_FILE)
    audio = ReferenceSet("audio")
    torch.save({"state_dict": audio.weights("spec_wav2lip_audio_encoder.json")}, root / "wav2lip.pth")
    return root


@pytest.fixture(scope="module")
def facevid2vid_checkpoints(tmp_path_factory) -> Path:
    return write_facevid2vid_checkpoints(tmp_path_factory.mktemp("facevid2vid_checkpoints"))


def test_inference_writes_a_facevid2vid_video(facevid2vid_checkpoints, tmp_path):
    audio = short_speech(tmp_path / "speech.wav", 0.08)
    output = tmp_path / "out.mp4"
    result = run_inference(
        *RENDERER_OVERRIDES,
        f"checkpoint_dir={facevid2vid_checkpoints}",
        f"source_image={EXAMPLE}",
        f"driven_audio={audio}",
        f"output={output}",
        "steps=2",
        "device=cpu",
        "paste_back=true",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    info = probe_video(output)
    # 2 frames, the renderer's 256 px frames pasted back into the 512 x 512 portrait, with the speech as sound (the
    # 256 px frames themselves: tests/test_eval_e2e.py::test_table5_rows_run_each_renderer)
    assert (info["frames"], info["width"], info["height"]) == (2, 512, 512)
    assert (info["video_codec"], info["audio_codec"]) == ("h264", "aac")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_motion_dim_must_fit_the_renderer_layout():
    """The composed model (70-d) with renderer=facevid2vid (51-d) is one ConfigError naming both sizes."""
    with pytest.raises(ConfigError, match="model.motion_dim=70 does not fit renderer=facevid2vid.*51-d"):
        pipeline_arguments(inference_config("renderer=facevid2vid"))
    arguments, _ = pipeline_arguments(inference_config("renderer=facevid2vid", "model.motion_dim=51"))
    assert arguments["layout"] == FACEVID2VID_LAYOUT
    assert pipeline_arguments(inference_config())[0]["layout"] == LIVEPORTRAIT_LAYOUT


@pytest.mark.parametrize(
    "settings, inputs, message",
    [
        ({"stitching": True}, {}, "stitching=true: stitching is LivePortrait's"),
        ({"control": {"lips": "video"}}, {"driving_video": "v.mp4"}, "control.lips=video: its 15 keypoints"),
        ({"control": {"pose": "still"}}, {}, "control.*: region control"),
        ({"motion_mode": "relative"}, {}, "motion_mode=relative"),
        ({"silence": {"detector": "webrtc"}}, {}, "silence.detector=webrtc"),
        ({"keyframes": "loop"}, {}, "keyframes"),
        ({}, {"motion_file": "m.npz"}, "motion_file"),
        ({}, {"save_motion": "m.npz"}, "save_motion"),
    ],
)
def test_controls_without_meaning_for_facevid2vid_are_refused(settings, inputs, message, tmp_path):
    controls = default_controls(**settings)
    request = Request(controls, EXAMPLE, "speech.wav", output=tmp_path / "out.mp4", **inputs)
    request.check_layout(LIVEPORTRAIT_LAYOUT)  # LivePortrait takes every control
    with pytest.raises(ConfigError, match=f"^renderer=facevid2vid does not take {message}"):
        request.check_layout(FACEVID2VID_LAYOUT)


def test_paste_back_matrix_of_256_px_frames():
    """A 256 px frame covers the same region of the image as the 512 px frame of the same crop."""
    box = (10.0, 20.0, 210.0, 260.0)
    crop = FaceCrop(np.zeros((256, 256, 3), np.uint8), box_matrix(box), np.zeros((0, 2)), box, 1)
    assert crop.frame_matrix(512) is crop.matrix
    np.testing.assert_allclose(frame_corners(crop.frame_matrix(256), 256), frame_corners(crop.matrix), atol=1e-12)
    np.testing.assert_allclose(crop.frame_matrix(256), box_matrix(box, 256), atol=1e-12)


def test_hub_names_where_the_facevid2vid_weights_come_from(facevid2vid_checkpoints, tmp_path):
    """A Face-vid2vid folder needs no LivePortrait file (nothing fetched); its renderer file is not on the Hub."""
    weights = facevid2vid_checkpoints / FACEVID2VID_WEIGHTS
    assert fetch_missing(facevid2vid_checkpoints, layout=FACEVID2VID_LAYOUT, renderer_weights=weights) == []
    with pytest.raises(CheckpointError, match="OpenTalker/SadTalker.*not on the KDTalker Hub"):
        fetch_missing(tmp_path, layout=FACEVID2VID_LAYOUT, renderer_weights=tmp_path / FACEVID2VID_WEIGHTS)


def test_a_facevid2vid_pipeline_refuses_live_sessions(facevid2vid_checkpoints):
    from kdtalker.pipeline import TalkingHeadPipeline

    cfg = inference_config(*RENDERER_OVERRIDES, checkpoint_dir=str(facevid2vid_checkpoints), device="cpu")
    pipe = TalkingHeadPipeline.from_config(cfg)
    assert pipe.layout == FACEVID2VID_LAYOUT and pipe.models is None
    with pytest.raises(ConfigError, match="a live session composes LivePortrait's motion; renderer=facevid2vid"):
        pipe.live(EXAMPLE)
    assert pipe.models is None  # refused before any model was loaded


def test_broken_frames_name_the_renderer_that_made_them(tmp_path):
    # NaN or one-colour frames point at the weights of the renderer that rendered them, not always LivePortrait's.
    from kdtalker.errors import KDTalkerError
    from kdtalker.pipeline.frames import check_frames
    from kdtalker.pipeline.weights import renderer_weights

    flat = torch.tensor([[False, False], [False, True]])
    weights = tmp_path / "facevid2vid" / "SadTalker_V0.0.2_256.safetensors"
    with pytest.raises(KDTalkerError, match="rendered frame 8 is a single flat colour") as caught:
        check_frames(flat, 7, renderer_weights(tmp_path, FACEVID2VID_LAYOUT, weights))
    assert str(weights) in str(caught.value) and "LivePortrait" not in str(caught.value)
    assert str(tmp_path / NORM_FILE) in str(caught.value)
    with pytest.raises(KDTalkerError, match=r"NaN.*the LivePortrait weights under .*liveportrait"):
        check_frames(torch.tensor([[True, False]]), 0, renderer_weights(tmp_path))
