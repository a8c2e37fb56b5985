"""Audio conformance: loading, Wav2Lip mel, frame windows and audio encoder against the official cases.

Cases and weight salt come from $KDTALKER_REFERENCE/audio (manifest.json, cases.npz); tolerances are
those of the reference README section 10 (CPU, float32 networks).
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from fixture_weights import fixture_state_dict

from kdtalker.audio import (
    StreamingMelWindows,
    StreamingSpeechFeatures,
    audio_features,
    crop_to_frames,
    load_audio,
    mel_amplitude,
    mel_basis,
    mel_windows,
    num_video_frames,
    torch_wav2lip_mel,
    wav2lip_mel,
    window_indices,
    window_starts,
)
from kdtalker.audio.checkpoint import load_audio_encoder

ENCODER_SPEC = "spec_wav2lip_audio_encoder.json"
CASES = ["a16", "s16", "b44"]
FILE_RATE = {"a16": 16000, "s16": 16000, "b44": 44100}  # a16/s16: 16 kHz files; b44: 44.1 kHz

# Reference README section 10.
MEL_BASIS_ATOL = 1e-8
MEL_AMP_RTOL, MEL_AMP_ATOL = 1e-6, 1e-9
MEL_F64_ATOL = 1e-6  # *_mel, *_windows from a float64 front end
MEL_F32_ATOL = 2e-4  # *_mel from a float32 front end (torch.stft in float32)
ENC_ATOL = 5e-5
LAYER_STATS_RTOL = 1e-4


@pytest.fixture(scope="module")
def loaded(audio_ref, tmp_path_factory) -> dict[str, np.ndarray]:
    """Each case's stored PCM written to a wav with soundfile and read back through load_audio."""
    folder = tmp_path_factory.mktemp("audio_cases")
    out = {}
    for case in CASES:
        path = folder / f"{case}.wav"
        sf.write(path, audio_ref[f"{case}_pcm16"], FILE_RATE[case], subtype="PCM_16")
        out[case] = load_audio(path)
    return out


@pytest.fixture(scope="module")
def encoder(audio_ref, tmp_path_factory):
    """The fixture weights in the wav2lip.pth layout (plus a few face keys), loaded through the real loader."""
    spec = audio_ref.spec(ENCODER_SPEC)
    state = audio_ref.weights(ENCODER_SPEC)
    face = dict(list(spec["checkpoint_layout"]["other_keys"].items())[:4])
    state.update(fixture_state_dict({"shapes": face}, audio_ref.salt))
    path = tmp_path_factory.mktemp("weights") / "wav2lip.pth"
    torch.save({"state_dict": state, "optimizer": {}, "global_step": 0, "global_epoch": 0}, path)
    return load_audio_encoder(path, "cpu")


def _cropped(case: str, loaded: dict, audio_ref) -> np.ndarray:
    wav = loaded[case]
    return crop_to_frames(wav, int(audio_ref[f"{case}_num_frames"]))


@pytest.mark.parametrize("case", CASES)
def test_loading_and_frame_count(case, loaded, audio_ref):
    wav = loaded[case]
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert num_video_frames(len(wav)) == int(audio_ref[f"{case}_num_frames"])
    if case == "b44":
        # resampled with libsoxr HQ, length ceil(N * 16000 / 44100), before the crop
        np.testing.assert_array_equal(wav, audio_ref["b44_wav16k"])
    else:
        np.testing.assert_array_equal(_cropped(case, loaded, audio_ref), audio_ref[f"{case}_wav"])


def test_mel_basis(audio_ref):
    basis = mel_basis()
    assert basis.dtype == np.float32 and basis.shape == audio_ref["mel_basis"].shape
    np.testing.assert_allclose(basis, audio_ref["mel_basis"], rtol=0, atol=MEL_BASIS_ATOL)


def test_mel_amplitude(loaded, audio_ref):
    amp = mel_amplitude(_cropped("a16", loaded, audio_ref))
    np.testing.assert_allclose(amp, audio_ref["a16_mel_amp"], rtol=MEL_AMP_RTOL, atol=MEL_AMP_ATOL)


@pytest.mark.parametrize("case", CASES)
def test_mel(case, loaded, audio_ref):
    mel = wav2lip_mel(_cropped(case, loaded, audio_ref))
    assert mel.dtype == np.float64 and mel.shape == audio_ref[f"{case}_mel"].shape
    np.testing.assert_allclose(mel, audio_ref[f"{case}_mel"], rtol=0, atol=MEL_F64_ATOL)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, MEL_F32_ATOL), (torch.float64, MEL_F64_ATOL)])
