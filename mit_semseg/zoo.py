"""The models released by the original projects and by mmsegmentation: their configs, files and published figures
(`checkpoints` fetches them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import hub

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@dataclass(frozen=True)
class ReleasedModel:
    config: str  # file name in config/
    epoch: int | None  # the original's epoch checkpoint (encoder and decoder files); None for a single file
    miou: float | None  # the publisher's mean IoU (%): the original's multi-scale on ADE20K, mmsegmentation's one scale
    pixel_accuracy: float | None  # the original's pixel accuracy (%)
    base_url: str = hub.MODEL_URL  # the original's folder of such models
    file: str = ""  # mmsegmentation's: the file below OpenMMLab's site (its name ends with its SHA-256's start)
    miou_ms_flip: float | None = None  # mmsegmentation's multi-scale + flip mean IoU (%)


def _openmmlab(name: str, file: str, miou: float, miou_ms_flip: float) -> tuple[str, ReleasedModel]:
    """mmsegmentation's released model `file` (`upernet_r50_..._cityscapes_20200605_094827-aa54cb54.pth`, under
    mmsegmentation/v0.5/<method>/<file without its date>/) as the preset `name`."""
    folder = file.rsplit("_", 2)[0]
    path = f"mmsegmentation/v0.5/{folder.split('_')[0]}/{folder}/{file}"
    return name, ReleasedModel(f"{name}.yaml", None, miou, None, file=path, miou_ms_flip=miou_ms_flip)


MODELS: dict[str, ReleasedModel] = {
    "ade20k-mobilenetv2dilated-c1_deepsup": ReleasedModel(
        "ade20k-mobilenetv2dilated-c1_deepsup.yaml", 20, 33.84, 76.80
    ),
    "ade20k-resnet18dilated-ppm_deepsup": ReleasedModel("ade20k-resnet18dilated-ppm_deepsup.yaml", 20, 38.81, 79.29),
    "ade20k-resnet50dilated-ppm_deepsup": ReleasedModel("ade20k-resnet50dilated-ppm_deepsup.yaml", 20, 42.14, 80.13),
    "ade20k-resnet101dilated-ppm_deepsup": ReleasedModel("ade20k-resnet101dilated-ppm_deepsup.yaml", 25, 42.53, 80.91),
    "ade20k-resnet50-upernet": ReleasedModel("ade20k-resnet50-upernet.yaml", 30, 41.55, 80.23),
    "ade20k-resnet101-upernet": ReleasedModel("ade20k-resnet101-upernet.yaml", 50, 42.66, 81.01),
    "ade20k-hrnetv2-c1": ReleasedModel("ade20k-hrnetv2.yaml", 30, 43.20, 81.47),
    # Unified Perceptual Parsing on Broden+ (scene, objects, parts, materials): no ADE20K scores
    "upp-resnet50-upernet": ReleasedModel("broden-resnet50-upp.yaml", 40, None, None, hub.UPP_MODEL_URL),
}
# mmsegmentation's UPerNets and PSPNets (ResNetV1c), from its model pages: Cityscapes, ADE20K and VOC 2012 + aug
MODELS |= dict(
    _openmmlab(*row)
    for row in (
        (
            "cityscapes-resnet50-upernet-512x1024-40k",
            "upernet_r50_512x1024_40k_cityscapes_20200605_094827-aa54cb54.pth",
            77.10,
            78.37,
        ),
        (
            "cityscapes-resnet101-upernet-512x1024-40k",
            "upernet_r101_512x1024_40k_cityscapes_20200605_094933-ebce3b10.pth",
            78.69,
            80.11,
        ),
        (
            "cityscapes-resnet50-upernet-769x769-40k",
            "upernet_r50_769x769_40k_cityscapes_20200530_033048-92d21539.pth",
            77.98,
            79.70,
        ),
        (
            "cityscapes-resnet101-upernet-769x769-40k",
            "upernet_r101_769x769_40k_cityscapes_20200530_040819-83c95d01.pth",
            79.03,
            80.77,
        ),
        (
            "cityscapes-resnet50-upernet-512x1024-80k",
            "upernet_r50_512x1024_80k_cityscapes_20200607_052207-848beca8.pth",
            78.19,
            79.19,
        ),
        (
            "cityscapes-resnet101-upernet-512x1024-80k",
            "upernet_r101_512x1024_80k_cityscapes_20200607_002403-f05f2345.pth",
            79.40,
            80.46,
        ),
        (
            "cityscapes-resnet50-upernet-769x769-80k",
            "upernet_r50_769x769_80k_cityscapes_20200607_005107-82ae7d15.pth",
            79.39,
            80.92,
        ),
        (
            "cityscapes-resnet101-upernet-769x769-80k",
            "upernet_r101_769x769_80k_cityscapes_20200607_001014-082fc334.pth",
            80.10,
            81.49,
        ),
        (
            "ade20k-resnet50-upernet-512x512-80k",
            "upernet_r50_512x512_80k_ade20k_20200614_144127-ecc8377b.pth",
            40.70,
            41.81,
        ),
        (
            "ade20k-resnet101-upernet-512x512-80k",
            "upernet_r101_512x512_80k_ade20k_20200614_185117-32e4db94.pth",
            42.91,
            43.96,
        ),
        (
            "ade20k-resnet50-upernet-512x512-160k",
            "upernet_r50_512x512_160k_ade20k_20200615_184328-8534de8d.pth",
            42.05,
            42.78,
        ),
        (
            "ade20k-resnet101-upernet-512x512-160k",
            "upernet_r101_512x512_160k_ade20k_20200615_161951-91b32684.pth",
            43.82,
            44.85,
        ),
        (
            "voc-resnet50-upernet-512x512-20k",
            "upernet_r50_512x512_20k_voc12aug_20200617_165330-5b5890a7.pth",
            74.82,
            76.35,
        ),
        (
            "voc-resnet101-upernet-512x512-20k",
            "upernet_r101_512x512_20k_voc12aug_20200617_165629-f14e7f27.pth",
            77.10,
            78.29,
        ),
        (
            "voc-resnet50-upernet-512x512-40k",
            "upernet_r50_512x512_40k_voc12aug_20200613_162257-ca9bcc6b.pth",
            75.92,
            77.44,
        ),
        (
            "voc-resnet101-upernet-512x512-40k",
            "upernet_r101_512x512_40k_voc12aug_20200613_163549-e26476ac.pth",
            77.43,
            78.56,
        ),
        (
            "cityscapes-resnet50-pspnet-512x1024-40k",
            "pspnet_r50-d8_512x1024_40k_cityscapes_20200605_003338-2966598c.pth",
            77.85,
            79.18,
        ),
        (
            "cityscapes-resnet101-pspnet-512x1024-40k",
            "pspnet_r101-d8_512x1024_40k_cityscapes_20200604_232751-467e7cf4.pth",
            78.34,
            79.74,
        ),
        (
            "ade20k-resnet50-pspnet-512x512-80k",
            "pspnet_r50-d8_512x512_80k_ade20k_20200615_014128-15a8b914.pth",
            41.13,
            41.94,
        ),
        (
            "ade20k-resnet101-pspnet-512x512-80k",
            "pspnet_r101-d8_512x512_80k_ade20k_20200614_031423-b6e782f0.pth",
            43.57,
            44.35,
        ),
    )
)
DEFAULT_MODEL = "ade20k-resnet50dilated-ppm_deepsup"


def lookup(name: str) -> ReleasedModel:
    if name not in MODELS:
        raise ValueError(f"unknown released model '{name}'; available: {', '.join(MODELS)}")
    return MODELS[name]


def config_path(name: str) -> str:
    return str(CONFIG_DIR / lookup(name).config)
