"""The web demo: a Gradio Blocks page around TalkingHeadPipeline (portrait + speech file or recording -> video).

The pipeline is built and its models loaded once, at start; the queue runs one generation at a time and shows the
waiting requests their place. The same function is the API endpoint `generate` (image and audio first, every other
input with its default), so `gradio_client.Client(url).predict(handle_file(img), handle_file(wav),
api_name="/generate")` returns the mp4. Anything a user can cause (no face, unreadable audio, audio too long, a
missing weight file, an upload that is not an image or audio at all) is raised as `gr.Error` with the one line
the command line prints; a failed request leaves no result behind, and everything the server keeps (uploads,
results, Gradio's copies) lives in temporary folders removed when it stops (Gradio's: cache.py). Without the
weights the page still starts, says which files are missing and where they go, and its Generate button is off.
The Live tab streams the browser's microphone into a live session per browser session (live.py).
"""

from __future__ import annotations

import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

from kdtalker.audio import SAMPLE_RATE, load_audio
from kdtalker.cli import user_message
from kdtalker.demo.live import LiveFeed, browser_samples
from kdtalker.errors import ConfigError, KDTalkerError
from kdtalker.pipeline import TalkingHeadPipeline
from kdtalker.pipeline.control import CHOICES
from kdtalker.pipeline.weights import README, missing_weight_files

KEEP_RESULTS = 8  # finished videos kept in the work folder (Gradio serves its own copy); older ones are removed
TITLE = "KDTalker: audio-driven talking portraits"


def read_by_the_pipeline(image: gr.Image) -> gr.Image:
    """`image` handing its upload on unread: the pipeline reads it as the command line does (EXIF, modes, size
    checks) and says in the same line when it is not an image, where Gradio's own reader fails with its generic
    error. (An instance's method, not a subclass: Gradio writes a .pyi stub next to the module of any subclass.)"""
    gradio_preprocess = image.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is not None and payload.path is not None and not (payload.url or "").startswith("data:"):
            return payload.path
        return gradio_preprocess(payload)  # a pasted data: URL has no file yet

    image.preprocess = preprocess
    return image


def missing_weights_text(checkpoint_dir: str | Path) -> str | None:
    """Markdown naming each missing weight file and where it goes, or None when every file is there."""
    missing = missing_weight_files(checkpoint_dir)
    if not missing:
        return None
    lines = [f"- `{Path(checkpoint_dir) / rel}`: {what}" for rel, what in missing]
    return (
        f"**The model weights are missing**, so nothing can be generated yet. Put these files in place "
        f"(`{README}` says which file goes where; with internet: `download=auto`, the default, or "
        "`python scripts/download_weights.py`) and "
        "restart the demo:\n\n" + "\n".join(lines)
    )


