"""Audio front end: file loading at 16 kHz, the Wav2Lip mel, per-video-frame windows and the Wav2Lip audio encoder."""

from kdtalker.audio.encoder import AudioEncoder, audio_features, audio_windows, encode_windows
from kdtalker.audio.features import SpeechFeatures
from kdtalker.audio.io import SAMPLE_RATE, StreamingResampler, load_audio, resample
from kdtalker.audio.mel import mel_amplitude, mel_basis, torch_wav2lip_mel, wav2lip_mel
from kdtalker.audio.streaming import (
    StreamChunk,
    StreamingMelWindows,
    StreamingSpeechFeatures,
    final_frames,
    lookahead_samples,
    samples_needed,
)
from kdtalker.audio.windows import crop_to_frames, mel_windows, num_video_frames, window_indices, window_starts

__all__ = [
    "SAMPLE_RATE",
    "AudioEncoder",
    "SpeechFeatures",
    "StreamChunk",
    "StreamingMelWindows",
    "StreamingResampler",
    "StreamingSpeechFeatures",
    "audio_features",
    "audio_windows",
    "crop_to_frames",
    "encode_windows",
    "final_frames",
    "load_audio",
    "lookahead_samples",
    "mel_amplitude",
    "mel_basis",
    "mel_windows",
    "num_video_frames",
    "resample",
    "samples_needed",
    "torch_wav2lip_mel",
    "wav2lip_mel",
    "window_indices",
    "window_starts",
]
