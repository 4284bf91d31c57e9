"""MobileNetV2 (width 1.0) encoder, dilated to output stride 8, without its last 1x1 conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import NormLayer, dilate_, init_conv_bn_

# (expansion t, channels c, repeats n, first stride s) of MobileNetV2's inverted-residual stages.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Indices into `features` whose outputs are returned as feature maps (plus the last one).
FEATURE_MAP_INDICES = (2, 4, 7, 14)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int, norm_layer: NormLayer) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), norm_layer(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            norm_layer(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False),
            norm_layer(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2DilatedEncoder(nn.Module):
    """`features.0` .. `features.17` of MobileNetV2; d = 2 over features 7..13, 4 over 14..17."""

    def __init__(
        self,
        norm_layer: NormLayer = nn.BatchNorm2d,
        settings: Sequence[tuple[int, int, int, int]] = INVERTED_RESIDUAL_SETTINGS,
        feature_maps: Sequence[int] = FEATURE_MAP_INDICES,
    ) -> None:
        super().__init__()
        self.feature_maps = tuple(feature_maps)
        blocks: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), norm_layer(32), nn.ReLU6(inplace=True))
        ]
        channels = 32
        for t, c, n, s in settings:
            for i in range(n):
                blocks.append(InvertedResidual(channels, c, s if i == 0 else 1, t, norm_layer))
                channels = c
        self.features = nn.Sequential(*blocks)
        init_conv_bn_(self)
        third, fourth = self.feature_maps[-2:]
        for i in range(third, fourth):
            dilate_(self.features[i], dilation=2)
        for i in range(fourth, len(self.features)):
            dilate_(self.features[i], dilation=4)

    def forward(self, x: torch.Tensor, return_feature_maps: bool = False) -> list[torch.Tensor]:
        maps = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.feature_maps:
                maps.append(x)
        maps.append(x)
        return maps if return_feature_maps else [x]


def mobilenetv2dilated(norm_layer: NormLayer = nn.BatchNorm2d, **structure) -> MobileNetV2DilatedEncoder:
    """MobileNetV2 (width 1.0), dilated; `structure` (settings, feature_maps) makes a smaller one of the same layout,
    for tests."""
    return MobileNetV2DilatedEncoder(norm_layer=norm_layer, **structure)
