"""Weights from the Hugging Face Hub on first use, against a local fake Hub (HTTP on 127.0.0.1, in a thread).

The fake answers what huggingface_hub's hf_hub_download asks: HEAD and GET `/{repo}/resolve/{revision}/{path}` with
ETag, X-Repo-Commit and Content-Length, and Range requests (206) for resuming. Files are small stand-ins: the point
is the download path (first use, resume, nothing twice, offline errors, no request for a full local folder).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kdtalker.errors import CheckpointError, ConfigError
from kdtalker.pipeline.hub import fetch_missing, hub_files
from kdtalker.pipeline.weights import NORM_FILE

REPO = Path(__file__).resolve().parent.parent
SHIPPED_NORM = REPO / "checkpoints" / NORM_FILE
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    """A thread serving {repo_id: {path: bytes}} as the Hub's resolve endpoint; records every request."""

    def __init__(self, files: dict[str, dict[str, bytes]]):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_first_get: set[str] = set()  # request paths whose first GET stops halfway
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((handler.command, handler.path, handler.headers.get("Range")))
        data = self._lookup(handler.path)
        if data is None:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start = 0
        ranged = handler.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start = int(ranged[len("bytes=") :].split("-")[0])
        handler.send_response(206 if start else 200)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(data) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.end_headers()
        if not body:
            return
        if handler.path in self.cut_first_get:  # the connection drops halfway through the first download
            self.cut_first_get.discard(handler.path)
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.wfile.write(data[start:])

    def _lookup(self, path: str) -> bytes | None:
        parts = path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        return self.files.get(repo, {}).get(filename)

    def gets(self) -> list[tuple[str, str, str | None]]:
        """The file downloads so far (GETs of a resolve address; huggingface_hub may also ask its API)."""
        return [r for r in self.requests if r[0] == "GET" and "/resolve/" in r[1]]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def stand_ins(crop_models: bool = False) -> tuple[dict[str, bytes], dict[str, dict[str, bytes]]]:
    """{relpath: bytes} for the checkpoint folder and the same files as the fake Hub's {repo: {path: bytes}}."""
    content, served = {}, {}
    for rel, spec in hub_files(crop_models).items():
        data = (f"stand-in for {rel}\n".encode()) * 4096  # ~100-200 kB: several chunks, a cut in the middle
        content[rel] = data
        served.setdefault(spec.repo_id, {})[spec.filename] = data
    return content, served


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest keeps the real Hub away
    content, served = stand_ins(crop_models=True)
    with FakeHub(served) as fake:
        fake.content = content
        yield fake


def fetch(root: Path, hub: FakeHub, tmp_path: Path, **kwargs) -> list[Path]:
    lines = kwargs.pop("report", None)
    return fetch_missing(
        root,
        endpoint=hub.url,
        cache_dir=tmp_path / "hf_cache",
        report=(lines.append if lines is not None else (lambda line: None)),
        **kwargs,
    )


def folder_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_first_use_downloads_what_is_missing_and_a_second_run_nothing(hub, tmp_path):
    root = tmp_path / "checkpoints"
    lines: list[str] = []
    written = fetch(root, hub, tmp_path, norm_copy=SHIPPED_NORM, report=lines)
    expected = {rel for rel in hub_files()} | {NORM_FILE}
    assert folder_files(root) == expected  # nothing else in the folder (no temporary parts, no Hub metadata)
    assert {p.relative_to(root).as_posix() for p in written} == expected
    for rel in hub_files():
        assert (root / rel).read_bytes() == hub.content[rel]
    assert (root / NORM_FILE).read_bytes() == SHIPPED_NORM.read_bytes()
    assert len(hub.gets()) == len(hub_files())  # one GET per file, the crop models not asked for
    assert "/ChaolongYang/KDTalker/resolve/main/ckpts/KDTalker.pth" in {path for _, path, _ in hub.gets()}
    said = [line for line in lines if line.startswith("downloading")]
    assert len(said) == 1 and str(root) in said[0] and hub.url in said[0] and "7 weight files" in said[0]

    before = len(hub.requests)
    assert fetch(root, hub, tmp_path, norm_copy=SHIPPED_NORM) == []
    assert len(hub.requests) == before  # a full folder: not one request


