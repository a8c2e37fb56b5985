"""Renderer API at small sizes: batching from one source equals frame-by-frame official-style calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixture_weights import fixture_state_dict

from kdtalker.config import CONFIG_DIR
from kdtalker.errors import ImageError
from kdtalker.renderer import (
    AppearanceFeatureExtractor,
    LivePortraitRenderer,
    MotionExtractor,
    SPADEDecoder,
    StitchingRetargetingNetwork,
    WarpingNetwork,
)
from kdtalker.renderer.warping import sample_volume

pytestmark = pytest.mark.usefixtures("one_thread")


def _fixture_init(module: torch.nn.Module, salt: str) -> torch.nn.Module:
    """Fixture-rule weights; spectral-norm u, v set to the top singular vectors, as in a trained file."""
    spec = {"shapes": {k: list(v.shape) for k, v in module.state_dict().items()}}
    state = fixture_state_dict(spec, salt)
    for key in [k for k in state if k.endswith(".weight_orig")]:
        u, _, vh = torch.linalg.svd(state[key].reshape(state[key].shape[0], -1), full_matrices=False)
        state[key[: -len("orig")] + "u"], state[key[: -len("orig")] + "v"] = u[:, 0].contiguous(), vh[0].contiguous()
    module.load_state_dict(state)
    return module


def small_renderer(fold_batchnorm: bool = True, chunk_size: int = 2, **options) -> LivePortraitRenderer:
    """Same architecture, small widths: 64x64 image -> (4, 16, 16, 16) volume -> 128x128 frames."""
    nets = [
        AppearanceFeatureExtractor(
            block_expansion=8, max_features=64, reshape_channel=4, reshape_depth=16, num_resblocks=1
        ),
        MotionExtractor(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
        WarpingNetwork(
            block_expansion=8,
            max_features=64,
            reshape_channel=4,
            dense_motion_params=dict(block_expansion=8, max_features=32, num_blocks=2, reshape_depth=16, compress=2),
        ),
        SPADEDecoder(max_features=32, block_expansion=8),
    ]
    nets = [_fixture_init(n, f"small{i}") for i, n in enumerate(nets)]
    retargeting = torch.nn.ModuleDict(
        {
            "stitching": _fixture_init(StitchingRetargetingNetwork(126, [16], 65), "s"),
            "lip": _fixture_init(StitchingRetargetingNetwork(65, [16], 63), "l"),
            "eye": _fixture_init(StitchingRetargetingNetwork(66, [16], 63), "e"),
        }
    )
    options = {"memory_format": "contiguous", **options}
    return LivePortraitRenderer(*nets, retargeting, chunk_size=chunk_size, fold_batchnorm=fold_batchnorm, **options)


@pytest.fixture(scope="module")
def source():
    rgb = np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)
    r = small_renderer()
    image = r.prepare_image(rgb)
    info = r.keypoint_info(image)
    x_s = r.transform(info)
    gen = torch.Generator().manual_seed(1)
    x_d = x_s + 0.05 * torch.randn(3, 21, 3, generator=gen)
    return rgb, image, info, x_s, x_d


def test_prepare_image_and_keypoint_info(source):
    rgb, image, info, x_s, _ = source
    assert image.shape == (1, 3, 64, 64) and image.dtype == torch.float32
    assert torch.equal(image[0, :, 3, 5], torch.from_numpy(rgb[3, 5].astype(np.float32) / 255))
    assert {k: tuple(v.shape) for k, v in info.items()} == {
        "pitch": (1, 1),
        "yaw": (1, 1),
        "roll": (1, 1),
        "t": (1, 3),
        "exp": (1, 21, 3),
        "scale": (1, 1),
        "kp": (1, 21, 3),
    }
    assert x_s.shape == (1, 21, 3)
    with pytest.raises(ImageError, match=r"\(H, W, 3\)"):
        small_renderer().prepare_image(np.zeros((64, 64), np.uint8))


def test_render_batch_equals_frame_by_frame(source):
    _, image, _, x_s, x_d = source
    r = small_renderer(chunk_size=2)
    f_s = r.appearance_features(image)
    frames = r.render(r.source(f_s, x_s), x_d)
    assert frames.shape == (3, 3, 128, 128) and not frames.requires_grad
    assert 0 <= float(frames.min()) and float(frames.max()) <= 1
    for i in range(3):
        single = r.warp_decode(f_s, x_s, x_d[i : i + 1])["out"]
        torch.testing.assert_close(frames[i : i + 1], single, rtol=1e-4, atol=1e-5)
    repeated = r.warp_decode(f_s.repeat(3, 1, 1, 1, 1), x_s.repeat(3, 1, 1), x_d)["out"]
    torch.testing.assert_close(frames, repeated, rtol=1e-4, atol=1e-5)


def test_encode_source_is_the_source_only_work(source):
    _, image, info, x_s, _ = source
    r = small_renderer()
    encoded = r.encode_source(image)
    assert torch.equal(encoded.f_s, r.appearance_features(image)) and torch.equal(encoded.x_s, x_s)
    assert all(torch.equal(encoded.info[k], v) for k, v in info.items())
    assert torch.equal(encoded.compressed, r.warping.dense_motion_network.compress_source(encoded.f_s))


def test_folded_batchnorm_matches_unfolded(source):
    _, image, _, x_s, x_d = source
    folded, plain = small_renderer(fold_batchnorm=True), small_renderer(fold_batchnorm=False)
    f_s = plain.appearance_features(image)
    torch.testing.assert_close(folded.appearance_features(image), f_s, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        folded.render(folded.source(f_s, x_s), x_d[:2]),
        plain.render(plain.source(f_s, x_s), x_d[:2]),
        rtol=1e-4,
        atol=1e-5,
    )


def test_sampling_one_volume_equals_repeated_volume():
    gen = torch.Generator().manual_seed(2)
    volume = torch.randn(1, 3, 4, 8, 8, generator=gen)
    grids = torch.rand(2, 5, 4, 8, 8, 3, generator=gen) * 2.4 - 1.2
    got = sample_volume(volume, grids)
    expected = F.grid_sample(volume.repeat(10, 1, 1, 1, 1), grids.reshape(10, 4, 8, 8, 3), align_corners=False)
    assert got.shape == (2, 5, 3, 4, 8, 8)
    torch.testing.assert_close(got, expected.view(2, 5, 3, 4, 8, 8), rtol=0, atol=0)


def test_stitching_passthrough_without_module(source):
    _, _, _, x_s, x_d = source
    r = small_renderer()
    assert not torch.equal(r.stitch(x_s, x_d), x_d)
    r.retargeting = None
    assert torch.equal(r.stitch(x_s, x_d), x_d)


def test_pipeline_batch_size_is_the_forward_size(source, tmp_path):
    # The renderer config's chunk_size (4) used to override the pipeline's batch_size; now each render call of
    # the pipeline goes through W and G with batch_size frames, and the renderer's own chunk_size is its default.
    _, image, _, x_s, x_d = source
    r = small_renderer(chunk_size=4)
    f_s = r.appearance_features(image)
    seen: list[int] = []
    forward = r.decoder.forward
    r.decoder.forward = lambda feature: (seen.append(feature.shape[0]), forward(feature))[1]
    x_d = x_d.repeat(4, 1, 1)[:10]  # 10 frames
    r.render(r.source(f_s, x_s), x_d)
    assert seen == [4, 4, 2]
    seen.clear()
    r.render(r.source(f_s, x_s), x_d, chunk_size=8)
    assert seen == [8, 2]

    from hydra import compose, initialize_config_dir
    from test_pipeline_checkpoints import make_fake_checkpoints

    from kdtalker.pipeline import TalkingHeadPipeline

    root = make_fake_checkpoints(tmp_path)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("inference", overrides=[f"checkpoint_dir={root}", "device=cpu", "batch_size=8"])
    pipe = TalkingHeadPipeline.from_config(cfg)
    assert pipe.controls.batch_size == 8 and pipe.renderer_factory.keywords["chunk_size"] == 4
    assert pipe.renderer_factory.keywords["stitching"] is True  # every key of the renderer group is honoured


@pytest.mark.parametrize("dims, factor", [(2, 2), (2, 3), (2, 4), (3, 2)])
def test_conv_after_nearest_upsampling_on_the_small_input(dims, factor):
    """The polyphase conv equals upsample-then-conv (float64: to rounding; the same products, weights summed)."""
    from kdtalker.renderer.layers import conv_nearest_upsampled, polyphase_kernels

    gen = torch.Generator().manual_seed(factor)
    shape = (2, 5, 7, 6) if dims == 2 else (2, 5, 3, 7, 6)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 5, *([3] * dims), generator=gen, dtype=torch.float64)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    conv = F.conv2d if dims == 2 else F.conv3d
    scale = factor if dims == 2 else (1, factor, factor)
    want = conv(F.interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, padding=1)
    got = conv_nearest_upsampled(x, polyphase_kernels(weight, factor), bias, factor, 4)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # taps per output pixel and axis pair: 4 of 9 at x2, 2.25 of 9 at x4 (phases 1, 2 of 4 read one pixel per axis)
    taps = sum(k.shape[0] // 4 * k.shape[-1] * k.shape[-2] for *_, k in polyphase_kernels(weight, factor))
    assert taps == {2: 16, 3: 25, 4: 36}[factor]  # x2: 4 phases x 4 taps; x3: 5 x 5; x4: 6 x 6 (of 9 f^2)


@pytest.mark.parametrize("dims", [2, 3])
def test_polyphase_conv_keeps_the_channels_last_layout(dims):
    """Channels-last weight and input: phase kernels and output stay channels-last (else each call converts them)."""
    from kdtalker.renderer.layers import channels_last_like, conv_nearest_upsampled, layout_of, polyphase_kernels

    gen = torch.Generator().manual_seed(dims)
    x = torch.randn(2, 5, *([3] * (dims - 2)), 7, 6, generator=gen)
    weight, bias = torch.randn(4, 5, *([3] * dims), generator=gen), torch.randn(4, generator=gen)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    kernels = polyphase_kernels(channels_last_like(weight), 2)
    assert all(layout_of(k) == fmt for *_, k in kernels)
    got = conv_nearest_upsampled(channels_last_like(x), kernels, bias, 2, 4)
    assert layout_of(got) == fmt
    torch.testing.assert_close(got, conv_nearest_upsampled(x, polyphase_kernels(weight, 2), bias, 2, 4))


@pytest.mark.parametrize("options", [dict(fuse_ops=False), dict(memory_format="channels_last")])
def test_fast_paths_match_the_official_op_sequence(source, options):
    """Polyphase/shared SPADE convs (default) vs the official op order, and channels_last vs contiguous."""
    _, image, _, x_s, x_d = source
    fast, other = small_renderer(), small_renderer(**options)
    assert other.channels_last == (options.get("memory_format") == "channels_last")
    f_s = fast.appearance_features(image)
    torch.testing.assert_close(
        fast.render(fast.source(f_s, x_s), x_d), other.render(other.source(f_s, x_s), x_d), rtol=1e-4, atol=1e-5
    )


def test_compile_builds_caches_first_and_compiles_one_shape(source, monkeypatch):
    """compile_modules: one function (warping + decoder) is compiled per batch size, after an eager call has built
    every lazy weight cache (so the compiled graph never builds one), and a tail chunk is padded to the compiled
    batch, so a clip of any length compiles one shape. torch.compile itself takes minutes on CPU, so it is replaced
    by a recorder here; the real compile runs in the CUDA tests (pytest -m cuda)."""
    _, image, _, x_s, x_d = source
    compiled, shapes = [], []

    def fake_compile(fn, **kw):
        spade = [m for m in renderer.modules() if hasattr(m, "_fused")]
        phases = [m for m in renderer.modules() if hasattr(m, "_phases")]
        assert spade and all(m._fused for m in spade) and phases and all(m._phases for m in phases)
        compiled.append(kw)

        def run(f_s, x_s, x_d, compressed):
            shapes.append(x_d.shape[0])
            return fn(f_s, x_s, x_d, compressed)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    renderer = small_renderer(compile_modules=True)
    eager = small_renderer()
    f_s = eager.appearance_features(image)
    x_d5 = torch.cat([x_d, x_d[:2] + 0.01, x_d[:1] - 0.01])[:5]
    got = renderer.render(renderer.source(f_s, x_s), x_d5, chunk_size=2)
    want = eager.render(eager.source(f_s, x_s), x_d5, chunk_size=2)
    assert compiled == [{"dynamic": False, "mode": "default"}]
    assert shapes == [2, 2, 2]  # the tail of 1 frame ran padded to the compiled batch
    assert got.shape[0] == 5
    torch.testing.assert_close(got[:4], want[:4], rtol=0, atol=0)  # the same batches: the same numbers
    torch.testing.assert_close(got[4:], want[4:], rtol=0, atol=2e-5)  # batch 2 vs 1: another float32 conv order
