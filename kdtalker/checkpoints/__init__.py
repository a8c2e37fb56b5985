"""Loaders for the official weight files (LivePortrait, Wav2Lip, KDTalker and the evaluation models)."""

from kdtalker.checkpoints.common import load_state_strict, load_torch_file, strip_prefix

__all__ = ["load_state_strict", "load_torch_file", "strip_prefix"]
