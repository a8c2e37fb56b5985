"""Motion layouts: LivePortrait's (T, 70) as the diffusion package names it, Face-vid2vid's (T, 51), the denoiser
sized by a layout, and Face-vid2vid's driving keypoints from a motion vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtalker.diffusion import Denoiser
from kdtalker.diffusion import motion as lp_motion
from kdtalker.facevid2vid.keypoints import headpose_to_degrees, transform_keypoints
from kdtalker.facevid2vid.layout import FACEVID2VID_LAYOUT, driving_keypoints
from kdtalker.renderer.layout import LIVEPORTRAIT_LAYOUT


def test_liveportrait_layout_matches_the_diffusion_constants():
    layout = LIVEPORTRAIT_LAYOUT
    assert layout.dim == lp_motion.MOTION_DIM and layout.kp_dim == lp_motion.KP_DIM
    spans = tuple((name, layout.slice(name).start, layout.slice(name).stop) for name, _ in layout.parts)
    assert spans == lp_motion.MOTION_LAYOUT
    assert layout.slice("scale") == lp_motion.SCALE and layout.slice("exp") == lp_motion.EXPRESSION
    assert layout.span("yaw", "roll") == lp_motion.ANGLES and layout.span("yaw", "t") == lp_motion.POSE
    assert layout.region_channels() == lp_motion.REGION_CHANNELS


def test_facevid2vid_layout():
    layout = FACEVID2VID_LAYOUT
    assert layout.dim == 51 and layout.kp_dim == 45
    assert layout.slice("t") == slice(3, 6) and layout.slice("exp") == slice(6, 51)
    regions = layout.region_channels()
    assert regions["pose"] == list(range(6)) and regions["expression"] == list(range(6, 51))
    parts = {
        "yaw": torch.randn(4),
        "pitch": torch.randn(4, 1),
        "roll": torch.randn(4),
        "t": torch.randn(4, 3),
        "exp": torch.randn(4, 15, 3),
    }
    motion = layout.pack(**parts)
    assert motion.shape == (4, 51)
    for name, value in layout.unpack(motion).items():
        assert torch.equal(value, parts[name].reshape(4, -1))
    with pytest.raises(ValueError, match="51 channels"):
        layout.unpack(torch.zeros(4, 70))
    with pytest.raises(KeyError, match="scale"):
        layout.slice("scale")
    assert layout.pack(**{k: v.numpy() for k, v in parts.items()}).shape == (4, 51)  # numpy too


def test_denoiser_size_follows_the_layout():
    """A Face-vid2vid model is the same network with motion_dim = its layout's 51 channels."""
    small = dict(audio_dim=16, width=32, depth=1, heads=2, head_dim=16, time_dim=16, rotary_dim=4, window=8)
    for layout in (LIVEPORTRAIT_LAYOUT, FACEVID2VID_LAYOUT):
        model = Denoiser(motion_dim=layout.dim, **small).eval()
        x_t, previous, canonical = torch.randn(2, 8, layout.dim), torch.randn(2, layout.dim), torch.randn(2, layout.dim)
        with torch.no_grad():
            eps = model(x_t, torch.tensor([3, 7]), torch.randn(2, 8, 16), previous, canonical)
        assert eps.shape == (2, 8, layout.dim)


def test_driving_keypoints_compose_R_kp_plus_t_plus_exp():
    torch.manual_seed(1)
    canonical = 0.3 * torch.randn(1, 15, 3)
    logits = {k: torch.randn(5, 66) for k in ("yaw", "pitch", "roll")}
    degrees = {k: headpose_to_degrees(v) for k, v in logits.items()}
    t, exp = 0.1 * torch.randn(5, 3), 0.02 * torch.randn(5, 45)
    motion = FACEVID2VID_LAYOUT.pack(**degrees, t=t, exp=exp)
    full = driving_keypoints(canonical, motion, (0, 1, 2))
    expected = transform_keypoints(canonical, degrees["yaw"], degrees["pitch"], degrees["roll"], t, exp)
    torch.testing.assert_close(full, expected, rtol=0, atol=0)
    only_y = driving_keypoints(canonical, motion, (1,))
    torch.testing.assert_close(only_y - full, -(t * torch.tensor([1.0, 0.0, 1.0]))[:, None].expand(5, 15, 3))
    # zero pose and expression: the canonical keypoints themselves
    rest = driving_keypoints(canonical, torch.zeros(1, 51), (0, 1, 2))
    np.testing.assert_allclose(rest.numpy(), canonical.numpy(), atol=0)