def test_the_hub_cache_is_shared_a_removed_file_comes_back_without_a_second_download(hub, tmp_path):
    root = tmp_path / "checkpoints"
    fetch(root, hub, tmp_path)
    rel = "liveportrait/base_models/warping_module.pth"
    (root / rel).unlink()
    gets = len(hub.gets())
    assert fetch(root, hub, tmp_path) == [root / rel]
    assert (root / rel).read_bytes() == hub.content[rel]
    assert len(hub.gets()) == gets  # huggingface_hub checked the ETag (HEAD) and took its cached copy


def test_an_interrupted_download_resumes_with_a_range_request(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub writes in 10 MB chunks; small ones let the stand-in's first half reach the disk before the cut
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    root = tmp_path / "checkpoints"
    path = "/ChaolongYang/KDTalker/resolve/main/ckpts/KDTalker.pth"
    hub.cut_first_get.add(path)
    fetch(root, hub, tmp_path)
    data = hub.content["KDTalker.pth"]
    assert (root / "KDTalker.pth").read_bytes() == data
    tries = [ranged for method, p, ranged in hub.requests if method == "GET" and p == path]
    assert tries == [None, f"bytes={len(data) // 2}-"]  # the second request asks only for the rest


def test_a_killed_run_leaves_whole_files_and_the_next_run_fetches_only_the_rest(hub, tmp_path, monkeypatch):
    import huggingface_hub.constants
    import huggingface_hub.file_download as file_download

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    root = tmp_path / "checkpoints"
    path = "/ChaolongYang/KDTalker/resolve/main/ckpts/KDTalker.pth"  # the last file: the others are done by then
    hub.cut_first_get.add(path)

    def ctrl_c(seconds):  # the user presses Ctrl-C while huggingface_hub waits to retry
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(file_download, "time", types.SimpleNamespace(sleep=ctrl_c))
        with pytest.raises(KeyboardInterrupt):
            fetch(root, hub, tmp_path)
    assert folder_files(root) == set(hub_files()) - {"KDTalker.pth"}  # whole files only, no partial one
    assert not [p for p in (tmp_path / "hf_cache").rglob("*") if ".incomplete" in p.name]  # none in the cache
    fetch(root, hub, tmp_path)
    assert (root / "KDTalker.pth").read_bytes() == hub.content["KDTalker.pth"]
    # huggingface_hub 2.x keeps no partial file across runs (a per-process temporary, removed on failure): the
    # unfinished file starts again, the finished ones are not asked for again
    assert [p for _, p, _ in hub.gets()].count(path) == 2 and len(hub.gets()) == len(hub_files()) + 1


@pytest.mark.parametrize("way", ["HF_HUB_OFFLINE", "unreachable"])
def test_offline_is_one_error_naming_every_file_and_nothing_is_written(hub, tmp_path, monkeypatch, way):
    import huggingface_hub.constants

    root = tmp_path / "checkpoints"
    endpoint = hub.url
    if way == "HF_HUB_OFFLINE":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    else:
        import huggingface_hub.utils._http as hub_http

        # huggingface_hub retries a refused connection with back-off (~20 s): the test skips the waiting
        monkeypatch.setattr(hub_http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(CheckpointError) as error:
        fetch_missing(root, endpoint=endpoint, cache_dir=tmp_path / "hf_cache", norm_copy=SHIPPED_NORM, report=print)
    message = str(error.value)
    assert "\n" not in message and "7 weight files are missing" in message and "checkpoints/README.md" in message
    assert ("HF_HUB_OFFLINE" in message) == (way == "HF_HUB_OFFLINE")
    assert "HF_ENDPOINT=https://hf-mirror.com" in message
    assert len(error.value.details) == 7
    assert any(d.endswith("/ChaolongYang/KDTalker/resolve/main/ckpts/KDTalker.pth") for d in error.value.details)
    assert hub.requests == []
    assert folder_files(root) == set()  # not even the norm copy: the run stops before anything lands


def test_a_full_local_folder_never_touches_the_network(hub, tmp_path, monkeypatch):
    import huggingface_hub

    root = tmp_path / "mine"
    for rel, data in hub.content.items():
        if rel in hub_files():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    (root / NORM_FILE).write_bytes(SHIPPED_NORM.read_bytes())

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    assert fetch(root, hub, tmp_path) == []
    assert hub.requests == []


def test_download_never_leaves_the_folder_as_it_is(hub, tmp_path):
    root = tmp_path / "checkpoints"
    assert fetch(root, hub, tmp_path, download="never", norm_copy=SHIPPED_NORM) == []
    assert hub.requests == [] and not root.exists()
    with pytest.raises(ConfigError, match="download='sometimes'"):
        fetch(root, hub, tmp_path, download="sometimes")


def test_hf_endpoint_reaches_a_mirror_from_the_download_script(hub, tmp_path):
    root = tmp_path / "checkpoints"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = str(REPO)  # a script's own folder comes first on sys.path: this checkout's package
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "download_weights.py"), f"dir={root}", "crop_models=true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert folder_files(root) == set(hub.content) | {NORM_FILE}
    assert all((root / rel).read_bytes() == data for rel, data in hub.content.items())
    assert len(hub.gets()) == len(hub.content)  # 9 files, each once, from the mirror
    assert (tmp_path / "hf_home" / "hub").is_dir()  # huggingface_hub's own cache, under HF_HOME


def inference_command(checkpoint_dir: Path, output: Path) -> list[str]:
    """The README's main command on the example portrait and short speech, with this checkpoint folder."""
    return [
        sys.executable,
        str(REPO / "inference.py"),
        f"source_image={REPO / 'examples' / 'astronaut.png'}",
        f"driven_audio={REPO / 'examples' / 'speech_short.wav'}",
        f"output={output}",
        f"checkpoint_dir={checkpoint_dir}",
    ]


def test_inference_offline_is_one_error_line_and_exit_1(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    out = tmp_path / "out.mp4"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "TQDM_DISABLE": "1"}
    done = subprocess.run(inference_command(root, out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: 7 weight files are missing") and "HF_HUB_OFFLINE" in lines[0], done.stderr
    assert all(line.startswith("  ") for line in lines[1:]) and len(lines) == 8  # the files, one per line
    assert not out.exists() and list(root.iterdir()) == []
    assert "downloading" not in done.stdout  # offline nothing is downloaded, so nothing says it is


def test_the_test_suite_never_reaches_the_real_hub():
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE before the import


def test_the_main_command_fetches_on_first_use_and_not_again(hub, tmp_path):
    """inference.py on an empty folder through HF_ENDPOINT: downloads and links the files (stand-ins here, so the
    folder check refuses them afterwards: the download path is the point), and a second run asks the Hub nothing."""
    root = tmp_path / "checkpoints"
    out = tmp_path / "out.mp4"
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf_home"), "TQDM_DISABLE": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    command = inference_command(root, out)
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    said = [line for line in first.stdout.splitlines() if line.startswith("downloading")]
    assert len(said) == 1 and f"into {root}" in said[0] and hub.url in said[0], first.stdout
    assert folder_files(root) == set(hub_files()) | {NORM_FILE}
    assert first.returncode == 1 and first.stderr.startswith("error: "), first.stderr
    assert "is not a PyTorch checkpoint" in first.stderr
    gets = len(hub.gets())
    assert gets == len(hub_files())
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1 and "downloading" not in second.stdout
    assert len(hub.gets()) == gets and not out.exists()
