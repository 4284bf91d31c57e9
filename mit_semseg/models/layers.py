"""Small layers and helpers shared by encoders and decoders."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..nn import SynchronizedBatchNorm2d

NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def conv3x3_bn_relu(
    in_planes: int, out_planes: int, stride: int = 1, norm_layer: NormLayer = SynchronizedBatchNorm2d
) -> nn.Sequential:
    """The original's `cbr`: 3x3 conv, batch norm, ReLU."""
    return nn.Sequential(conv3x3(in_planes, out_planes, stride), norm_layer(out_planes), nn.ReLU(inplace=True))


def dilate_(module: nn.Module, dilation: int) -> None:
    """Remove the stride of `module`'s convs and dilate them instead (output stride halves).

    A stride-2 conv becomes stride 1 and, if 3x3, gets dilation = padding = dilation // 2;
    every other 3x3 conv gets dilation = padding = dilation. 1x1 convs keep dilation 1.
    """
    for conv in module.modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        if conv.stride == (2, 2):
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation = conv.padding = (dilation // 2, dilation // 2)
        elif conv.kernel_size == (3, 3):
            conv.dilation = conv.padding = (dilation, dilation)


def init_conv_bn_(module: nn.Module) -> None:
    """He-normal (fan-out) conv weights, unit BN weights and zero BN biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
