"""The weight-folder check: every missing, truncated or wrong file is named with where the right one goes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from kdtalker.errors import CheckpointError
from kdtalker.pipeline.weights import CROP_FILES, WEIGHT_FILES, check_checkpoint_dir, crop_model_files

REPO = Path(__file__).resolve().parent.parent
ONE = torch.zeros(1)

# The smallest objects laid out like each official file (same containers and key prefixes, tiny tensors).
FAKE_CONTENTS = {
    "liveportrait/base_models/appearance_feature_extractor.pth": {
        "first.conv.weight": ONE,
        "resblocks_3d.3dr0.conv1.weight": ONE,
    },
    "liveportrait/base_models/motion_extractor.pth": {"detector.norm.weight": ONE},
    "liveportrait/base_models/warping_module.pth": {"dense_motion_network.mask.weight": ONE},
    "liveportrait/base_models/spade_generator.pth": {"G_middle_0.conv_0.bias": ONE},
    "liveportrait/retargeting_models/stitching_retargeting_module.pth": {
        "retarget_shoulder": {"module.mlp.0.weight": ONE},
        "retarget_mouth": {"module.mlp.0.weight": ONE},
        "retarget_eye": {"module.mlp.0.weight": ONE},
    },
    "wav2lip.pth": {"state_dict": {"module.audio_encoder.0.conv_block.0.weight": ONE}, "global_step": 0},
    "KDTalker.pth": {"model": {"point_model.model.time_mlp.1.weight": ONE}},
}


def make_fake_checkpoints(root: Path) -> Path:
    """A checkpoint folder that passes check_checkpoint_dir (not loadable into the models)."""
    for relpath, obj in FAKE_CONTENTS.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, root / relpath)
    shutil.copyfile(REPO / "checkpoints" / "norm.npz", root / "norm.npz")
    return root


def test_listing_matches_the_readme():
    readme = (REPO / "checkpoints" / "README.md").read_text()
    assert set(FAKE_CONTENTS) == {f.relpath for f in WEIGHT_FILES}
    for relpath in list(FAKE_CONTENTS) + list(CROP_FILES.values()) + ["norm.npz"]:
        assert Path(relpath).name in readme, relpath


def test_good_folder(tmp_path):
    found = check_checkpoint_dir(make_fake_checkpoints(tmp_path))
    assert set(found) == set(FAKE_CONTENTS) | {"norm.npz"}


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint_dir(tmp_path / "nowhere")
    root = make_fake_checkpoints(tmp_path)
    (root / "liveportrait/base_models/warping_module.pth").unlink()
    with pytest.raises(CheckpointError, match=r"missing weight file .*warping_module\.pth.*LivePortrait.*README"):
        check_checkpoint_dir(root)


def test_truncated_file(tmp_path):
    root = make_fake_checkpoints(tmp_path)
    path = root / "KDTalker.pth"
    torch.save({"model": {"point_model.model.x": torch.randn(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"KDTalker\.pth.*(truncated|not a PyTorch)"):
        check_checkpoint_dir(root)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        check_checkpoint_dir(root)


def test_swapped_files_are_identified(tmp_path):
    root = make_fake_checkpoints(tmp_path)
    shutil.copyfile(root / "KDTalker.pth", root / "wav2lip.pth")
    with pytest.raises(CheckpointError, match=r"wav2lip\.pth is not Wav2Lip.*looks like KDTalker\.pth"):
        check_checkpoint_dir(root)


def test_bad_norm(tmp_path):
    import numpy as np

    root = make_fake_checkpoints(tmp_path)
    np.savez(root / "norm.npz", yaw_mean=np.zeros(1))
    with pytest.raises(CheckpointError, match="norm.npz"):
        check_checkpoint_dir(root)


def test_crop_models_named_when_missing(tmp_path):
    with pytest.raises(CheckpointError, match=r"det_10g\.onnx.*crop=dlib"):
        crop_model_files(tmp_path)
