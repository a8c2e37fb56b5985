"""The KDTalker denoiser: a transformer over motion frames, conditioned per frame on audio and on the diffusion step.

Input frames: [reference tokens | noisy motion]; the reference tokens are the canonical keypoints ("ori": seven
zeros then the normalised source kp) and the previous frame's motion ("ref"). Each of `depth` layers is
ResnetBlock, ResnetBlock, pre-norm attention over frames (RoPE on 12 of each head's 64 channels plus a T5 relative
position bias). Every ResnetBlock is modulated by cond = [time MLP (256) | audio (512)] of its frame.

Module names follow the official checkpoint (`point_model.model.*` with that prefix removed) except where a name
says more: `layers.N.res1/res2/attn` for the official positional `layers.N.0/1/2` and `modulation` for a block's
`mlp.1` (the key map in diffusion/checkpoint.py), so KDTalker.pth loads strictly and is written back unchanged.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kdtalker.device import resolve_device
from kdtalker.diffusion.checkpoint import WHAT, kdtalker_state_dict, official_layout, read_checkpoint, write_checkpoint
from kdtalker.errors import ConfigError
from kdtalker.weights import load_state_strict

ATTENTION_KINDS = ("rope", "plain", "none")
Rotation = tuple[torch.Tensor, torch.Tensor] | None  # the rotary embedding's (cos, sin), each (F, rot_dim)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with (1, 1, dim) `gamma`/`beta` (the official parameter names and shapes)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, dim) -> (B, F, dim): biased variance, eps inside the square root."""
        dim = x.shape[-1]
        return F.layer_norm(x, (dim,), self.gamma.view(dim), self.beta.view(dim), self.eps)


class SinusoidalEmbedding(nn.Module):
    """Diffusion step (B,) -> (B, dim) = [sin(t w_k) | cos(t w_k)], w_k = 10000^(-k / (dim/2 - 1))."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t[:, None] * freqs[None, :]  # float32 product, as the official code forms it
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FrequencyBands(nn.Module):
    """Unused leftover of the official base class; only its `freq_bands` buffer exists, so the checkpoint loads."""

    def __init__(self, num_bands: int = 10):
        super().__init__()
        self.register_buffer("freq_bands", 2.0 ** torch.linspace(1.0, 9.0, num_bands))


class Block(nn.Module):
    """Linear, then (when modulated) LayerNorm and x * (1 + scale) + shift, then SiLU."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim_out)
        self.norm = LayerNorm(dim_out)  # present in the checkpoint for both blocks; only block1 uses it

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, self.norm(x), scale + 1)  # x (1 + scale) + shift in one kernel
        return F.silu(x)