class Demo:
    """The page's state: the loaded pipeline (or why there is none), the limits and the work folder."""

    def __init__(self, cfg: Any, pipeline: TalkingHeadPipeline | None, problem: str | None):
        self.cfg = cfg
        self.audio_seconds = float(cfg.limits.audio_seconds)
        self.work = Path(tempfile.mkdtemp(prefix="kdtalker_demo_"))
        self.pipeline = pipeline
        self.problem = problem

    @classmethod
    def from_config(cls, cfg: Any) -> "Demo":
        """The pipeline of `cfg` with its models loaded, or the page's note on why it has none."""
        problem = missing_weights_text(cfg.checkpoint_dir)
        pipeline = None
        if problem is None:
            try:
                pipeline = TalkingHeadPipeline.from_config(cfg)
                pipeline.load()
            except (KDTalkerError, OSError, MemoryError) as exc:
                problem = f"**The models could not be loaded**: {user_message(exc)}"
                pipeline = None
        return cls(cfg, pipeline, problem)

    def close(self) -> None:
        """Remove the work folder."""
        shutil.rmtree(self.work, ignore_errors=True)

    def generate(
        self,
        image: str | None,
        audio: str | None,
        steps: int,
        seed: int,
        head_motion_scale: float,
        smoothing: float,
        paste_back: bool,
        crop_scale: float,
        driving_video: str | None = None,  # a default of None: optional in the API (the others take the widgets')
        pose: str = "audio",
        lips: str = "audio",
        eyes: str = "audio",
        expression: str = "audio",
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # follows the pipeline's bars: windows, frames
    ) -> str:
        """One request -> the path of its mp4 (gr.Error with the command line's one-line message otherwise)."""
        if self.pipeline is None:
            raise gr.Error(" ".join(self.problem.replace("**", "").split()), print_exception=False)
        folder = Path(tempfile.mkdtemp(dir=self.work))
        try:
            self._check_inputs(image, audio, driving_video, (pose, lips, eyes, expression))
            output = folder / "kdtalker.mp4"
            self.pipeline.generate(
                image,
                audio,
                output,
                driving_video=driving_video or None,
                steps=int(steps),
                seed=int(seed),
                head_motion_scale=float(head_motion_scale),
                smoothing=float(smoothing),
                paste_back=bool(paste_back),
                crop={"scale": float(crop_scale)},
                control={"pose": pose, "lips": lips, "eyes": eyes, "expression": expression},
            )
        except BaseException as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise page_error(exc) from None
        self._prune()
        return str(output)

    def live_chunk(self, image: str | None, chunk: str | None, feed: LiveFeed | None) -> tuple:
        """A microphone chunk (the wav Gradio saved) -> (newest frame, the status line, the browser session's feed)."""
        if self.pipeline is None:
            raise gr.Error(" ".join(self.problem.replace("**", "").split()), print_exception=False)
        try:
            if feed is not None and feed.error is not None:
                raise feed.error
            if chunk is None:
                return gr.skip(), gr.skip(), feed
            if not image:
                raise ConfigError("upload a portrait image first, then record")
            rate, samples = browser_samples(chunk)
            if feed is None or feed.resampler.closed:
                pipeline = self.pipeline
                feed = LiveFeed(lambda: pipeline.live(image), pipeline.controls.fps, rate)
            feed.put(rate, samples)
        except BaseException as exc:
            if feed is not None:
                feed.release()
            raise page_error(exc) from None
        frame = feed.new_frame()
        return (gr.skip() if frame is None else frame), feed.status(), feed

    def live_stop(self, feed: LiveFeed | None) -> tuple:
        """The recording stopped -> the session's tail: (last frame, the final status line, no feed)."""
        if feed is None:
            return gr.skip(), gr.skip(), None
        if not feed.finish(float(self.cfg.limits.live_finish_seconds)):
            feed.release()
            raise gr.Error(
                f"the live session's tail took over {self.cfg.limits.live_finish_seconds:g} s "
                "(limits.live_finish_seconds); it was dropped",
                print_exception=False,
            )
        if feed.error is not None:
            raise page_error(feed.error)
        frame = feed.new_frame()
        return (gr.skip() if frame is None else frame), feed.status(), None

    def _check_inputs(
        self, image: str | None, audio: str | None, driving_video: str | None, regions: Sequence[str]
    ) -> None:
        """The request's own errors, before any model runs: missing inputs, audio too long, video-driven regions
        without a video."""
        if not image:
            raise ConfigError("upload a portrait image first")
        if not audio:
            raise ConfigError("upload or record the speech first")
        seconds = len(load_audio(audio)) / SAMPLE_RATE
        if seconds > self.audio_seconds:
            raise ConfigError(
                f"the speech is {seconds:.1f} s long; this demo takes at most {self.audio_seconds:g} s "
                "(limits.audio_seconds)"
            )
        if "video" in regions and not driving_video:
            raise ConfigError("a region follows the driving video: upload one (or set every region to audio)")

    def _prune(self) -> None:
        """Keep the newest KEEP_RESULTS result folders."""
        folders = sorted((p for p in self.work.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in folders[:-KEEP_RESULTS]:
            shutil.rmtree(old, ignore_errors=True)


def page_error(exc: BaseException) -> gr.Error:
    """An exception -> gr.Error with the command line's one line (a bug: a traceback in the server log)."""
    message = user_message(exc)
    if message is None:
        if not isinstance(exc, Exception):
            raise exc
        traceback.print_exception(exc)  # a bug: the server log gets the traceback, the page one line
        message = f"internal error ({type(exc).__name__}); the server log has the details"
    return gr.Error(message, print_exception=False)


def release_feed(feed: LiveFeed | None) -> None:
    """Gradio's State delete callback (the tab closed or the session expired): drop the live session."""
    if isinstance(feed, LiveFeed):
        feed.release()


def build_app(demo: Demo, examples: Sequence[Sequence[str]] = ()) -> gr.Blocks:
    """The page: inputs, the controls people change, examples, the result; `generate` is also the API endpoint."""
    cfg = demo.cfg
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {TITLE}\nUpload a portrait and a speech recording (or record one), then press **Generate**. "
            f"Speech up to {demo.audio_seconds:g} s; one video is generated at a time, others wait in line."
        )
        if demo.problem is not None:
            gr.Markdown(demo.problem, elem_id="problem")
        with gr.Tab("Generate", elem_id="generate-tab"):
            with gr.Row():
                with gr.Column():
                    image = read_by_the_pipeline(
                        gr.Image(type="filepath", label="Portrait", sources=["upload"], height=320, elem_id="portrait")
                    )
                    audio = gr.Audio(
                        type="filepath", label="Speech", sources=["upload", "microphone"], elem_id="speech"
                    )
                    with gr.Accordion("Settings", open=False):
                        steps = gr.Slider(
                            1, 200, value=int(cfg.steps), step=1, label="DDIM steps (50 official, 10 fast)"
                        )
                        seed = gr.Number(value=int(cfg.seed), precision=0, label="Seed")
                        head = gr.Slider(0, 2, value=float(cfg.head_motion_scale), step=0.05, label="Head motion scale")
                        smooth = gr.Slider(0, 5, value=float(cfg.smoothing), step=0.1, label="Smoothing (0 = off)")
                        paste = gr.Checkbox(value=bool(cfg.paste_back), label="Paste back into the full image")
                        crop = gr.Slider(0.5, 2.0, value=float(cfg.crop.scale), step=0.05, label="Crop scale")
                    with gr.Accordion("Driving video (optional)", open=False):
                        driving = gr.Video(label="Driving video", sources=["upload"], elem_id="driving")
                        regions = [
                            gr.Dropdown(
                                [c for c in CHOICES[name] if c != "file"],
                                value=str(cfg.control[name]),
                                label=f"{name.capitalize()} from",
                            )
                            for name in ("pose", "lips", "eyes", "expression")
                        ]
                    # off while there is nothing to generate with (the page says why)
                    button = gr.Button(
                        "Generate", variant="primary", elem_id="generate", interactive=demo.pipeline is not None
                    )
                with gr.Column():
                    result = gr.Video(
                        label="Result", buttons=["download"], interactive=False, height=512, elem_id="result"
                    )
            if examples:
                gr.Examples(examples=[list(e) for e in examples], inputs=[image, audio])

            button.click(
                demo.generate,
                inputs=[image, audio, steps, seed, head, smooth, paste, crop, driving, *regions],
                outputs=result,
                api_name="generate",
            )
        with gr.Tab("Live", elem_id="live-tab"):
            live_tab(demo)
    app.queue(default_concurrency_limit=1, max_size=int(cfg.limits.queue_size))
    return app


def live_tab(demo: Demo) -> None:
    """The Live tab: a portrait and the microphone in, the newest frame and the lag out (live.py)."""
    cfg = demo.cfg
    gr.Markdown(
        "Upload a portrait, press **Record** and speak: the face follows a fraction of a second behind (the lag "
        "line says how far; on a CPU rendering sets it). **Stop** ends the session and shows its last frames."
    )
    with gr.Row():
        with gr.Column():
            image = read_by_the_pipeline(
                gr.Image(type="filepath", label="Portrait", sources=["upload"], height=320, elem_id="live-portrait")
            )
            mic = gr.Audio(
                sources=["microphone"], streaming=True, type="filepath", label="Microphone", elem_id="live-mic"
            )
        with gr.Column():
            frame = gr.Image(label="Live", interactive=False, height=512, elem_id="live-frame", format="jpeg")
            status = gr.Textbox(label="Lag", interactive=False, elem_id="live-status")
    feed = gr.State(None, delete_callback=release_feed)  # this browser session's LiveFeed
    mic.stream(
        demo.live_chunk,
        inputs=[image, mic, feed],
        outputs=[frame, status, feed],
        stream_every=float(cfg.limits.live_stream_every),
        time_limit=int(cfg.limits.live_seconds),
        concurrency_limit=None,  # each call only queues its audio (live.py); the work is the session's thread
        show_progress="hidden",
        api_name=False,
    )
    mic.stop_recording(
        demo.live_stop, inputs=[feed], outputs=[frame, status, feed], concurrency_limit=None, api_name=False
    )


def serve(app: gr.Blocks, cfg: Any, allowed_paths: Sequence[str] = ()) -> None:
    """Start the page, print where it is and how to share it (in this config's keys), serve until interrupted."""
    app.launch(
        server_name=cfg.server.name,
        server_port=int(cfg.server.port),
        share=bool(cfg.server.share),
        max_file_size=f"{int(cfg.limits.upload_mb)}mb",
        allowed_paths=list(allowed_paths),
        quiet=True,  # Gradio's own hints name its launch() arguments, which a user of this script does not have
        prevent_thread_lock=True,
    )
    print(f"* Running on local URL:  {app.local_url}", flush=True)  # Gradio prints the public one itself
    if not app.share_url:
        print("* To create a public link too, add `server.share=true` to the command line.", flush=True)
    app.block_thread()
