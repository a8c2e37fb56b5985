"""The GPU path's device and dtype mistakes, caught on CPU: a second device stands in as the `meta` device,
half-precision keypoint math runs in bfloat16 on tiny modules, and the CUDA-only branches are reached by stand-ins.

The CUDA tests proper (same paths on a real GPU) are tests/test_cuda.py (`pytest -m cuda`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pipeline_control import KeypointRenderer, controlled, driving_clip  # noqa: F401 - the fixture
from test_pipeline_generate import EXAMPLE, RecordingRenderer, pipeline, speech  # noqa: F401 - the fixture
from test_renderer_batch import small_renderer

from kdtalker.device import resolve_device
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.pipeline.control import ping_pong, relative_video_motion
from kdtalker.pipeline.driving import driving_motion
from kdtalker.renderer import LivePortraitRenderer
from kdtalker.renderer import renderer as renderer_module
from kdtalker.renderer.warping import coordinate_grid

SMALL_CONFIGS = {
    "appearance_feature_extractor": dict(
        block_expansion=8, max_features=64, reshape_channel=4, reshape_depth=16, num_resblocks=1
    ),
    "motion_extractor": dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)),
    "warping_module": dict(
        block_expansion=8,
        max_features=64,
        reshape_channel=4,
        dense_motion_params=dict(block_expansion=8, max_features=32, num_blocks=2, reshape_depth=16, compress=2),
    ),
    "spade_generator": dict(max_features=32, block_expansion=8),
    "stitching_retargeting_module": {
        "retarget_shoulder": dict(input_size=126, hidden_sizes=[16], output_size=65),
        "retarget_mouth": dict(input_size=65, hidden_sizes=[16], output_size=63),
        "retarget_eye": dict(input_size=66, hidden_sizes=[16], output_size=63),
    },
}

pytestmark = pytest.mark.usefixtures("one_thread")


def small_checkpoints(root):
    """The small test renderer's weights written in the official file layout under root (LivePortrait folder)."""
    r = small_renderer(fold_batchnorm=False)
    (root / "base_models").mkdir(parents=True)
    (root / "retargeting_models").mkdir()
    for name, module in [
        ("appearance_feature_extractor", r.appearance),
        ("motion_extractor", r.motion),
        ("warping_module", r.warping),
        ("spade_generator", r.decoder),
    ]:
        state = {k: v for k, v in module.state_dict().items() if not k.endswith(("folded_weight", "folded_bias"))}
        torch.save(state, root / "base_models" / f"{name}.pth")
    entries = {"retarget_shoulder": "stitching", "retarget_mouth": "lip", "retarget_eye": "eye"}
    torch.save(
        {entry: r.retargeting[name].state_dict() for entry, name in entries.items()},
        root / "retargeting_models" / "stitching_retargeting_module.pth",
    )
    return root


def test_stitching_with_a_half_precision_renderer(tmp_path):
    """bfloat16 renderer: the stitching MLP runs in float32 on float32 keypoints (it used to get the renderer's
    dtype and fail with 'mat1 and mat2 must have the same dtype'), giving the float32 renderer's correction."""
    root = small_checkpoints(tmp_path / "liveportrait")
    full = LivePortraitRenderer.from_checkpoints(root, configs=SMALL_CONFIGS, memory_format="contiguous")
    half = LivePortraitRenderer.from_checkpoints(
        root, dtype="bfloat16", configs=SMALL_CONFIGS, memory_format="contiguous"
    )
    assert half.dtype == torch.bfloat16 and next(half.retargeting.parameters()).dtype == torch.float32
    gen = torch.Generator().manual_seed(0)
    x_s = 0.1 * torch.randn(1, 21, 3, generator=gen)
    x_d = x_s + 0.02 * torch.randn(4, 21, 3, generator=gen)
    got = half.stitch(x_s, x_d)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, full.stitch(x_s, x_d), rtol=0, atol=0)
    torch.testing.assert_close(half.stitch(x_s.bfloat16(), x_d.bfloat16()), full.stitch(x_s, x_d), rtol=0, atol=0.02)