class ResnetBlock(nn.Module):
    """block2(block1(x, modulation)) + x; modulation = Linear(SiLU(cond)) split into (scale, shift).

    The Linear (`modulation`; the checkpoint's `mlp.1`) is applied in two halves with the exact same numbers:
    Linear([SiLU(time) | 0]) without bias plus Linear([0 | SiLU(audio)]) with it, so that a sampler computes the
    audio half once per window (see Denoiser.condition).
    """

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.modulation = nn.Linear(cond_dim, 2 * dim)
        self.block1 = Block(dim, dim)
        self.block2 = Block(dim, dim)

    def time_modulation(self, time_act: torch.Tensor) -> torch.Tensor:
        """[SiLU(time) | 0] (B, cond_dim) -> its part of the modulation (B, 2 dim), bias excluded."""
        return F.linear(time_act, self.modulation.weight)

    def audio_modulation(self, audio_act: torch.Tensor) -> torch.Tensor:
        """[0 | SiLU(audio)] (B, F, cond_dim) -> its part of the modulation (B, F, 2 dim), bias included."""
        return self.modulation(audio_act)

    def forward(self, x: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """x (B, F, dim), modulation (B, F, 2 dim) = time part + audio part -> (B, F, dim)."""
        h = self.block1(x, modulation.chunk(2, dim=-1))
        return self.block2(h) + x


class RotaryEmbedding(nn.Module):
    """Rotary position embedding on the first `2 * len(freqs)` channels of each head, pairs (0,1), (2,3), ... .

    `freqs` is one parameter shared by all attention layers (requires_grad False), registered under each of them
    as in the official checkpoint.
    """

    def __init__(self, freqs: nn.Parameter):
        super().__init__()
        self.freqs = freqs

    def angles(self, num_frames: int) -> torch.Tensor:
        """(F, rot_dim): p * theta_i for frame p, each theta repeated for the two channels of its pair."""
        positions = torch.arange(num_frames, device=self.freqs.device, dtype=self.freqs.dtype)
        return (positions[:, None] * self.freqs[None, :]).repeat_interleave(2, dim=-1)

    def rotation(self, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of the angles, each (F, rot_dim): built once per network call and shared by its layers (they
        share `freqs`)."""
        angles = self.angles(num_frames)
        return angles.cos(), angles.sin()

    def forward(self, x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, H, F, head_dim), rotation (cos, sin) each (F, rot_dim) -> x with channels [0, rot_dim) rotated."""
        cos, sin = rotation
        rot_dim = cos.shape[-1]
        x_rot, x_pass = x[..., :rot_dim], x[..., rot_dim:]
        pairs = x_rot.unflatten(-1, (-1, 2))
        swapped = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (a, b) -> (-b, a)
        return torch.cat([x_rot * cos + swapped * sin, x_pass], dim=-1)


def _relative_bucket(n: int, num_buckets: int, max_distance: int) -> int:
    """T5 bucket of n = query - key: exact below num_buckets / 4, log-spaced above; keys after the query use the
    upper half."""
    half = num_buckets // 2
    bucket = half if n < 0 else 0
    d = abs(n)
    max_exact = half // 2
    if d < max_exact:
        return bucket + d
    # The official float32 log gives exact integers at d = 16, 32, 64; the epsilon keeps float64 from rounding down.
    log_ratio = math.log(d / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + int(math.floor(log_ratio * (half - max_exact) + 1e-9))
    return bucket + min(large, half - 1)


@lru_cache(maxsize=None)  # never evicted: a recorded CUDA graph (step_graph.py) reads the table where it was
def relative_position_buckets(
    num_frames: int, num_buckets: int = 32, max_distance: int = 128, device: torch.device | None = None
) -> torch.Tensor:
    """(F, F) int64 table bucket[i = query, j = key], built once per size and device (no copy per step)."""
    table = [[_relative_bucket(i - j, num_buckets, max_distance) for j in range(num_frames)] for i in range(num_frames)]
    return torch.tensor(table, dtype=torch.long, device=device)


class RelativePositionBias(nn.Module):
    """Learned per-head bias added to the attention logits, looked up by relative-position bucket."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, num_frames: int) -> torch.Tensor:
        """-> (heads, F, F)."""
        device = self.relative_attention_bias.weight.device
        buckets = relative_position_buckets(num_frames, self.num_buckets, self.max_distance, device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)


class Attention(nn.Module):
    """Multi-head self-attention over frames; q is scaled by head_dim^-0.5 before the rotary embedding."""

    def __init__(self, dim: int, heads: int, head_dim: int, rotary: RotaryEmbedding | None):
        super().__init__()
        self.heads = heads
        self.scale = head_dim**-0.5
        self.to_qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.rotary_emb = rotary

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, rotation: Rotation = None) -> torch.Tensor:
        """x (B, F, dim), bias (heads, F, F) or None, rotation: the rotary (cos, sin) the network builds once per call
        (None without rotary) -> (B, F, dim)."""
        batch, frames = x.shape[:2]
        qkv = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)  # (3, B, heads, F, head_dim)
        qk, v = qkv[:2], qkv[2]
        if self.rotary_emb is not None:  # q and k rotated in one pass
            qk = self.rotary_emb(qk, rotation)
        q, k = (t.reshape(batch * self.heads, frames, -1) for t in qk.unbind(0))
        # The official code scales q before the rotation; the rotation is linear, so the scale can wait for the
        # logits (bit for bit at head_dim 64, whose scale 1/8 is a power of two); the bias is added unscaled.
        if bias is None:
            logits = torch.bmm(q, k.transpose(1, 2)).mul_(self.scale)
        else:
            bias = bias.to(q.dtype).expand(batch, -1, -1, -1).reshape(batch * self.heads, frames, frames)
            logits = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=self.scale)
        out = logits.softmax(dim=-1).unflatten(0, (batch, self.heads)) @ v  # plain math: faster than SDPA on CPU here
        return self.proj(out.transpose(1, 2).flatten(2))


class PreNormAttention(nn.Module):
    """Attention(LayerNorm(x)); the attribute names `norm`/`fn` are the checkpoint's."""

    def __init__(self, dim: int, attention: Attention):
        super().__init__()
        self.fn = attention  # registered before `norm`: the checkpoint's key order
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, rotation: Rotation = None) -> torch.Tensor:
        return self.fn(self.norm(x), bias, rotation)


class ResidualAttention(nn.Module):
    """x + PreNormAttention(x); stored as `fn` like the official Residual wrapper."""

    def __init__(self, dim: int, attention: Attention):
        super().__init__()
        self.fn = PreNormAttention(dim, attention)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, rotation: Rotation = None) -> torch.Tensor:
        return x + self.fn(x, bias, rotation)


class DenoiserLayer(nn.Module):
    """One of `depth` layers: two modulated ResnetBlocks, then (unless attention is off) residual attention."""

    def __init__(
        self,
        width: int,
        cond_dim: int,
        heads: int,
        head_dim: int,
        rotary: RotaryEmbedding | None,
        attention: bool = True,
    ):
        super().__init__()
        # Built in the official order (res1, res2, attention): the random initialisation depends on it.
        self.res1 = ResnetBlock(width, cond_dim)
        self.res2 = ResnetBlock(width, cond_dim)
        self.attn = ResidualAttention(width, Attention(width, heads, head_dim, rotary)) if attention else None

    def forward(
        self, h: torch.Tensor, modulation: torch.Tensor, bias: torch.Tensor | None, rotation: Rotation = None
    ) -> torch.Tensor:
        """h (B, F, width), modulation (B, F, 2, 2 width) for res1/res2, bias (heads, F, F), rotation (cos, sin) ->
        (B, F, width)."""
        h = self.res2(self.res1(h, modulation[:, :, 0]), modulation[:, :, 1])
        return self.attn(h, bias, rotation) if self.attn is not None else h


class Denoiser(nn.Module):
    """epsilon-prediction network (DiT style): forward(x_t, t, audio, previous, canonical) -> epsilon of the frames.

    x_t (B, N, 70) noisy motion frames, t (B,) diffusion steps, audio (B, N, 512) per-frame audio features,
    previous (B, 70) the motion of the frame before the window, canonical (B, 70) the source's canonical-keypoint
    token (seven zeros + normalised x_c). The model owns its token protocol: inside it the sequence is
    [canonical, previous, x_t] with zero audio on the reference tokens. Ablations: attention "rope" (official) /
    "plain" (no rotary) / "none" (no attention layers); `relative_position_bias` off; `canonical_token` False drops
    the canonical token. `window` is the number of frames per window the model is trained and sampled with.
    """

    signals = ("audio",)  # the conditioning signals it takes (the multi-signal model adds "motion")
    cuda_graphs = False  # on a CUDA device, a sampler replays each step's network call from a graph (step_graph.py)

    def __init__(
        self,
        motion_dim: int = 70,
        audio_dim: int = 512,
        width: int = 768,
        depth: int = 6,
        heads: int = 12,
        head_dim: int = 64,
        time_dim: int = 256,
        attention: str = "rope",
        rotary_dim: int = 12,
        rotary_theta: float = 10000.0,
        relative_position_bias: bool = True,
        rel_pos_buckets: int = 32,
        rel_pos_max_distance: int = 128,
        canonical_token: bool = True,
        window: int = 64,
    ):
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ConfigError(f"model.attention={attention!r} is not one of {ATTENTION_KINDS}")
        if rotary_dim % 2 or rotary_dim > head_dim:
            raise ConfigError(f"model.rotary_dim={rotary_dim} must be even and at most head_dim={head_dim}")
        if window < 1:
            raise ConfigError(f"model.window={window} must be a positive number of frames")
        self.motion_dim, self.audio_dim, self.width = motion_dim, audio_dim, width
        self.time_dim = time_dim
        self.attention = attention
        self.canonical_token = canonical_token
        self.num_ref_tokens = 2 if canonical_token else 1
        self.window = window

        self.time_mlp = nn.Sequential(
            SinusoidalEmbedding(width), nn.Linear(width, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.positional_encoding = FrequencyBands()
        self.input_projection = nn.Linear(motion_dim, width)
        use_bias = attention != "none" and relative_position_bias
        self.time_rel_pos_bias = (
            RelativePositionBias(heads, rel_pos_buckets, rel_pos_max_distance) if use_bias else None
        )
        rotary = None
        if attention == "rope":
            freqs = 1.0 / rotary_theta ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim)
            rotary = RotaryEmbedding(nn.Parameter(freqs, requires_grad=False))
        cond_dim = time_dim + audio_dim
        self.layers = nn.ModuleList(
            DenoiserLayer(width, cond_dim, heads, head_dim, rotary, attention != "none") for _ in range(depth)
        )
        self.output_projection = nn.Linear(width, motion_dim)
        # Training from scratch starts from an almost-zero epsilon prediction, as the official initialisation.
        nn.init.normal_(self.output_projection.weight, std=1e-6)
        nn.init.normal_(self.output_projection.bias, std=1e-6)

    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs are moved there)."""
        return self.input_projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' precision (inputs are cast to it; keypoint math stays float32 outside)."""
        return self.input_projection.weight.dtype

    @property
    def resnet_blocks(self) -> list[ResnetBlock]:
        return [block for layer in self.layers for block in (layer.res1, layer.res2)]

    def unused_parameter_names(self) -> list[str]:
        """Parameters no forward reads: each ResnetBlock's `block2.norm`, in the checkpoint but never applied."""
        blocks = {id(block) for block in self.resnet_blocks}
        return [
            f"{name}.block2.norm.{param}"
            for name, module in self.named_modules()
            if id(module) in blocks
            for param, _ in module.block2.norm.named_parameters()
        ]

    # Inputs -----------------------------------------------------------------------------------------------------
    def tokens(self, x_t: torch.Tensor, ref: torch.Tensor, ori: torch.Tensor | None) -> torch.Tensor:
        """Noisy frames (B, N, 70), ref (B, 70), ori (B, 70) -> model input (B, F, 70) = [ori, ref, x_t]."""
        front = [ori, ref] if self.canonical_token else [ref]
        if self.canonical_token and ori is None:
            raise ValueError("this model takes the canonical-keypoint token: pass ori (B, 70)")
        return torch.cat([t.unsqueeze(1).to(x_t.dtype) for t in front] + [x_t], dim=1)

    def context(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (B, N, 512) -> context (B, F, 512) with zero frames for the reference tokens."""
        zeros = audio.new_zeros(audio.shape[0], self.num_ref_tokens, audio.shape[2])
        return torch.cat([zeros, audio], dim=1)

    # Conditioning -----------------------------------------------------------------------------------------------
    # Linear(SiLU([time | audio])) = W [SiLU(time) | 0] + W [0 | SiLU(audio)] + b, exactly (SiLU acts elementwise and
    # the zeros add nothing). Splitting it lets a sampler compute the audio half once per window, not once per step.
    def audio_modulation(self, context: torch.Tensor) -> torch.Tensor:
        """Context (B, F, 512) -> audio half (biases included) of all block modulations (B, F, blocks, 2 width)."""
        a = F.silu(context)
        a = torch.cat([a.new_zeros(*a.shape[:-1], self.time_dim), a], dim=-1)
        return torch.stack([blk.audio_modulation(a) for blk in self.resnet_blocks], dim=2)

    def time_modulation(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion steps (B,) -> time half of every ResnetBlock's modulation (B, 1, blocks, 2 width)."""
        emb = F.silu(self.time_embedding(t))
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], self.audio_dim)], dim=-1)
        return torch.stack([blk.time_modulation(emb) for blk in self.resnet_blocks], dim=1).unsqueeze(1)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) integer steps -> (B, time_dim)."""
        sinusoid = self.time_mlp[0](t).to(self.dtype)
        return self.time_mlp[1:](sinusoid)

    # Network ----------------------------------------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, modulation: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, F, 70), modulation (B, F, blocks, 2 width) [, inputs (B, F, width) added to the projected input]
        -> epsilon (B, F, 70)."""
        h = self.input_projection(x)
        if inputs is not None:
            h = h + inputs
        bias = self.time_rel_pos_bias(x.shape[1]) if self.time_rel_pos_bias is not None else None
        rotary = self.layers[0].attn.fn.fn.rotary_emb if self.attention == "rope" and len(self.layers) else None
        rotation = rotary.rotation(x.shape[1]) if rotary is not None else None  # once per call, not per layer
        for i, layer in enumerate(self.layers):
            h = layer(h, modulation[:, :, 2 * i : 2 * i + 2], bias, rotation)
        return self.output_projection(h)

    def forward_tokens(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The official network on the whole token sequence: x (B, F, 70), t (B,), context (B, F, 512) -> (B, F, 70)."""
        if x.shape[1] != context.shape[1]:
            raise ValueError(f"x has {x.shape[1]} frames but the audio context has {context.shape[1]}")
        return self.denoise(x, self.time_modulation(t) + self.audio_modulation(context))

    def condition(self, audio: torch.Tensor, **signals: torch.Tensor) -> torch.Tensor:
        """Per-frame audio (B, N, 512) -> the audio half of every block's modulation over [reference tokens | frames]
        (B, N + reference tokens, blocks, 2 width); constant over the diffusion steps, so a sampler computes it once
        per window and passes it to forward as `cond`. `signals`: a subclass's other inputs (the multi-signal
        model's driving motion)."""
        return self.context_condition(self.context(audio), **signals)

    def context_condition(self, context: torch.Tensor) -> torch.Tensor:
        """The padded audio context (B, F, 512) -> the cond (B, F, blocks, 2 width)."""
        return self.audio_modulation(context)

    def denoise_condition(self, tokens: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Tokens (B, F, 70), time = time_modulation(t) (B or 1, 1, blocks, 2 width), cond -> epsilon of every token
        (B, F, 70)."""
        return self.denoise(tokens, time + cond)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        audio: torch.Tensor | None,
        previous: torch.Tensor,
        canonical: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        time: torch.Tensor | None = None,
        **signals: torch.Tensor,
    ) -> torch.Tensor:
        """x_t (B, N, 70), t (B,), audio (B, N, 512) -> epsilon (B, N, 70) for the N frames (not the reference tokens).

        `audio` may also be the zero-padded context (B, N + reference tokens, 512), as the training augmentation
        builds it; `cond` = condition(audio, **signals), given, skips recomputing the conditioning (audio is then
        unused); `time` = time_modulation(t), given, skips the time embedding (t is then unused: a sampler computes
        it for all its steps at once); `signals`: a subclass's other inputs.
        """
        tokens = self.tokens(x_t, previous, canonical)
        if cond is None:
            context = audio if audio.shape[1] == tokens.shape[1] else self.context(audio)
            if context.shape[1] != tokens.shape[1]:
                raise ValueError(f"x_t has {x_t.shape[1]} frames but audio has {audio.shape[1]}")
            cond = self.context_condition(context, **signals)
        time = self.time_modulation(t) if time is None else time
        return self.denoise_condition(tokens, time, cond)[:, self.num_ref_tokens :]

    # Weights ----------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_dict: str | os.PathLike | Mapping[str, Any],
        device: str | torch.device = "cpu",
        ema: bool = False,
        **model_kwargs: Any,
    ) -> "Denoiser":
        """KDTalker.pth (path or loaded dict) -> Denoiser in eval mode on `device`, loaded strictly.

        ema=True takes the 'model_ema' weights (an error when the file has none; the released training code keeps
        EMA off, and the official inference uses 'model'). model_kwargs configure a non-official architecture.
        """
        ckpt, source = read_checkpoint(path_or_dict)
        model = cls(**model_kwargs)
        model.load_state(kdtalker_state_dict(ckpt, source, ema), source)
        # what the network was trained as: the paper's diffusion, or a Table 4 one-pass generator (vae, gan, ...)
        model.trained_as = str(ckpt.get("generator_kind") or "diffusion")
        return model.to(resolve_device(device)).eval()

    def load_state(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Load a state dict under our key names (kdtalker_state_dict's output) strictly, naming what does not fit."""
        load_state_strict(self, state, WHAT, source)

    def save_pretrained(self, path: str | os.PathLike, ema_model: "Denoiser | None" = None, **extra: Any) -> Path:
        """Write the official layout {'model': {'point_model.model.' + key}, 'model_ema': ..., **extra} atomically.

        `ema_model` is stored the same way under 'model_ema' ({} otherwise, as the official file); extra entries
        (optimizer, scheduler, epoch, step, cfg, ...) are saved as given.
        """
        ema_state = ema_model.state_dict() if ema_model is not None else None
        return write_checkpoint(official_layout(self.state_dict(), ema_state, **extra), path)


def load_kdtalker(
    path_or_dict: str | os.PathLike | Mapping[str, Any],
    device: str | torch.device = "cpu",
    ema: bool = False,
    **model_kwargs: Any,
) -> Denoiser:
    """Denoiser.from_pretrained, by the name of the file it reads."""
    return Denoiser.from_pretrained(path_or_dict, device, ema, **model_kwargs)


def save_kdtalker(model: Denoiser, path: str | os.PathLike, ema_model: Denoiser | None = None, **extra: Any) -> Path:
    """model.save_pretrained, by the name of the file it writes."""
    return model.save_pretrained(path, ema_model, **extra)
