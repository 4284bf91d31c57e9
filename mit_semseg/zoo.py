"""The models released by the original projects: their configs, epochs and published figures (`checkpoints` fetches
them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import hub

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@dataclass(frozen=True)
class ReleasedModel:
    config: str  # file name in config/
    epoch: int
    miou: float | None  # the original README's multi-scale mean IoU (%) on ADE20K validation
    pixel_accuracy: float | None  # and pixel accuracy (%)
    base_url: str = hub.MODEL_URL  # the original's folder of such models


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
DEFAULT_MODEL = "ade20k-resnet50dilated-ppm_deepsup"


def lookup(name: str) -> ReleasedModel:
    if name not in MODELS:
        raise ValueError(f"unknown released model '{name}'; available: {', '.join(MODELS)}")
    return MODELS[name]


def config_path(name: str) -> str:
    return str(CONFIG_DIR / lookup(name).config)
