"""Training data: offline extraction (video -> shard), synthetic shards, normalisation stats, window datasets.

Shard format (one ``<clip>.npz`` per clip, written atomically, every array float32; same names as the
official ``.mat`` files written by ``dataset_process/extract_motion_dataset.py``):

| key | shape | meaning |
| --- | --- | --- |
| ``scale`` | (T, 1) | LivePortrait scale |
| ``pitch``, ``yaw``, ``roll`` | (T, 1) | head pose in degrees |
| ``t`` | (T, 3) | translation (x, y, z) |
| ``exp`` | (T, 21, 3) | expression offsets δ |
| ``kp`` | (T, 21, 3) | canonical keypoints x_c |
| ``aud_feat`` | (Ta, 512) | Wav2Lip audio-encoder feature per video frame (25 fps) |
| ``fps`` | () | frame rate of both streams (25) |
| ``layout`` | () unicode | the motion layout's name (kdtalker/data/layouts.py); absent: ``liveportrait`` |

Face-vid2vid shards (``scripts/extract.py renderer=facevid2vid``, ``layout`` = ``facevid2vid``) hold its motion:
``yaw``, ``pitch``, ``roll`` (T, 1) degrees, ``t`` (T, 3), ``exp`` and ``kp`` (T, 15, 3), no ``scale``. A shard
folder holds one layout; reading shards of two together (statistics, training) is refused with one error.

T is the number of decoded video frames and Ta the number of audio frames (``num_video_frames`` of
the audio length); they usually differ by a frame or two. The window dataset aligns them the official
way: truncate both to min(T - 1, Ta - 2), then audio frame k pairs with motion frame k.

At scale: shards sit in sub-folders mirroring the videos, with per-job extraction index files (clip_index.py,
jobs.py); data.select keeps clips by their SyncNet scores (select.py); packed.py turns a shard folder into
memory-mapped arrays that the window dataset reads lazily.
"""

from kdtalker.data.shards import MOTION_KEYS, SHARD_KEYS, Clip, read_shard, shard_paths, write_shard

__all__ = ["MOTION_KEYS", "SHARD_KEYS", "Clip", "read_shard", "shard_paths", "write_shard"]
