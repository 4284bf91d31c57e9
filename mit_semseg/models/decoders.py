"""Decoders: C1, PPM (pyramid pooling) and UPerNet, each optionally deep-supervised.

In training they return log-probabilities at their own resolution (deep-supervised ones a
pair: main and deep supervision). For inference (`use_softmax`, or `segSize` given) they
return class probabilities, resized bilinearly to `segSize` first when it is given.

Each decoder class declares whether it is deep-supervised (`deep_sup`) and is built for an
encoder from the widths of the encoder's maps (`from_widths`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import AdaptiveAvgPool2d, SynchronizedBatchNorm2d
from .layers import NormLayer, conv3x3_bn_relu

PPM_SCALES = (1, 2, 3, 6)
PPM_CHANNELS = 512


def resize(x: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def class_softmax(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """`F.softmax` over the classes; while exporting, written out (max, exp, sum), which ONNX Runtime computes
    about 15x faster than its Softmax across the channels of a large map."""
    if torch.compiler.is_exporting():
        e = torch.exp(x - x.amax(dim, keepdim=True))
        return e / e.sum(dim, keepdim=True)
    return F.softmax(x, dim=dim)


class Decoder(nn.Module):
    """Base of the segmentation decoders: `main_logits` and, when deep-supervised, `deepsup_logits`."""

    deep_sup = False  # whether training also returns the deep-supervision head's log-probabilities
    needs_all_widths = False  # whether it reads every map of the encoder (an FPN), not only the last two
    class_layers: tuple[str, ...] = ()  # state-dict prefixes of the layers whose shapes depend on the classes
    takes_dropout = False  # whether it takes `dropout`, before its classifier (MODEL.decoder_dropout)
    takes_align_corners = True  # whether its bilinear resizes follow `align_corners` (MODEL.align_corners)

    def __init__(self, use_softmax: bool = False, align_corners: bool = False) -> None:
        super().__init__()
        self.use_softmax = use_softmax
        self.align_corners = align_corners

    @classmethod
    def from_widths(cls, in_channels: Sequence[int], num_class: int = 150, label_tables=None, **options) -> Decoder:
        """The decoder for an encoder whose maps have `in_channels` channels (the last map's is `fc_dim`).

        `label_tables` is for the decoders whose classes come from label tables; these take `num_class`.
        """
        if cls.deep_sup and len(in_channels) > 1:
            options["deepsup_dim"] = in_channels[-2]
        return cls(num_class=num_class, fc_dim=in_channels[-1], **options)

    def main_logits(self, conv_out: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def deepsup_logits(self, conv4: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, conv_out: list[torch.Tensor], segSize=None):
        x = self.main_logits(conv_out)
        if self.use_softmax or segSize is not None:
            if segSize is not None:
                x = resize(x, segSize, self.align_corners)
            return class_softmax(x)
        if self.deep_sup:
            return F.log_softmax(x, dim=1), F.log_softmax(self.deepsup_logits(conv_out[-2]), dim=1)
        return F.log_softmax(x, dim=1)


class C1(Decoder):
    """One 3x3 conv-BN-ReLU and a 1x1 classifier on the last feature map.

    `deepsup_dim`: the width of the second-to-last map, which deep supervision reads (the original: fc_dim // 2).
    """

    class_layers = ("conv_last.",)

    def __init__(
        self,
        num_class: int = 150,
        fc_dim: int = 2048,
        use_softmax: bool = False,
        norm_layer: NormLayer = SynchronizedBatchNorm2d,
        deepsup_dim: int | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__(use_softmax, align_corners)
        self.cbr = conv3x3_bn_relu(fc_dim, fc_dim // 4, norm_layer=norm_layer)
        if self.deep_sup:
            self.cbr_deepsup = conv3x3_bn_relu(deepsup_dim or fc_dim // 2, fc_dim // 4, norm_layer=norm_layer)
        self.conv_last = nn.Conv2d(fc_dim // 4, num_class, 1)
        if self.deep_sup:
            self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1)

    def main_logits(self, conv_out: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_last(self.cbr(conv_out[-1]))

    def deepsup_logits(self, conv4: torch.Tensor) -> torch.Tensor:
        return self.conv_last_deepsup(self.cbr_deepsup(conv4))


class C1DeepSup(C1):
    """C1 plus a deep-supervision head on the second-to-last map."""

    class_layers = ("conv_last.", "conv_last_deepsup.")

    deep_sup = True


class PPM(Decoder):
    """Pyramid pooling (PSPNet): pooled context at four scales, concatenated with the last map.

    `deepsup_dim`: the width of the second-to-last map, which deep supervision reads (the original: fc_dim // 2).
    """

    class_layers = ("conv_last.4.",)

    def __init__(
        self,
        num_class: int = 150,
        fc_dim: int = 4096,
        use_softmax: bool = False,
        pool_scales: Sequence[int] = PPM_SCALES,
        norm_layer: NormLayer = SynchronizedBatchNorm2d,
        deepsup_dim: int | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__(use_softmax, align_corners)
        self.ppm = nn.ModuleList(
            nn.Sequential(
                AdaptiveAvgPool2d(scale),
                nn.Conv2d(fc_dim, PPM_CHANNELS, 1, bias=False),
                norm_layer(PPM_CHANNELS),
                nn.ReLU(inplace=True),
            )
            for scale in pool_scales
        )
        if self.deep_sup:
            self.cbr_deepsup = conv3x3_bn_relu(deepsup_dim or fc_dim // 2, fc_dim // 4, norm_layer=norm_layer)
        self.conv_last = nn.Sequential(
            nn.Conv2d(fc_dim + len(pool_scales) * PPM_CHANNELS, 512, 3, padding=1, bias=False),
            norm_layer(512),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1),
            nn.Conv2d(512, num_class, 1),
        )
        if self.deep_sup:
            self.conv_last_deepsup = nn.Conv2d(fc_dim // 4, num_class, 1)
            self.dropout_deepsup = nn.Dropout2d(0.1)

    def main_logits(self, conv_out: list[torch.Tensor]) -> torch.Tensor:
        conv5 = conv_out[-1]
        size = conv5.shape[-2:]
        pooled = [resize(pool(conv5), size, self.align_corners) for pool in self.ppm]
        return self.conv_last(torch.cat([conv5, *pooled], 1))

    def deepsup_logits(self, conv4: torch.Tensor) -> torch.Tensor:
        return self.conv_last_deepsup(self.dropout_deepsup(self.cbr_deepsup(conv4)))


class PPMDeepsup(PPM):
    """PPM plus a deep-supervision head on the second-to-last map."""

    class_layers = ("conv_last.4.", "conv_last_deepsup.")

    deep_sup = True


def add_pyramid_and_fpn(
    module: nn.Module, fc_dim: int, fpn_inplanes: Sequence[int], fpn_dim: int, scales: int, norm_layer: NormLayer
) -> None:
    """UPerNet's layers after the pooling, registered on `module` in the original's order: `ppm_conv` (1x1
    conv-BN-ReLU per scale), `ppm_last_conv`, and the FPN's lateral `fpn_in` and output `fpn_out` convs."""
    module.ppm_conv = nn.ModuleList(
        nn.Sequential(nn.Conv2d(fc_dim, PPM_CHANNELS, 1, bias=False), norm_layer(PPM_CHANNELS), nn.ReLU(inplace=True))
        for _ in range(scales)
    )
    module.ppm_last_conv = conv3x3_bn_relu(fc_dim + scales * PPM_CHANNELS, fpn_dim, norm_layer=norm_layer)
    module.fpn_in = nn.ModuleList(
        nn.Sequential(nn.Conv2d(width, fpn_dim, 1, bias=False), norm_layer(fpn_dim), nn.ReLU(inplace=True))
        for width in fpn_inplanes[:-1]
    )
    module.fpn_out = nn.ModuleList(
        nn.Sequential(conv3x3_bn_relu(fpn_dim, fpn_dim, norm_layer=norm_layer)) for _ in fpn_inplanes[:-1]
    )


def pyramid_context(
    module: nn.Module,
    conv5: torch.Tensor,
    pooled: list[torch.Tensor],
    conv_before_resize: bool = False,
    align_corners: bool = False,
) -> torch.Tensor:
    """UPerNet's pyramid pooling after the pooling: each pooled map resized to `conv5`'s size, then its 1x1
    conv-BN-ReLU (`ppm_conv`), as the original; or, `conv_before_resize`, the conv first and then the resize, as
    mmsegmentation's UPerHead (the ReLU does not commute with the resize: the outputs differ). Concatenated with
    `conv5`, fused by `ppm_last_conv`."""
    size = conv5.shape[-2:]
    if conv_before_resize:
        branches = [resize(conv(p), size, align_corners) for p, conv in zip(pooled, module.ppm_conv)]
    else:
        branches = [conv(resize(p, size, align_corners)) for p, conv in zip(pooled, module.ppm_conv)]
    return module.ppm_last_conv(torch.cat([conv5, *branches], 1))


def top_down(
    module: nn.Module, f: torch.Tensor, conv_out: list[torch.Tensor], align_corners: bool = False
) -> list[torch.Tensor]:
    """The FPN's pyramid [P2, P3, ..., f] from the pooled context `f` and the encoder's maps."""
    pyramid = [f]
    for i in reversed(range(len(conv_out) - 1)):
        lateral = module.fpn_in[i](conv_out[i])
        f = lateral + resize(f, lateral.shape[-2:], align_corners)
        pyramid.append(module.fpn_out[i](f))
    return pyramid[::-1]


class UPerNet(Decoder):
    """Unified perceptual parsing: pyramid pooling on the last map, a top-down FPN, fused at P2.

    `fpn_inplanes` are the channel counts of the encoder's maps, the last one being `fc_dim`. The pyramid
    pooling's branches upsample, then conv, as the original; `conv_before_resize` conv, then upsample, as
    mmsegmentation's UPerHead (`uperhead`, whose layers are otherwise these).
    """

    class_layers = ("conv_last.1.",)

    needs_all_widths = True
    takes_dropout = True

    def __init__(
        self,
        num_class: int = 150,
        fc_dim: int = 4096,
        use_softmax: bool = False,
        pool_scales: Sequence[int] = PPM_SCALES,
        fpn_inplanes: Sequence[int] = (256, 512, 1024, 2048),
        fpn_dim: int = 256,
        norm_layer: NormLayer = SynchronizedBatchNorm2d,
        dropout: float = 0.0,
        conv_before_resize: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__(use_softmax, align_corners)
        self.conv_before_resize = conv_before_resize
        if fpn_inplanes[-1] != fc_dim:
            raise ValueError(f"UPerNet: fc_dim {fc_dim} differs from the last FPN input width {fpn_inplanes[-1]}")
        self.ppm_pooling = nn.ModuleList(AdaptiveAvgPool2d(scale) for scale in pool_scales)
        add_pyramid_and_fpn(self, fc_dim, fpn_inplanes, fpn_dim, len(pool_scales), norm_layer)
        self.conv_last = nn.Sequential(
            conv3x3_bn_relu(len(fpn_inplanes) * fpn_dim, fpn_dim, norm_layer=norm_layer),
            nn.Conv2d(fpn_dim, num_class, 1),
        )
        # an attribute, not in conv_last, so the state dict stays the original's
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()

    @classmethod
    def from_widths(cls, in_channels: Sequence[int], num_class: int = 150, label_tables=None, **options) -> UPerNet:
        return cls(num_class=num_class, fc_dim=in_channels[-1], fpn_inplanes=tuple(in_channels), **options)

    def main_logits(self, conv_out: list[torch.Tensor]) -> torch.Tensor:
        conv5 = conv_out[-1]
        pooled = [pool(conv5) for pool in self.ppm_pooling]
        f = pyramid_context(self, conv5, pooled, self.conv_before_resize, self.align_corners)
        pyramid = top_down(self, f, conv_out, self.align_corners)
        top = pyramid[0].shape[-2:]
        fused = self.conv_last[0](
            torch.cat([pyramid[0]] + [resize(p, top, self.align_corners) for p in pyramid[1:]], 1)
        )
        return self.conv_last[1](self.dropout(fused))


class FCNHead(nn.Module):
    """An auxiliary head for training (MODEL.aux_head fcn, mmsegmentation's FCNHead with one conv): a 3x3
    conv-BN-ReLU to `channels`, dropout and a 1x1 classifier; logits."""

    def __init__(
        self,
        in_channels: int,
        num_class: int,
        channels: int = 256,
        dropout: float = 0.1,
        norm_layer: NormLayer = SynchronizedBatchNorm2d,
    ) -> None:
        super().__init__()
        self.cbr = conv3x3_bn_relu(in_channels, channels, norm_layer=norm_layer)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_last = nn.Conv2d(channels, num_class, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.dropout(self.cbr(x)))
