"""Registries of encoders and decoders, and ModelBuilder, the original's entry point to them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from torch import nn

from ..hub import DownloadError, pretrained_path
from ..nn import SynchronizedBatchNorm2d
from ..nn.batchnorm import COMPAT_BUFFERS, ORIGINAL_BN_MOMENTUM
from . import convnext, decoders, hrnet, mobilenet, resnet, swin, upp
from .checkpoint import OPTIONAL_KEYS, load_weights


@dataclass(frozen=True)
class EncoderSpec:
    build: Callable[..., nn.Module]  # called with norm_layer=
    feature_channels: tuple[int, ...]  # channels of the maps returned with return_feature_maps=True
    imagenet_file: str
    imagenet_drop: tuple[str, ...]  # key prefixes of the ImageNet file that are not part of the encoder
    bn_momentum: float | None = None  # fixed by the architecture (HRNet); None: the builder's value
    imagenet_folder: str = ""  # where `imagenet_file` is on OpenMMLab's download site; "": the original's server
    drop_path: bool = False  # whether it takes a stochastic depth rate (MODEL.drop_path_rate)
    imagenet_hub: str = ""  # its ImageNet model on the Hugging Face Hub (`checkpoints.hub_imagenet`), else ""

    @property
    def fc_dim(self) -> int:
        return self.feature_channels[-1]


RESNET_MAPS = (256, 512, 1024, 2048)
RESNET18_MAPS = (64, 128, 256, 512)


def _plain_and_dilated(
    factory: Callable[..., nn.Module], maps: tuple[int, ...], imagenet_file: str, name: str = "", folder: str = ""
):
    """Registry entries `<name>` and `<name>dilated` (output stride 8) of a ResNet-style factory; `name` defaults to
    the ImageNet file's first word."""
    name = name or imagenet_file.split("-")[0]
    return {
        name + suffix: EncoderSpec(partial(factory, dilated=dilated), maps, imagenet_file, ("fc.",), None, folder)
        for suffix, dilated in (("", False), ("dilated", True))
    }


OPENMMLAB_IMAGENET = "pretrain/third_party"  # mmsegmentation's ImageNet weights, on OpenMMLab's site


ENCODERS: dict[str, EncoderSpec] = {
    "mobilenetv2dilated": EncoderSpec(
        mobilenet.mobilenetv2dilated, (24, 32, 64, 160, 320), "mobilenet_v2.pth.tar", ("classifier.", "features.18.")
    ),
    **_plain_and_dilated(resnet.resnet18, RESNET18_MAPS, "resnet18-imagenet.pth"),
    **_plain_and_dilated(resnet.resnet50, RESNET_MAPS, "resnet50-imagenet.pth"),
    **_plain_and_dilated(resnet.resnet101, RESNET_MAPS, "resnet101-imagenet.pth"),
    **_plain_and_dilated(resnet.resnext101, RESNET_MAPS, "resnext101-imagenet.pth"),
    # mmsegmentation's ResNetV1c: UPerNet's (plain) and PSPNet's (dilated: D8)
    **_plain_and_dilated(
        resnet.resnet50v1c, RESNET_MAPS, "resnet50_v1c-2cccc1ad.pth", "resnet50v1c", OPENMMLAB_IMAGENET
    ),
    **_plain_and_dilated(
        resnet.resnet101v1c, RESNET_MAPS, "resnet101_v1c-e67eebb6.pth", "resnet101v1c", OPENMMLAB_IMAGENET
    ),
    "hrnetv2": EncoderSpec(
        hrnet.hrnetv2,
        (720,),
        "hrnetv2_w48-imagenet.pth",
        ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier."),
        bn_momentum=hrnet.HRNET_BN_MOMENTUM,
    ),
    # ConvNeXt and Swin: layer norms only; their ImageNet models on the Hugging Face Hub (those mmsegmentation's
    # ADE20K UperNets train from: ImageNet-1k for ConvNeXt tiny to base and Swin tiny and small, 22k for the others)
    **{
        f"convnext_{size}": EncoderSpec(
            partial(convnext.convnext, size),
            widths,
            "",
            (),
            drop_path=True,
            imagenet_hub=f"facebook/convnext-{size}-{hub}",
        )
        for size, (_, widths), hub in zip(
            convnext.SIZES, convnext.SIZES.values(), ("224", "224", "224", "224-22k", "224-22k")
        )
    },
    **{
        f"swin_{size}": EncoderSpec(
            partial(swin.swin, size),
            swin.feature_channels(size),
            "",
            (),
            drop_path=True,
            imagenet_hub=f"microsoft/swin-{size}-{hub}",
        )
        for size, hub in zip(
            swin.SIZES,
            ("patch4-window7-224", "patch4-window7-224", "patch4-window12-384-in22k", "patch4-window12-384-in22k"),
        )
    },
}


