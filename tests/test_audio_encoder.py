"""AudioEncoder shapes and batch order, audio_features, and the wav2lip.pth loader's errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixture_weights import fixture_state_dict

from kdtalker.audio import AudioEncoder, audio_features, audio_windows
from kdtalker.audio.checkpoint import load_audio_encoder
from kdtalker.errors import AudioError, CheckpointError

SPEC = "spec_wav2lip_audio_encoder.json"


@pytest.fixture(scope="module")
def official_state(audio_ref) -> dict[str, torch.Tensor]:
    """Fixture tensors keyed as in wav2lip.pth (`module.audio_encoder.*`) plus two face keys."""
    state = audio_ref.weights(SPEC)
    face = dict(list(audio_ref.spec(SPEC)["checkpoint_layout"]["other_keys"].items())[:2])
    state.update(fixture_state_dict({"shapes": face}, audio_ref.salt))
    return state


@pytest.fixture(scope="module")
def encoder(official_state) -> AudioEncoder:
    return load_audio_encoder({"state_dict": official_state})


def windows(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 1, 80, 16, generator=g) * 8 - 4


def test_state_dict_keys_are_the_checkpoint_keys(audio_ref):
    spec_keys = {k.removeprefix("module.audio_encoder.") for k in audio_ref.spec(SPEC)["shapes"]}
    assert set(AudioEncoder().state_dict()) == spec_keys


def test_forward_shape_and_non_negative(encoder):
    with torch.inference_mode():
        out = encoder(windows(1, 5))
    assert out.shape == (1, 5, 512) and out.min() >= 0


def test_batch_keeps_per_sample_order(encoder):
    x = windows(3, 4)
    with torch.inference_mode():
        together = encoder(x)
        for b in range(3):
            torch.testing.assert_close(together[b], encoder(x[b : b + 1])[0], rtol=0, atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_bad_window_shape(encoder):
    with pytest.raises(ValueError, match="B, T, 1, 80, 16"):
        encoder(torch.zeros(4, 1, 80, 16))


def test_audio_features_batch_size_does_not_change_result(encoder):
    rng = np.random.default_rng(0)
    wav = (0.3 * rng.standard_normal(16000 * 1 + 300)).astype(np.float32)
    full = audio_features(wav, encoder, fps=25, batch_size=256)
    assert full.shape == (25, 512)
    torch.testing.assert_close(audio_features(wav, encoder, fps=25, batch_size=7), full, rtol=0, atol=1e-5)
    assert audio_features(wav, encoder, fps=30, batch_size=256).shape == (30, 512)
    with torch.inference_mode():
        direct = encoder(torch.from_numpy(audio_windows(wav))[None, :, None])[0]
    torch.testing.assert_close(full, direct, rtol=0, atol=1e-5)


def test_audio_features_follow_encoder_dtype(official_state):
    enc64 = load_audio_encoder({"state_dict": official_state}).double()
    wav = np.zeros(1280, np.float32)
    assert audio_features(wav, enc64, fps=25, batch_size=256).dtype == torch.float64


def test_audio_features_too_short(encoder):
    with pytest.raises(AudioError, match="shorter than one video frame"):
        audio_features(np.zeros(639, np.float32), encoder, fps=25, batch_size=256)


def test_loads_file_and_dict_identically(official_state, encoder, tmp_path):
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": official_state, "optimizer": {}, "global_step": 1, "global_epoch": 1}, path)
    from_file = load_audio_encoder(path, device="cpu")
    assert not from_file.training
    for (k, a), b in zip(from_file.state_dict().items(), encoder.state_dict().values()):
        assert torch.equal(a, b), k


def test_tolerates_bare_and_stripped_state_dicts(official_state, encoder):
    x = windows(1, 3)
    with torch.inference_mode():
        expected = encoder(x)
        bare = load_audio_encoder(official_state)  # no {'state_dict': ...} wrapper
        stripped = load_audio_encoder({k.removeprefix("module."): v for k, v in official_state.items()})
        own = load_audio_encoder(
            {k.removeprefix("module.audio_encoder."): v for k, v in official_state.items() if "audio_encoder" in k}
        )
        for enc in (bare, stripped, own):
            torch.testing.assert_close(enc(x), expected, rtol=0, atol=0)


def test_tolerates_missing_num_batches_tracked(official_state, encoder):
    state = {k: v for k, v in official_state.items() if not k.endswith("num_batches_tracked")}
    loaded = load_audio_encoder({"state_dict": state})
    x = windows(1, 2)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), encoder(x), rtol=0, atol=0)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_audio_encoder(tmp_path / "wav2lip.pth")


def test_garbage_file(tmp_path):
    path = tmp_path / "wav2lip.pth"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_audio_encoder(path)


def test_wrong_checkpoint(tmp_path):
    path = tmp_path / "KDTalker.pth"
    torch.save({"model": {"blocks.0.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="no 'audio_encoder' weights") as err:
        load_audio_encoder(path)
    assert str(path) in str(err.value)


def test_not_a_dict(tmp_path):
    path = tmp_path / "wav2lip.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="not a Wav2Lip checkpoint"):
        load_audio_encoder(path)


def test_missing_and_misshaped_encoder_keys(official_state):
    incomplete = {k: v for k, v in official_state.items() if not k.startswith("module.audio_encoder.12.")}
    with pytest.raises(CheckpointError, match="missing keys"):
        load_audio_encoder({"state_dict": incomplete})
    misshaped = dict(official_state)
    misshaped["module.audio_encoder.0.conv_block.0.weight"] = torch.zeros(16, 1, 3, 3)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_audio_encoder({"state_dict": misshaped})
