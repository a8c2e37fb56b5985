"""The paper's HDTF protocol: first `seconds` of each video, its first frame as the reference image, generate
with the pipeline (per table row: an experiment config / checkpoint), score every metric, aggregate per row and
write the tables. Everything computed is cached next to the outputs (per video, per metric, with the settings
it was computed with), so an interrupted or extended run only computes what is missing.

Layout under `output_dir`:
    inputs/<video>.png, inputs/<video>.wav            reference frame and the cut audio (16 kHz PCM16)
    inputs/<video>.real_fid<dims>.npy                 Inception features of the real clip (FID's real set)
    inputs/<video>.real_fid<dims>_crop<W>x<H>.npy      the same of the clip cropped as the reference (fid.real_crop)
    generated/<row>/<video>.fps.json                  frames, wall and generation seconds of its generation
    generated/<row>/<video>.mp4                       generated videos (or a row's own `folder` of videos)
    <videos folder>/<video>.metrics.json              per-video metric cache (next to each scored video)
    tables/table<k>.md, tables/table<k>.csv, tables/summary.json

Under torchrun (`torchrun --nproc_per_node=N scripts/evaluate.py ...`) video i of every row is prepared, generated
and scored by rank i % N (so each cache file has one writer, and a resumed run gives each rank the same videos);
after each row, the ranks exchange their per-video values and rank 0 aggregates them (FID from every video's
cached features) and writes the tables, which are the same as one process writes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import soundfile as sf
from omegaconf import OmegaConf
from PIL import Image
from tqdm import tqdm

from kdtalker.config import compose_config
from kdtalker.distributed import DistInfo, cleanup_distributed, run_on_every_rank, setup_distributed, shard
from kdtalker.errors import ConfigError, VideoError
from kdtalker.eval import tables as table_fmt
from kdtalker.eval.beat_align import audio_beats, beat_align_score, motion_beats
from kdtalker.eval.cpbd import video_cpbd
from kdtalker.eval.csim import LANDMARKS, align_face, csim, five_points
from kdtalker.eval.fid import FID_DISTANCES, fid_from_features, image_features, resized_frame_matrix, warp_frames
from kdtalker.eval.fps import Stopwatch, aggregate_fps, timing_record
from kdtalker.eval.hopenet import diversity, hog_detector, mmod_detector, pose_std, pose_std_degrees, video_pose_logits
from kdtalker.eval.syncnet import (
    AUDIO_SOURCES,
    FRAME_SOURCES,
    LIP_WINDOW,
    crop_track,
    lse_inputs,
    sync_scores,
    usable_frames,
)
from kdtalker.eval.weights import load_arcface, load_hopenet, load_inception, load_syncnet, mmod_detector_path
from kdtalker.fileio import atomic_path, write_text_atomic
from kdtalker.media import read_audio_pcm16, read_video, video_size
from kdtalker.pipeline import TalkingHeadPipeline
from kdtalker.pipeline.config import InferenceConfig
from kdtalker.pipeline.face import crop_face, detect_faces_dlib


def _cfg(node: Any, key: str) -> Any:
    """A key of the evaluation config; kdtalker/configs/evaluate.yaml holds every default, so none is repeated here."""
    if node is None or key not in node:
        raise ConfigError(f"the evaluation config has no {key!r}; compose it from kdtalker/configs/evaluate.yaml")
    return node[key]


def _plain(node: Any) -> Any:
    try:
        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return node


# (section, key) -> the values the choice setting takes (its default: kdtalker/configs/evaluate.yaml)
CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("lse", "crop"): ("none", "track"),
    ("lse", "frames"): FRAME_SOURCES,
    ("lse", "audio"): AUDIO_SOURCES,
    ("diversity", "statistic"): ("logits", "degrees"),
    ("diversity", "detector"): ("mmod", "hog"),
    ("fid", "distance"): FID_DISTANCES,
    ("fid", "real_crop"): ("none", "source"),
    ("csim", "landmarks"): LANDMARKS,
}
NOT_WIRED = {
    ("csim", "landmarks", "scrfd"): "SCRFD's five keypoints are not decoded by kdtalker.pipeline.face_onnx (it keeps "
    "only the boxes), so CSIM uses dlib's five points",
}


def check_choice(section: str, key: str, value: Any) -> str:
    """`value` of the choice setting section.key (CHOICES) -> itself as str; ConfigError naming the choices if not."""
    allowed = CHOICES[(section, key)]
    if value not in allowed:
        why = NOT_WIRED.get((section, key, value))
        raise ConfigError(
            f"{section}.{key}={value!r} is not valid: {section}.{key} takes one of {list(allowed)}"
            + (f" ({why})" if why else "")
        )
    return str(value)


def option(cfg: Any, section: str, key: str) -> str:
    """A choice setting of evaluate.yaml (e.g. fid.distance); ConfigError if invalid."""
    return check_choice(section, key, _cfg(_cfg(cfg, section), key))


def check_settings(cfg: Any) -> None:
    """ConfigError for any invalid choice setting, before anything is generated or scored."""
    for section, key in CHOICES:
        option(cfg, section, key)


def slug(label: str) -> str:
    """A row label -> a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "row"