def test_torch_mel(case, dtype, atol, loaded, audio_ref):
    wav = torch.from_numpy(_cropped(case, loaded, audio_ref)).to(dtype)
    mel = torch_wav2lip_mel(wav[None])
    assert mel.dtype == dtype and mel.shape == (1, *audio_ref[f"{case}_mel"].shape)
    np.testing.assert_allclose(mel[0].double().numpy(), audio_ref[f"{case}_mel"], rtol=0, atol=atol)


def test_window_starts(audio_ref):
    starts = window_starts(int(audio_ref["a16_num_frames"]))
    np.testing.assert_array_equal(starts, audio_ref["a16_win_start"])


@pytest.mark.parametrize("case", CASES)
def test_window_indices(case, audio_ref):
    num_frames, num_mel = int(audio_ref[f"{case}_num_frames"]), audio_ref[f"{case}_mel"].shape[1]
    np.testing.assert_array_equal(window_indices(num_frames, num_mel), audio_ref[f"{case}_win_idx"])


@pytest.mark.parametrize("case", CASES)
def test_windows(case, loaded, audio_ref):
    num_frames = int(audio_ref[f"{case}_num_frames"])
    windows = mel_windows(wav2lip_mel(_cropped(case, loaded, audio_ref)), num_frames)
    assert windows.dtype == np.float32 and windows.shape == audio_ref[f"{case}_windows"].shape
    np.testing.assert_allclose(windows, audio_ref[f"{case}_windows"], rtol=0, atol=MEL_F64_ATOL)


@pytest.mark.parametrize("case", CASES)
def test_encoder_on_reference_windows(case, encoder, audio_ref):
    windows = torch.from_numpy(audio_ref[f"{case}_windows"])[None, :, None]  # (1, T, 1, 80, 16)
    with torch.inference_mode():
        out = encoder(windows)[0]
    np.testing.assert_allclose(out.numpy(), audio_ref[f"{case}_enc_out"], rtol=0, atol=ENC_ATOL)


@pytest.mark.parametrize("case", CASES)
def test_audio_features_end_to_end(case, encoder, loaded, audio_ref):
    feats = audio_features(loaded[case], encoder, fps=25, batch_size=32)
    assert feats.shape == audio_ref[f"{case}_enc_out"].shape and feats.dtype == torch.float32
    np.testing.assert_allclose(feats.numpy(), audio_ref[f"{case}_enc_out"], rtol=0, atol=ENC_ATOL)


def test_encoder_layer_stats(encoder, audio_ref):
    x = torch.from_numpy(audio_ref["a16_windows"][:1])[:, None]  # window 0 alone, (1, 1, 80, 16)
    stats = []
    with torch.inference_mode():
        for block in encoder:
            x = block(x)
            d = x.double()
            stats.append([d.sum().item(), d.mean().item(), d.std().item(), d.abs().max().item()])
    np.testing.assert_allclose(np.array(stats), audio_ref["a16_enc_layer_stats_w0"], rtol=LAYER_STATS_RTOL, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_streaming_front_end(case, encoder, loaded, audio_ref):
    """The loaded speech pushed in uneven chunks (the uncropped tail included) gives the official windows and
    features, frame count included; the stream sees other encoder batches, within the same tolerance."""
    wav = loaded[case]
    cuts = [0, 1, 641, 641, 9000, 9013, 30000, len(wav)]
    mel_stream = StreamingMelWindows(25.0)
    windows = [mel_stream.push(wav[a:b]).values for a, b in zip(cuts[:-1], cuts[1:])] + [mel_stream.close().values]
    np.testing.assert_allclose(np.concatenate(windows), audio_ref[f"{case}_windows"], rtol=0, atol=MEL_F64_ATOL)
    stream = StreamingSpeechFeatures(encoder, 25.0, batch_size=32)
    pieces = [stream.push(wav[a:b]) for a, b in zip(cuts[:-1], cuts[1:])] + [stream.close()]
    assert [p.first for p in pieces[1:]] == [p.stop for p in pieces[:-1]]
    feats = torch.cat([p.values for p in pieces])
    assert feats.shape == audio_ref[f"{case}_enc_out"].shape
    np.testing.assert_allclose(feats.numpy(), audio_ref[f"{case}_enc_out"], rtol=0, atol=ENC_ATOL)
