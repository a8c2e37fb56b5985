"""SPADE decoder G: warped feature (B, 256, 64, 64) -> image (B, 3, 512, 512) in (0, 1).

The residual blocks' convs are spectral-normalised as in the official file: they hold `weight_orig`,
`weight_u`, `weight_v`, and in eval mode the weight is weight_orig / sigma with
sigma = u . (W_mat v) from the stored u, v (no power iteration). The effective weight is computed once
and cached in a non-persistent buffer (dropped whenever a state dict is loaded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdtalker.renderer.layers import conv_nearest_upsampled, polyphase_kernels

SPADE_HIDDEN = 128


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is weight_orig / (weight_u . (weight_orig.reshape(out, -1) @ weight_v))."""

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int = 0, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight_orig, a=5**0.5)
        u, v = torch.empty(cout), torch.empty(cin * kernel_size * kernel_size)
        if not u.is_meta:  # built empty for a checkpoint's u and v (weights.built_empty): no random draw on meta
            u = F.normalize(torch.randn(cout), dim=0, eps=1e-12)
            v = F.normalize(torch.randn(v.numel()), dim=0, eps=1e-12)
        self.register_buffer("weight_u", u)
        self.register_buffer("weight_v", v)
        self.register_buffer("weight_cached", None, persistent=False)
        self._register_load_state_dict_pre_hook(self._drop_cache)
        self.padding = padding

    def _drop_cache(self, *args, **kwargs) -> None:
        self.weight_cached = None

    def sigma(self) -> torch.Tensor:
        """The divisor u . (W_mat v), a 0-d tensor, from the stored u and v."""
        w_mat = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        return torch.dot(self.weight_u, torch.mv(w_mat, self.weight_v))

    def weight(self) -> torch.Tensor:
        """Effective eval-mode weight (cached outside training; autograd-free caching only)."""
        if self.training or torch.is_grad_enabled():
            return self.weight_orig / self.sigma()
        if self.weight_cached is None or self.weight_cached.dtype != self.weight_orig.dtype:
            self.weight_cached = (self.weight_orig / self.sigma()).detach()
        return self.weight_cached

    @torch.no_grad()
    def prepare(self) -> None:
        """Build the eval-mode weight cache now (before a trace or compile reads it), not on the first forward."""
        self.weight_cached = (self.weight_orig / self.sigma()).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """IN(x) * (1 + gamma(s)) + beta(s), s = nearest-resized seg map; keys mlp_shared.0, mlp_gamma, mlp_beta."""

    def __init__(self, norm_nc: int, label_nc: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, SPADE_HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """The official op sequence: x (B, C, H, W), seg (B, label_nc, h, w) -> (B, C, H, W)."""
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        return self.modulate(x, self.mlp_shared(seg))

    def modulate(self, x: torch.Tensor, actv: torch.Tensor) -> torch.Tensor:
        """IN(x) * (1 + gamma(actv)) + beta(actv) from the shared activation actv (B, 128, H, W)."""
        normalized = F.instance_norm(x, eps=1e-5)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """shortcut(x) + conv_1(LReLU(norm_1(conv_0(LReLU(norm_0(x)))))); shortcut conv_s(norm_s(x)) if fin != fout.

    At inference the block's SPADEs share work: their mlp_shared convs read the same resized seg map, so they run
    as one conv, straight from the low-resolution map when it is a nearest upsampling (`conv_nearest_upsampled`,
    2.25-4x fewer multiply-adds). Same numbers up to float rounding; the stacked weights are cached.
    """

    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmid, 3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmid, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmid, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)
        self._fused: dict = {}
        self.fused = True  # False: the official op sequence (each SPADE on its own, upsample then conv)
        self._register_load_state_dict_pre_hook(lambda *args, **kwargs: self._fused.clear())

    def _norms(self) -> list[SPADE]:
        return [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])

    def _fused_weights(self, factor: int) -> dict:
        """The stacked mlp_shared weights (as polyphase groups when factor > 1) and biases, for this dtype/device."""
        like = self.norm_0.mlp_shared[0].weight
        key = (factor, like.dtype, like.device)
        if key not in self._fused:
            norms = self._norms()
            shared_w = torch.cat([n.mlp_shared[0].weight for n in norms])
            # one entry per upsampling factor of this block (a block has one); another dtype/device replaces them
            self._fused = {k: v for k, v in self._fused.items() if k[1:] == key[1:]}
            self._fused[key] = {
                "shared": polyphase_kernels(shared_w, factor) if factor > 1 else shared_w,
                "shared_bias": torch.cat([n.mlp_shared[0].bias for n in norms]),
            }
        return self._fused[key]

    @torch.no_grad()
    def prepare(self, factor: int) -> None:
        """Build every weight cache a fused forward at this upsampling factor (x size / seg size) reads."""
        self._fused = {}
        self._fused_weights(factor)
        for m in self.modules():
            if isinstance(m, SpectralNormConv2d):
                m.prepare()

    def _shared_activations(self, seg: torch.Tensor, size: torch.Size, factor: int, fused: dict) -> list:
        bias = fused["shared_bias"]
        if factor > 1:
            actv = conv_nearest_upsampled(seg, fused["shared"], bias, factor, bias.shape[0])
        else:
            actv = F.conv2d(F.interpolate(seg, size=size, mode="nearest"), fused["shared"], bias, padding=1)
        return list(F.relu(actv).split(SPADE_HIDDEN, dim=1))

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        if not self.fused or self.training or torch.is_grad_enabled():
            return self._forward_official(x, seg)
        h, w = x.shape[2:]
        sh, sw = seg.shape[2:]
        factor = h // sh if (h % sh == 0 and w % sw == 0 and h // sh == w // sw) else 1
        fused = self._fused_weights(factor)
        actvs = self._shared_activations(seg, x.shape[2:], factor, fused)
        shortcut = self.conv_s(self.norm_s.modulate(x, actvs[2])) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0.modulate(x, actvs[0]), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1.modulate(dx, actvs[1]), 0.2))
        return shortcut + dx

    def _forward_official(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """fc -> 6 x R(512, 512) -> up -> R(512, 256) -> up -> R(256, 64) -> LReLU -> conv 64->12 -> shuffle -> sigmoid."""

    def __init__(
        self,
        upscale: int = 2,
        max_features: int = 512,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
    ):
        super().__init__()
        cin = min(max_features, block_expansion * 2**num_down_blocks)
        self.fc = nn.Conv2d(cin, 2 * cin, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * cin, 2 * cin, cin))
        self.up_0 = SPADEResnetBlock(2 * cin, cin, cin)
        self.up_1 = SPADEResnetBlock(cin, out_channels, cin)
        self.upscale = upscale
        if upscale > 1:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale**2, kernel_size=3, padding=1), nn.PixelShuffle(upscale)
            )
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)

    def spectral_sigmas(self) -> dict[str, torch.Tensor]:
        """Spectral-norm divisor of each normalised conv, by name ('G_middle_0.conv_0', ..., 'up_1.conv_s')."""
        return {name: m.sigma() for name, m in self.named_modules() if isinstance(m, SpectralNormConv2d)}

    def prepare(self) -> None:
        """Build the blocks' weight caches: the middle blocks read seg at their own size, up_0 at 2x, up_1 at 4x."""
        for i in range(6):
            getattr(self, f"G_middle_{i}").prepare(1)
        self.up_0.prepare(2)
        self.up_1.prepare(4)

    def logits(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, 256, 64, 64) -> (B, 3, 512, 512) pre-sigmoid."""
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2), seg)
        return self.conv_img(F.leaky_relu(x, 0.2))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """(B, 256, 64, 64) warped feature -> (B, 3, 512, 512) image in (0, 1)."""
        return torch.sigmoid(self.logits(feature))
