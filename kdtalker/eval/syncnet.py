"""SyncNet v2 (syncnet_python `S`) and the LSE-C / LSE-D procedure of Wav2Lip's evaluation scripts.

Per video: 5-frame BGR lip windows (224x224, raw 0..255) and 20-column MFCC windows are embedded
(1024-d each, no normalisation); for every shift j in [-vshift, vshift] the mean Euclidean distance
between video window i and audio window i + j (zero vectors beyond the ends) gives a curve mdist.
LSE-D = min(mdist), LSE-C = median(mdist) - min(mdist), offset = vshift - argmin. Dataset scores are
plain means over videos.

Inputs as the official evaluate() makes them (`lse_inputs`): frames dumped by
`ffmpeg -y -i VIDEO -threads 1 -f image2 DIR/%06d.jpg` (ffmpeg's default JPEG quality: lossy) and read back with
cv2.imread (BGR), audio by `ffmpeg -y -i VIDEO -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000 DIR/audio.wav` read
as int16; or, as options, the decoded frames themselves and the plain 16 kHz soundtrack.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.io import wavfile
from scipy.signal import medfilt
from torch import nn

from kdtalker.errors import VideoError
from kdtalker.eval.mfcc import mfcc
from kdtalker.media import ffmpeg_exe, read_audio_pcm16, read_video

FPS = 25
SAMPLES_PER_FRAME = 640  # 16000 / 25
MFCC_PER_FRAME = 4
MFCC_WINDOW = 20
LIP_WINDOW = 5


def _conv_bn_relu(conv: nn.Module, channels: int, bn: type) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """Audio tower (N,1,13,20) and lip tower (N,3,5,224,224) -> 1024-d embeddings; indices match the checkpoint keys."""

    def __init__(self, embedding: int = 1024):
        super().__init__()
        b2, b3 = nn.BatchNorm2d, nn.BatchNorm3d
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, 1, 1), 64, b2),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, 1, 1), 192, b2),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, b2),
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, b2),
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, b2),
            nn.MaxPool2d(3, (2, 2)),
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4), padding=0), 512, b2),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, embedding)
        )
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, b3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, b3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, b3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6), padding=0), 512, b3),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Linear(512, embedding)
        )

    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1,13,20) MFCC windows -> (N,1024)."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,5,224,224) BGR 0..255 frame windows -> (N,1024)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


@dataclass
class SyncResult:
    """One video's SyncNet scores: offset (frames), confidence (LSE-C), min_dist (LSE-D) and the curves."""

    offset: int
    conf: float
    min_dist: float
    mdist: np.ndarray  # (2 vshift + 1,)
    dists: np.ndarray  # (W, 2 vshift + 1)
    num_windows: int


def resize_frame(frame_bgr: np.ndarray, size: int = 224) -> np.ndarray:
    """The evaluation's frame resize: OpenCV bilinear to size x size (a size x size frame passes unchanged)."""
    if frame_bgr.shape[:2] == (size, size):
        return frame_bgr
    return cv2.resize(frame_bgr, (size, size))


def distance_curve(lip: torch.Tensor, aud: torch.Tensor, vshift: int = 15) -> tuple[torch.Tensor, torch.Tensor]:
    """lip (W,D), aud (W,D) -> dists (W, 2 vshift + 1), mdist (2 vshift + 1,); audio zero-padded by vshift."""
    win = 2 * vshift + 1
    aud_pad = F.pad(aud, (0, 0, vshift, vshift))
    dists = [F.pairwise_distance(lip[[i]].repeat(win, 1), aud_pad[i : i + win]) for i in range(len(lip))]
    mdist = torch.mean(torch.stack(dists, 1), 1)
    return torch.stack(dists, 0), mdist


def scores_from_curve(mdist: torch.Tensor, vshift: int = 15) -> tuple[int, float, float]:
    """mdist (2 vshift + 1,) -> (offset, confidence = median - min, min_dist); first minimum on ties."""
    minval, minidx = torch.min(mdist, 0)
    offset = vshift - int(minidx)
    conf = torch.median(mdist) - minval
    return offset, float(conf), float(minval)