class MetricCache:
    """One video's cache file: {metric: {"settings": ..., "value": ...}}; reused only under the same settings."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, metric: str, settings: Mapping[str, Any], compute: Callable[[], Any]) -> Any:
        entry = self.data.get(metric)
        settings = json.loads(json.dumps(settings))
        if entry is not None and entry.get("settings") == settings:
            return entry["value"]
        value = compute()
        self.data[metric] = {"settings": settings, "value": value}

        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1))
        return value


@dataclass
class Clip:
    """One evaluation video: its name, the ground-truth file, the reference frame and the cut audio."""

    name: str
    video: Path
    reference: Path
    audio: Path


def clip_of(video: Path, folder: Path) -> Clip:
    """A ground-truth video -> its Clip, with the paths its inputs have under `folder` (made or not)."""
    return Clip(video.stem, video, folder / f"{video.stem}.png", folder / f"{video.stem}.wav")


def _bar(progress: bool) -> dict[str, Any]:
    # only a silenced bar is passed explicitly: an explicit disable=False would override TQDM_DISABLE
    return {} if progress else {"disable": True}


def prepare_clips(
    videos: Sequence[Path], folder: Path, seconds: float, fps: float = 25.0, progress: bool = True
) -> list[Clip]:
    """Ground-truth videos -> first frame (png) and first `seconds` of audio (16 kHz wav) for each, cached."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for video in tqdm(videos, desc="inputs", unit="video", **_bar(progress)):
        clip = clip_of(video, folder)
        if not clip.reference.is_file():
            with atomic_path(clip.reference, "the reference frame") as tmp:
                Image.fromarray(read_video(video, max_seconds=1.0 / fps, fps=fps)[0]).save(tmp, format="PNG")
        if not clip.audio.is_file():
            with atomic_path(clip.audio, "the cut audio") as tmp:
                pcm = read_audio_pcm16(video, max_seconds=seconds)
                sf.write(tmp, pcm, 16000, subtype="PCM_16", format="WAV")
        clips.append(clip)
    return clips


