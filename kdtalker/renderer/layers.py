"""Conv -> BatchNorm -> activation blocks shared by the appearance extractor and the warping module.

At inference the BatchNorm can be folded into the conv (`fold_batchnorm`); the folded weight lives in
non-persistent buffers, so the state dict keeps the official `conv.*` / `norm.*` keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvNormAct(nn.Module):
    """conv (k, p) -> BN -> ReLU or LeakyReLU(0.01); 2-D or 3-D; keys `conv.*`, `norm.*`."""

    def __init__(self, dims: int, cin: int, cout: int, kernel_size: int = 3, padding: int = 1, leaky: bool = False):
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        self.conv = conv(cin, cout, kernel_size=kernel_size, padding=padding)
        self.norm = norm(cout, affine=True)
        self.leaky = leaky
        self.register_buffer("folded_weight", None, persistent=False)
        self.register_buffer("folded_bias", None, persistent=False)
        self._register_load_state_dict_pre_hook(self._drop_folded)

    def _drop_folded(self, *args, **kwargs) -> None:
        self.folded_weight = self.folded_bias = None

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Fold the eval-mode BN (running stats) into a copy of the conv weight and bias."""
        bn = self.norm
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shape = (-1,) + (1,) * (self.conv.weight.ndim - 1)
        self.folded_weight = self.conv.weight * scale.reshape(shape)
        self.folded_bias = (self.conv.bias - bn.running_mean) * scale + bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded_weight is not None and not self.training:
            conv = F.conv2d if x.ndim == 4 else F.conv3d
            x = conv(x, self.folded_weight, self.folded_bias, padding=self.conv.padding)
        else:
            x = self.norm(self.conv(x))
        return F.leaky_relu(x, 0.01) if self.leaky else F.relu(x)


def fold_all_batchnorms(module: nn.Module) -> nn.Module:
    """Fold every ConvNormAct inside `module` (eval-time speed-up; outputs equal up to float rounding)."""
    for m in module.modules():
        if isinstance(m, ConvNormAct):
            m.fold_batchnorm()
    return module


def to_channels_last(module: nn.Module) -> nn.Module:
    """Every 4-d parameter/buffer of `module` to channels_last and every 5-d one to channels_last_3d (in place)."""

    def convert(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 4:
            return t.contiguous(memory_format=torch.channels_last)
        if t.ndim == 5:
            return t.contiguous(memory_format=torch.channels_last_3d)
        return t

    return module._apply(convert)


def to_contiguous(module: nn.Module) -> nn.Module:
    """Every parameter/buffer of `module` back to the default contiguous layout (in place)."""
    return module._apply(lambda t: t.contiguous())


def layout_of(t: torch.Tensor) -> torch.memory_format:
    """The memory format `t` is stored in: channels_last(_3d) for a channels-last 4-d/5-d tensor, else contiguous."""
    if not t.is_contiguous():
        for fmt, ndim in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
            if t.ndim == ndim and t.is_contiguous(memory_format=fmt):
                return fmt
    return torch.contiguous_format


def channels_last_like(x: torch.Tensor) -> torch.Tensor:
    """x (4-d or 5-d) in the channels-last layout of its rank."""
    return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)


def _tap_offsets(factor: int) -> list[list[int]]:
    """Per output phase p of a nearest x`factor` upsampling: the low-res offset each 3-tap of a conv reads."""
    return [[(p + k - 1) // factor for k in range(3)] for p in range(factor)]


def polyphase_kernels(weight: torch.Tensor, factor: int) -> list[tuple[list[int], list[int], int, int, torch.Tensor]]:
    """A 3x3 (or d x 3 x 3) conv weight (Co, Ci, [kd,] 3, 3) -> per group of output phases (ys, xs, y0, x0, kernel).

    conv(nearest_upsample(x, factor)) at output pixel (f Y + py, f X + px) reads only low-res pixels Y + o,
    o in {-1, 0, 1}: the taps that land on the same low-res pixel add up to one weight, so each phase is a conv
    of the low-res x with a 1- or 2-tap kernel per axis (4 taps instead of 9 at x2, 2.25 on average at x4).
    Phases with the same support share one conv (their kernels stacked along the output channels).
    """
    offsets = _tap_offsets(factor)
    supports: dict[tuple[int, int], list[int]] = {}
    for phase, taps in enumerate(offsets):
        supports.setdefault((min(taps), max(taps)), []).append(phase)
    groups = []
    for (y0, y1), ys in supports.items():
        for (x0, x1), xs in supports.items():
            kernels = []
            for py in ys:
                for px in xs:
                    kernel = weight.new_zeros(*weight.shape[:-2], y1 - y0 + 1, x1 - x0 + 1)
                    for ky in range(3):
                        for kx in range(3):
                            kernel[..., offsets[py][ky] - y0, offsets[px][kx] - x0] += weight[..., ky, kx]
                    kernels.append(kernel)
            # in the weight's layout: a kernel in another layout than the input is converted by every conv call
            groups.append((ys, xs, y0, x0, torch.cat(kernels).contiguous(memory_format=layout_of(weight))))
    return groups


def conv_nearest_upsampled(
    x: torch.Tensor, groups: list, bias: torch.Tensor | None, factor: int, out_channels: int
) -> torch.Tensor:
    """conv(k3, padding 1)(nearest_upsample(x, factor over the last two axes)) without the upsampled input.

    x (B, C, [D,] H, W) -> (B, out_channels, [D,] factor H, factor W); `groups` from polyphase_kernels. Equal to
    the direct computation up to float rounding (the same products, the weights summed first).
    """
    three_d = x.ndim == 5
    conv = F.conv3d if three_d else F.conv2d
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x, (1, 1, 1, 1))  # zero padding of the upsampled map = zero padding of the low-res one
    shape = (b, out_channels, *x.shape[2:-2], factor * h, factor * w)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout_of(x))
    for ys, xs, y0, x0, kernel in groups:
        ny, nx = kernel.shape[-2], kernel.shape[-1]
        window = padded[..., 1 + y0 : 1 + y0 + h + ny - 1, 1 + x0 : 1 + x0 + w + nx - 1]
        phase_bias = None if bias is None else bias.repeat(len(ys) * len(xs))
        result = conv(window, kernel, phase_bias, padding=(1, 0, 0) if three_d else 0)
        result = result.view(b, len(ys), len(xs), out_channels, *result.shape[2:])
        for i, py in enumerate(ys):
            for j, px in enumerate(xs):
                out[..., py::factor, px::factor] = result[:, i, j]
    return out
