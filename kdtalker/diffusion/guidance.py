"""Classifier-free guidance on the audio and on the driving motion (Ho & Salimans 2022), nested for two signals.

With a = audio, m = motion and s_a, s_m their scales, the guided epsilon is (InstructPix2Pix's rule for two
conditions, Brooks et al. 2023, eq. 3, motion taking the image's place):
    e = e(0, 0) + s_m [e(0, m) - e(0, 0)] + s_a [e(a, m) - e(0, m)]                                      (2)
    = (1 - s_m) e(0, 0) + (s_m - s_a) e(0, m) + s_a e(a, m)
where 0 is the dropped signal (zero audio features; the motion branch's region mask all 0). A signal that the run
does not use leaves its term out: audio only gives e(0) + s_a [e(a) - e(0)]. s = 1 for both is no guidance:
e = e(a, m), one network pass per step; every term with weight 0 is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdtalker.errors import AudioError, ConfigError


@dataclass(frozen=True)
class Guidance:
    """Guidance scales: 1 = none (the conditional model), > 1 follows the signal more, 0 = ignores it."""

    audio: float
    motion: float

    def validate(self) -> "Guidance":
        for name in ("audio", "motion"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"guidance.{name}={value!r} must be a number >= 0 (1 = no guidance)")
        return self

    @property
    def is_none(self) -> bool:
        return self.audio == 1 and self.motion == 1

    def terms(self, audio: bool, motion: bool) -> list[tuple[bool, bool, float]]:
        """Which signals are given -> eq. (2)'s terms as (audio on, motion on, weight), zero weights left out."""
        if not audio and self.audio != 1:
            raise ConfigError(f"guidance.audio={self.audio:g} needs the audio signal (signals=audio or both)")
        if not motion and self.motion != 1:
            raise ConfigError(f"guidance.motion={self.motion:g} needs the motion signal (signals=motion or both)")
        if audio and motion:
            terms = [(False, False, 1 - self.motion), (False, True, self.motion - self.audio), (True, True, self.audio)]
        elif audio:
            terms = [(False, False, 1 - self.audio), (True, False, self.audio)]
        elif motion:
            terms = [(False, False, 1 - self.motion), (False, True, self.motion)]
        else:
            terms = [(False, False, 1.0)]
        return [term for term in terms if term[2] != 0]


NO_GUIDANCE = Guidance(audio=1.0, motion=1.0)  # the conditional model as it is: one pass per step


def check_signals(model, audio: bool, motion: bool, guidance: Guidance | None = None) -> None:
    """ConfigError unless `model` can be run with these signals (audio given? motion given?) and this guidance."""
    guidance = guidance or NO_GUIDANCE
    if (motion or not audio or not guidance.is_none) and "motion" not in model.signals:
        what = "a driving motion" if motion else "guidance" if audio else "sampling without audio"
        raise ConfigError(
            f"{what} needs a multi-signal model trained with mask-drop (model=kdtalker_multisignal); "
            "the official model is driven by audio only"
        )
    guidance.terms(audio, motion)


def guided_condition(
    model,
    audio: torch.Tensor | None,
    driving: torch.Tensor | None = None,
    regions: torch.Tensor | None = None,
    guidance: Guidance | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """The conditions eq. (2) evaluates, stacked on the batch: audio (B, N, 512) or None (no audio), driving
    (B, N, 70) or None with regions (B, R) -> (cond (K B, F, blocks, 2 width), the K weights)."""
    guidance = guidance or NO_GUIDANCE
    like = leading_signal(audio, driving)
    check_signals(model, audio is not None, driving is not None, guidance)
    silent = like.new_zeros(*like.shape[:2], model.audio_dim)
    conds, weights = [], []
    for audio_on, motion_on, weight in guidance.terms(audio is not None, driving is not None):
        kwargs = {"driving": driving, "regions": regions} if motion_on else {}
        conds.append(model.condition(audio if audio_on else silent, **kwargs))
        weights.append(float(weight))
    return torch.cat(conds), weights


def leading_signal(audio: torch.Tensor | None, driving: torch.Tensor | None) -> torch.Tensor:
    """The signal whose frames a run samples: the audio (B, T, 512), else the driving motion (B, T, 70)."""
    if audio is None and driving is None:
        raise AudioError("no audio and no driving motion: there is nothing to sample the motion from")
    return audio if audio is not None else driving


def combine(eps: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Epsilons of the K conditions stacked on the batch (K B, ...) -> their weighted sum (B, ...), eq. (2)."""
    if len(weights) == 1 and weights[0] == 1:
        return eps
    parts = eps.chunk(len(weights))
    return sum(w * e for w, e in zip(weights, parts))