@dataclass(frozen=True)
class DecoderSpec:
    """A decoder class and the constructor options its registry name fixes (the FPN width)."""

    cls: type
    options: Mapping[str, object] = field(default_factory=dict)


DECODERS: dict[str, DecoderSpec] = {
    "c1": DecoderSpec(decoders.C1),
    "c1_deepsup": DecoderSpec(decoders.C1DeepSup),
    "ppm": DecoderSpec(decoders.PPM),
    "ppm_deepsup": DecoderSpec(decoders.PPMDeepsup),
    "upernet": DecoderSpec(decoders.UPerNet, {"fpn_dim": 512}),
    "upernet_lite": DecoderSpec(decoders.UPerNet, {"fpn_dim": 256}),
    # mmsegmentation's UPerHead: channels 512, each pyramid branch's conv before its upsampling
    "uperhead": DecoderSpec(decoders.UPerNet, {"fpn_dim": 512, "conv_before_resize": True}),
    "upp": DecoderSpec(upp.UPPDecoder, {"fpn_dim": 512}),
    "upp_lite": DecoderSpec(upp.UPPDecoder, {"fpn_dim": 256}),
}


def lookup(registry: Mapping[str, object], arch: str, kind: str):
    """The registry entry for `arch` (case-insensitive); an unknown name lists the valid ones."""
    key = str(arch).lower()
    if key not in registry:
        raise ValueError(f"unknown {kind} architecture '{arch}'; valid: {', '.join(registry)}")
    return registry[key]


def _registered_widths(fc_dim: int) -> tuple[int, ...] | None:
    """The map widths of the registered encoders whose last map has `fc_dim` channels, when they all agree."""
    widths = {spec.feature_channels for spec in ENCODERS.values() if spec.fc_dim == fc_dim}
    return widths.pop() if len(widths) == 1 else None


def build_encoder(
    arch: str,
    weights: str = "",
    pretrained: bool = True,
    bn_momentum: float = ORIGINAL_BN_MOMENTUM,
    drop_path_rate: float = 0.0,
) -> nn.Module:
    """An encoder; `weights` loads a checkpoint, else `pretrained` loads the ImageNet weights. `drop_path_rate`: the
    stochastic depth of an encoder that has it (`EncoderSpec.drop_path`)."""
    spec: EncoderSpec = lookup(ENCODERS, arch, "encoder")
    momentum = spec.bn_momentum if spec.bn_momentum is not None else bn_momentum
    options = {"drop_path_rate": drop_path_rate} if spec.drop_path else {}
    net = spec.build(norm_layer=partial(SynchronizedBatchNorm2d, momentum=momentum), **options)
    if weights:
        load_weights(net, weights)
    elif pretrained and not spec.imagenet_file:
        raise DownloadError(
            f"{arch}'s ImageNet weights are on the Hugging Face Hub ({spec.imagenet_hub}): a model's config fetches "
            "them (MODEL.pretrained True); or build it without (MODEL.pretrained False)"
        )
    elif pretrained:
        try:
            path = pretrained_path(spec.imagenet_file, spec.imagenet_folder)
        except DownloadError as err:
            raise DownloadError(
                f"{err}; or build the encoder without ImageNet weights (pretrained=False, MODEL.pretrained False)"
            ) from err
        load_weights(net, path, drop_prefixes=spec.imagenet_drop, optional_suffixes=OPTIONAL_KEYS + COMPAT_BUFFERS)
    return net