@dataclass
class Scorer:
    """Loads each evaluation model once (on first use) and scores one video per metric, through its cache."""

    cfg: Any
    device_name: str | None = None  # this rank's device under torchrun (cuda:LOCAL_RANK); None: the config's
    _landmarks: dict = field(default_factory=dict)
    _crops: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        """The device the evaluation models run on."""
        return self.device_name or str(_cfg(self.cfg, "device"))

    def weights(self, name: str) -> Any:
        return _cfg(_cfg(self.cfg, "weights"), name)

    def section(self, name: str) -> dict:
        return dict(_plain(_cfg(self.cfg, name)) or {})

    def option(self, section: str, key: str) -> str:
        """A validated choice setting of this scorer's config (see `option`)."""
        return option(self.cfg, section, key)

    def lse_settings(self) -> dict:
        """The LSE cache settings: the section with every choice filled in, so a changed default recomputes."""
        return {**self.section("lse"), **{k: self.option("lse", k) for k in ("crop", "frames", "audio")}}

    def csim_settings(self) -> dict:
        """The CSIM cache settings: the section, the landmark source and the alignment."""
        # "alignment" marks values computed with the Umeyama alignment (earlier caches used cv2's LMEDS fit)
        return {**self.section("csim"), "landmarks": self.option("csim", "landmarks"), "alignment": "umeyama"}

    def fid_settings(self) -> dict:
        """Settings the Inception features depend on (not the distance, which only aggregate uses)."""
        return {k: v for k, v in self.section("fid").items() if k not in ("distance", "real_crop")}

    @cached_property
    def syncnet(self):
        return load_syncnet(self.weights("syncnet") or "syncnet_v2.model", self.device)

    @cached_property
    def hopenet(self):
        return load_hopenet(self.weights("hopenet") or "hopenet_robust_alpha1.pkl", self.device)

    @cached_property
    def pose_detector(self):
        if self.option("diversity", "detector") == "mmod":
            return mmod_detector(str(mmod_detector_path(self.weights("mmod"))))
        return hog_detector()

    @cached_property
    def inception(self):
        return load_inception(self.weights("inception") or "pt_inception-2015-12-05-6726825d.pth", self.device)

    @cached_property
    def arcface(self):
        return load_arcface(self.weights("arcface") or "w600k_r50.onnx", self.device)

    def landmarks(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """Largest face's 68 dlib landmarks, or None."""
        faces = detect_faces_dlib(frame_rgb, self.weights("landmarks"))
        return faces[0][1] if faces else None

    # --- per-video metrics (each returns JSON-able values) ---

    def lse(self, video: Path) -> dict:
        """{"offset", "conf", "min_dist"}, or {"skipped": "too short" | "no face"} (left out of the means)."""
        opts = self.section("lse")
        frames, pcm = lse_inputs(video, self.option("lse", "frames"), self.option("lse", "audio"))  # frames BGR
        if usable_frames(len(frames), len(pcm)) < LIP_WINDOW + 1:
            return {"skipped": "too short", "frames": usable_frames(len(frames), len(pcm))}
        if self.option("lse", "crop") == "track":
            boxes = self._face_boxes(np.ascontiguousarray(frames[..., ::-1]))
            if boxes is None:
                return {"skipped": "no face"}
            frames = crop_track(frames, boxes)
        res = sync_scores(
            self.syncnet,
            np.ascontiguousarray(frames),
            pcm,
            vshift=int(opts["vshift"]),
            batch_size=int(opts["batch_size"]),
        )
        return {"offset": res.offset, "conf": res.conf, "min_dist": res.min_dist}

    def _face_boxes(self, frames_rgb: np.ndarray) -> np.ndarray | None:
        """Largest dlib face box per frame, interpolated over frames without one; None if no frame has a face."""
        boxes = np.full((len(frames_rgb), 4), np.nan)
        for t, frame in enumerate(frames_rgb):
            faces = detect_faces_dlib(frame, self.weights("landmarks"))
            if faces:
                boxes[t] = faces[0][0]
        found = ~np.isnan(boxes[:, 0])
        if not found.any():
            return None
        t = np.arange(len(boxes))
        return np.stack([np.interp(t, t[found], boxes[found, k]) for k in range(4)], axis=1)

    def pose(self, video: Path) -> dict:
        opts = self.section("diversity")
        frames = read_video(video, fps=None)
        logits = video_pose_logits(
            self.hopenet,
            frames,
            self.pose_detector,
            max_frames=int(opts["max_frames"]),
            min_confidence=float(opts["min_confidence"]),
        )
        if len(logits) == 0:
            return {"detections": 0, "std_logits": None, "std_degrees": None}
        return {
            "detections": len(logits),
            "std_logits": pose_std(logits).tolist(),
            "std_degrees": pose_std_degrees(logits).tolist(),
        }

    def cpbd(self, video: Path) -> float:
        return video_cpbd(read_video(video, fps=None), stride=int(self.section("cpbd")["stride"]))

    def csim(self, video: Path, reference: Path) -> float | dict:
        """Mean cosine similarity to the reference, or {"skipped": "no face"} (reference or every frame)."""
        size = self.arcface.size
        ref = np.asarray(Image.open(reference).convert("RGB"))
        ref_lm = self.landmarks(ref)
        if ref_lm is None:
            return {"skipped": "no face"}
        ref_emb = self.arcface.embed(align_face(ref, five_points(ref_lm), size)[None])[0]
        faces = []
        for frame in read_video(video, fps=None)[:: int(self.section("csim")["stride"])]:
            lm = self.landmarks(frame)
            if lm is not None:
                faces.append(align_face(frame, five_points(lm), size))
        return csim(ref_emb, self.arcface.embed(np.stack(faces))) if faces else {"skipped": "no face"}

    def beat_align(self, video: Path) -> float | dict:
        """Beat-align score, or {"skipped": "no face" | "no audio beats"}."""
        fps = float(self.section("beat_align")["fps"])
        marks = [lm for lm in (self.landmarks(f) for f in read_video(video, fps=None)) if lm is not None]
        if len(marks) < 3:
            return {"skipped": "no face"}
        wav = read_audio_pcm16(video, sample_rate=22050).astype(np.float32) / 32768.0
        score = beat_align_score(
            audio_beats(wav, 22050),
            motion_beats(np.stack(marks)) / fps,
            float(self.section("beat_align")["sigma"]),
        )
        return {"skipped": "no audio beats"} if np.isnan(score) else score

    def source_crop(self, reference: Path) -> np.ndarray:
        """(2,3) map from a 512x512 generated frame's pixel to the reference image: the pipeline's default crop
        (kdtalker.pipeline.face.crop_face: dlib, largest face, scale 1 as kdtalker/configs/crop/dlib.yaml)."""
        key = str(reference)
        if key not in self._crops:
            self._crops[key] = crop_face(
                np.asarray(Image.open(reference).convert("RGB")), face_index=0, predictor_path=self.weights("landmarks")
            ).matrix
        return self._crops[key]

    def fid_features(
        self, video: Path, out: Path, max_seconds: float | None = None, crop: tuple[np.ndarray, int, int] | None = None
    ) -> str:
        """Inception features (N,dims) of a video's frames saved to `out`; crop = (512-frame matrix, width, height)
        first warps every frame to that crop at width x height (fid.real_crop=source)."""
        opts = self.section("fid")
        frames = read_video(video, max_seconds=max_seconds, fps=25.0 if max_seconds else None)[:: int(opts["stride"])]
        if crop is not None:
            matrix, width, height = crop
            frames = warp_frames(frames, resized_frame_matrix(matrix, width, height), width, height)
        features = image_features(self.inception, frames, batch_size=int(opts["batch_size"]), dims=int(opts["dims"]))
        with atomic_path(out, "the FID features") as tmp, open(tmp, "wb") as fh:  # a handle: np.save adds no suffix
            np.save(fh, features)
        return str(out)


METRICS = ("lse", "diversity", "fid", "cpbd", "csim", "fps", "beat_align")
TIMEOUT_SETTING = "distributed.timeout_minutes"  # how long a rank waits for the others (kdtalker/configs/evaluate.yaml)


def build_pipeline(overrides: Sequence[str]) -> TalkingHeadPipeline:
    """Inference config (kdtalker/configs/inference.yaml + overrides, e.g. '+experiment=steps_5') -> pipeline."""
    return TalkingHeadPipeline.from_config(compose_config("inference", overrides, InferenceConfig))


class Evaluation:
    """Runs the protocol for the configured tables (kdtalker/configs/evaluate.yaml); under torchrun, this rank's
    share of every row (`dist`, `device`: from kdtalker.distributed.setup_distributed)."""

    def __init__(
        self,
        cfg: Any,
        pipeline_factory: Callable[[Sequence[str]], Any] | None = None,
        dist: DistInfo | None = None,
        device: str | None = None,
    ):
        self.cfg = cfg
        self.out = Path(_cfg(cfg, "output_dir"))
        self.metrics = list(_cfg(cfg, "metrics"))
        unknown = set(self.metrics) - set(METRICS)
        if unknown:
            raise ConfigError(f"unknown metric(s) {sorted(unknown)}; known: {list(METRICS)}")
        check_settings(cfg)
        self.seconds = float(_cfg(cfg, "seconds"))
        self.generate = bool(_cfg(cfg, "generate"))
        self.dist = dist or DistInfo()
        self.device = device
        self.scorer = Scorer(cfg, device)
        self.pipeline_factory = pipeline_factory or build_pipeline
        self._rows: dict[str, dict] = {}

    @cached_property
    def clips(self) -> list[Clip]:
        """Every evaluation clip, sorted by name; this rank prepares the inputs of its share (`own`)."""
        root = _cfg(self.cfg, "videos")
        if not root or not Path(root).is_dir():
            raise ConfigError(f"videos={root!r} must be a folder of ground-truth .mp4 videos (e.g. HDTF)")
        videos = sorted(Path(root).glob("*.mp4"))
        limit = _cfg(self.cfg, "max_videos")
        videos = videos[: int(limit)] if limit else videos
        if not videos:
            raise ConfigError(f"no .mp4 videos in {root}")
        folder = self.out / "inputs"
        prepare_clips(shard(videos, self.dist), folder, self.seconds, progress=self.dist.is_main)
        return [clip_of(video, folder) for video in videos]

    def own(self) -> list[Clip]:
        """This rank's share of the clips: clip i goes to rank i % world_size (all of them without torchrun)."""
        return shard(self.clips, self.dist)

    def row_videos(self, row: Mapping[str, Any]) -> dict[str, Path]:
        """Generate what is missing of this rank's share of a row (unless generate=false) -> {clip name: video}."""
        videos, notes = self._row_share(row)
        for note in notes:
            tqdm.write(note)
        return videos

    def _row_share(self, row: Mapping[str, Any]) -> tuple[dict[str, Path], list[str]]:
        """row_videos without printing: ({clip name: video} for every clip, the pipeline's notes, once each)."""
        label = str(row["label"])
        folder = Path(row["folder"]) if row.get("folder") else self.out / "generated" / slug(row.get("name") or label)
        videos = {c.name: folder / f"{c.name}.mp4" for c in self.clips}
        # every rank checks every clip, so that each says the same as one process would
        missing = [c for c in self.clips if not videos[c.name].is_file()]
        if missing and (row.get("folder") or not self.generate):
            raise VideoError(
                f"row {label!r}: {len(missing)} video(s) missing in {folder} (e.g. {videos[missing[0].name].name}); "
                "name them as the ground-truth videos, or run with generate=true"
            )
        own = {c.name for c in self.own()}
        missing = [c for c in missing if c.name in own]
        notes: list[str] = []
        if missing:
            folder.mkdir(parents=True, exist_ok=True)
            pipeline = self.pipeline_factory(self._pipeline_overrides(row))
            for clip in tqdm(missing, desc=f"generate {label}", unit="video", **_bar(self.dist.is_main)):
                with Stopwatch() as sw:
                    pipeline.generate(clip.reference, clip.audio, videos[clip.name])
                for note in getattr(pipeline, "notes", []):  # e.g. the exported model.yaml used: once per row
                    if f"note ({label}): {note}" not in notes:
                        notes.append(f"note ({label}): {note}")
                timing = timing_record(pipeline.timings, sw.seconds)
                write_text_atomic(folder / f"{clip.name}.fps.json", json.dumps(timing))
        return videos, notes

    def _pipeline_overrides(self, row: Mapping[str, Any]) -> list[str]:
        """The row's inference overrides; under torchrun on CUDA also this rank's GPU (unless the row names one)."""
        overrides = list(row.get("overrides") or [])
        if self.device and self.device.startswith("cuda") and not any(o.startswith("device=") for o in overrides):
            overrides.append(f"device={self.device}")
        return overrides

    def score_row(self, row: Mapping[str, Any]) -> dict[str, float | None]:
        """One table row: per-video metrics (cached) -> aggregated values keyed by table column (under torchrun:
        each rank scores its share, rank 0 aggregates; the other ranks get {})."""
        label = str(row["label"])
        key = slug(row.get("name") or label) + "|" + str(row.get("folder") or "")
        if key in self._rows:
            return self._rows[key]

        def share() -> dict[str, Any]:
            videos, notes = self._row_share(row)
            bar = tqdm(self.own(), desc=f"score {label}", unit="video", **_bar(self.dist.is_main))
            return {"notes": notes, "scores": {clip.name: self._score_clip(clip, videos[clip.name]) for clip in bar}}

        shares = run_on_every_rank(self.dist, share, f"row {label!r}", TIMEOUT_SETTING)
        merged: list[dict] = []
        # rank 0 merges while the others wait, so that its failure (a FID that does not compute) stops them too
        run_on_every_rank(
            self.dist,
            lambda: merged.append(self._merge(row, shares)) if self.dist.is_main else None,
            f"the merge of row {label!r}",
            TIMEOUT_SETTING,
        )
        self._rows[key] = merged[0] if merged else {}
        return self._rows[key]

    def _merge(self, row: Mapping[str, Any], shares: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Every rank's notes and per-video values of a row -> the row's table values (notes printed, each once)."""
        for note in dict.fromkeys(n for part in shares for n in part["notes"]):  # in rank order
            tqdm.write(note)
        scores = {name: values for part in shares for name, values in part["scores"].items()}
        # merged in the clips' order: the means and FID's feature order are as one process makes them
        per_video: dict[str, list] = {m: [] for m in ("lse", "pose", "cpbd", "csim", "beat_align", "fid", "fps")}
        for clip in self.clips:
            for metric, value in scores[clip.name].items():
                per_video[metric].append(value)
        s = self.scorer
        return aggregate(
            per_video, row, s.option("diversity", "statistic"), s.option("fid", "distance"), len(self.clips)
        )

    def _score_clip(self, clip: Clip, video: Path) -> dict[str, Any]:
        """One video's metric values (cached) -> {per-video list name: JSON-able value} for the requested metrics."""
        s = self.scorer
        cache = MetricCache(video.with_suffix(".metrics.json"))
        values: dict[str, Any] = {}
        if "lse" in self.metrics:
            values["lse"] = cache.get("lse", s.lse_settings(), lambda: s.lse(video))
        if "diversity" in self.metrics:
            values["pose"] = cache.get("pose", s.section("diversity"), lambda: s.pose(video))
        if "cpbd" in self.metrics:
            values["cpbd"] = cache.get("cpbd", s.section("cpbd"), lambda: s.cpbd(video))
        if "csim" in self.metrics:
            values["csim"] = cache.get("csim", s.csim_settings(), lambda: s.csim(video, clip.reference))
        if "beat_align" in self.metrics:
            values["beat_align"] = cache.get("beat_align", s.section("beat_align"), lambda: s.beat_align(video))
        if "fid" in self.metrics:
            values["fid"] = [self._fid_generated(cache, video), self._fid_real(clip, video)]
        timing = video.with_name(f"{clip.name}.fps.json")
        if timing.is_file():
            values["fps"] = json.loads(timing.read_text())
        return values

    def _fid_generated(self, cache: MetricCache, video: Path) -> str:
        s = self.scorer
        dims = int(s.section("fid")["dims"])
        return cache.get(
            "fid_features", s.fid_settings(), lambda: s.fid_features(video, video.with_suffix(f".fid{dims}.npy"))
        )

    def _fid_real(self, clip: Clip, video: Path) -> str:
        """The real clip's features, framed per fid.real_crop (source: as the reference crop, at the video's size)."""
        s = self.scorer
        dims = int(s.section("fid")["dims"])
        real_crop = s.option("fid", "real_crop")
        settings = {**s.fid_settings(), "seconds": self.seconds, "real_crop": real_crop}
        metric, name = "fid_features", f"{clip.name}.real_fid{dims}.npy"
        if real_crop == "source":
            width, height = video_size(video)
            # one cache entry and file per frame size: rows whose videos differ in size do not evict each other
            metric, name = f"fid_features_crop{width}x{height}", f"{clip.name}.real_fid{dims}_crop{width}x{height}.npy"
            settings["size"] = [width, height]
        real_cache = MetricCache(self.out / "inputs" / f"{clip.name}.metrics.json")

        def compute() -> str:
            framing = None if real_crop == "none" else (s.source_crop(clip.reference), *settings["size"])
            return s.fid_features(clip.video, self.out / "inputs" / name, self.seconds, framing)

        return real_cache.get(metric, settings, compute)

    def tables(self) -> dict[str, tuple[str, str]]:
        """Every configured table -> (markdown, csv); also written under output_dir/tables (under torchrun: by rank
        0, which returns them; the other ranks do their share of every row and return {})."""
        out = {}
        folder = self.out / "tables"
        if self.dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
        summary = {}  # per table and row: every aggregated value, the skipped-video counts among them
        for table in _plain(_cfg(self.cfg, "tables")) or []:
            columns = table.get("columns") or list(table_fmt.PAPER_COLUMNS)
            rows = [(str(r["label"]), self.score_row(r)) for r in table["rows"]]
            if not self.dist.is_main:
                continue
            md = table_fmt.to_markdown(table["title"], rows, columns, table.get("first_column", "Method"))
            text = table_fmt.to_csv(rows, columns, table.get("first_column", "Method"))
            name = str(table["name"])
            write_text_atomic(folder / f"{name}.md", md, "the table")
            write_text_atomic(folder / f"{name}.csv", text, "the table")
            summary[name] = {label: values for label, values in rows}
            out[name] = (md, text)
        if self.dist.is_main:
            write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1), "the summary")
        return out


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values, dtype=np.float64)) if values else None


