import os

os.environ.setdefault("TQDM_DISABLE", "1")
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from reference import ReferenceSet  # noqa: E402


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
