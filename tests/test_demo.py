"""The web demo as people use it: `python scripts/demo.py` on fixture weights, driven by headless Chromium (Debian's
`chromium` + `chromium-driver`, which .ci/run installs) through selenium, and by gradio_client through its API.

One server serves every test here (models load once, as in use); each generated video renders one or two
full-size frames of fixture weights (no meaningful face, but every stage and the served mp4 are the real ones).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from test_inference_e2e import short_speech

from kdtalker.media import probe_video

REPO = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
AUDIO_LIMIT = 1.5  # limits.audio_seconds of the test server
UPLOAD_MB = 1  # limits.upload_mb of the test server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path, checkpoint_dir: Path, *overrides: str) -> tuple[subprocess.Popen, str, Path]:
    """scripts/demo.py on a free port of 127.0.0.1 (its TMPDIR under root, its output in root/server.log), up ->
    (proc, url, tmp)."""
    tmp = root / "tmp"
    tmp.mkdir()
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(tmp), GRADIO_ANALYTICS_ENABLED="False")
    env.pop("TQDM_DISABLE", None)  # the page's progress bar follows the pipeline's tqdm bars
    env.pop("GRADIO_TEMP_DIR", None)  # Gradio's own default (TMPDIR/gradio), as a user has it
    cmd = [sys.executable, str(REPO / "scripts" / "demo.py"), f"checkpoint_dir={checkpoint_dir}", f"server.port={port}"]
    proc, url = serve_page(root, [*cmd, *overrides], env, port)
    return proc, url, tmp


def serve_page(root: Path, cmd: list[str], env: dict, port: int) -> tuple[subprocess.Popen, str]:
    """Start a page server `cmd` (cwd root, its output in root/server.log) and wait until it answers -> (proc, url)."""
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("the page did not start:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(1)


def headless_chromium(*extra_args: str):
    """Debian's Chromium, headless, through its chromedriver (extra_args: more command-line switches)."""
    assert CHROMIUM and CHROMEDRIVER, "the browser tests need Debian's chromium and chromium-driver (.ci/run installs)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(arg)
    for arg in extra_args:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(fixture_checkpoints, tmp_path_factory):
    """The demo on the fixture weights -> (url, its TMPDIR)."""
    limits = (f"limits.audio_seconds={AUDIO_LIMIT}", f"limits.upload_mb={UPLOAD_MB}")
    proc, url, tmp = _start(tmp_path_factory.mktemp("demo"), fixture_checkpoints, "device=cpu", "steps=1", *limits)
    yield url, tmp
    _stop(proc)
    assert not list(tmp.rglob("*"))  # its work folder, the uploads (of failed requests too) and results go with it


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def _wait(driver, what, timeout: float):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.5).until(what)


def _submit(driver, url: str, image: Path, audio: Path) -> None:
    """Open the page, upload the portrait and the speech, press Generate."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    for elem_id, path in (("portrait", image), ("speech", audio)):
        field = _wait(driver, lambda d, e=elem_id: d.find_element(By.CSS_SELECTOR, f"#{e} input[type=file]"), 60)
        field.send_keys(str(path))
    # the upload is done when the components show the files (an <img> preview, the audio player)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#portrait img"), 60)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#speech audio, #speech .waveform-container"), 60)
    driver.find_element(By.CSS_SELECTOR, "#generate").click()


def _work_files(tmp: Path) -> list[Path]:
    """Everything under the demo's work folders (kdtalker_demo_*) in its TMPDIR."""
    return [p for work in tmp.glob("kdtalker_demo_*") for p in work.rglob("*")]


@pytest.mark.slow
def test_generate_in_the_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = server
    audio = short_speech(tmp_path / "speech.wav", 0.04)  # 1 video frame
    _submit(browser, url, REPO / "examples" / "astronaut.png", audio)
    shown = []  # what the result panel shows while it waits: the progress of the pipeline's own stages

    def finished(d):
        shown.append(d.find_element(By.CSS_SELECTOR, "#result").text)
        return d.find_elements(By.CSS_SELECTOR, "#result video[src]")

    video = _wait(browser, finished, 400)[0]
    assert any("rendering" in text and "0/1 frame" in text for text in shown), set(shown)
    src = video.get_attribute("src")
    served = tmp_path / "served.mp4"
    served.write_bytes(urllib.request.urlopen(src, timeout=30).read())
    info = probe_video(served)
    assert info["frames"] == 1 and (info["width"], info["height"]) == (512, 512)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert browser.find_elements(By.CSS_SELECTOR, "#result button[aria-label*=ownload], #result a[download]")
    browser.save_screenshot(str(tmp_path / "demo.png"))
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_no_face_shows_the_error_in_the_page(server, browser, tmp_path):
    url, tmp = server
    before = set(_work_files(tmp))
    blank = tmp_path / "no_face.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(blank)
    audio = short_speech(tmp_path / "speech.wav", 0.08)
    _submit(browser, url, blank, audio)
    _wait(browser, lambda d: "no face" in d.find_element("tag name", "body").text.lower(), 120)
    assert "Traceback" not in browser.find_element("tag name", "body").text
    browser.save_screenshot(str(tmp_path / "error.png"))
    assert set(_work_files(tmp)) == before  # the failed request left nothing behind


