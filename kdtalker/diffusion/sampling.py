"""Sampling motion for a whole utterance: audio padding, 64-frame windows handed over frame by frame, trimming.

Official inference (inference.py, generate_with_audio_img): the T audio features are padded to a multiple of the
window by appending the *first* rows again; window k covers rows [kW, (k+1)W) and starts from a fresh x_T; its ref
token is the last frame sampled by window k-1 (the normalised source motion for the first window); the windows
are concatenated and the first T frames kept.

Short audio (T < W/2): the official padding appends audio[:padding], which holds only T rows, so the single window
is shorter than W, and keeping frames [1 : 2T - padding + 1] of the 2T + 1 (a negative stop when padding > 2T)
returns the wrong number of frames (T = 20, W = 64: 37 frames). We fix that by
default (`official_short_audio=False`): the audio is repeated cyclically until it fills the window, and exactly T
frames come back. For T >= W/2 both modes are the same computation, so samples of the official checkpoint are
unchanged wherever the official code returns the right length; `official_short_audio=True` reproduces the quirk
(kept under test against the official case).

Hop (live sampling): the window stays the model's W = 64 frames but advances by H <= W frames. Window k covers
utterance frames [kH, kH + W); its first W - H frames were made by the windows before and are held fixed, only the
last H are new (window 0: all W are new). Held frames are inpainted (RePaint, Lugmayr et al. 2022, eq. 8; as in
motion in-betweening, e.g. Tevet et al. 2023, MDM sec. 4): before every reverse step at timestep t they are replaced
by their forward-noised values x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4), and after
the last step by x_0 itself, so the output holds them exactly. eps is the window's own x_T at those entries: x_T is
drawn per window exactly as without a hop (W frames from the seeded generator), so the random stream does not
depend on H, nothing extra is drawn, and with DDIM eta = 0 a fixed eps is the deterministic trajectory the known
frames would follow under a perfect denoiser (DDIM, Song et al. 2021, eq. 12). The ref token of window k is the
frame before its first frame, kH - 1 (the source motion for window 0): for H = W that is the previous window's
last frame, so H = W is today's sampling bit for bit. The audio is padded cyclically to W + ceil((T - W) / H) H
frames (the official padding, quirk included, when H = W).

The same mask fixes any entries (frames x channels) to given values: keyframes (`Known`), e.g. a clip that starts
and ends at the source pose so that it loops.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from kdtalker.diffusion.denoiser import Denoiser
from kdtalker.diffusion.guidance import Guidance, combine, guided_condition, leading_signal
from kdtalker.diffusion.step_graph import Recorder, denoiser_step
from kdtalker.errors import AudioError, ConfigError

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
Generators = torch.Generator | list[torch.Generator] | None


@dataclass(frozen=True)
class Known:
    """Entries held fixed while sampling: values (B, T, D) normalised, on the utterance's frames, where mask
    (B or 1, T, D) bool is True (keyframes); frames past T (the padding) are free."""

    values: torch.Tensor
    mask: torch.Tensor

    def rows(self, start: int, stop: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The frames [start, stop) as (values (B, n, D), mask (B, n, D)), padded with free rows past T."""
        n = stop - start
        values = self.values[:, start:stop].expand(batch, -1, -1)
        mask = self.mask[:, start:stop].expand(batch, -1, -1)
        missing = n - values.shape[1]
        if missing > 0:
            values = torch.cat([values, values.new_zeros(batch, missing, values.shape[2])], dim=1)
            mask = torch.cat([mask, mask.new_zeros(batch, missing, mask.shape[2])], dim=1)
        return values, mask


def check_hop(hop: int | None, window: int) -> int:
    """The hop in frames: None = the window (no overlap); ConfigError unless 1 <= hop <= window (a whole number)."""
    if hop is None:
        return window
    if isinstance(hop, bool) or not isinstance(hop, int) or not 1 <= hop <= window:
        raise ConfigError(f"hop={hop!r} must be a whole number of frames from 1 to the model's window {window}")
    return hop