def usable_frames(num_frames: int, num_samples: int) -> int:
    """Frames SyncNet can score: min(frames, whole 640-sample audio frames); fewer than LIP_WINDOW + 1 is too short."""
    return min(num_frames, math.floor(num_samples / SAMPLES_PER_FRAME))


def _ffmpeg(args: list[str], video: Path, what: str) -> None:
    # stdin closed: ffmpeg otherwise reads keystrokes from the terminal (and `-y` overwrites inside our own folder)
    proc = subprocess.run([ffmpeg_exe(), *args], stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise VideoError(f"could not {what} {video} for SyncNet ({tail[-1] if tail else 'ffmpeg failed'})")


def dump_frames_jpeg(video: str | os.PathLike, folder: str | os.PathLike) -> np.ndarray:
    """Video -> (F,H,W,3) uint8 BGR: the official dump `ffmpeg -y -i VIDEO -threads 1 -f image2 DIR/%06d.jpg`
    into `folder`, read back in name order with cv2.imread."""
    video, folder = Path(video), Path(folder)
    if not video.is_file():
        raise VideoError(f"video {video} not found")
    args = ["-y", "-i", str(video), "-threads", "1", "-f", "image2", str(folder / "%06d.jpg")]
    _ffmpeg(args, video, "dump the frames of")
    frames = [cv2.imread(str(f)) for f in sorted(folder.glob("*.jpg"))]
    if not frames or any(f is None for f in frames):
        raise VideoError(f"the JPEG frame dump of {video} is empty or unreadable")
    return np.stack(frames)


def extract_audio_async(video: str | os.PathLike, folder: str | os.PathLike) -> np.ndarray:
    """Video -> (N,) int16 16 kHz mono: the official `ffmpeg -y -i VIDEO -async 1 -ac 1 -vn -acodec pcm_s16le -ar 16000
    DIR/audio.wav` into `folder`, read as int16."""
    video, wav = Path(video), Path(folder) / "audio.wav"
    if not video.is_file():
        raise VideoError(f"video {video} not found")
    args = ["-y", "-i", str(video), "-async", "1", "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", "16000"]
    _ffmpeg([*args, str(wav)], video, "extract the audio of")
    _, pcm = wavfile.read(wav)
    return np.asarray(pcm, np.int16).reshape(len(pcm), -1)[:, 0]


FRAME_SOURCES = ("jpeg", "raw")
AUDIO_SOURCES = ("async", "plain")


def lse_inputs(video: str | os.PathLike, frames: str = "jpeg", audio: str = "async") -> tuple[np.ndarray, np.ndarray]:
    """Video -> ((F,H,W,3) uint8 BGR frames, (N,) int16 16 kHz samples) for sync_scores.

    frames "jpeg": the official JPEG dump (lossy) | "raw": the decoded frames. audio "async": the official
    `-async 1` wav | "plain": kdtalker.media.read_audio_pcm16. The dump folder is removed in every case.
    """
    if frames not in FRAME_SOURCES or audio not in AUDIO_SOURCES:
        raise ValueError(f"frames must be one of {FRAME_SOURCES}, audio of {AUDIO_SOURCES}; got {frames!r}, {audio!r}")
    with tempfile.TemporaryDirectory(prefix="kdtalker_lse_") as folder:
        bgr = dump_frames_jpeg(video, folder) if frames == "jpeg" else read_video(video, fps=None)[..., ::-1]
        pcm = extract_audio_async(video, folder) if audio == "async" else read_audio_pcm16(video)
    return np.ascontiguousarray(bgr), pcm


@torch.inference_mode()
def sync_scores(
    model: SyncNet, frames_bgr: np.ndarray, pcm16: np.ndarray, vshift: int = 15, batch_size: int = 20
) -> SyncResult:
    """frames (F,H,W,3) uint8 BGR at 25 fps + int16 16 kHz mono samples -> SyncResult (Wav2Lip calc_scores)."""
    device = next(model.parameters()).device
    frames = np.stack([resize_frame(f) for f in frames_bgr]).astype(np.float32)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None]  # (1,3,F,224,224)
    cc = torch.from_numpy(mfcc(pcm16).T.astype(np.float32))[None, None]  # (1,1,13,M)
    min_length = usable_frames(len(frames), len(pcm16))
    last = min_length - LIP_WINDOW
    if last < 1:
        raise ValueError(f"video too short for SyncNet: {min_length} frames (need at least {LIP_WINDOW + 1})")
    lips, auds = [], []
    for i in range(0, last, batch_size):
        idx = range(i, min(last, i + batch_size))
        lip_in = torch.cat([video[:, :, v : v + LIP_WINDOW] for v in idx], 0).to(device)
        aud_in = torch.cat([cc[:, :, :, v * MFCC_PER_FRAME : v * MFCC_PER_FRAME + MFCC_WINDOW] for v in idx], 0).to(
            device
        )
        lips.append(model.forward_lip(lip_in).float().cpu())
        auds.append(model.forward_aud(aud_in).float().cpu())
    lip, aud = torch.cat(lips, 0), torch.cat(auds, 0)
    dists, mdist = distance_curve(lip, aud, vshift)
    offset, conf, min_dist = scores_from_curve(mdist, vshift)
    return SyncResult(offset, conf, min_dist, mdist.numpy(), dists.numpy(), last)


