"""wav2lip.pth -> AudioEncoder: only the `module.audio_encoder.*` entries of the Wav2Lip generator are used."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from kdtalker.audio.encoder import AudioEncoder
from kdtalker.device import resolve_device
from kdtalker.errors import CheckpointError
from kdtalker.weights import load_state_strict, load_torch_file

WHAT = "Wav2Lip audio encoder"
ENCODER_KEY = "audio_encoder."


def _state_dict(checkpoint: Any, source: str) -> Mapping[str, Any]:
    """The tensor dict inside a wav2lip.pth container ({'state_dict': ...}) or a bare state dict."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{WHAT}: {source} holds a {type(checkpoint).__name__}, not a Wav2Lip checkpoint dict; "
            "give the official wav2lip.pth"
        )
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{WHAT}: the 'state_dict' entry of {source} is a {type(state).__name__}, not a dict of tensors"
        )
    return state


def audio_encoder_state(checkpoint: Any, source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """Encoder entries of a Wav2Lip checkpoint keyed as AudioEncoder's own (`<L>.conv_block.<0|1>.*`)."""
    state = _state_dict(checkpoint, source)
    keys = [k for k in state if isinstance(k, str)]
    # wav2lip.pth stores `module.audio_encoder.<L>...`; a de-DataParalleled copy has `audio_encoder.<L>...`.
    picked = {k.split(ENCODER_KEY, 1)[1]: v for k, v in state.items() if isinstance(k, str) and ENCODER_KEY in k}
    if not picked:
        own = set(AudioEncoder().state_dict())
        bare = {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str)}
        if bare and set(bare) <= own:
            picked = bare
        else:
            shown = ", ".join(keys[:4]) or "none"
            raise CheckpointError(
                f"{WHAT}: {source} has no 'audio_encoder' weights (first keys: {shown}); this is not wav2lip.pth - "
                "download the Wav2Lip checkpoint (see checkpoints/README.md)"
            )
    not_tensors = [k for k, v in picked.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{WHAT}: {source} entries {', '.join(not_tensors[:3])} are not tensors")
    return picked


def load_audio_encoder(
    path_or_dict: str | os.PathLike | Mapping[str, Any], device: str | torch.device = "cpu"
) -> AudioEncoder:
    """Official wav2lip.pth (path or its loaded dict) -> AudioEncoder in eval mode on `device`."""
    if isinstance(path_or_dict, Mapping):
        source, checkpoint = "the given checkpoint dict", path_or_dict
    else:
        source, checkpoint = str(path_or_dict), load_torch_file(path_or_dict, WHAT)
    state = audio_encoder_state(checkpoint, source)
    encoder = AudioEncoder()
    # num_batches_tracked never affects eval-mode outputs; older saves may lack it.
    for key, value in encoder.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    load_state_strict(encoder, state, WHAT, source)
    return encoder.to(resolve_device(device)).eval()
