"""On one CUDA GPU (`python -m pytest -m cuda`): every stage against the CPU, every mode end to end, compile,
training steps with DDP on NCCL, resume. Skipped where no GPU is present (the CPU suite reaches the same tensor
paths with stand-ins: tests/test_device_paths.py).

Weights are the full-size fixture weights (tests/fixture_weights.py) in the official file layout. Machines without
the dlib landmark model (face-recognition-models) or an ffmpeg binary get stand-ins for those two only: a fixed
centre crop, and in-memory video frames where a video would be decoded; every tensor path is the real one.

Tolerances (CPU float32 vs CUDA): float32 with TF32 off, as float32 through ~60 layers lands (3e-4 on frames in
[0, 1]); half precision against CUDA float32: the measured error per stage is written to KDTALKER_CUDA_REPORT (if
set) and bounded loosely (a broken cast gives errors near 1, not 1e-2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kdtalker.pipeline.face import FaceCrop

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda on a GPU machine)"),
]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "astronaut.png"
CUDA = torch.device("cuda")


def report(name: str, value) -> None:
    """Append a measured figure to the JSON-lines file KDTALKER_CUDA_REPORT names (the GPU check's folder)."""
    path = os.environ.get("KDTALKER_CUDA_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"name": name, "value": value}) + "\n")


@pytest.fixture(autouse=True)
def _exact_float32():
    """CPU parity: TF32 off (the pipeline allows it for speed; these tests compare float32 with float32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _has_dlib_model() -> bool:
    try:
        from kdtalker.pipeline.face import dlib_models_dir

        return (dlib_models_dir() / "shape_predictor_68_face_landmarks.dat").is_file()
    except Exception:  # noqa: BLE001 - any missing piece means: use the stand-in
        return False


def _centre_crop(image: np.ndarray, ctl=None) -> FaceCrop:
    """Stand-in for the dlib crop: the image's centre square resized to 256x256 (matrix maps 512-frame pixels)."""
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = cv2.resize(np.ascontiguousarray(image[y0 : y0 + side, x0 : x0 + side]), (256, 256))
    s = side / 512
    matrix = np.array([[s, 0.0, x0 + 0.5 * s - 0.5], [0.0, s, y0 + 0.5 * s - 0.5]])
    return FaceCrop(crop, matrix, np.zeros((68, 2)), (float(x0), float(y0), float(x0 + side), float(y0 + side)), 1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from test_inference_e2e import write_fixture_checkpoints

    root = write_fixture_checkpoints(tmp_path_factory.mktemp("cuda_checkpoints"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def no_io(monkeypatch):
    """Stand-ins for what this machine may lack (crop model, ffmpeg); returns a function that 'writes' a clip."""
    from kdtalker.pipeline import pipeline as pipeline_module

    if not _has_dlib_model():
        monkeypatch.setattr(
            pipeline_module.TalkingHeadPipeline, "crop", lambda self, image, ctl=None: _centre_crop(image)
        )
    clips: dict[str, np.ndarray] = {}
    if shutil.which("ffmpeg") is None:
        try:
            from kdtalker.media import ffmpeg_exe

            ffmpeg_exe()
            have_ffmpeg = True
        except Exception:  # noqa: BLE001
            have_ffmpeg = False
    else:
        have_ffmpeg = True

    def clip(path: Path, frames: np.ndarray) -> Path:
        if have_ffmpeg:
            from kdtalker.media import write_video

            return write_video(path, frames, fps=25)
        path.write_bytes(b"in-memory clip")
        clips[str(path)] = frames
        return path

    if not have_ffmpeg:

        def iter_video(path, fps=25.0, batch=16):
            frames = clips[str(path)]
            for start in range(0, len(frames), batch):
                yield frames[start : start + batch]

        monkeypatch.setattr(pipeline_module, "iter_video", iter_video)
        monkeypatch.setattr(pipeline_module, "video_duration", lambda path: len(clips[str(path)]) / 25)
    return clip


def _speech(path: Path, seconds: float) -> Path:
    wav, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    sf.write(path, wav[: int(seconds * rate)], rate)
    return path


def _error(got: torch.Tensor, want: torch.Tensor) -> dict:
    diff = (got.float().cpu() - want.float().cpu()).abs()
    return {"max": float(diff.max()), "mean": float(diff.mean())}


@pytest.fixture(scope="module")
def renderers(checkpoints):
    from kdtalker.renderer import LivePortraitRenderer

    root = checkpoints / "liveportrait"
    return {
        "cpu": LivePortraitRenderer.from_checkpoints(root, device="cpu"),
        "float32": LivePortraitRenderer.from_checkpoints(root, device="cuda"),
        "float16": LivePortraitRenderer.from_checkpoints(root, device="cuda", dtype="float16"),
        "bfloat16": LivePortraitRenderer.from_checkpoints(root, device="cuda", dtype="bfloat16"),
    }


def _face() -> np.ndarray:
    from kdtalker.pipeline.image import load_image

    return _centre_crop(load_image(EXAMPLE)).image


def test_renderer_stages_cpu_vs_cuda(renderers):
    """Every renderer stage on CUDA float32 equals the CPU's (TF32 off); half precision within a loose bound."""
    cpu, gpu = renderers["cpu"], renderers["float32"]
    assert not gpu.channels_last  # memory_format=auto: contiguous on CUDA (measured faster on an H200)
    face = _face()
    src_cpu, src_gpu = cpu.encode_source(face), gpu.encode_source(face)
    for key in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
        torch.testing.assert_close(src_gpu.info[key].cpu(), src_cpu.info[key], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(src_gpu.f_s.cpu(), src_cpu.f_s, rtol=1e-4, atol=1e-4)
    x_d = src_cpu.x_s + 0.02 * torch.randn(3, 21, 3, generator=torch.Generator().manual_seed(0))
    want = cpu.render(src_cpu, x_d)
    got = gpu.render(src_gpu, x_d.cuda())
    assert got.device.type == "cuda"
    error = _error(got, want)
    report("renderer float32 cuda vs cpu (frames)", error)
    assert error["max"] < 3e-3 and error["mean"] < 1e-4
    torch.testing.assert_close(
        gpu.stitch(src_gpu.x_s, x_d.cuda()).cpu(), cpu.stitch(src_cpu.x_s, x_d), rtol=1e-4, atol=1e-5
    )
    measured = {}
    for name in ("float16", "bfloat16"):
        half = renderers[name]
        src_half = half.encode_source(face)
        assert src_half.x_s.dtype == torch.float32
        warped_want = gpu.warping(src_gpu.f_s, x_d.cuda(), src_gpu.x_s, compressed=src_gpu.compressed)["out"]
        warped_got = half.warping(src_half.f_s, x_d.cuda(), src_half.x_s, compressed=src_half.compressed)["out"]
        frames = half.render(src_half, x_d.cuda())
        assert frames.dtype == getattr(torch, name)
        stitched = half.stitch(src_half.x_s, x_d.cuda())  # float32 MLP on float32 keypoints
        assert stitched.dtype == torch.float32
        errors = {
            "keypoint x_s": _error(src_half.x_s, src_gpu.x_s),
            "appearance f_s": _error(src_half.f_s, src_gpu.f_s),
            "warped features": _error(warped_got, warped_want),
            "frames": _error(frames, got),
        }
        report(f"renderer {name} vs cuda float32", errors)
        measured[name] = errors
    # H200, fixture weights: float16 frames mean 6.4e-3 (max 0.75 on isolated pixels of these high-contrast
    # meaningless pictures); a wrong cast (float16 keypoints, a fold in half precision) moves the mean by 1e-1
    assert measured["float16"]["frames"]["mean"] < 0.02
    assert measured["bfloat16"]["frames"]["mean"] < 0.1  # 8 mantissa bits: ~8x float16's rounding


def test_compiled_renderer_on_cuda(renderers, checkpoints):
    """compile=true: one CUDA-graph function of warping + decoder; a tail chunk runs padded; a second call does
    not overwrite the first call's frames (the output is copied out of the graph's memory)."""
    from kdtalker.renderer import LivePortraitRenderer

    eager = renderers["float16"]
    compiled = LivePortraitRenderer.from_checkpoints(
        checkpoints / "liveportrait", device="cuda", dtype="float16", compile_modules=True
    )
    face = _face()
    src_e, src_c = eager.encode_source(face), compiled.encode_source(face)
    gen = torch.Generator().manual_seed(1)
    x1 = (src_e.x_s.cpu() + 0.02 * torch.randn(5, 21, 3, generator=gen)).cuda()
    x2 = (src_e.x_s.cpu() + 0.02 * torch.randn(5, 21, 3, generator=gen)).cuda()
    first = compiled.render(src_c, x1, chunk_size=2)
    kept = first.clone()
    second = compiled.render(src_c, x2, chunk_size=2)
    torch.testing.assert_close(first, kept, rtol=0, atol=0)  # not overwritten by the next replay
    assert len(compiled._compiled) == 1  # one shape for 2 + 2 + 1 (padded) frames
    error = _error(second, eager.render(src_e, x2, chunk_size=2))
    report("compiled float16 vs eager float16 (frames)", error)
    assert error["mean"] < 0.01  # H200: mean 1.7e-3 (inductor's fused float16 kernels round differently)


def test_audio_encoder_and_denoiser_cpu_vs_cuda(checkpoints):
    from kdtalker.audio import audio_features, load_audio
    from kdtalker.audio.checkpoint import load_audio_encoder
    from kdtalker.diffusion import DDIMScheduler, Denoiser, sample_motion

    wav = load_audio(_speech(Path(checkpoints) / "s.wav", 3.0))
    feats_cpu = audio_features(wav, load_audio_encoder(checkpoints / "wav2lip.pth", device="cpu"), 25, 256)
    feats_gpu = audio_features(wav, load_audio_encoder(checkpoints / "wav2lip.pth", device="cuda"), 25, 256)
    assert feats_gpu.device.type == "cuda"
    torch.testing.assert_close(feats_gpu.cpu(), feats_cpu, rtol=1e-4, atol=1e-4)
    cpu = Denoiser.from_pretrained(checkpoints / "KDTalker.pth", "cpu")
    gpu = Denoiser.from_pretrained(checkpoints / "KDTalker.pth", "cuda")
    noise = torch.randn(2, 64, 70, generator=torch.Generator().manual_seed(0))
    src, ori = torch.zeros(70), torch.zeros(70)
    want = sample_motion(cpu, DDIMScheduler(), feats_cpu[:128], src, ori, steps=10, noise=noise)
    got = sample_motion(gpu, DDIMScheduler(), feats_gpu[:128], src.cuda(), ori.cuda(), steps=10, noise=noise.cuda())
    assert got.device.type == "cuda"
    error = _error(got, want)
    report("sampler float32 cuda vs cpu (normalised motion, 10 DDIM steps, 2 windows)", error)
    assert error["max"] < 2e-3
    # seeds: the generator lives on the model's device and draws as the official randn(device="cuda") would
    g = torch.Generator(device="cuda").manual_seed(7)
    a = sample_motion(gpu, DDIMScheduler(), feats_gpu[:64], src.cuda(), ori.cuda(), steps=2, generator=g)
    torch.manual_seed(7)
    official = torch.randn(1, 64, 70, 3, device="cuda")[..., 0]
    b = sample_motion(gpu, DDIMScheduler(), feats_gpu[:64], src.cuda(), ori.cuda(), steps=2, noise=official)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sampler_steps_replayed_from_cuda_graphs(checkpoints):
    """cuda_graphs: the replayed steps give the eager samples; recorded once per shape, also in a thread of its own on
    a stream of its own while the main thread keeps the GPU busy (the pipeline's overlap)."""
    import threading

    from kdtalker.diffusion import DDIMScheduler, Denoiser, sample_motion
    from kdtalker.diffusion.step_graph import step_graph_of

    gpu = Denoiser.from_pretrained(checkpoints / "KDTalker.pth", "cuda")
    gen = torch.Generator().manual_seed(0)
    feats, src, ori = (torch.randn(*shape, generator=gen).cuda() for shape in ((150, 512), (70,), (70,)))
    noise = torch.randn(3, 64, 70, generator=gen).cuda()

    def sample():
        return sample_motion(gpu, DDIMScheduler(), feats, src, ori, steps=10, noise=noise, progress=False)

    want = sample()
    gpu.cuda_graphs = True
    got = sample()
    assert step_graph_of(gpu).recordings == 1  # 3 windows of one shape: one recording
    error = _error(got, want)
    report("sampler cuda graphs vs eager (normalised motion, 10 DDIM steps, 3 windows)", error)
    assert error["max"] < 1e-5
    # two sampling threads at once, each on a stream of its own, sharing the graph, while the main thread keeps the
    # GPU busy; then a model recorded anew in a thread (weights moved) beside the same work
    other_noise = torch.randn(3, 64, 70, generator=gen).cuda()
    gpu.cuda_graphs = False
    other_want = sample_motion(gpu, DDIMScheduler(), feats, src, ori, steps=10, noise=other_noise, progress=False)
    gpu.cuda_graphs = True
    out = {}

    def beside(name, noise):
        with torch.cuda.stream(torch.cuda.Stream()):
            out[name] = sample_motion(gpu, DDIMScheduler(), feats, src, ori, steps=10, noise=noise, progress=False)
            torch.cuda.current_stream().synchronize()

    threads = [threading.Thread(target=beside, args=a) for a in (("a", noise), ("b", other_noise))]
    for thread in threads:
        thread.start()
    busy = torch.randn(2048, 2048, device="cuda")
    while any(thread.is_alive() for thread in threads):
        busy = (busy @ busy).tanh()
    for thread in threads:
        thread.join()
    errors = {"a": _error(out["a"], want), "b": _error(out["b"], other_want)}
    report("sampler cuda graphs, two threads at once beside other work vs eager", errors)
    assert errors["a"]["max"] < 1e-5 and errors["b"]["max"] < 1e-5
    assert step_graph_of(gpu).recordings == 1
    gpu.load_state_dict(Denoiser.from_pretrained(checkpoints / "KDTalker.pth", "cuda").state_dict(), assign=True)
    thread = threading.Thread(target=beside, args=("c", noise))
    thread.start()
    while thread.is_alive():
        busy = (busy @ busy).tanh()
    thread.join()
    assert step_graph_of(gpu).recordings == 2 and _error(out["c"], want)["max"] < 1e-5


def _pipeline(checkpoints, **kw):
    from kdtalker.pipeline import TalkingHeadPipeline

    settings = {"device": "cuda", "steps": 4, "batch_size": 8, **kw}
    return TalkingHeadPipeline.from_pretrained(checkpoints, **settings)


def test_every_mode_end_to_end_on_cuda(checkpoints, no_io, tmp_path):
    """Portrait, stitching, paste-back, driving video (each region), pose file, motion file, dubbing: on CUDA with
    overlap on (sampler thread on its own stream, render thread, host stage), the same frames as overlap off."""
    from kdtalker.pipeline.image import load_image

    pipe = _pipeline(checkpoints, dtype="float16")
    assert pipe.overlap
    audio = _speech(tmp_path / "a.wav", 3.0)  # 75 frames: two motion windows
    serial = _pipeline(checkpoints, dtype="float16", overlap=False)
    a = np.stack(list(pipe.stream(EXAMPLE, audio, stitching=True)))
    b = np.stack(list(serial.stream(EXAMPLE, audio, stitching=True)))
    assert a.shape == (75, 512, 512, 3)
    # the same frames in the same order; cuDNN may pick other float16 kernels per run (off-by-one levels)
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.mean() < 0.05 and (diff > 1).mean() < 0.01
    pasted = next(pipe.stream(EXAMPLE, audio, paste_back=True))
    image = load_image(EXAMPLE)
    assert pasted.shape == (image.shape[0] // 2 * 2, image.shape[1] // 2 * 2, 3)
    frames = load_image(EXAMPLE)
    drive = no_io(tmp_path / "drive.mp4", np.stack([np.roll(frames, 3 * i, axis=1) for i in range(20)]))
    for control in ({"pose": "video"}, {"lips": "video", "eyes": "video", "expression": "video"}):
        out = list(pipe.stream(EXAMPLE, audio, driving_video=drive, control=control))
        assert len(out) == 75
    pose = tmp_path / "pose.csv"
    pose.write_text("yaw,pitch,roll\n" + "\n".join(f"{i},{-i / 2},0" for i in range(30)))
    assert len(list(pipe.stream(EXAMPLE, audio, pose_file=pose, control={"pose": "file"}))) == 75
    motion = tmp_path / "m.npz"
    from kdtalker.pipeline.motion_file import save_motion_file
    from kdtalker.pipeline.request import Request

    ctl = pipe.controls.updated({}, pipe.device)
    request = Request(ctl, source_image=EXAMPLE, driven_audio=audio, save_motion=motion, streamed=True).validate()
    job, batches = pipe._start(request)
    assert sum(len(f) for f in batches) == 75
    save_motion_file(motion, job.record, job.source.info)
    assert len(list(pipe.stream(EXAMPLE, None, motion_file=motion))) == 75
    dub = no_io(tmp_path / "talk.mp4", np.stack([np.roll(frames, i, axis=0) for i in range(10)]))
    assert len(list(pipe.stream(None, audio, source_video=dub))) == 75


def test_multisignal_sampling_on_cuda(checkpoints):
    """The multi-signal model (driving motion + regions + nested guidance) samples on CUDA as on the CPU."""
    from kdtalker.diffusion import DDIMScheduler, Guidance, region_mask, sample_motion
    from kdtalker.diffusion.multisignal import MultiSignalDenoiser

    torch.manual_seed(0)
    cpu = MultiSignalDenoiser(motion_features=16, width=64, depth=1, heads=2, head_dim=32, time_dim=32).eval()
    for p in cpu.parameters():
        p.data.normal_(0, 0.05)
    gpu = MultiSignalDenoiser(motion_features=16, width=64, depth=1, heads=2, head_dim=32, time_dim=32)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda().eval()
    gen = torch.Generator().manual_seed(3)
    audio, driving = torch.randn(80, 512, generator=gen), torch.randn(80, 70, generator=gen)
    noise = torch.randn(2, 64, 70, generator=gen)
    regions = region_mask(["pose", "eyes"])
    kw = dict(steps=4, guidance=Guidance(audio=2.0, motion=1.5))
    want = sample_motion(
        cpu,
        DDIMScheduler(),
        audio,
        torch.zeros(70),
        torch.zeros(70),
        driving=driving,
        regions=regions,
        noise=noise,
        **kw,
    )
    got = sample_motion(
        gpu,
        DDIMScheduler(),
        audio.cuda(),
        torch.zeros(70).cuda(),
        torch.zeros(70).cuda(),
        driving=driving.cuda(),
        regions=regions.cuda(),
        noise=noise.cuda(),
        **kw,
    )
    torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-3)


def test_out_of_memory_is_one_line(checkpoints, no_io, tmp_path):
    """A render batch far beyond the GPU's memory -> one KDTalkerError naming batch_size."""
    from kdtalker.errors import KDTalkerError

    pipe = _pipeline(checkpoints, batch_size=100000)
    audio = _speech(tmp_path / "a.wav", 0.2)

    real = pipe.load().renderer

    class Huge:
        def __getattr__(self, name):
            return getattr(real, name)

        def render(self, source, x_d, chunk_size=None):
            torch.empty(1 << 50, dtype=torch.uint8, device="cuda")  # 1 PiB

    pipe.load().renderer = Huge()
    with pytest.raises(KDTalkerError, match="lower batch_size"):
        list(pipe.stream(EXAMPLE, audio))


def test_training_steps_ddp_nccl_and_resume(tmp_path):
    """train.py on CUDA under torchrun (one process: DDP over NCCL): a run cut after step 2 resumes to the same
    model as an uncut run (up to CUDA's nondeterministic reductions)."""
    from test_train_resume import TINY

    from kdtalker.training.checkpoint import latest_checkpoint, load_checkpoint

    base = [o for o in TINY if not o.startswith(("device=", "torch_threads="))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--master_port=29533"]
    env = dict(os.environ, TQDM_DISABLE="1")

    def train(run: str, steps: int) -> None:
        overrides = [*base, "device=cuda", f"data.root={tmp_path / 'data'}", "train.ckpt_every=2"]
        overrides += [f"train.max_steps={steps}", f"train.out_dir={tmp_path / run}"]
        done = subprocess.run(
            [*cmd, str(REPO / "train.py"), *overrides], capture_output=True, text=True, env=env, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr

    train("full", 4)
    train("cut", 2)
    train("cut", 4)  # resumes from checkpoint-000002.pth
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-4, atol=1e-5)
