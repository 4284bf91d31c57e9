"""ConvNeXt (Liu et al., 2022) as an encoder: four stages at strides 4, 8, 16 and 32, each map through its own
layer norm (as the UPerNet checkpoints have them), stochastic depth for training, any input size."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6  # every layer norm of ConvNeXt's


class ChannelNorm(nn.LayerNorm):
    """Layer norm over the channels of an N x C x H x W map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: each sample's branch dropped with probability `rate` while training, the kept ones scaled
    by 1 / (1 - rate)."""
    if rate == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - rate)
    return x * keep / (1.0 - rate)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv, layer norm, 4x wider linear, GELU, linear back, a learnt per-channel scale (`gamma`), and
    the residual (dropped as a whole with probability `drop_rate` while training)."""

    def __init__(self, width: int, drop_rate: float = 0.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width, eps=EPS)
        self.pwconv1 = nn.Linear(width, 4 * width)
        self.pwconv2 = nn.Linear(4 * width, width)
        self.gamma = nn.Parameter(torch.full((width,), layer_scale))
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + drop_path(y.permute(0, 3, 1, 2), self.drop_rate, self.training)


class ConvNeXtEncoder(nn.Module):
    """`downsample.0` the stem (4x4 conv, stride 4, and a norm), `downsample.i` (a norm and a 2x2 conv, stride 2)
    before stage i > 0, `stages.i` its blocks, `out_norms.i` its map's norm. Stochastic depth grows linearly from 0
    to `drop_path_rate` over the blocks. `norm_layer` is accepted as every encoder's and unused (no batch norm)."""

    def __init__(
        self,
        depths: Sequence[int],
        widths: Sequence[int],
        drop_path_rate: float = 0.0,
        layer_scale: float = 1e-6,
        norm_layer=None,
    ) -> None:
        super().__init__()
        self.downsample = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, widths[0], 4, stride=4), ChannelNorm(widths[0], eps=EPS))]
        )
        for a, b in itertools.pairwise(widths):
            self.downsample.append(nn.Sequential(ChannelNorm(a, eps=EPS), nn.Conv2d(a, b, 2, stride=2)))
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(w, rates[s + j], layer_scale) for j in range(d)))
            for w, d, s in zip(widths, depths, starts)
        )
        self.out_norms = nn.ModuleList(ChannelNorm(w, eps=EPS) for w in widths)
        self.apply(_init)

    def forward(self, x: torch.Tensor, return_feature_maps: bool = False) -> list[torch.Tensor]:
        maps = []
        for down, stage, norm in zip(self.downsample, self.stages, self.out_norms):
            x = stage(down(x))
            maps.append(norm(x))
        return maps if return_feature_maps else maps[-1:]


def _init(m: nn.Module) -> None:
    """Truncated-normal weights (std 0.02) and zero biases for convs and linears, as ConvNeXt is trained from."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)


# (depths, widths) of each size (the paper's Table 9; xlarge from its ImageNet-22k models)
SIZES = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}


def convnext(size: str, drop_path_rate: float = 0.0, norm_layer=None) -> ConvNeXtEncoder:
    depths, widths = SIZES[size]
    return ConvNeXtEncoder(depths, widths, drop_path_rate)
