"""The demo's Live tab (kdtalker/demo/live.py): a fake microphone in headless Chromium streaming a wav into a live
session, frames and the lag back on the page; and the per-browser-session feed on its own.

The page runs on the fast doubles of test_pipeline_generate.py (tests/live_page_server.py): the fixture weights
render a frame in seconds on a CPU, far behind a microphone; every other stage is the real one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_demo import _free_port, _stop, _wait, headless_chromium, serve_page
from test_pipeline_checkpoints import make_fake_checkpoints
from test_pipeline_generate import EXAMPLE, pipeline  # noqa: F401

from kdtalker.audio import SAMPLE_RATE, num_video_frames, resample
from kdtalker.demo.live import LiveFeed, browser_samples

REPO = Path(__file__).resolve().parent.parent
STATUS = re.compile(r"^(live|done): (\d+) frames from ([\d.]+) s of audio · lag (-|[\d.]+ s)")
# While live, frame i is out only once the audio reaches past it by the mel window's look-ahead (3 frames at 25 fps)
# and the Kalman smoother's fixed lag (11 frames); the hop and the queue only add to that.
LIVE_LAG_FRAMES = 3 + 11


@pytest.fixture()
def page(tmp_path):
    """tests/live_page_server.py on a free port (its TMPDIR under tmp_path) -> its url."""
    import os
    import sys

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = _free_port()
    root = make_fake_checkpoints(tmp_path / "ckpt")
    env = dict(os.environ, TMPDIR=str(tmp), GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    env.pop("GRADIO_TEMP_DIR", None)
    cmd = [sys.executable, str(REPO / "tests" / "live_page_server.py"), str(root), str(port)]
    proc, url = serve_page(tmp_path, cmd, env, port)
    yield url
    _stop(proc)
    assert not list(tmp.rglob("*"))  # uploads and the microphone's chunks go with the server
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def _chromium_with_a_microphone(wav: Path):
    """Headless Chromium whose microphone plays `wav` (in a loop) and allows the page to use it unasked."""
    return headless_chromium(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    )


@pytest.mark.slow
def test_the_live_tab_turns_the_microphone_into_frames_in_the_browser(page, tmp_path):
    from selenium.webdriver.common.by import By

    wav = tmp_path / "mic.wav"
    speech, rate = sf.read(REPO / "examples" / "speech.wav", dtype="float32")
    sf.write(wav, speech, rate, subtype="PCM_16")
    browser = _chromium_with_a_microphone(wav)
    try:
        browser.get(page)
        tab = _wait(
            browser, lambda d: [t for t in d.find_elements(By.CSS_SELECTOR, "[role=tab]") if t.text == "Live"], 60
        )
        tab[0].click()
        field = _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#live-portrait input[type=file]"), 30)
        field.send_keys(str(EXAMPLE))
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#live-portrait img"), 30)

        def status() -> str:
            return browser.find_element(By.CSS_SELECTOR, "#live-status textarea").get_attribute("value")

        browser.find_element(By.CSS_SELECTOR, "#live-mic .record-button").click()
        started = time.monotonic()
        seen = []  # (when, the status line)
        shown = None  # speak until the first frames show (making the session takes seconds here), then 1 s more
        while time.monotonic() - started < 20 and (shown is None or time.monotonic() - shown < 1.0):
            line = status()
            match = STATUS.match(line)
            if match:
                seen.append((time.monotonic(), line))
                if shown is None and int(match.group(2)) > 0:
                    shown = time.monotonic()
            time.sleep(0.2)
        browser.find_element(By.CSS_SELECTOR, "#live-mic .stop-button").click()
        stopped = time.monotonic()
        final = _wait(browser, lambda d: STATUS.match(status()) and status().startswith("done") and status(), 30)
        frame = browser.find_element(By.CSS_SELECTOR, "#live-frame img").get_attribute("src")
    finally:
        browser.quit()
    kind, frames, seconds, lag = STATUS.match(final).groups()
    frames, seconds = int(frames), float(seconds)
    # The count rule: after Stop, every frame of the audio received, int(16 kHz samples / 640) (the status shows
    # seconds to 0.01 s, a quarter of a frame).
    assert frames == int(seconds * 25 + 1e-6) and frames > 0
    # And the audio received is the microphone's, in order, less what Gradio did not deliver: never more than the
    # time from Record to Stop; when the server falls behind (here: making the session on a loaded CPU), chunks
    # still queued in the browser at Stop are not sent, so at least half of it on this 2-core machine.
    recorded = stopped - started
    print(f"recorded {recorded:.2f} s, received {seconds:.2f} s, {frames} frames")
    assert 0.5 * recorded < seconds <= recorded + 0.05
    assert lag != "-" and frame
    seen = [line for _, line in seen]
    live = [STATUS.match(s).groups() for s in seen if s.startswith("live")]
    assert live, seen  # the page showed the session while it ran...
    for _, n, s, _ in live:  # ...and never a frame whose audio (with the look-ahead and the lag) had not come
        assert int(n) <= max(0, float(s) * 25 - LIVE_LAG_FRAMES + 0.25)
    assert any(int(n) > 0 for _, n, _, _ in live)  # frames came before Stop


def _feed(pipe, rate: int) -> LiveFeed:
    return LiveFeed(lambda: pipe.live(EXAMPLE), pipe.controls.fps, rate)


def _wav(folder: Path, pcm: np.ndarray, rate: int) -> Path:
    """A microphone chunk as Gradio saves it: a PCM_16 wav."""
    path = folder / f"chunk_{len(list(folder.glob('chunk_*')))}.wav"
    sf.write(path, pcm, rate, subtype="PCM_16")
    return path


def test_a_feed_gives_the_sessions_frames_for_browser_chunks(pipeline, tmp_path):  # noqa: F811
    """int16 stereo at 48 kHz in browser-sized pieces -> the frames of the 16 kHz recording, the tail after finish."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal((48000, 2)) * 3000).astype(np.int16)  # 1 s
    feed = _feed(pipeline, 48000)
    for i in range(0, len(pcm), 12000):  # 0.25 s, Gradio's stream_every
        rate, samples = browser_samples(_wav(tmp_path, pcm[i : i + 12000], 48000))
        feed.put(rate, samples)
    assert feed.finish(60) and feed.error is None
    mono = (pcm.astype(np.float64).mean(axis=1) / 32768.0).astype(np.float32)
    assert feed.samples == len(resample(mono, 48000, SAMPLE_RATE)) == 16000
    assert feed.frames == num_video_frames(16000, SAMPLE_RATE, 25) == 25
    assert feed.frame is not None and feed.frame.shape == (512, 512, 3) and feed.frame.dtype == np.uint8
    assert feed.new_frame() is feed.frame and feed.new_frame() is None  # the page is sent each frame once
    assert feed.status().startswith("done: 25 frames from 1.00 s of audio")


def test_a_dropped_feed_ends_its_session_and_a_bad_chunk_is_one_line(pipeline):  # noqa: F811
    from kdtalker.errors import AudioError

    feed = _feed(pipeline, 16000)
    feed.put(16000, np.zeros(8000, np.float32))
    with pytest.raises(AudioError, match="changed its sample rate from 16000 to 44100 Hz"):
        feed.put(44100, np.zeros(10, np.float32))
    with pytest.raises(AudioError, match="NaN"):
        feed.put(16000, np.full(10, np.nan, np.float32))
    feed.release()  # the tab closed
    feed._worker.join(30)
    assert feed.done and feed.error is None and feed._make_session is None
    failing = LiveFeed(lambda: pipeline.live(REPO / "no_such_portrait.png"), 25.0, 16000)
    failing.finish(30)
    assert failing.done and "no_such_portrait.png" in failing.status() and failing.status().startswith("error: ")
