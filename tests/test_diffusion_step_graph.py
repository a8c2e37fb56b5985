"""The sampler's recorded network call (kdtalker/diffusion/step_graph.py) on the CPU.

A CUDA graph needs a GPU (tests/test_cuda.py records real ones); here a recorder with the same aliasing stands in:
it keeps the inputs and the output at fixed tensors and replays by calling the network again on the recorded
inputs. So a step whose inputs are not copied in, or whose output is read after the next replay, gives wrong
numbers here as on a GPU.
"""

from __future__ import annotations

import threading

import pytest
import torch

import kdtalker.diffusion.sampling as sampling
from kdtalker.diffusion import DDIMScheduler, Denoiser, Guidance, MultiSignalDenoiser, sample_motion, sample_window
from kdtalker.diffusion.step_graph import denoiser_step, step_graph_of
from kdtalker.errors import KDTalkerError

SMALL = dict(width=32, depth=2, heads=2, head_dim=16, window=16)


class Rerun:
    """A recorder standing in for record_cuda_graph: fixed inputs and output, replay = call again on them."""

    def __init__(self):
        self.recorded = 0

    def __call__(self, fn, inputs):
        self.recorded += 1
        output = fn(*inputs)

        def replay():
            output.copy_(fn(*inputs))

        return replay, output


def _randomised(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _inputs(batch: int = 1, frames: int = 40):
    gen = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, frames, 512, generator=gen),
        torch.randn(batch, 70, generator=gen),
        torch.randn(batch, 70, generator=gen),
    )


def test_replayed_steps_give_the_eager_samples_and_record_once_per_shape(monkeypatch):
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs(2)
    eager = sample_motion(model, DDIMScheduler(), audio, src, ori, steps=6, generator=torch.Generator(), progress=False)
    recorder = Rerun()
    steps: list[torch.Tensor] = []

    def run(**kw):
        x_T = torch.randn(2, 16, 70, generator=torch.Generator().manual_seed(3))
        return sample_window(
            model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=6, recorder=recorder, **kw
        )

    graphed = run(callback=lambda i, t, x, eps: steps.append(eps))
    assert torch.equal(graphed, run())  # replayed twice over: same numbers
    assert recorder.recorded == 1  # one shape, one recording, for both windows
    # each step's epsilon is its own tensor: none was overwritten by a later replay
    assert len({s.data_ptr() for s in steps}) == 6 and not torch.equal(steps[0], steps[-1])
    x_T = torch.randn(2, 16, 70, generator=torch.Generator().manual_seed(3))
    assert torch.equal(
        graphed, sample_window(model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=6)
    )
    # a whole utterance (3 windows) through the recorder is the eager utterance, bit for bit
    recorder = Rerun()  # a new recorder: a new graph
    monkeypatch.setattr(sampling, "denoiser_step", lambda m, _=None: denoiser_step(m, recorder))
    replayed = sample_motion(
        model, DDIMScheduler(), audio, src, ori, steps=6, generator=torch.Generator(), progress=False
    )
    assert torch.equal(replayed, eager) and recorder.recorded == 1


def test_moved_weights_are_recorded_again():
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs()
    x_T = torch.randn(1, 16, 70)
    recorder = Rerun()
    first = sample_window(
        model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=3, recorder=recorder
    )
    # new tensors for the weights (load_state_dict with assign): a graph would still read the old addresses
    model.load_state_dict(_randomised(Denoiser(**SMALL), seed=2).state_dict(), assign=True)
    second = sample_window(
        model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=3, recorder=recorder
    )
    want = sample_window(model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=3)
    assert recorder.recorded == 2 and torch.equal(second, want) and not torch.equal(first, second)


def test_guidance_terms_and_held_frames_through_the_recorder():
    model = _randomised(MultiSignalDenoiser(motion_features=8, **SMALL))
    audio, src, ori = _inputs(1, 16)
    driving = torch.randn(1, 16, 70)
    regions = torch.ones(1, 4)
    mask = torch.zeros(1, 16, 70, dtype=torch.bool)
    mask[:, :5] = True
    kw = dict(
        driving=driving,
        regions=regions,
        guidance=Guidance(audio=2.0, motion=1.5),
        num_inference_steps=4,
        known=torch.randn(1, 16, 70),
        known_mask=mask,
    )
    x_T = torch.randn(1, 16, 70)
    want = sample_window(model, DDIMScheduler(), x_T, src, ori, audio, **kw)
    got = sample_window(model, DDIMScheduler(), x_T, src, ori, audio, recorder=Rerun(), **kw)
    assert torch.equal(got, want)


def test_a_recording_that_fails_is_one_error_naming_the_setting():
    """A failed capture leaves CUDA's allocator in capture mode (PyTorch cannot undo it from Python), so the run stops
    with one line that says how to run without graphs rather than going on in a broken state."""
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs()
    calls = []

    def broken(fn, inputs):
        calls.append(1)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    with pytest.raises(KDTalkerError) as error:
        sample_window(model, DDIMScheduler(), torch.randn(1, 16, 70), src, ori, audio[:, :16], num_inference_steps=5,
                      recorder=broken)  # fmt: skip
    assert str(error.value) == (
        "recording the denoiser's CUDA graph failed (CUDA error: operation not permitted when stream is capturing); "
        "run with cuda_graphs=false"
    )
    assert len(calls) == 1