# reasons for per-video values cached before skips carried one (None values)
DEFAULT_SKIP_REASONS = {"lse": "too short", "diversity": "no face", "csim": "no face", "beat_align": "no face"}


def skip_reason(metric: str, value: Any) -> str | None:
    """Why a per-video value is left out of its metric's mean (None: it counts)."""
    if value is None:
        return DEFAULT_SKIP_REASONS.get(metric, "not computed")
    if isinstance(value, Mapping):
        if metric == "diversity" and value.get("std_logits") is None:
            return "no face"
        return value.get("skipped")
    return None


def aggregate(
    per_video: Mapping[str, list],
    row: Mapping[str, Any],
    diversity_statistic: str = "logits",
    fid_distance: str = "sqrtm",
    videos: int | None = None,
) -> dict[str, Any]:
    """Per-video metric values -> the row's table values (video means; FID over all frames; FPS = frames / seconds),
    plus `videos` (given) and `skipped` / `skip_reasons` for the metrics that left videos out ({metric: count})."""
    check_choice("diversity", "statistic", diversity_statistic)
    check_choice("fid", "distance", fid_distance)
    values: dict[str, Any] = {}
    kept: dict[str, list] = {}
    skipped: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for metric, key in (("lse", "lse"), ("diversity", "pose"), ("csim", "csim"), ("beat_align", "beat_align")):
        why = [skip_reason(metric, v) for v in per_video.get(key, [])]
        kept[metric] = [v for v, w in zip(per_video.get(key, []), why) if w is None]
        if any(why):
            skipped[metric] = sum(1 for w in why if w)
            reasons[metric] = ", ".join(sorted({w for w in why if w}))
    if per_video["lse"]:
        values["lse_c"] = _mean([v["conf"] for v in kept["lse"]])
        values["lse_d"] = _mean([v["min_dist"] for v in kept["lse"]])
    if kept["diversity"]:
        logits = diversity([np.array(p["std_logits"]) for p in kept["diversity"]])
        degrees = diversity([np.array(p["std_degrees"]) for p in kept["diversity"]])
        values["diversity_logits"], values["diversity_degrees"] = logits["diversity"], degrees["diversity"]
        values["diversity"] = values[f"diversity_{diversity_statistic}"]
        for angle in ("yaw", "pitch", "roll"):
            values[f"{angle}_std"] = logits[angle]
    if per_video["cpbd"]:
        values["cpbd"] = _mean(per_video["cpbd"])
    for name in ("csim", "beat_align"):
        if per_video[name]:
            values[name] = _mean(kept[name])
    if per_video["fid"]:
        gen = np.concatenate([np.load(g) for g, _ in per_video["fid"]])
        real = np.concatenate([np.load(r) for _, r in per_video["fid"]])
        values["fid"] = fid_from_features(real, gen, method=fid_distance)
    values.update(aggregate_fps(per_video["fps"]))
    if row.get("fps") is not None:  # a peer method's published or separately measured speed
        values["fps"] = float(row["fps"])
    if videos is not None:
        values["videos"] = int(videos)
    if skipped:
        values["skipped"], values["skip_reasons"] = skipped, reasons
    return values


