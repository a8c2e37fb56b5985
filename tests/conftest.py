import os

os.environ.setdefault("TQDM_DISABLE", "1")
# No test reaches the real Hugging Face Hub (download=auto would on an incomplete folder); tests/test_pipeline_hub.py
# lifts this for its local fake Hub only. Set before huggingface_hub is imported: it reads the variable then.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from reference import ReferenceSet  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores; one torch thread each avoids oversubscription
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def audio_ref() -> ReferenceSet:
    return ReferenceSet("audio")


@pytest.fixture(scope="session")
def liveportrait_ref() -> ReferenceSet:
    return ReferenceSet("liveportrait")


@pytest.fixture(scope="session")
def kdtalker_ref() -> ReferenceSet:
    return ReferenceSet("kdtalker")


@pytest.fixture(scope="session")
def fixture_checkpoints(tmp_path_factory):
    """An official-layout checkpoint folder of full-size fixture weights (670 MB), written once per session."""
    import shutil

    from test_inference_e2e import write_fixture_checkpoints

    root = write_fixture_checkpoints(tmp_path_factory.mktemp("checkpoints"))
    yield root
    shutil.rmtree(root, ignore_errors=True)  # do not keep it among pytest's retained temp folders


@pytest.fixture(scope="session")
def facevid2vid_ref() -> ReferenceSet:
    return ReferenceSet("facevid2vid")