def lse_scores(results: list[SyncResult]) -> dict[str, float]:
    """Dataset LSE-C / LSE-D: arithmetic means of per-video confidence and min distance."""
    return {
        "lse_c": float(np.mean([r.conf for r in results], dtype=np.float64)),
        "lse_d": float(np.mean([r.min_dist for r in results], dtype=np.float64)),
    }


def smooth_track(bboxes: np.ndarray, kernel: int = 13) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T,4) x1,y1,x2,y2 boxes -> half-size s, centre x, centre y, each 13-tap median filtered (zero padded)."""
    b = np.asarray(bboxes, np.float64)
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    y = (b[:, 1] + b[:, 3]) / 2
    x = (b[:, 0] + b[:, 2]) / 2
    return medfilt(s, kernel), medfilt(x, kernel), medfilt(y, kernel)


def crop_rect(s: float, x: float, y: float, crop_scale: float = 0.4) -> tuple[int, int, int, int, int]:
    """Smoothed box -> (pad bsi, row0, row1, col0, col1) in padded-frame coordinates (syncnet_python crop)."""
    bsi = int(s * (1 + 2 * crop_scale))
    my, mx = y + bsi, x + bsi
    return (
        bsi,
        int(my - s),
        int(my + s * (1 + 2 * crop_scale)),
        int(mx - s * (1 + crop_scale)),
        int(mx + s * (1 + crop_scale)),
    )


def crop_face(frame_bgr: np.ndarray, rect: tuple[int, int, int, int, int], size: int = 224) -> np.ndarray:
    """Pad the frame by bsi pixels of grey 110, cut the rect and resize to size x size (OpenCV bilinear)."""
    bsi, r0, r1, c0, c1 = rect
    padded = np.pad(frame_bgr, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=110)
    return cv2.resize(padded[r0:r1, c0:c1], (size, size))


def crop_track(frames_bgr: np.ndarray, bboxes: np.ndarray, crop_scale: float = 0.4) -> np.ndarray:
    """(T,H,W,3) frames + (T,4) per-frame face boxes -> (T,224,224,3) SyncNet crops (real-video path)."""
    s, x, y = smooth_track(bboxes)
    return np.stack([crop_face(f, crop_rect(s[t], x[t], y[t], crop_scale)) for t, f in enumerate(frames_bgr)])