def test_batchnorm_is_folded_in_float32_before_the_cast(tmp_path):
    """The half-precision renderer's folded weights are the float32 fold rounded once (not a fold in bfloat16)."""
    root = small_checkpoints(tmp_path / "liveportrait")
    full = LivePortraitRenderer.from_checkpoints(root, configs=SMALL_CONFIGS, memory_format="contiguous")
    half = LivePortraitRenderer.from_checkpoints(
        root, dtype="bfloat16", configs=SMALL_CONFIGS, memory_format="contiguous"
    )
    pairs = [(a, b) for a, b in zip(full.modules(), half.modules()) if getattr(a, "folded_weight", None) is not None]
    assert pairs
    for a, b in pairs:
        assert torch.equal(b.folded_weight, a.folded_weight.bfloat16())
        assert torch.equal(b.folded_bias, a.folded_bias.bfloat16())


class _CheapStandIn(torch.nn.Module):
    """Stands in for a bfloat16 conv stack (emulated, minutes on an AVX2 CPU): keeps the dtype, picks channels."""

    def __init__(self, channels: int, seen: list):
        super().__init__()
        self.channels, self.seen = channels, seen

    def forward(self, x):
        self.seen.append(x.dtype)
        return x.mean(1, keepdim=True).expand(-1, self.channels, *x.shape[2:])


def test_keypoint_math_stays_float32_in_a_half_precision_warp():
    """bfloat16 features, float32 keypoints: the dense motion's grid, Gaussians, softmax over motions and blended
    deformation are float32; only the conv stacks' inputs and the sampling grid take the features' dtype."""
    full = small_renderer()
    rgb = np.random.RandomState(0).randint(0, 256, (64, 64, 3), dtype=np.uint8)
    source = full.encode_source(rgb)
    x_d = source.x_s + 0.03 * torch.randn(2, 21, 3, generator=torch.Generator().manual_seed(2))
    dense = full.warping.dense_motion_network.to(torch.bfloat16)
    seen: list = []
    width = dense.hourglass.out_filters
    dense.hourglass = _CheapStandIn(width, seen)
    dense.mask = _CheapStandIn(dense.num_kp + 1, seen)
    dense.occlusion = None
    out = dense(source.f_s.bfloat16(), x_d, source.x_s)
    assert seen == [torch.bfloat16, torch.bfloat16]  # the conv stacks ran in the features' dtype
    assert out["mask"].dtype == torch.float32 and out["deformation"].dtype == torch.float32
    # equal logits: a uniform mask, and the deformation is the mean of the 22 candidate motions in float32
    torch.testing.assert_close(out["mask"], torch.full_like(out["mask"], 1 / (dense.num_kp + 1)))
    grid = coordinate_grid(16, 16, 16, x_d)
    moved = (source.x_s.expand_as(x_d) - x_d).sum(1)[:, None, None, None] / (dense.num_kp + 1)
    torch.testing.assert_close(out["deformation"], grid[None] + moved, rtol=0, atol=1e-6)


def test_memory_format_follows_the_device_the_modules_move_to(monkeypatch):
    """memory_format=auto is decided for the device the renderer lives on, also after .to(): it used to be decided
    once, at construction (on CPU), before the benchmark moved the modules to the GPU. `meta` plays the GPU."""
    monkeypatch.setattr(renderer_module, "_use_channels_last", lambda memory_format, device: device.type == "meta")
    r = small_renderer(memory_format="auto")
    assert not r.channels_last
    r.to("meta")
    assert r.channels_last
    conv = r.decoder.fc.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_a_device_object_is_checked_like_a_name():
    """A torch.device('cuda') passed to the Python API gets the clean error too (it used to skip the check)."""
    if torch.cuda.is_available():
        pytest.skip("this check is about machines without CUDA")
    for device in (torch.device("cuda"), torch.device("cuda:0"), "cuda"):
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device(device)
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_driving_video_motion_stays_on_the_renderers_device(controlled, tmp_path):  # noqa: F811
    """The driving video's motion is made where the renderer is (it used to be copied to the CPU, then mixed
    with the source's device tensors: a device-mismatch error on CUDA). `meta` stands in for the GPU."""

    class MetaRenderer(KeypointRenderer):
        def keypoint_info(self, images):
            return {k: v.to("meta") for k, v in super().keypoint_info(images).items()}

    controlled.models.renderer = MetaRenderer()
    video = driving_clip(tmp_path / "drive.mp4", 3)
    motion, _ = driving_motion(video, controlled.models.renderer, controlled.crop, fps=25)
    assert motion.device.type == "meta" and motion.shape == (3, 70)
    relative = relative_video_motion(motion[torch.from_numpy(ping_pong(3, 5))], torch.zeros(70, device="meta"))
    assert relative.device.type == "meta" and relative.shape == (5, 70)


