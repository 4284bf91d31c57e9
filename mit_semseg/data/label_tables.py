"""The label tables of a multi-task (Unified Perceptual Parsing) dataset: objects, parts, scenes, materials.

A folder holds `object.csv`, `part.csv`, `scene.csv`, `material.csv` (columns `label,name`, labels
0..n-1 in order; for objects, parts and materials label 0 is `-`, unlabelled) and
`object_part_hierarchy.csv` (`object_label,object_name,part_labels,part_names`, lists separated by
`;`, each list starting with part 0, the object's own "no part" class). `texture.csv` (`label,name`,
labels 0..n-1, no unlabelled class: DTD's 47 textures) is optional: with it, models may have a texture head
(`train.py --stage texture`). The Broden+ tables ship with the package and are the default.
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .records import DataError

BRODEN_TABLES = Path(__file__).resolve().parent / "tables" / "broden"
HEADS = ("object", "part", "scene", "material")  # Unified Perceptual Parsing's heads, each with its table
PIXEL_HEADS = ("object", "part", "material")  # those that label pixels (the scene labels an image)
TABLE_FILES = tuple(f"{head}.csv" for head in HEADS) + ("object_part_hierarchy.csv",)
TEXTURE_FILE = "texture.csv"  # optional


@dataclass(frozen=True)
class PartGroup:
    """An object with parts: the part head's group of `len(part_labels)` channels for it."""

    object_label: int
    object_name: str
    part_labels: tuple[int, ...]  # table labels; index k in the group is part_labels[k]
    part_names: tuple[str, ...]


@dataclass(frozen=True)
class LabelTables:
    folder: str
    objects: tuple[str, ...]  # name of each label, 0 = unlabelled
    parts: tuple[str, ...]
    scenes: tuple[str, ...]
    materials: tuple[str, ...]
    groups: tuple[PartGroup, ...]  # in the part head's order
    textures: tuple[str, ...] = ()  # texture.csv's names (label = index); () without the file

    @property
    def part_group_sizes(self) -> list[int]:
        return [len(g.part_labels) for g in self.groups]

    @functools.cached_property
    def _part_lookup(self) -> np.ndarray:
        """[object, index in its group] -> part label; 0 for objects without parts."""
        lookup = np.zeros((len(self.objects), max(self.part_group_sizes, default=1)), np.int64)
        for group in self.groups:
            lookup[group.object_label, : len(group.part_labels)] = group.part_labels
        return lookup

    def part_labels(self, objects: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """Table labels of part `indices` within the groups of `objects` (0 where an object has no parts)."""
        return self._part_lookup[objects, indices]

    @property
    def num_classes(self) -> dict[str, int]:
        """Output channels of each head (the part head's: all groups together)."""
        return {
            "object": len(self.objects),
            "part": sum(self.part_group_sizes),
            "scene": len(self.scenes),
            "material": len(self.materials),
        }


def read_csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict]:
    """The rows of a CSV table whose header must be exactly `columns`."""
    if not path.is_file():
        raise DataError(f"label table not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != columns:
            found = ",".join(reader.fieldnames or [])
            raise DataError(f"{path}: expected the columns {','.join(columns)}, found {found}")
        return list(reader)


def read_names(path: Path) -> tuple[str, ...]:
    """The names of a `label,name` table whose labels run 0..n-1 in order."""
    rows = read_csv_rows(path, ("label", "name"))
    try:
        labels = [int(row["label"]) for row in rows]
    except ValueError as err:
        raise DataError(f"{path}: labels must be integers ({err})") from None
    if labels != list(range(len(rows))) or not rows:
        raise DataError(f"{path}: labels must run 0..{len(rows) - 1} in order")
    return tuple(row["name"] for row in rows)


def _groups(path: Path, objects: tuple[str, ...], parts: tuple[str, ...]) -> tuple[PartGroup, ...]:
    groups = []
    for line, row in enumerate(read_csv_rows(path, ("object_label", "object_name", "part_labels", "part_names")), 2):
        where = f"{path}, line {line}"
        try:
            obj, labels = int(row["object_label"]), tuple(int(v) for v in row["part_labels"].split(";"))
        except ValueError as err:
            raise DataError(f"{where}: labels must be integers ({err})") from None
        names = tuple(row["part_names"].split(";"))
        if not 0 < obj < len(objects):
            raise DataError(f"{where}: object label {obj} is not in object.csv (1..{len(objects) - 1})")
        if labels[0] != 0 or len(set(labels)) != len(labels) or not all(0 <= p < len(parts) for p in labels):
            raise DataError(
                f"{where}: part labels must start with 0, be distinct and be in part.csv (0..{len(parts) - 1})"
            )
        if len(names) != len(labels):
            raise DataError(f"{where}: {len(labels)} part labels but {len(names)} part names")
        groups.append(PartGroup(obj, row["object_name"], labels, names))
    if len({g.object_label for g in groups}) != len(groups):
        raise DataError(f"{path}: an object is listed twice")
    return tuple(groups)


@functools.cache
def _read(folder: str) -> LabelTables:
    root = Path(folder)
    objects, parts = read_names(root / "object.csv"), read_names(root / "part.csv")
    return LabelTables(
        folder,
        objects,
        parts,
        read_names(root / "scene.csv"),
        read_names(root / "material.csv"),
        _groups(root / "object_part_hierarchy.csv", objects, parts),
        read_names(root / TEXTURE_FILE) if (root / TEXTURE_FILE).is_file() else (),
    )


def read_label_tables(folder: str | os.PathLike | None = None) -> LabelTables:
    """The tables in `folder`; None or "" reads the Broden+ tables shipped with the package."""
    return _read(os.path.abspath(os.fspath(folder)) if folder else str(BRODEN_TABLES))