def run_evaluation(cfg: Any, pipeline_factory: Callable[[Sequence[str]], Any] | None = None) -> str | None:
    """Run the protocol for every configured table; returns the markdown of all tables (also saved as .md/.csv).

    Under torchrun each rank takes its share of every row and only rank 0 returns the tables (the others None)."""
    # the ranks exchange only small JSON texts, so gloo also on GPUs: no NCCL watchdog over the long waits of a
    # rank whose share was cached for the slowest one (distributed.timeout_minutes)
    timeout = _cfg(_cfg(cfg, "distributed"), "timeout_minutes")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"{TIMEOUT_SETTING}={timeout!r} must be a positive number of minutes")
    info, device = setup_distributed(str(_cfg(cfg, "device")), backend="gloo", timeout_minutes=timeout)
    try:
        built: list[Evaluation] = []
        # a bad setting fails on every rank alike: through run_on_every_rank the job says it once
        rank_device = str(device) if info.enabled else None  # one process: the config's device, as before

        def build() -> None:
            built.append(Evaluation(cfg, pipeline_factory, info, rank_device))

        run_on_every_rank(info, build, "the set-up", TIMEOUT_SETTING)
        tables = built[0].tables()
    finally:
        cleanup_distributed(info)
    return "\n".join(md for md, _ in tables.values()) if info.is_main else None
