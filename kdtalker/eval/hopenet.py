"""Hopenet (Ruiz et al. 2018) head pose and the head-motion diversity statistic of KDTalker's evaluation.

Hopenet is a ResNet-50 (torchvision layout: Bottleneck with the stride on the 3x3 conv) with three
66-way heads (bins of 3 degrees from -99). Key names follow torchvision's resnet50 plus fc_yaw,
fc_pitch, fc_roll and the vestigial fc_finetune (2051 -> 3) that the official snapshot carries.

KDTalker's evaluation (`evaluation/deep-head-pose/code/test_on_video_dlib.py` + `cal_std.py`): for the
first 200 frames, every dlib MMOD face with confidence > 1.0 is enlarged (0.5 w sideways, 0.75 h up,
0.25 h down), cropped from the RGB frame, resized (shorter side 224, PIL bilinear), centre-cropped to
224, ImageNet-normalised, and Hopenet's raw (pre-softmax) 66 yaw / pitch / roll logits are stored.
Its "diversity" is the standard deviation over time of each logit, averaged over the 66 bins, per
angle, then averaged over videos, and the three angles averaged. `diversity_degrees` is the same
statistic on the decoded angles (softmax expectation, degrees).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

NUM_BINS = 66
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), identity or projected shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Hopenet(nn.Module):
    """(B,3,224,224) ImageNet-normalised RGB -> yaw, pitch, roll logits, each (B,66)."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_bins: int = NUM_BINS, finetune_head: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.inplanes = 64
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.fc_yaw = nn.Linear(2048, num_bins)
        self.fc_pitch = nn.Linear(2048, num_bins)
        self.fc_roll = nn.Linear(2048, num_bins)
        # Unused at inference; present in the official snapshot.
        self.fc_finetune = nn.Linear(2048 + 3, 3) if finetune_head else None

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.avg_pool2d(x, 7).flatten(1)  # the official AvgPool2d(7): global for 224 inputs
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)


def logits_to_degrees(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """(..., 66) raw bin logits -> (...,) angle in degrees: softmax expectation of bin index * 3 - 99."""
    t = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    idx = torch.arange(t.shape[-1], dtype=torch.float64)
    return (torch.softmax(t, -1) * idx).sum(-1).numpy() * 3 - 99


def expand_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Detector box x0,y0,x1,y1 -> the official Hopenet crop: +0.5 w each side, +0.75 h up, +0.25 h down, clamped."""
    x0, y0, x1, y1 = box
    bw, bh = abs(x1 - x0), abs(y1 - y0)
    x0, x1 = x0 - 2 * bw / 4, x1 + 2 * bw / 4
    y0, y1 = y0 - 3 * bh / 4, y1 + bh / 4
    return int(max(x0, 0)), int(max(y0, 0)), int(min(width, x1)), int(min(height, y1))


def preprocess(crop_rgb: np.ndarray, size: int = 224) -> torch.Tensor:
    """(h,w,3) uint8 RGB crop -> (3,224,224): shorter side to 224 (PIL bilinear), centre crop, ImageNet norm."""
    img = Image.fromarray(np.ascontiguousarray(crop_rgb))
    w, h = img.size
    if w <= h:
        ow, oh = size, int(size * h / w)
    else:
        ow, oh = int(size * w / h), size
    img = img.resize((ow, oh), Image.BILINEAR)
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


Detector = Callable[[np.ndarray], list[tuple[tuple[float, float, float, float], float]]]


@torch.inference_mode()
def video_pose_logits(
    model: Hopenet,
    frames_rgb: Sequence[np.ndarray],
    detect: Detector,
    max_frames: int = 200,
    min_confidence: float = 1.0,
) -> np.ndarray:
    """Frames (H,W,3) RGB + detector (frame -> [(box, confidence)]) -> (N, 3, 66) yaw/pitch/roll logits."""
    device = next(model.parameters()).device
    poses = []
    for frame in list(frames_rgb)[:max_frames]:
        for box, conf in detect(frame):
            if conf <= min_confidence:
                continue
            x0, y0, x1, y1 = expand_box(box, frame.shape[1], frame.shape[0])
            x = preprocess(frame[y0:y1, x0:x1])[None].to(device)
            yaw, pitch, roll = model(x)
            poses.append(torch.cat([yaw, pitch, roll], 0).float().cpu().numpy())
    return np.stack(poses) if poses else np.zeros((0, 3, NUM_BINS), np.float32)


def pose_std(logits: np.ndarray) -> np.ndarray:
    """(N,3,66) logits of one video -> (3,) yaw/pitch/roll: std over time of each bin (ddof 0), averaged over bins."""
    if len(logits) == 0:
        raise ValueError("no face was detected in the video: head-motion diversity is undefined")
    return np.std(np.asarray(logits, np.float64), axis=0).mean(axis=-1)


def pose_std_degrees(logits: np.ndarray) -> np.ndarray:
    """(N,3,66) logits -> (3,) std over time (ddof 0) of the decoded yaw/pitch/roll angles in degrees."""
    if len(logits) == 0:
        raise ValueError("no face was detected in the video: head-motion diversity is undefined")
    return np.std(logits_to_degrees(logits), axis=0)


def diversity(per_video_std: Sequence[np.ndarray]) -> dict[str, float]:
    """Per-video (3,) stds -> dict(yaw, pitch, roll: means over videos, diversity: mean of the three)."""
    y, p, r = np.mean(np.stack(per_video_std), axis=0)
    return {"yaw": float(y), "pitch": float(p), "roll": float(r), "diversity": float((y + p + r) / 3)}


def mmod_detector(model_path: str, upsample: int = 1) -> Detector:
    """dlib's CNN (MMOD) face detector, as the official script: RGB frame -> [(box, confidence)]."""
    import dlib

    net = dlib.cnn_face_detection_model_v1(str(model_path))

    def detect(frame_rgb: np.ndarray):
        return [
            ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), float(d.confidence))
            for d in net(np.ascontiguousarray(frame_rgb), upsample)
        ]

    return detect


def hog_detector(upsample: int = 1, score_offset: float = 0.0) -> Detector:
    """dlib's HOG detector (fast, not the official one): RGB frame -> [(box, score + score_offset)]."""
    import dlib

    det = dlib.get_frontal_face_detector()

    def detect(frame_rgb: np.ndarray):
        rects, scores, _ = det.run(np.ascontiguousarray(frame_rgb), upsample, -1.0)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s) + score_offset) for r, s in zip(rects, scores)]

    return detect
