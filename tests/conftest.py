import os

os.environ.setdefault("TQDM_DISABLE", "1")
# No test reaches the real Hugging Face Hub (download=auto would on an incomplete folder); tests/test_pipeline_hub.py
# lifts this for its local fake Hub only. Set before huggingface_hub is imported: it reads the variable then.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from reference import ReferenceSet  # noqa: E402

# Caches under XDG_CACHE_HOME (the renderer's graph cache, renderer.graph_cache) go to a private folder of this run,
# never into ~/.cache. The process that makes it removes it at exit; pytest-xdist's workers and every subprocess
# inherit it, so the whole run exports each graph once.
if "KDTALKER_TESTS_CACHE_HOME" not in os.environ:
    os.environ["KDTALKER_TESTS_CACHE_HOME"] = tempfile.mkdtemp(prefix="kdtalker_tests_cache_")
    atexit.register(shutil.rmtree, os.environ["KDTALKER_TESTS_CACHE_HOME"], True)
os.environ["XDG_CACHE_HOME"] = os.environ["KDTALKER_TESTS_CACHE_HOME"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores; one torch thread each avoids oversubscription. The scripts a test
    # runs (inference.py, the learning check, the demo's server) inherit one thread too: a test waits for its
    # subprocess, which takes the worker's core; two threads each, two learning checks side by side took 3-5x longer.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small tensors (or many sequential passes): on a small CPU shared with
    other jobs, two spinning OpenMP threads per process stall each other far more than they help."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


FACEVID2VID_PARTS = ("kp_detector", "he_estimator", "generator")


@pytest.fixture(scope="session")
def facevid2vid_states(facevid2vid_ref) -> dict:
    """{part: fixture state dict} of the real-size Face-vid2vid networks (173 M values)."""
    return {part: facevid2vid_ref.weights(facevid2vid_ref.manifest["specs"][part]) for part in FACEVID2VID_PARTS}


@pytest.fixture(scope="session")
def facevid2vid_files(facevid2vid_states, tmp_path_factory):
    """The fixture weights as SadTalker's safetensors (another network of its beside) and as the re-implementation's
    .pth.tar trainer checkpoint (with discriminator / optimizer entries), 0.7 GB each, written once per session."""
    import shutil

    from safetensors.torch import save_file

    from kdtalker.facevid2vid.checkpoints import PARTS

    root = tmp_path_factory.mktemp("facevid2vid")
    flat = {PARTS[part][0] + k: v for part, state in facevid2vid_states.items() for k, v in state.items()}
    flat["mapping.first.0.weight"] = torch.zeros(4, 2)  # SadTalker's file holds its other networks too: ignored
    save_file(flat, str(root / "SadTalker_V0.0.2_256.safetensors"))
    del flat
    trainer = {PARTS[part][1]: state for part, state in facevid2vid_states.items()}
    trainer.update(discriminator={"down.weight": torch.zeros(2)}, optimizer_generator={"state": {}}, epoch=189)
    torch.save(trainer, root / "00000189-checkpoint.pth.tar")
    yield {"safetensors": root / "SadTalker_V0.0.2_256.safetensors", "pth": root / "00000189-checkpoint.pth.tar"}
    shutil.rmtree(root, ignore_errors=True)
