"""HRNetV2-W48 encoder: four parallel resolutions, fused repeatedly, returned as one 720-channel map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import NormLayer, conv3x3, init_conv_bn_
from .resnet import BasicBlock, Bottleneck, make_layer

HRNET_BN_MOMENTUM = 0.1
# (modules, channels per branch) of stages 2, 3 and 4; every branch has 4 basic blocks.
HRNET_W48_STAGES = ((1, (48, 96)), (4, (48, 96, 192)), (3, (48, 96, 192, 384)))
BLOCKS_PER_BRANCH = 4


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def _conv_bn(in_ch: int, out_ch: int, norm_layer: NormLayer, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [conv3x3(in_ch, out_ch, stride), norm_layer(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of `blocks` basic blocks, then every branch receives the sum of all branches."""

    def __init__(self, channels: Sequence[int], norm_layer: NormLayer, blocks: int = BLOCKS_PER_BRANCH) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c, norm_layer=norm_layer) for _ in range(blocks)]) for c in channels
        )
        self.fuse_layers = nn.ModuleList()
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:  # lower resolution: 1x1 conv + BN, resized in forward
                    row.append(
                        nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False), norm_layer(channels[i]))
                    )
                elif j == i:
                    row.append(None)
                else:  # higher resolution: i - j stride-2 3x3 convs, ReLU between them only
                    steps = [_conv_bn(channels[j], channels[j], norm_layer, 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], norm_layer, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + _resize(row[j](xs[j]), xs[i])
                else:
                    y = y + row[j](xs[j])
            fused.append(self.relu(y))
        return fused


def _transition(previous: Sequence[int], current: Sequence[int], norm_layer: NormLayer) -> nn.ModuleList:
    """Adapt the branches of one stage to the next; a new branch comes from the lowest resolution."""
    layers = nn.ModuleList()
    for i, c in enumerate(current):
        if i < len(previous):
            layers.append(_conv_bn(previous[i], c, norm_layer, 1, relu=True) if c != previous[i] else None)
        else:
            steps = [
                _conv_bn(previous[-1], c if k == i - len(previous) else previous[-1], norm_layer, 2, relu=True)
                for k in range(i + 1 - len(previous))
            ]
            layers.append(nn.Sequential(*steps))
    return layers


class HRNetV2Encoder(nn.Module):
    """HRNetV2 of `stages` ((modules, channels per branch) of stages 2 to 4, W48's by default), `blocks` basic blocks
    per branch; its map has the sum of the last stage's channels."""

    def __init__(
        self,
        norm_layer: NormLayer = nn.BatchNorm2d,
        stages: Sequence[tuple[int, Sequence[int]]] = HRNET_W48_STAGES,
        blocks: int = BLOCKS_PER_BRANCH,
    ) -> None:
        super().__init__()
        self.num_stages = len(stages)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm_layer(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, 64, 64, 4, 1, norm_layer)
        previous: Sequence[int] = (64 * Bottleneck.expansion,)
        for k, (modules, channels) in enumerate(stages, start=1):
            self.add_module(f"transition{k}", _transition(previous, channels, norm_layer))
            self.add_module(
                f"stage{k + 1}",
                nn.Sequential(*[HighResolutionModule(channels, norm_layer, blocks) for _ in range(modules)]),
            )
            previous = channels
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor, return_feature_maps: bool = False) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for k in range(1, self.num_stages + 1):
            transition, stage = getattr(self, f"transition{k}"), getattr(self, f"stage{k + 1}")
            xs = [xs[i] if t is None else t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)]
            xs = stage(xs)
        out = torch.cat([xs[0]] + [_resize(x, xs[0]) for x in xs[1:]], 1)
        return [out]


def hrnetv2(norm_layer: NormLayer = nn.BatchNorm2d, **structure) -> HRNetV2Encoder:
    """HRNetV2-W48; `structure` (stages, blocks) makes a smaller one of the same layout, for tests."""
    return HRNetV2Encoder(norm_layer=norm_layer, **structure)
