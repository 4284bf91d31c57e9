"""Class names and colours: the 150 ADE20K classes (`data/object150_info.csv`) and a palette."""
from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np

OBJECT150_CSV = Path(__file__).resolve().parents[2] / "data" / "object150_info.csv"


def read_class_names(path: str | os.PathLike = OBJECT150_CSV) -> list[str]:
    """Class names in index order (class k at position k-1), the first synonym of each `Name`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"class table not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "Idx" not in rows[0] or "Name" not in rows[0]:
        raise ValueError(f"{path}: expected a CSV with columns Idx and Name")
    rows.sort(key=lambda row: int(row["Idx"]))
    if [int(row["Idx"]) for row in rows] != list(range(1, len(rows) + 1)):
        raise ValueError(f"{path}: Idx must run 1..{len(rows)} without gaps")
    return [row["Name"].split(";")[0] for row in rows]


@functools.lru_cache(maxsize=None)
def ade20k_class_names() -> tuple[str, ...]:
    return tuple(read_class_names())


def palette(num_colors: int = 256) -> np.ndarray:
    """`num_colors` x 3 uint8 RGB colours, all distinct; colour 0 is black.

    Colour i spreads the bits of i over the three channels, most significant bits first.
    """
    colors = np.zeros((num_colors, 3), dtype=np.uint8)
    for i in range(num_colors):
        value, bit = i, 7
        while value:
            for channel in range(3):
                colors[i, channel] |= ((value >> channel) & 1) << bit
            value >>= 3
            bit -= 1
    return colors


def colorize(labels: np.ndarray) -> np.ndarray:
    """An RGB picture of 0-based class labels (-1, unlabelled, is black): class k gets colour k + 1."""
    labels = np.asarray(labels)
    colors = palette(max(256, int(labels.max(initial=0)) + 2))
    return colors[labels.astype(np.int64) + 1]


def class_names(cfg) -> list[str]:
    """Names of the config's classes: DATASET.class_info, the ADE20K names for 150 classes, else numbers."""
    num_class = cfg.DATASET.num_class
    if cfg.DATASET.class_info:
        names = read_class_names(cfg.DATASET.class_info)
        if len(names) != num_class:
            raise ValueError(f"{cfg.DATASET.class_info} names {len(names)} classes, DATASET.num_class is {num_class}")
        return names
    if num_class == len(ade20k_class_names()):
        return list(ade20k_class_names())
    return [f"class {i}" for i in range(1, num_class + 1)]
