"""The `hop` and `keyframes` controls through the pipeline, on the test doubles of test_pipeline_generate.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_pipeline_generate import EXAMPLE, pipeline, speech  # noqa: F401 - pipeline is a fixture

import kdtalker.pipeline.motion as motion_module
from kdtalker.diffusion.motion import POSE
from kdtalker.errors import ConfigError
from kdtalker.media import probe_video
from kdtalker.pipeline.build import default_controls
from kdtalker.pipeline.keyframes import LOOP, Keyframe, keyframes_of
from kdtalker.pipeline.motion import source_motion
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT


def test_generate_passes_hop_to_the_sampler(pipeline, tmp_path, monkeypatch):  # noqa: F811
    seen = []
    real = motion_module.motion_windows

    def spy(*args, **kwargs):
        seen.append(kwargs["hop"])
        windows = list(real(*args, **kwargs))
        seen.append(len(windows))
        yield from windows

    monkeypatch.setattr(motion_module, "motion_windows", spy)
    out = pipeline.generate(EXAMPLE, speech(tmp_path / "a.wav", 2.95), tmp_path / "out.mp4", hop=16)
    assert probe_video(out)["frames"] == 73
    assert seen == [16, 2]  # 73 frames: the window at 0, then one at 16 (its last 16 frames reach past 73)
    assert pipeline.controls.hop is None  # the YAML's default: the model's window (64: the official sampling)


def test_hop_in_the_motion_maker(pipeline):  # noqa: F811
    features = torch.randn(90, 512, generator=torch.Generator().manual_seed(1))
    info, ctl = pipeline.models.renderer.info, pipeline.controls
    base = pipeline.motion_maker.sample(info, features, ctl)
    assert torch.equal(pipeline.motion_maker.sample(info, features, replace(ctl, hop=64)), base)
    short = pipeline.motion_maker.sample(info, features, replace(ctl, hop=8))
    assert short.shape == (90, 70) and torch.equal(
        short, pipeline.motion_maker.sample(info, features, replace(ctl, hop=8))
    )
    assert not torch.equal(short, base)
    # the first window is the same sampling; only the smoothing near its end sees the different frames after it
    torch.testing.assert_close(short[:48], base[:48], rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [0, 65, 2.5, "16", True])
def test_a_bad_hop_is_one_config_error(pipeline, tmp_path, bad):  # noqa: F811
    out = tmp_path / "out.mp4"
    with pytest.raises(ConfigError, match=r"^hop=") as caught:
        pipeline.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.2), out, hop=bad)
    assert "\n" not in str(caught.value) and not out.exists()


def test_loop_keyframes_hold_the_source_pose_at_both_ends(pipeline):  # noqa: F811
    features = torch.randn(70, 512, generator=torch.Generator().manual_seed(2))
    info, ctl = pipeline.models.renderer.info, pipeline.controls
    raw = source_motion(info, LIVEPORTRAIT_LAYOUT)
    free = pipeline.motion_maker.sample(info, features, ctl)
    for hop in (64, 16):
        for smoothing in (1.0, 0.0):
            looped = pipeline.motion_maker.sample(
                info, features, replace(ctl, hop=hop, keyframes=LOOP, smoothing=smoothing)
            )
            assert torch.equal(looped[0, POSE], raw[POSE]) and torch.equal(looped[-1, POSE], raw[POSE])
            assert looped.shape == (70, 70) and not torch.allclose(looped, free)
    assert not torch.allclose(free[-1, POSE], raw[POSE])  # without keyframes the clip ends elsewhere
    at = pipeline.motion_maker.sample(
        info, features, replace(ctl, keyframes=keyframes_of([{"time": 1.0, "pose": "source"}]))
    )
    assert torch.equal(at[25, POSE], raw[POSE])  # a pose at a given time: 1 s = frame 25 at 25 fps


def test_the_keyframes_setting():
    assert default_controls().keyframes == () and default_controls().hop is None
    assert default_controls(keyframes="loop").keyframes == LOOP
    listed = default_controls(keyframes=[{"time": "start", "pose": "source"}, {"time": 2, "pose": "source"}])
    assert listed.keyframes == (Keyframe("start", "source"), Keyframe(2.0, "source"))
    assert default_controls(hop=16).hop == 16
    assert default_controls().updated({"keyframes": "loop"}, torch.device("cpu")).keyframes == LOOP
    for bad in ("loops", [{"time": -1, "pose": "source"}], [{"time": 1, "pose": "smile"}], [{"at": 1}], 3):
        with pytest.raises(ConfigError, match="^keyframes"):
            keyframes_of(bad)
    with pytest.raises(ConfigError, match="hop"):
        default_controls(hop="x")
    with pytest.raises(ConfigError, match="keyframes: time 9 s is past the clip's last frame"):
        Keyframe(9.0, "source").frame(100, 25)
