"""Denoiser architecture, ablation switches and the KDTalker.pth loader / writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtalker.diffusion import Denoiser, load_kdtalker, save_kdtalker
from kdtalker.diffusion.checkpoint import KEY_PREFIX
from kdtalker.diffusion.denoiser import relative_position_buckets
from kdtalker.errors import CheckpointError, ConfigError

SMALL = dict(width=32, depth=2, heads=2, head_dim=16, time_dim=8, audio_dim=24)


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """np.testing on tensors (torch.testing's first call imports for seconds)."""
    np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=rtol, atol=atol)


def small(**overrides) -> Denoiser:
    torch.manual_seed(0)
    model = Denoiser(**{**SMALL, **overrides})
    torch.nn.init.normal_(model.output_projection.weight)  # the official near-zero init would hide differences
    return model.eval()


def test_official_parameter_count_is_the_papers_42_93_m():
    model = Denoiser()
    assert sum(p.numel() for p in model.parameters()) == 42_926_284
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 42_926_278  # the rotary freqs are frozen
    state = model.state_dict()
    assert len(state) == 166 and all(not k.startswith(KEY_PREFIX) for k in state)
    freqs = [v for k, v in state.items() if k.endswith("rotary_emb.freqs")]
    assert len(freqs) == 6 and all(f.data_ptr() == freqs[0].data_ptr() for f in freqs)  # one shared tensor


def test_relative_buckets_match_the_integer_table():
    table = relative_position_buckets(200)
    # README table per half: 0..7 exact, 8-11 -> 8, 12-15 -> 9, 16-22 -> 10, 23-31 -> 11, 32-45 -> 12, 46-63 -> 13,
    # 64-90 -> 14, 91+ -> 15; keys after the query (n = i - j < 0) in buckets 16..31.
    edges = [
        (0, 0),
        (7, 7),
        (8, 8),
        (11, 8),
        (12, 9),
        (16, 10),
        (22, 10),
        (23, 11),
        (32, 12),
        (45, 12),
        (46, 13),
        (63, 13),
        (64, 14),
        (90, 14),
        (91, 15),
        (199, 15),
    ]
    for d, bucket in edges:
        assert table[d, 0] == bucket and table[0, d] == (16 + bucket if d else 0)


@pytest.mark.parametrize(
    "attention,canonical,keys_absent",
    [
        ("rope", True, ()),
        ("plain", True, ("rotary_emb",)),
        ("none", True, ("layers.0.attn", "time_rel_pos_bias")),
        ("rope", False, ()),
    ],
)
def test_ablations_run_and_change_the_layout(attention, canonical, keys_absent):
    model = small(attention=attention, canonical_token=canonical)
    assert model.num_ref_tokens == (2 if canonical else 1)
    state = model.state_dict()
    for part in keys_absent:
        assert not any(part in k for k in state)
    b, n = 2, 5
    x = model.tokens(torch.randn(b, n, 70), torch.randn(b, 70), torch.randn(b, 70))
    assert x.shape == (b, n + model.num_ref_tokens, 70)
    out = model.forward_tokens(x, torch.tensor([3, 900]), model.context(torch.randn(b, n, 24)))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_attention_mixes_frames_and_rope_sees_positions():
    x = torch.randn(1, 8, 70)
    ctx = torch.randn(1, 8, 24)
    t = torch.tensor([10])
    shifted = x.clone()
    shifted[0, -1] += 1.0  # change only the last frame
    with torch.no_grad():
        for attention in ("rope", "plain"):
            model = small(attention=attention)
            assert not torch.allclose(
                model.forward_tokens(x, t, ctx)[0, 0], model.forward_tokens(shifted, t, ctx)[0, 0]
            )
        frame_wise = small(attention="none")
        assert torch.equal(
            frame_wise.forward_tokens(x, t, ctx)[0, :-1], frame_wise.forward_tokens(shifted, t, ctx)[0, :-1]
        )


