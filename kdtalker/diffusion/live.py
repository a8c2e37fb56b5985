"""The hop sampler for audio that arrives as it is spoken: feature rows in, motion frames out as windows complete.

`LiveSampler` makes the windows of `motion_windows` (sampling.py, `hop`) one at a time, as soon as a window's last
audio row has arrived, with the same draws in the same order: window k covers rows [kH, kH + W) and is sampled once
row kH + W - 1 is known, its x_T is the k-th draw from the seeded generator (W frames), its first W - H frames are
held at the frames the window before made, its ref token is frame kH - 1. Every window of a running stream covers
real audio only (its rows are < the T rows of any end), so it is one of the offline windows with the same inputs.

`close()` is the end of the utterance: T is now known, and the windows still missing see the offline padding (row j
of the padded audio is row j mod T, sampling.py's cyclic padding); past the end only rows j - T < H <= W, or all
rows when T < W, are read back, so the first W rows are all the sampler keeps of the beginning.

Memory is bounded: the first W feature rows, the rows of the next window (< W + one push), the W - H held frames.
"""

from __future__ import annotations

import torch

from kdtalker.diffusion.denoiser import Denoiser
from kdtalker.diffusion.guidance import Guidance
from kdtalker.diffusion.sampling import check_hop, hop_length, initial_noise, sample_window


class LiveSampler:
    """Normalised motion frames (n, 70) from audio feature rows (n, 512) pushed as they become final.

    source_motion / ori: the normalised source motion and canonical token (70,); steps, hop, generator and guidance
    as `motion_windows` takes them (the generator seeded by the caller)."""

    def __init__(
        self,
        model: Denoiser,
        scheduler,
        source_motion: torch.Tensor,
        ori: torch.Tensor | None,
        *,
        steps: int,
        hop: int,
        generator: torch.Generator,
        guidance: Guidance | None,
    ):
        self.model, self.scheduler = model, scheduler
        self.window = model.window
        self.hop = check_hop(hop, self.window)
        self.steps, self.generator, self.guidance = steps, generator, guidance
        device, dtype = model.device, model.dtype
        self._ref = source_motion.to(device, dtype).reshape(1, -1)  # the ref token of the next window
        self._ori = None if ori is None else ori.to(device, dtype).reshape(1, -1)
        self._head: list[torch.Tensor] = []  # the first W rows: the end's cyclic padding reads them back
        self._head_rows = 0
        self._rows: list[torch.Tensor] = []  # rows from _start on: the next window's audio
        self._start = 0  # first row of the next window
        self._received = 0  # rows pushed so far
        self._held: torch.Tensor | None = None  # (1, W - H, 70): frames [start, start + W - H), made already
        self._windows = 0  # windows sampled

    @property
    def windows_sampled(self) -> int:
        """Windows sampled so far."""
        return self._windows

    @property
    def buffered_rows(self) -> int:
        """Audio feature rows held: the first W rows kept for the end, plus the rows from the next window on."""
        return self._head_rows + sum(len(r) for r in self._rows)

    @property
    def frames_out(self) -> int:
        """Motion frames given out so far."""
        return 0 if self._windows == 0 else self._start + self.window - self.hop

    def push(self, features: torch.Tensor) -> torch.Tensor:
        """Final audio feature rows (n, 512), in order -> new normalised frames (m, 70) of the windows they complete."""
        if len(features):
            device, dtype = self.model.device, self.model.dtype
            features = features.to(device, dtype)
            if self._head_rows < self.window:
                take = features[: self.window - self._head_rows]
                self._head.append(take)
                self._head_rows += len(take)
            self._rows.append(features)
            self._received += len(features)
        made, used = [], 0
        if self._start + self.window <= self._received:
            rows = torch.cat(self._rows)
            while self._start + self.window <= self._received:
                made.append(self._sample(rows[used : used + self.window]))
                used += self.hop
            self._rows = [rows[used:].clone()]  # a copy: the joined rows are freed
        return self._joined(made)

    def close(self) -> torch.Tensor:
        """The end of the utterance -> its last frames (m, 70), the windows past it padded as offline; the frames
        given out over the whole stream are then exactly T, the rows pushed (none for T = 0)."""
        total, given = self._received, self.frames_out
        made = []
        if total:
            length = hop_length(total, self.window, self.hop)
            head = torch.cat(self._head)
            rows = torch.cat(self._rows) if self._rows else head[:0]  # rows [_start, total)
            first = self._start
            while self._start + self.window <= length:
                index = torch.arange(self._start, self._start + self.window, device=head.device)
                inside = index < total
                # padding: row j of the padded audio is row j mod T (< W: in the head); real rows come from `rows`
                audio = head[torch.where(inside, 0, index % total)]
                audio[inside] = rows[index[inside] - first]
                made.append(self._sample(audio))
        out = self._joined(made)
        self._rows, self._head, self._held, self._head_rows = [], [], None, 0
        return out[: total - given]

    def _sample(self, audio: torch.Tensor) -> torch.Tensor:
        """Sample the window at _start over audio (W, 512) -> its new frames (n, 70); advance to the next window."""
        model, k = self.model, self._windows
        x_T = initial_noise(1, self.window, model.motion_dim, self.generator, model.device).to(model.dtype)
        values = mask = None
        held = 0 if k == 0 else self.window - self.hop
        if held:
            values = x_T.new_zeros(1, self.window, model.motion_dim)
            mask = torch.zeros(1, self.window, model.motion_dim, dtype=torch.bool, device=model.device)
            values[:, :held], mask[:, :held] = self._held, True
        x0 = sample_window(
            model,
            self.scheduler,
            x_T,
            self._ref,
            self._ori,
            audio[None],
            guidance=self.guidance,
            num_inference_steps=self.steps,
            generator=self.generator,
            known=values,
            known_mask=mask,
        )
        self._held = x0[:, self.hop :]
        self._ref = x0[:, self.hop - 1]  # the frame before the next window (x0[:, -1] when H = W)
        self._windows += 1
        self._start += self.hop
        return x0[0, held:]

    def _joined(self, made: list[torch.Tensor]) -> torch.Tensor:
        """Frames of several windows in order as one (m, 70) tensor."""
        if made:
            return torch.cat(made)
        return torch.zeros(0, self.model.motion_dim, device=self.model.device, dtype=self.model.dtype)