def decoder_norm(bn_momentum: float = ORIGINAL_BN_MOMENTUM):
    """The batch norm of the decoders (synchronized across devices) at `bn_momentum`."""
    return partial(SynchronizedBatchNorm2d, momentum=bn_momentum)


def build_decoder(
    arch: str,
    in_channels: Sequence[int],
    num_class: int = 150,
    label_tables=None,
    weights: str = "",
    use_softmax: bool = False,
    bn_momentum: float = ORIGINAL_BN_MOMENTUM,
    dropout: float = 0.0,
    align_corners: bool = False,
) -> nn.Module:
    """A decoder for an encoder whose maps have `in_channels` channels (the encoder spec's `feature_channels`).

    Its classes are `num_class`, or for the decoders that read label tables (UPP) the tables in the
    folder `label_tables` (default: the Broden+ tables shipped). `weights` loads a checkpoint; else the
    original's initialisation. `dropout` before the classifier is for the decoders that take it (`takes_dropout`);
    `align_corners` for their bilinear resizes, for those that take it (`takes_align_corners`).
    """
    spec: DecoderSpec = lookup(DECODERS, arch, "decoder")
    options = dict(spec.options)
    for name, value, takes in (
        ("dropout", dropout, spec.cls.takes_dropout),
        ("align_corners", align_corners, spec.cls.takes_align_corners),
    ):
        if value and not takes:
            raise ValueError(f"decoder {arch} takes no {name}")
        if value:
            options[name] = value
    net = spec.cls.from_widths(
        tuple(in_channels),
        num_class=num_class,
        label_tables=label_tables,
        use_softmax=use_softmax,
        norm_layer=decoder_norm(bn_momentum),
        **options,
    )
    if weights:
        load_weights(net, weights)
    else:
        net.apply(ModelBuilder.weights_init)
    return net


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
    def build_encoder(
        arch: str = "resnet50dilated",
        fc_dim: int = 512,
        weights: str = "",
        pretrained: bool = True,
        bn_momentum: float = ORIGINAL_BN_MOMENTUM,
    ) -> nn.Module:
        """An encoder; `weights` loads a checkpoint, else `pretrained` loads the ImageNet weights.

        `fc_dim` is accepted for the original's signature; the encoder fixes its own width.
        """
        return build_encoder(arch, weights, pretrained, bn_momentum)

    @staticmethod
    def build_decoder(
        arch: str = "ppm_deepsup",
        fc_dim: int = 512,
        num_class: int = 150,
        weights: str = "",
        use_softmax: bool = False,
        fpn_inplanes: Sequence[int] | None = None,
        bn_momentum: float = ORIGINAL_BN_MOMENTUM,
        label_tables: str | None = None,
    ) -> nn.Module:
        """A decoder for an encoder whose last map has `fc_dim` channels (the original's signature).

        UPerNet and UPP read all the encoder's maps: their widths are `fpn_inplanes`, or those of the
        registered encoder with that `fc_dim`. UPP (`upp`, `upp_lite`) takes its heads' classes from the
        label tables in the folder `label_tables` (default: the Broden+ tables shipped), not from `num_class`.
        """
        spec: DecoderSpec = lookup(DECODERS, arch, "decoder")
        widths = tuple(fpn_inplanes) if fpn_inplanes else _registered_widths(fc_dim)
        if widths is None:
            if spec.cls.needs_all_widths:
                raise ValueError(f"{arch} cannot tell the encoder's map widths from fc_dim={fc_dim}; pass fpn_inplanes")
            widths = (
                fc_dim // 2,
                fc_dim,
            )  # what the others read: the last map, and the one before for deep supervision
        return build_decoder(arch, widths, num_class, label_tables, weights, use_softmax, bn_momentum)
