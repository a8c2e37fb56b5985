"""SyncNet v2 and the LSE-C / LSE-D procedure against $KDTALKER_REFERENCE/audio (README sections 6, 7, 10, 11)."""

import numpy as np
import pytest
import torch

from kdtalker.errors import CheckpointError
from kdtalker.eval.mfcc import mfcc
from kdtalker.eval.syncnet import (
    crop_face,
    crop_rect,
    distance_curve,
    lse_scores,
    resize_frame,
    scores_from_curve,
    smooth_track,
    sync_scores,
)
from kdtalker.eval.weights import load_syncnet

SPEC = "spec_syncnet.json"


@pytest.fixture(scope="module")
def syncnet(audio_ref, tmp_path_factory):
    # The official file is a flat dict without BN counters: write exactly that and go through the loader.
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model"
    state = audio_ref.weights(SPEC)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    torch.save(state, path)
    return load_syncnet(path)


@pytest.fixture(scope="module")
def clip_results(audio_ref, syncnet):
    frames = audio_ref["clip_frames_bgr"]
    return (
        sync_scores(syncnet, frames, audio_ref["clip_audio_pcm16"]),
        sync_scores(syncnet, frames, audio_ref["clipB_audio_pcm16"]),
    )


def test_mfcc(audio_ref):
    np.testing.assert_allclose(mfcc(audio_ref["clip_audio_pcm16"]).T, audio_ref["clip_mfcc"], rtol=0, atol=1e-8)


def test_audio_tower(audio_ref, syncnet):
    with torch.inference_mode():
        out = syncnet.forward_aud(torch.from_numpy(audio_ref["sn_aud_in"]))
    np.testing.assert_allclose(out.numpy(), audio_ref["sn_aud_out"], rtol=0, atol=2e-4)


def test_lip_tower(audio_ref, syncnet):
    frames = audio_ref["clip_frames_bgr"].astype(np.float32)
    lip_in = np.stack([frames[s : s + 5].transpose(3, 0, 1, 2) for s in audio_ref["sn_lip_starts"]])
    with torch.inference_mode():
        out = syncnet.forward_lip(torch.from_numpy(lip_in))
    np.testing.assert_allclose(out.numpy(), audio_ref["sn_lip_out"], rtol=0, atol=1e-3)


def test_clip_features_and_scores(audio_ref, syncnet, clip_results):
    res, res_b = clip_results
    assert res.num_windows == int(audio_ref["clip_num_windows"])
    assert min(len(audio_ref["clip_frames_bgr"]), len(audio_ref["clip_audio_pcm16"]) // 640) == int(
        audio_ref["clip_min_length"]
    )
    np.testing.assert_allclose(res.dists, audio_ref["clip_dists"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(res.mdist, audio_ref["clip_mdist"], rtol=0, atol=1e-3)
    assert res.offset == int(audio_ref["clip_offset"])
    assert res.conf == pytest.approx(float(audio_ref["clip_conf"]), abs=1e-3)
    assert res.min_dist == pytest.approx(float(audio_ref["clip_min_dist"]), abs=1e-3)

    assert res_b.num_windows == int(audio_ref["clipB_num_windows"])
    np.testing.assert_allclose(res_b.mdist, audio_ref["clipB_mdist"], rtol=0, atol=1e-3)
    assert res_b.offset == int(audio_ref["clipB_offset"])
    assert res_b.conf == pytest.approx(float(audio_ref["clipB_conf"]), abs=1e-3)
    assert res_b.min_dist == pytest.approx(float(audio_ref["clipB_min_dist"]), abs=1e-3)

    scores = lse_scores([res, res_b])
    assert scores["lse_c"] == pytest.approx(float(audio_ref["lse_c"]), abs=1e-3)
    assert scores["lse_d"] == pytest.approx(float(audio_ref["lse_d"]), abs=1e-3)


def test_clip_embeddings(audio_ref, syncnet):
    # The per-window embeddings themselves, batched 20 at a time like the official loop.
    frames = audio_ref["clip_frames_bgr"].astype(np.float32)
    cc = mfcc(audio_ref["clip_audio_pcm16"]).T.astype(np.float32)
    n = int(audio_ref["clip_num_windows"])
    lips, auds = [], []
    with torch.inference_mode():
        for i in range(0, n, 20):
            idx = range(i, min(n, i + 20))
            lips.append(
                syncnet.forward_lip(torch.from_numpy(np.stack([frames[v : v + 5].transpose(3, 0, 1, 2) for v in idx])))
            )
            auds.append(syncnet.forward_aud(torch.from_numpy(np.stack([cc[None, :, 4 * v : 4 * v + 20] for v in idx]))))
    np.testing.assert_allclose(torch.cat(lips).numpy(), audio_ref["clip_lip_feat"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(torch.cat(auds).numpy(), audio_ref["clip_aud_feat"], rtol=0, atol=2e-4)


def test_distance_step(audio_ref):
    dists, mdist = distance_curve(
        torch.from_numpy(audio_ref["pd_lip_feat"]), torch.from_numpy(audio_ref["pd_aud_feat"])
    )
    np.testing.assert_allclose(dists.numpy(), audio_ref["pd_dists"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(mdist.numpy(), audio_ref["pd_mdist"], rtol=0, atol=1e-4)
    offset, conf, min_dist = scores_from_curve(mdist)
    assert offset == int(audio_ref["pd_offset"])
    assert conf == pytest.approx(float(audio_ref["pd_conf"]), abs=1e-4)
    assert min_dist == pytest.approx(float(audio_ref["pd_min_dist"]), abs=1e-4)


def test_frame_resize(audio_ref):
    np.testing.assert_array_equal(resize_frame(audio_ref["rs_in_bgr"]), audio_ref["rs_out_bgr"])


def test_crop_geometry(audio_ref):
    s, x, y = smooth_track(audio_ref["crop_bboxes"])
    np.testing.assert_allclose(s, audio_ref["crop_s"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(x, audio_ref["crop_x"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(y, audio_ref["crop_y"], rtol=0, atol=1e-9)
    rects = np.array([crop_rect(s[t], x[t], y[t]) for t in range(len(s))])
    np.testing.assert_array_equal(rects, audio_ref["crop_rects"])
    for k, t in enumerate(audio_ref["crop_sel"]):
        np.testing.assert_array_equal(
            crop_face(audio_ref["crop_still_bgr"], tuple(rects[t])), audio_ref["crop_out_bgr"][k]
        )


def test_loader_errors(tmp_path, audio_ref):
    with pytest.raises(CheckpointError, match="syncnet_v2.model"):
        load_syncnet(tmp_path / "missing.model")
    state = audio_ref.weights(SPEC)
    state.pop("netfclip.3.bias")
    with pytest.raises(CheckpointError, match="missing"):
        load_syncnet(state)
