"""Class names and colours: the 150 ADE20K classes and colours of the original, and a palette for other counts."""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np

TABLES = Path(__file__).resolve().parent / "tables"
OBJECT150_CSV = TABLES / "object150_info.csv"  # the original's class table (data/object150_info.csv)
COLOR150_CSV = TABLES / "color150.csv"  # the original's colours (data/color150.mat), as Idx,R,G,B
# DATASET.class_info by name: the tables the Cityscapes and VOC preparations write (cityscapesscripts' 19 training
# classes and colours; VOC's 21 classes and colour map), shipped so that a released model needs no dataset
BUILTIN_CLASS_TABLES = {"cityscapes": TABLES / "cityscapes.csv", "voc": TABLES / "voc.csv"}


def write_class_table(path: str | os.PathLike, names: list[str]) -> None:
    """A class table of `names` (`Idx`, from 1, and `Name`), as `read_class_names` reads it; written atomically."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["Idx", "Name"])
        writer.writerows(enumerate(names, start=1))
    os.replace(tmp, path)


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


@functools.cache
def ade20k_class_names() -> tuple[str, ...]:
    return tuple(read_class_names())


@functools.cache
def ade20k_colors() -> np.ndarray:
    """The original's 150 x 3 uint8 RGB colours of the ADE20K classes (wall is (120, 120, 120))."""
    with open(COLOR150_CSV, newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["Idx"]))
    colors = np.array([[int(row[c]) for c in "RGB"] for row in rows], dtype=np.uint8)
    colors.flags.writeable = False
    return colors


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


def class_colors(num_class: int) -> np.ndarray:
    """`num_class` x 3 RGB colours of 0-based classes: the original's for ADE20K's 150, else `palette`'s."""
    if num_class == len(ade20k_class_names()):
        return ade20k_colors()
    return palette(num_class + 1)[1:]


def colorize(labels: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
    """An RGB picture of 0-based class labels (-1, unlabelled, is black): class k gets `colors[k]`.

    Without `colors`, class k gets `palette` colour k + 1.
    """
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if colors is None:
        table = palette(max(256, top + 2))
    else:
        if top >= len(colors):
            raise ValueError(f"label {top} has no colour: only {len(colors)} classes are coloured")
        table = np.concatenate([np.zeros((1, 3), np.uint8), colors])
    return table[labels.astype(np.int64) + 1]


def read_class_colors(path: str | os.PathLike) -> np.ndarray | None:
    """The R, G, B columns of a class table (as the Cityscapes and VOC preparations write), in index order; None
    when it has none."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row["Idx"]))
    if not rows or not all(c in rows[0] for c in "RGB"):
        return None
    try:
        return np.array([[int(row[c]) for c in "RGB"] for row in rows], dtype=np.uint8)
    except ValueError as err:
        raise ValueError(f"{path}: the R, G, B columns must be integers 0..255 ({err})") from None


def class_table(class_info: str) -> str:
    """The file DATASET.class_info names: a path, or the name of a table shipped (`BUILTIN_CLASS_TABLES`)."""
    return str(BUILTIN_CLASS_TABLES.get(class_info, class_info))


def config_colors(cfg) -> np.ndarray:
    """The colours of the config's classes: DATASET.class_info's R, G, B columns if it has them, else `class_colors`."""
    colors = read_class_colors(class_table(cfg.DATASET.class_info)) if cfg.DATASET.class_info else None
    return colors if colors is not None else class_colors(cfg.DATASET.num_class)


def class_names(cfg) -> list[str]:
    """Names of the config's classes: DATASET.class_info, the ADE20K names for 150 classes, else numbers."""
    num_class = cfg.DATASET.num_class
    if cfg.DATASET.class_info:
        names = read_class_names(class_table(cfg.DATASET.class_info))
        if len(names) != num_class:
            raise ValueError(f"{cfg.DATASET.class_info} names {len(names)} classes, DATASET.num_class is {num_class}")
        return names
    if num_class == len(ade20k_class_names()):
        return list(ade20k_class_names())
    return [f"class {i}" for i in range(1, num_class + 1)]