def hop_length(num_frames: int, window: int, hop: int) -> int:
    """Frames the windows of a hop cover: W + ceil((T - W) / H) H (at least W); W ceil(T / W) for H = W."""
    return window + -(-max(num_frames - window, 0) // hop) * hop


def _quiet(progress: bool) -> dict[str, bool]:
    """tqdm keywords: off when not wanted, else tqdm's defaults (so that TQDM_DISABLE=1 still silences it)."""
    return {} if progress else {"disable": True}


def initial_noise(
    batch: int, frames: int, motion_dim: int, generator: Generators, device: torch.device
) -> torch.Tensor:
    """x_T (B, frames, motion_dim), drawn as the official randn(1, frames, dim, 3)[..., 0] per sample.

    One generator (or the global RNG) draws the B samples in turn; a list gives each sample its own generator, so
    a seed reproduces the official stream for that sample.
    """
    gens = generator if isinstance(generator, list) else [generator] * batch
    if len(gens) != batch:
        raise ValueError(f"{len(gens)} generators for a batch of {batch}")
    draws = []
    for g in gens:
        where = g.device if g is not None else device
        draws.append(torch.randn(1, frames, motion_dim, 3, generator=g, device=where)[..., 0])
    return torch.cat(draws).to(device)


def _step_noise(generator: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Variance noise like (B, ...) with each sample drawn from its own generator."""
    draws = [torch.randn(1, *like.shape[1:], generator=g, device=g.device, dtype=like.dtype) for g in generator]
    return torch.cat(draws).to(like.device)


@torch.no_grad()
def sample_window(
    model: Denoiser,
    scheduler,
    x_T: torch.Tensor,
    ref: torch.Tensor,
    ori: torch.Tensor | None,
    audio: torch.Tensor | None,
    *,
    driving: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    guidance: Guidance | None = None,
    num_inference_steps: int,
    generator: Generators = None,
    callback: StepCallback | None = None,
    progress: bool = False,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    recorder: Recorder | None = None,
) -> torch.Tensor:
    """Reverse diffusion of one window: x_T (B, N, 70), ref (B, 70), ori (B, 70), audio (B, N, 512) -> x_0 (B, N, 70).

    known (B, N, 70) with known_mask (B, N, 70) bool: entries held at those values (inpainting, module docstring);
    their noise is x_T's entries. A sampler without a forward process (OneStepSampler) only sets them at the end.

    A multi-signal model also takes the driving motion (B, N, 70) with its region mask (B, R), and audio None (no
    audio); `guidance` scales them (guidance.py, eq. 2). The conditioning is computed once per window; each step
    then costs one pass through the network per guidance term (one without guidance). `callback(i, t,
    x_after_step, epsilon)` sees every step (for trajectories and tests). The network call of each step is replayed
    from a CUDA graph where the model asks for it (`model.cuda_graphs`, step_graph.py; `recorder`: tests' stand-in).
    """
    # set_timesteps sets the step count that step() reads: on a copy of this run's own, so that runs in other threads
    # sharing the scheduler (the demo's generate and live sessions) keep theirs
    scheduler = copy.copy(scheduler)
    timesteps = scheduler.set_timesteps(num_inference_steps)
    dtype = model.dtype
    x = x_T.to(dtype)
    cond, weights = guided_condition(
        model,
        None if audio is None else audio.to(dtype),
        None if driving is None else driving.to(dtype),
        regions,
        guidance,
    )
    terms = len(weights)
    ref_k, ori_k = ref.repeat(terms, 1), None if ori is None else ori.repeat(terms, 1)
    holds = known_mask is not None and bool(known_mask.any())
    if holds:
        known, known_mask, known_noise = known.to(x.device, dtype), known_mask.to(x.device), x.clone()
    # The timesteps go to the device once per window; the time half of the modulation depends on t alone: one pass
    # for all the window's steps
    steps_on_device = timesteps.to(x.device)
    time = model.time_modulation(steps_on_device)  # (steps, 1, blocks, 2 width)
    network = denoiser_step(model, recorder)
    for i, t in enumerate(tqdm(timesteps.tolist(), desc="denoising", leave=False, **_quiet(progress))):
        if holds and hasattr(scheduler, "add_noise"):
            # RePaint eq. (8): the known entries at this step's noise level, q(x_t | x_0) with the window's own eps
            level = steps_on_device[i : i + 1].expand(x.shape[0])
            x = torch.where(known_mask, scheduler.add_noise(known, known_noise, level), x)
        x_k = x.repeat(terms, 1, 1) if terms > 1 else x
        eps = combine(network(x_k, ref_k, ori_k, cond, time[i : i + 1]), weights)
        kwargs = {}
        if scheduler.adds_noise(t):  # only draw when the step uses noise, so seeded streams stay aligned
            if isinstance(generator, list):
                kwargs["variance_noise"] = _step_noise(generator, eps)
            else:
                kwargs["generator"] = generator
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
        if callback is not None:
            callback(i, t, x, eps)
    if holds:
        x = torch.where(known_mask, known, x)  # x_0 of the known entries: exactly the given values
    return x


def padded_audio(audio: torch.Tensor, window: int, official_short_audio: bool = False) -> tuple[torch.Tensor, int]:
    """Audio (B, T, D) -> (padded audio (B, L, D), padding) with L a multiple of `window` (see module docstring);
    a driving motion is padded the same way, so that its windows are the audio's."""
    num_frames = audio.shape[1]
    padding = (window - num_frames % window) % window
    if official_short_audio:
        return torch.cat([audio, audio[:, :padding]], dim=1), padding
    reps = -(-(num_frames + padding) // num_frames)
    return audio.repeat(1, reps, 1)[:, : num_frames + padding], padding


def _utterance_inputs(audio, driving, regions, source_motion, ori, noise):
    """Single-utterance inputs (audio or driving (T, D)) as a batch of one, and whether they were single."""
    signal = audio if audio is not None else driving
    if signal is None or signal.ndim != 2:
        return False, audio, driving, regions, source_motion, ori, noise

    def one(x):
        return None if x is None else x[None]

    ori = None if ori is None else ori.reshape(1, -1)
    return True, one(audio), one(driving), one(regions), source_motion.reshape(1, -1), ori, one(noise)


@torch.no_grad()
def motion_windows(
    model: Denoiser,
    scheduler,
    audio: torch.Tensor | None,
    source_motion: torch.Tensor,
    ori: torch.Tensor | None,
    steps: int,
    window: int | None = None,
    generator: Generators = None,
    *,
    driving: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    guidance: Guidance | None = None,
    noise: torch.Tensor | None = None,
    official_short_audio: bool = False,
    progress: bool = True,
    hop: int | None = None,
    known: Known | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sample window after window: yields (ref (B, 70), new frames (B, n, 70)) for windows k = 0, 1, ... of the padded
    audio.

    Arguments as `sample_motion` (batched inputs only); window k covers padded rows [kH, kH + N) and its new frames
    are the last H of them (all N for k = 0), so the frames yielded follow each other in the utterance's order. A
    caller can use each window as soon as it is sampled (streaming). driving (B, T, 70) / regions (B, R) / guidance:
    the multi-signal model's other inputs (sample_window); audio None samples from the driving motion alone.
    `hop` None = the window (no overlap); `known`: entries held fixed (keyframes).
    """
    signal = leading_signal(audio, driving)
    if driving is not None and audio is not None and driving.shape[:2] != audio.shape[:2]:
        raise ValueError(f"audio {tuple(audio.shape)} and driving motion {tuple(driving.shape)} differ in frames")
    if signal.shape[1] == 0:
        raise AudioError("the audio is shorter than one video frame: there is no motion to sample")
    window = window or model.window
    hop = check_hop(window if hop is None else hop, window)
    device, dtype = model.device, model.dtype
    batch = signal.shape[0]
    length = hop_length(signal.shape[1], window, hop)

    def padded(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        if hop == window:
            return padded_audio(x.to(device, dtype), window, official_short_audio)[0]
        reps = -(-length // x.shape[1])  # cyclic, as the fixed padding of padded_audio
        return x.to(device, dtype).repeat(1, reps, 1)[:, :length]

    audio, driving = padded(audio), padded(driving)
    regions = None if regions is None else regions.to(device, dtype).expand(batch, -1)
    lead = leading_signal(audio, driving)
    ref = source_motion.to(device, dtype).expand(batch, -1)
    ori = None if ori is None else ori.to(device, dtype).expand(batch, -1)
    starts = list(range(0, lead.shape[1] - 1, window)) if hop == window else list(range(0, length - window + 1, hop))
    made = None  # (B, L, 70): the frames sampled so far, for the held part of the next windows (hop < window)
    for k, start in enumerate(tqdm(starts, desc="sampling motion windows", **_quiet(progress))):
        rows = slice(start, start + window)
        chunk = None if audio is None else audio[:, rows]
        frames = lead[:, rows].shape[1]
        if noise is not None:
            x_T = noise[:, k].to(device, dtype)
        else:
            x_T = initial_noise(batch, frames, model.motion_dim, generator, device).to(dtype)
        held = 0 if k == 0 else window - hop  # frames of this window made by the windows before
        values, mask = (None, None) if known is None else known.rows(start, start + frames, batch)
        if held:
            if values is None:
                values = x_T.new_zeros(batch, frames, model.motion_dim)
                mask = torch.zeros(batch, frames, model.motion_dim, dtype=torch.bool, device=device)
            values, mask = values.to(device, dtype).clone(), mask.to(device).clone()
            values[:, :held], mask[:, :held] = made[:, start : start + held], True
        x0 = sample_window(
            model,
            scheduler,
            x_T,
            ref,
            ori,
            chunk,
            driving=None if driving is None else driving[:, rows],
            regions=regions,
            guidance=guidance,
            num_inference_steps=steps,
            generator=generator,
            known=values,
            known_mask=mask,
        )
        if hop < window:
            if made is None:
                made = x0.new_zeros(batch, length, x0.shape[2])
            made[:, rows] = x0
        yield ref, x0[:, held:]
        ref = x0[:, -1] if hop == window else x0[:, hop - 1]  # frame start + H - 1: the one before the next window


@torch.no_grad()
def sample_motion(
    model: Denoiser,
    scheduler,
    audio: torch.Tensor,
    source_motion: torch.Tensor,
    ori: torch.Tensor | None,
    steps: int,
    window: int | None = None,
    generator: Generators = None,
    *,
    driving: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    guidance: Guidance | None = None,
    noise: torch.Tensor | None = None,
    official_short_audio: bool = False,
    window_callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = True,
    hop: int | None = None,
    known: Known | None = None,
) -> torch.Tensor:
    """Normalised motion for an utterance: audio (T, 512) -> (T, 70); or a batch (B, T, 512) -> (B, T, 70).

    source_motion / ori: (70,) or (B, 70), normalised (ori = seven zeros + normalised canonical kp; ignored by a
    model without the canonical token). `steps`: the sampler's step count; `window` None takes the model's.
    `generator` (one, or one per sample) draws x_T per window as the official code does, so a seeded generator
    gives the official random stream; `noise` (num_windows, N, 70) or (B, num_windows, N, 70) gives
    x_T explicitly. The windows of one utterance run one after another (each starts from the previous one's last
    frame); a batch of utterances runs its windows side by side. `window_callback(k, ref, x0)` sees each window.
    A multi-signal model also takes `driving` (T, 70) / (B, T, 70) normalised with `regions` (R,) / (B, R), audio
    None (motion only) and `guidance` (guidance.py). `hop` (None = the window): frames each window advances by, the
    rest held (module docstring); `known`: entries held at given values (keyframes), batched (B, T, 70) or not.
    `window_callback` then sees each window's new frames.
    """
    if known is not None and known.values.ndim == 2:
        known = Known(known.values[None], known.mask.reshape(1, *known.mask.shape[-2:]))
    single, audio, driving, regions, source_motion, ori, noise = _utterance_inputs(
        audio, driving, regions, source_motion, ori, noise
    )
    window = window or model.window
    num_frames = leading_signal(audio, driving).shape[1]
    if hop is None or hop == window:
        padding = (window - num_frames % window) % window
    else:
        padding = hop_length(num_frames, window, check_hop(hop, window)) - num_frames
    windows = motion_windows(
        model,
        scheduler,
        audio,
        source_motion,
        ori,
        steps,
        window,
        generator,
        driving=driving,
        regions=regions,
        guidance=guidance,
        noise=noise,
        official_short_audio=official_short_audio,
        progress=progress,
        hop=hop,
        known=known,
    )
    outputs = []
    for k, (ref, x0) in enumerate(windows):
        if window_callback is not None:
            window_callback(k, ref, x0)
        outputs.append(x0)
    # the windows cover the padded audio; the official slice [1 : L - padding + 1] of [source, windows] keeps T rows
    # (fewer, through a negative stop, in the official short-audio quirk)
    padded_length = sum(x.shape[1] for x in outputs)
    motion = torch.cat([outputs[0][:, :1], *outputs], dim=1)[:, 1 : padded_length - padding + 1]
    return motion[0] if single else motion