def test_a_portrait_that_is_not_an_image_gets_one_line_in_the_page(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, tmp = server
    speech = short_speech(tmp_path / "speech.wav", 0.04)
    browser.get(url)
    for elem_id in ("portrait", "speech"):  # the speech given as the portrait too
        field = _wait(browser, lambda d, e=elem_id: d.find_element(By.CSS_SELECTOR, f"#{e} input[type=file]"), 60)
        field.send_keys(str(speech))
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#speech audio, #speech .waveform-container"), 60)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    # the page's Image drops what is not an image, so the request has none (through the API: the test below)
    _wait(browser, lambda d: "upload a portrait image first" in d.find_element("tag name", "body").text, 60)
    body = browser.find_element("tag name", "body").text
    assert "Traceback" not in body and "upstream Gradio app" not in body
    assert "Traceback" not in (tmp.parent / "server.log").read_text()


def test_api_endpoint_gives_the_command_line_messages(server, tmp_path):
    # A successful call through the API (the mp4's path back): the README's client example, run below.
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, tmp = server
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    # the same one-line messages as the command line, as gr.Error
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(int(16000 * (AUDIO_LIMIT + 0.5)), np.float32), 16000)
    before = set(_work_files(tmp))
    with pytest.raises(AppError, match=f"at most {AUDIO_LIMIT:g} s"):
        client.predict(handle_file(REPO / "examples" / "astronaut.png"), handle_file(long), api_name="/generate")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(AppError, match="audio"):
        client.predict(handle_file(REPO / "examples" / "astronaut.png"), handle_file(broken), api_name="/generate")
    assert set(_work_files(tmp)) == before
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(16000 * 40, np.int16), 16000, subtype="PCM_16")  # 1.3 MB > limits.upload_mb
    with pytest.raises(Exception, match="(?i)size|large"):
        client.predict(handle_file(REPO / "examples" / "astronaut.png"), handle_file(big), api_name="/generate")
    assert json.dumps(client.view_api(print_info=False, return_format="dict"))  # the endpoint describes itself


def test_without_weights_the_page_starts_and_says_what_is_missing(browser, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    proc, url, tmp = _start(tmp_path, tmp_path / "empty_checkpoints")
    try:
        browser.get(url)
        _wait(browser, lambda d: "weights are missing" in d.find_element("tag name", "body").text, 60)
        text = browser.find_element("tag name", "body").text
        assert "KDTalker.pth" in text and "wav2lip.pth" in text and "checkpoints/README.md" in text
        assert not browser.find_element("css selector", "#generate").is_enabled()  # nothing to press yet
        with pytest.raises(AppError, match="weights are missing"):
            Client(url, verbose=False).predict(
                handle_file(REPO / "examples" / "astronaut.png"),
                handle_file(REPO / "examples" / "speech.wav"),
                api_name="/generate",
            )
        assert list(tmp.rglob("*.wav"))  # the failed request's uploads are on the server while it runs...
    finally:
        _stop(proc)
    assert not list(tmp.rglob("*"))  # ...and gone with it
    log = (tmp_path / "server.log").read_text()
    assert f"http://127.0.0.1:{url.rsplit(':', 1)[1].strip('/')}" in log
    assert "server.share=true" in log and "share=True" not in log  # our key for a public link, not Gradio's
    assert "Traceback" not in log


def test_uploads_that_are_not_media_get_the_command_line_message(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, tmp = server
    client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n")
    speech = short_speech(tmp_path / "speech.wav", 0.04)
    portrait = REPO / "examples" / "astronaut.png"
    cases = [  # (portrait, speech) -> the line the command line prints for the same files
        (text, speech, "could not be read as an image"),
        (speech, speech, "could not be read as an image"),
        (portrait, text, "audio"),
    ]
    for image, audio, message in cases:
        with pytest.raises(AppError, match=message) as caught:
            client.predict(handle_file(image), handle_file(audio), api_name="/generate")
        assert "\n" not in str(caught.value) and "upstream Gradio app" not in str(caught.value)
    assert "Traceback" not in (tmp.parent / "server.log").read_text()


def test_the_readme_client_example_runs_as_written(server, tmp_path, monkeypatch, capsys):
    from gradio_client import Client

    url, _ = server
    block = re.search(r"```py\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    assert "from gradio_client import Client, handle_file" in block and "http://127.0.0.1:7860/" in block
    (tmp_path / "examples").mkdir()  # the README's relative paths, from a folder laid out like the repository
    shutil.copyfile(REPO / "examples" / "astronaut.png", tmp_path / "examples" / "astronaut.png")
    short_speech(tmp_path / "examples" / "speech.wav", 0.04)
    monkeypatch.chdir(tmp_path)
    # the client's downloads go under tmp_path, not the machine's /tmp/gradio
    monkeypatch.setitem(Client.__init__.__kwdefaults__, "download_files", str(tmp_path / "downloads"))
    capsys.readouterr()
    exec(compile(block.replace("http://127.0.0.1:7860/", url), "README.md py block", "exec"), {})  # noqa: S102
    printed = capsys.readouterr().out.splitlines()[-1]  # after the client's own "Loaded as API: ..."
    assert printed.endswith(".mp4")  # the example prints what predict returns: the path of the video
    info = probe_video(Path(printed))
    assert info["frames"] == 1 and info["audio_codec"] == "aac"


def test_gradio_cache_is_the_servers_own_and_goes_with_it(tmp_path, monkeypatch):
    from kdtalker.demo.cache import gradio_cache

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "users_choice"))
    with gradio_cache() as folder:
        assert folder.parent == tmp_path / "users_choice" and os.environ["GRADIO_TEMP_DIR"] == str(folder)
        (folder / "upload.png").write_bytes(b"x")
    assert not folder.exists() and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "users_choice")
