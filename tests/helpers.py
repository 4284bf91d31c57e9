"""Helpers the tests share (not tests themselves)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from mit_semseg.checkpoints import epoch_files
from mit_semseg.models import ENCODERS
from mit_semseg.models.convnext import ConvNeXtEncoder
from mit_semseg.models.hrnet import hrnetv2
from mit_semseg.models.mobilenet import mobilenetv2dilated
from mit_semseg.models.resnet import BasicBlock, Bottleneck, GroupBottleneck, ResNetEncoder, ResNetV1cEncoder
from mit_semseg.models.swin import SwinEncoder
from mit_semseg.pictures import LEGEND_LIMIT, LEGEND_ROW, shares

REPO = Path(__file__).resolve().parents[1]
# A copy of shared/reference/state_dict_layout.json: the original's keys, shapes and feature maps.
LAYOUT = Path(__file__).resolve().parent / "data" / "state_dict_layout.json"


def checkpoint_weights(directory, epoch: int) -> dict:
    """{"encoder": state dict, "decoder": state dict} of DIR/{encoder,decoder}_epoch_<epoch>.pth."""
    return {part: torch.load(path, weights_only=True) for part, path in epoch_files(directory, epoch).items()}


def assert_same_weights(a: dict, b: dict) -> None:
    """Two `checkpoint_weights` results hold the same keys and exactly the same tensors."""
    for part in a:
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"


def assert_legend(panel: np.ndarray, labels: np.ndarray, colors: np.ndarray) -> None:
    """`panel` (RGB, below a coloured map) is the legend of the 0-based `labels`: one swatch per class present,
    largest first, in the class's colour, and nothing below the last (no class: all white)."""
    entries = shares(labels, len(colors))[:LEGEND_LIMIT]
    assert panel.shape[0] >= LEGEND_ROW * max(1, len(entries))
    for row, (c, _) in enumerate(entries):
        y = 2 + row * LEGEND_ROW + LEGEND_ROW // 2
        np.testing.assert_array_equal(panel[y, 4 : LEGEND_ROW - 4], np.broadcast_to(colors[c], (LEGEND_ROW - 8, 3)))
    assert (panel[2 + len(entries) * LEGEND_ROW :] == 255).all()