def test_split_modulation_equals_the_concatenated_condition():
    model = small()
    ctx, t = torch.randn(2, 6, 24), torch.tensor([5, 700])
    with torch.no_grad():
        cond = torch.cat([model.time_embedding(t)[:, None].expand(-1, 6, -1), ctx], dim=-1)
        full = torch.stack([blk.modulation(torch.nn.functional.silu(cond)) for blk in model.resnet_blocks], dim=2)
        split = model.time_modulation(t) + model.audio_modulation(ctx)
    assert_close(split, full, rtol=1e-5, atol=1e-6)


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="attention"):
        Denoiser(**SMALL, attention="flash")
    with pytest.raises(ConfigError, match="rotary_dim"):
        Denoiser(**SMALL, rotary_dim=7)


def test_save_then_load_round_trip_strictly(tmp_path):
    model = small()
    ema = small(attention="rope")
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    path = save_kdtalker(model, tmp_path / "KDTalker.pth", ema_model=ema, step=7)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert ckpt["step"] == 7 and all(k.startswith(KEY_PREFIX) for k in ckpt["model"])
    for source in (path, ckpt):
        loaded = load_kdtalker(source, **SMALL)
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), k
        assert not loaded.training
    from_ema = load_kdtalker(path, ema=True, **SMALL)
    assert torch.equal(from_ema.input_projection.weight, ema.input_projection.weight)
    assert not list(tmp_path.glob("*.part"))


def test_loader_takes_a_torch_ema_shadow_list():
    model = small()
    state = {KEY_PREFIX + k: v for k, v in model.state_dict().items()}
    shadow = [p.detach() + 2.0 for p in model.parameters()]
    loaded = load_kdtalker({"model": state, "model_ema": {"decay": 0.999, "shadow_params": shadow}}, ema=True, **SMALL)
    for (name, p), s in zip(loaded.named_parameters(), shadow):
        assert torch.equal(p, s), name


def test_wrong_files_raise_checkpoint_errors(tmp_path):
    model = small()
    good = tmp_path / "good.pth"
    save_kdtalker(model, good)
    with pytest.raises(CheckpointError, match="not found"):
        load_kdtalker(tmp_path / "missing.pth", **SMALL)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_kdtalker(truncated, **SMALL)
    with pytest.raises(CheckpointError, match="not KDTalker.pth"):
        load_kdtalker({"state_dict": {"module.audio_encoder.0.weight": torch.zeros(1)}}, **SMALL)
    with pytest.raises(CheckpointError, match="'model' entry .* is not a state dict"):
        load_kdtalker({"model": [1, 2, 3]}, **SMALL)
    with pytest.raises(CheckpointError, match="file path or a checkpoint dict"):
        load_kdtalker([1, 2, 3], **SMALL)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_kdtalker(good, **{**SMALL, "depth": 3})
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_kdtalker(good, **{**SMALL, "width": 64, "head_dim": 32})
    with pytest.raises(CheckpointError, match="no EMA weights"):
        load_kdtalker(good, ema=True, **SMALL)


def test_forward_owns_the_token_protocol():
    # forward(x_t, t, audio, previous, canonical) = the official network on [canonical, previous, x_t] with zero
    # audio on the reference tokens, frames only; a cached condition gives the same epsilon.
    model = small()
    b, n = 2, 5
    x_t, prev, canon, audio = torch.randn(b, n, 70), torch.randn(b, 70), torch.randn(b, 70), torch.randn(b, n, 24)
    t = torch.tensor([3, 900])
    with torch.no_grad():
        eps = model(x_t, t, audio, prev, canon)
        full = model.forward_tokens(model.tokens(x_t, prev, canon), t, model.context(audio))
        cached = model(x_t, t, audio, prev, canon, cond=model.condition(audio))
        padded = model(x_t, t, model.context(audio), prev, canon)
    assert eps.shape == (b, n, 70)
    assert torch.equal(eps, full[:, model.num_ref_tokens :])
    assert torch.equal(cached, eps) and torch.equal(padded, eps)
    with pytest.raises(ValueError, match="frames"):
        model(x_t, t, audio[:, :3], prev, canon)
