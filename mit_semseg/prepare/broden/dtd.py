"""The Describable Textures Dataset (dtd-r1.0.1): image-level texture names, no label maps.

`labels/labels_joint_anno.txt` lists each image with all its textures; the split is the
dataset's first (`train1.txt`, `val1.txt`, `test1.txt`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .raw import RawItem, RawSource, require
from .tables import Assigner

FOLDER = "dtd"
SPLITS = ("train", "val", "test")


def read(raw: Path) -> RawSource:
    root = require(raw / FOLDER, "DTD folder")
    labels = require(root / "labels", "DTD labels folder")
    split_of = {}
    for split in SPLITS:
        for line in require(labels / f"{split}1.txt", "DTD split list").read_text().splitlines():
            split_of[line.strip()] = split
    found = []
    for i, line in enumerate(require(labels / "labels_joint_anno.txt", "DTD labels").read_text().splitlines()):
        if not line.strip():
            continue
        name, *textures = line.split()
        stem = name.rsplit(".", 1)[0]
        found.append(
            RawItem(
                "dtd",
                i,
                f"dtd/{stem}",
                str(root / "images" / name),
                textures=tuple(textures),
                split=split_of.get(name, ""),
            )
        )
    return RawSource(found, {})


def read_labels(item: RawItem, image: np.ndarray, assigner: Assigner) -> tuple[dict[str, np.ndarray], int]:
    """DTD has no label maps and no scene: its textures stay in the record."""
    return {}, -1