def write_small_tables(folder: Path) -> Path:
    """Label tables of a small multi-task set: 3 objects (table and chair with parts), 2 scenes, 2 materials."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "object.csv").write_text("label,name\n0,-\n1,table\n2,wall\n3,chair\n")
    (folder / "part.csv").write_text("label,name\n0,-\n1,leg\n2,top\n3,seat\n")
    (folder / "scene.csv").write_text("label,name\n0,kitchen\n1,street\n")
    (folder / "material.csv").write_text("label,name\n0,-\n1,wood\n2,brick\n")
    (folder / "object_part_hierarchy.csv").write_text(
        "object_label,object_name,part_labels,part_names\n1,table,0;1;2,-;leg;top\n3,chair,0;1;3,-;leg;seat\n"
    )
    return folder


# Smaller encoders of each registered architecture: the same blocks, strides, dilations and map layout, fewer and
# narrower layers, each with a last map width of its own (the original's decoder API tells encoders by it). Tests
# that are not about the layout (the state-dict layout tests build the full ones) use them through
# `use_reduced_encoders`; a new encoder adds its line here (`test_every_encoder_has_a_reduced_variant`).
_SMALL_MOBILENET = (
    (1, 8, 1, 1),
    (2, 8, 1, 2),
    (2, 16, 1, 2),
    (2, 16, 1, 2),
    (2, 24, 1, 1),
    (2, 24, 1, 2),
    (2, 40, 1, 1),
)
_SMALL_HRNET = ((1, (8, 16)), (1, (8, 16, 24)), (1, (8, 16, 24, 32)))


def _small_resnet(name: str, block, widths: tuple[int, ...], encoder=ResNetEncoder) -> dict:
    maps = tuple(w * block.expansion for w in widths)
    return {
        name + suffix: replace(
            ENCODERS[name + suffix],
            build=partial(encoder, block, (1, 1, 2, 2), widths=widths, dilated=bool(suffix)),
            feature_channels=maps,
        )
        for suffix in ("", "dilated")
    }


def _small_convnext(depths, widths, drop_path_rate=0.0, norm_layer=None) -> ConvNeXtEncoder:
    return ConvNeXtEncoder(depths, widths, drop_path_rate)


def _small_swin(width, depths, heads, window, drop_path_rate=0.0, norm_layer=None) -> SwinEncoder:
    return SwinEncoder(width, depths, heads, window, drop_path_rate)


REDUCED_ENCODERS = {
    "mobilenetv2dilated": replace(
        ENCODERS["mobilenetv2dilated"],
        build=partial(mobilenetv2dilated, settings=_SMALL_MOBILENET, feature_maps=(2, 3, 4, 6)),
        feature_channels=(8, 16, 16, 24, 40),
    ),
    **_small_resnet("resnet18", BasicBlock, (8, 16, 24, 32)),
    **_small_resnet("resnet50", Bottleneck, (8, 16, 24, 32)),
    **_small_resnet("resnet101", Bottleneck, (8, 16, 32, 48)),
    **_small_resnet("resnext101", GroupBottleneck, (32, 64, 96, 128)),
    **_small_resnet("resnet50v1c", Bottleneck, (8, 16, 24, 40), ResNetV1cEncoder),
    **_small_resnet("resnet101v1c", Bottleneck, (8, 16, 32, 56), ResNetV1cEncoder),
    "hrnetv2": replace(
        ENCODERS["hrnetv2"], build=partial(hrnetv2, stages=_SMALL_HRNET, blocks=1), feature_channels=(80,)
    ),
    **{
        f"convnext_{size}": replace(
            ENCODERS[f"convnext_{size}"],
            build=partial(_small_convnext, (1, 1, 2, 1), (16, 24, 32, last)),
            feature_channels=(16, 24, 32, last),
        )
        for size, last in zip(("tiny", "small", "base", "large", "xlarge"), (48, 56, 64, 72, 88))
    },
    **{
        f"swin_{size}": replace(
            ENCODERS[f"swin_{size}"],
            build=partial(_small_swin, width, (1, 1, 2, 1), (2, 2, 4, 4), window),
            feature_channels=tuple(width * 2**i for i in range(4)),
        )
        for size, width, window in (("tiny", 12, 3), ("small", 14, 3), ("base", 18, 4), ("large", 22, 4))
    },
}


def use_reduced_encoders(monkeypatch) -> None:
    """Every registered encoder name builds its reduced variant until the test ends."""
    for name, spec in REDUCED_ENCODERS.items():
        monkeypatch.setitem(ENCODERS, name, spec)


TRAINED_CONFIG = Path(__file__).resolve().parents[1] / "config" / "ade20k-mobilenetv2dilated-c1_deepsup.yaml"


def train_small_model(root: Path) -> list[str]:
    """A segmentation model trained for a few iterations on synthetic scenes in `root` (`TRAINED_CONFIG` with the
    returned options), and `root/photos` of validation images it never saw (two, and one in `more/`)."""
    from mit_semseg.config import load_config
    from mit_semseg.synthetic.scenes import NUM_CLASS, generate
    from mit_semseg.training.loop import Runtime, train

    generate(str(root / "data"), num_train=6, num_val=3, seed=11, min_side=64, max_side=112)
    opts = [
        "DIR",
        str(root / "ckpt"),
        "DATASET.root_dataset",
        str(root / "data"),
        "DATASET.list_train",
        str(root / "data" / "training.odgt"),
        "DATASET.num_class",
        str(NUM_CLASS),
        "DATASET.class_info",
        str(root / "data" / "class_info.csv"),
        "DATASET.imgSizes",
        "(64, 96)",
        "DATASET.imgMaxSize",
        "160",
        "MODEL.pretrained",
        "False",
        "MODEL.bn_momentum",
        "0.1",
        "TRAIN.num_epoch",
        "1",
        "TRAIN.epoch_iters",
        "3",
        "TRAIN.workers",
        "0",
        "TEST.checkpoint",
        "epoch_1.pth",
        "TEST.precision",
        "fp32",
    ]  # outputs are compared: one precision whatever the CPU
    train(load_config(TRAINED_CONFIG, opts), Runtime([torch.device("cpu")]))
    images = root / "photos"
    (images / "more").mkdir(parents=True)
    validation = sorted((root / "data" / "images" / "validation").iterdir())
    shutil.copy(validation[0], images / "a.jpg")
    shutil.copy(validation[1], images / "b.jpg")
    shutil.copy(validation[2], images / "more" / "c.jpg")
    return opts
