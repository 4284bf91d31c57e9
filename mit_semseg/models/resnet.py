"""ResNet and ResNeXt encoders with the original's deep stem, plain or dilated (output stride 8)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import NormLayer, conv1x1, conv3x3, dilate_, init_conv_bn_


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride and the groups), 1x1 expand."""

    expansion = 4
    groups = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride, groups=self.groups)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class GroupBottleneck(Bottleneck):
    """ResNeXt block: expansion 2 and 32 groups in the 3x3 conv."""

    expansion = 2
    groups = 32


def make_layer(
    block: type[BasicBlock] | type[Bottleneck],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int,
    norm_layer: NormLayer,
) -> nn.Sequential:
    """A stage of `blocks` residual blocks; the first one may change stride and width."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            conv1x1(inplanes, planes * block.expansion, stride), norm_layer(planes * block.expansion)
        )
    layers = [block(inplanes, planes, stride, downsample, norm_layer=norm_layer)]
    layers += [block(planes * block.expansion, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNetEncoder(nn.Module):
    """The original's deep-stem ResNet without its classifier (a stem of three 3x3 convs 64-64-128, `conv1`..`bn3`);
    returns the outputs of layer1..layer4. Dilated: layer3 and layer4 without stride, their 3x3 convs dilated 2 and
    4 (the first block of each at half that), output stride 8."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        dilated: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        inplanes = self._make_stem(norm_layer)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (planes, blocks) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", make_layer(block, inplanes, planes, blocks, stride, norm_layer))
            inplanes = planes * block.expansion
        init_conv_bn_(self)
        if dilated:
            dilate_(self.layer3, dilation=2)
            dilate_(self.layer4, dilation=4)

    def _make_stem(self, norm_layer: NormLayer) -> int:
        """The stem's layers; returns its width."""
        self.conv1 = conv3x3(3, 64, stride=2)
        self.bn1 = norm_layer(64)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(64, 64)
        self.bn2 = norm_layer(64)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = conv3x3(64, 128)
        self.bn3 = norm_layer(128)
        self.relu3 = nn.ReLU(inplace=True)
        return 128

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.relu3(self.bn3(self.conv3(x)))

    def forward(self, x: torch.Tensor, return_feature_maps: bool = False) -> list[torch.Tensor]:
        x = self.maxpool(self.forward_stem(x))
        maps = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps if return_feature_maps else [x]


def resnet18(dilated: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetEncoder:
    return ResNetEncoder(BasicBlock, (2, 2, 2, 2), dilated=dilated, norm_layer=norm_layer)


def resnet50(dilated: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetEncoder:
    return ResNetEncoder(Bottleneck, (3, 4, 6, 3), dilated=dilated, norm_layer=norm_layer)


def resnet101(dilated: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetEncoder:
    return ResNetEncoder(Bottleneck, (3, 4, 23, 3), dilated=dilated, norm_layer=norm_layer)


def resnext101(dilated: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetEncoder:
    return ResNetEncoder(
        GroupBottleneck, (3, 4, 23, 3), widths=(128, 256, 512, 1024), dilated=dilated, norm_layer=norm_layer
    )


class ResNetV1cEncoder(ResNetEncoder):
    """mmsegmentation's ResNetV1c: the stem is three 3x3 convs 32-32-64, each with batch norm and ReLU, in one
    `stem` sequence (its keys `stem.0` .. `stem.7`, as mmsegmentation's checkpoints have them). Dilated, it is
    mmsegmentation's D8 variant (strides 1, 2, 1, 1; dilations 1, 1, 2, 4 with `contract_dilation`)."""

    def _make_stem(self, norm_layer: NormLayer) -> int:
        widths = ((3, 32, 2), (32, 32, 1), (32, 64, 1))
        layers = [[conv3x3(a, b, stride), norm_layer(b), nn.ReLU(inplace=True)] for a, b, stride in widths]
        self.stem = nn.Sequential(*(layer for group in layers for layer in group))
        return 64

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


def resnet50v1c(dilated: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetV1cEncoder:
    return ResNetV1cEncoder(Bottleneck, (3, 4, 6, 3), dilated=dilated, norm_layer=norm_layer)


def resnet101v1c(dilated: bool = False, norm_layer: NormLayer = nn.BatchNorm2d) -> ResNetV1cEncoder:
    return ResNetV1cEncoder(Bottleneck, (3, 4, 23, 3), dilated=dilated, norm_layer=norm_layer)
