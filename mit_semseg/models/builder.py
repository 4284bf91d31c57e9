"""Registries of encoders and decoders, and ModelBuilder, the original's entry point to them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping, Sequence

from torch import nn

from ..hub import DownloadError, pretrained_path
from ..nn import SynchronizedBatchNorm2d
from ..nn.batchnorm import COMPAT_BUFFERS, ORIGINAL_BN_MOMENTUM
from ..data.label_tables import read_label_tables
from . import decoders, hrnet, mobilenet, resnet, upp
from .checkpoint import OPTIONAL_KEYS, load_weights


@dataclass(frozen=True)
class EncoderSpec:
    build: Callable[..., nn.Module]  # called with norm_layer=
    feature_channels: tuple[int, ...]  # channels of the maps returned with return_feature_maps=True
    imagenet_file: str
    imagenet_drop: tuple[str, ...]  # key prefixes of the ImageNet file that are not part of the encoder
    bn_momentum: float | None = None  # fixed by the architecture (HRNet); None: the builder's value

    @property
    def fc_dim(self) -> int:
        return self.feature_channels[-1]


RESNET_MAPS = (256, 512, 1024, 2048)
RESNET18_MAPS = (64, 128, 256, 512)


def _plain_and_dilated(factory: Callable[..., nn.Module], maps: tuple[int, ...], imagenet_file: str):
    """Registry entries `<name>` and `<name>dilated` of a ResNet-style factory."""
    name = imagenet_file.split("-")[0]
    return {name + suffix: EncoderSpec(partial(factory, dilated=dilated), maps, imagenet_file, ("fc.",))
            for suffix, dilated in (("", False), ("dilated", True))}


ENCODERS: dict[str, EncoderSpec] = {
    "mobilenetv2dilated": EncoderSpec(mobilenet.mobilenetv2dilated, (24, 32, 64, 160, 320), "mobilenet_v2.pth.tar",
                                      ("classifier.", "features.18.")),
    **_plain_and_dilated(resnet.resnet18, RESNET18_MAPS, "resnet18-imagenet.pth"),
    **_plain_and_dilated(resnet.resnet50, RESNET_MAPS, "resnet50-imagenet.pth"),
    **_plain_and_dilated(resnet.resnet101, RESNET_MAPS, "resnet101-imagenet.pth"),
    **_plain_and_dilated(resnet.resnext101, RESNET_MAPS, "resnext101-imagenet.pth"),
    "hrnetv2": EncoderSpec(hrnet.hrnetv2, (720,), "hrnetv2_w48-imagenet.pth",
                           ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."),
                           bn_momentum=hrnet.HRNET_BN_MOMENTUM),
}

DECODERS: dict[str, Callable[..., decoders.Decoder]] = {
    "c1": decoders.C1,
    "c1_deepsup": decoders.C1DeepSup,
    "ppm": decoders.PPM,
    "ppm_deepsup": decoders.PPMDeepsup,
    "upernet": partial(decoders.UPerNet, fpn_dim=512),
    "upernet_lite": partial(decoders.UPerNet, fpn_dim=256),
    "upp": partial(upp.UPPDecoder, fpn_dim=512),
    "upp_lite": partial(upp.UPPDecoder, fpn_dim=256),
}
UPP_DECODERS = ("upp", "upp_lite")  # multi-task: their classes come from label tables
FPN_DECODERS = ("upernet", "upernet_lite") + UPP_DECODERS


def is_multitask(arch: str) -> bool:
    """Whether the decoder `arch` is a Unified Perceptual Parsing one (several heads, label tables)."""
    return str(arch).lower() in UPP_DECODERS


def lookup(registry: Mapping[str, object], arch: str, kind: str):
    """The registry entry for `arch` (case-insensitive); an unknown name lists the valid ones."""
    key = str(arch).lower()
    if key not in registry:
        raise ValueError(f"unknown {kind} architecture '{arch}'; valid: {', '.join(registry)}")
    return registry[key]


def _fpn_inplanes(fc_dim: int) -> tuple[int, ...]:
    widths = {spec.feature_channels for spec in ENCODERS.values() if spec.fc_dim == fc_dim}
    if len(widths) != 1:
        raise ValueError(f"UPerNet cannot tell the encoder's map widths from fc_dim={fc_dim}; pass fpn_inplanes")
    return widths.pop()


class ModelBuilder:
    """Builds encoders and decoders by name, optionally loading weights (the original's API)."""

    @staticmethod
    def weights_init(m: nn.Module) -> None:
        """The original's decoder initialisation: He-normal convs, BN weight 1 and bias 1e-4."""
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.constant_(m.bias, 1e-4)

    @staticmethod
    def build_encoder(arch: str = "resnet50dilated", fc_dim: int = 512, weights: str = "",
                      pretrained: bool = True, bn_momentum: float = ORIGINAL_BN_MOMENTUM) -> nn.Module:
        """An encoder; `weights` loads a checkpoint, else `pretrained` loads the ImageNet weights.

        `fc_dim` is accepted for the original's signature; the encoder fixes its own width.
        """
        spec: EncoderSpec = lookup(ENCODERS, arch, "encoder")
        momentum = spec.bn_momentum if spec.bn_momentum is not None else bn_momentum
        net = spec.build(norm_layer=partial(SynchronizedBatchNorm2d, momentum=momentum))
        if weights:
            load_weights(net, weights)
        elif pretrained:
            try:
                path = pretrained_path(spec.imagenet_file)
            except DownloadError as err:
                raise DownloadError(f"{err}; or build the encoder without ImageNet weights (pretrained=False, "
                                    "MODEL.pretrained False)") from err
            load_weights(net, path, drop_prefixes=spec.imagenet_drop, optional_suffixes=OPTIONAL_KEYS + COMPAT_BUFFERS)
        return net

    @staticmethod
    def build_decoder(arch: str = "ppm_deepsup", fc_dim: int = 512, num_class: int = 150, weights: str = "",
                      use_softmax: bool = False, fpn_inplanes: Sequence[int] | None = None,
                      bn_momentum: float = ORIGINAL_BN_MOMENTUM, label_tables: str | None = None) -> nn.Module:
        """A decoder for an encoder whose last map has `fc_dim` channels.

        UPerNet and UPP also need the widths of all maps: `fpn_inplanes`, found from `fc_dim` when not
        given. UPP (`upp`, `upp_lite`) takes its heads' classes from the label tables in the folder
        `label_tables` (default: the Broden+ tables shipped with the package), not from `num_class`.
        """
        factory = lookup(DECODERS, arch, "decoder")
        kwargs = dict(fc_dim=fc_dim, use_softmax=use_softmax,
                      norm_layer=partial(SynchronizedBatchNorm2d, momentum=bn_momentum))
        if is_multitask(arch):
            kwargs["tables"] = read_label_tables(label_tables)
        else:
            kwargs["num_class"] = num_class
        if str(arch).lower() in FPN_DECODERS:
            kwargs["fpn_inplanes"] = tuple(fpn_inplanes) if fpn_inplanes else _fpn_inplanes(fc_dim)
        net = factory(**kwargs)
        if weights:
            load_weights(net, weights)
        else:
            net.apply(ModelBuilder.weights_init)
        return net