def test_a_cpu_model_samples_eagerly_even_when_graphs_are_asked_for():
    model = _randomised(Denoiser(**SMALL))
    model.cuda_graphs = True
    step = denoiser_step(model)
    assert step.__name__ == "eager" and step_graph_of(model) is None


def test_sampling_threads_share_the_graph_one_call_at_a_time():
    """The pipeline samples in a new thread per run, the demo for several sessions at once, each in its own thread,
    on one model: they share its graph (recorded once), and without taking turns one thread would replay the other's
    inputs and get its epsilon."""
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs(1, 16)
    draws = [torch.randn(1, 16, 70, generator=torch.Generator().manual_seed(s)) for s in range(4)]
    want = [sample_window(model, DDIMScheduler(), x, src, ori, audio, num_inference_steps=20) for x in draws]
    recorder = Rerun()
    got: dict[int, list[torch.Tensor]] = {}

    def run(k: int) -> None:
        got[k] = [
            sample_window(model, DDIMScheduler(), draws[k], src, ori, audio, num_inference_steps=20, recorder=recorder)
            for _ in range(3)
        ]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(g, want[k]) for k in range(4) for g in got[k])
    assert recorder.recorded == 1 and step_graph_of(model).recordings == 1


def test_threads_sharing_a_scheduler_keep_their_own_step_counts():
    """set_timesteps is per run (the demo's generate and live sessions share the pipeline's scheduler, maybe with
    different step counts): a run in another thread must not change the steps of this one."""
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs(1, 16)
    scheduler = DDIMScheduler()
    x_T = torch.randn(1, 16, 70)
    want = {steps: sample_window(model, DDIMScheduler(), x_T, src, ori, audio, num_inference_steps=steps)
            for steps in (40, 3)}  # fmt: skip
    got: dict[int, list[torch.Tensor]] = {40: [], 3: []}

    def run(steps: int) -> None:
        for _ in range(4):
            got[steps].append(sample_window(model, scheduler, x_T, src, ori, audio, num_inference_steps=steps))

    threads = [threading.Thread(target=run, args=(steps,)) for steps in (40, 3, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(g, want[steps]) for steps in got for g in got[steps])


def test_a_replay_that_fails_after_recording_is_raised():
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs()
    state = {"replays": 0}

    def flaky(fn, inputs):
        output = fn(*inputs)

        def replay():
            state["replays"] += 1
            if state["replays"] == 2:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            output.copy_(fn(*inputs))

        return replay, output

    with pytest.raises(RuntimeError, match="illegal memory access"):
        sample_window(model, DDIMScheduler(), torch.randn(1, 16, 70), src, ori, audio[:, :16], num_inference_steps=4,
                      recorder=flaky)  # fmt: skip


def test_recorded_in_one_grad_mode_replayed_in_the_other():
    """The pipeline samples in inference mode, a live session under no_grad, in one process (the demo runs both):
    the recorded inputs must take writes in either mode."""
    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs()
    x_T = torch.randn(1, 16, 70)
    want = sample_window(model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=3)
    for first, then in ((torch.inference_mode, torch.no_grad), (torch.no_grad, torch.inference_mode)):
        recorder = Rerun()  # a new recorder: a new graph
        with first():
            a = sample_window(
                model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=3, recorder=recorder
            )
        with then():
            b = sample_window(
                model, DDIMScheduler(), x_T, src, ori, audio[:, :16], num_inference_steps=3, recorder=recorder
            )
        assert recorder.recorded == 1 and torch.equal(a, want) and torch.equal(b, want)
        assert not b.is_inference() or then is torch.inference_mode


def test_a_model_with_recorded_steps_is_freed_when_dropped():
    """The graphs are kept per model, weakly: a dropped model (a pipeline loaded again) does not stay in memory."""
    import gc
    import weakref

    model = _randomised(Denoiser(**SMALL))
    audio, src, ori = _inputs()
    sample_window(model, DDIMScheduler(), torch.randn(1, 16, 70), src, ori, audio[:, :16], num_inference_steps=2,
                  recorder=Rerun())  # fmt: skip
    assert step_graph_of(model).recordings == 1
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_the_sampler_benchmark_prints_its_lines():
    """`scripts/benchmark.py sampler` on a CPU: the eager steps alone (graphs are for CUDA), in the README's words."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "benchmark.py"
    cmd = [
        sys.executable,
        str(script),
        "sampler",
        "--seconds",
        "1",
        "--steps",
        "2",
        "--repeats",
        "2",
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[1] == "utterance: 1 s = 25 frames at 25 fps = 1 windows of 64; 2 DDIM steps; batch 1", lines
    assert re.fullmatch(
        r"eager: sampling time [\d.]+ s \(best of 2\) = [\d.]+ s per window, [\d.]+ ms per denoiser step, "
        r"[\d.]+ frames/s",
        lines[2],
    ), lines
    assert len(lines) == 3  # no graph line without CUDA
