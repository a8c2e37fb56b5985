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