def test_out_of_memory_is_one_line_naming_batch_size(pipeline, tmp_path):  # noqa: F811
    """A device out-of-memory error while rendering -> one KDTalkerError that says to lower batch_size; no output."""

    class Exhausted(RecordingRenderer):
        def render(self, source, x_d, chunk_size=None):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    pipeline.models.renderer = Exhausted()
    output = tmp_path / "o.mp4"
    with pytest.raises(KDTalkerError, match=r"ran out of memory rendering 4 frame\(s\) at a time: lower batch_size"):
        pipeline.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.4), output)
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "ckpt"]
    with pytest.raises(KDTalkerError, match="batch_size=1"):
        next(pipeline.stream(EXAMPLE, speech(tmp_path / "a.wav", 0.4), batch_size=4))


def test_motion_is_copied_to_the_host_only_for_save_motion(pipeline, tmp_path, monkeypatch):  # noqa: F811
    """Without save_motion no rendered motion or keypoints are kept (no per-piece host copies)."""
    kept = []
    original = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: kept.append(self.shape) or original(self, *a, **k))
    pipeline.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.4), tmp_path / "o.mp4")
    assert not [s for s in kept if tuple(s[-2:]) == (21, 3)]  # driving keypoints: copied only to be saved
    pipeline.generate(EXAMPLE, speech(tmp_path / "a.wav", 0.4), tmp_path / "o.mp4", save_motion=tmp_path / "m.npz")
    assert [s for s in kept if tuple(s[-2:]) == (21, 3)]


def test_a_device_out_of_memory_anywhere_is_one_line(capsys):
    """Outside the pipeline (training, evaluation) the entry scripts' guard turns it into one line too."""
    from kdtalker.cli import guarded, user_message

    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert "batch_size" in user_message(error) and "GPU" in user_message(error)

    def body():
        raise error

    with pytest.raises(SystemExit) as exit_info:
        guarded(body)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the GPU ran out of memory") and err.count("\n") == 1
    with pytest.raises(RuntimeError, match="a bug"):
        guarded(lambda: (_ for _ in ()).throw(RuntimeError("a bug")))


def test_cudnn_autotuning_is_scoped_to_the_render_call():
    """The autotuner is on for a CUDA render and off again after (also after an error): the process keeps its own
    setting; on the CPU nothing changes."""
    from kdtalker.device import cudnn_autotuned

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with cudnn_autotuned(torch.device("cuda")):
            assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.benchmark is False
        with pytest.raises(RuntimeError), cudnn_autotuned(torch.device("cuda", 0)):
            raise RuntimeError("a failed render")
        assert torch.backends.cudnn.benchmark is False
        with cudnn_autotuned(torch.device("cpu")):
            assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


def _copies(fn, shape: list[int]) -> int:
    """Copies to another device or dtype (`aten::_to_copy`) of tensors of this shape that fn makes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes[:1] == [shape])


def test_sampling_steps_make_no_copies_of_the_schedule():
    """Held frames (hop, keyframes) are re-noised every step from alpha_bar: a copy of it to the model's device and
    dtype each step (a blocking host-to-device copy on CUDA) is made once instead. A float64 model stands in for
    the GPU: on a CPU float32 model such a copy would be a no-op and go unseen."""
    from kdtalker.diffusion import DDIMScheduler, Denoiser, sample_window

    model = Denoiser(width=32, depth=1, heads=2, head_dim=16, window=16).double().eval()
    x_T, audio, ref, ori = torch.randn(1, 16, 70), torch.randn(1, 16, 512), torch.randn(1, 70), torch.randn(1, 70)
    mask = torch.zeros(1, 16, 70, dtype=torch.bool)
    mask[:, :4] = True
    scheduler = DDIMScheduler()

    def run(steps):
        return lambda: sample_window(
            model, scheduler, x_T, ref, ori, audio, num_inference_steps=steps, known=x_T, known_mask=mask
        )

    schedule = [scheduler.num_train_timesteps]  # alpha_bar's shape
    assert _copies(run(2), schedule) == 1  # the schedule's copy on this device and dtype, made once
    assert _copies(run(12), schedule) == 0  # and not again, in any step
    assert scheduler.alphas_cumprod_on(torch.device("cpu"), torch.float64) is scheduler.alphas_cumprod_on(
        "cpu", torch.float64
    )
