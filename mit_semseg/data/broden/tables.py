"""The original's Broden+ assignment of raw source labels, its split lists and the texture table.

`label_assignment.csv` maps (dataset, category, raw_label) to a Broden label, 0 meaning "not
used" (-1 for scenes); OpenSurfaces' raw labels are the red values of
`opensurfaces_substance_colors.csv`. The split lists give, per record, a source dataset, the
record's index in that dataset and the size of the prepared image. All ship with the package,
beside the label tables.
"""
from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..label_tables import BRODEN_TABLES, read_csv_rows, read_names
from ..records import DataError

ASSIGNMENT = BRODEN_TABLES / "label_assignment.csv"
TEXTURES = BRODEN_TABLES / "texture.csv"
SPLITS = BRODEN_TABLES / "splits"
# (training source, split) -> the original's split list; the ADE20K and Pascal images form one source.
SPLIT_FILES = {
    ("ade20k_pascal", "training"): "broden_ade20k_pascal_train.jsonl.gz",
    ("ade20k_pascal", "validation"): "broden_ade20k_pascal_val.jsonl.gz",
    ("os", "training"): "broden_os_train.jsonl.gz",
    ("os", "validation"): "broden_os_val.jsonl.gz",
}
UNKNOWN = -2  # a raw label the assignment does not list (-1 is "no scene")


@dataclass(frozen=True)
class RawLabels:
    """One (dataset, category) of the assignment: raw label -> Broden label, raw name -> Broden label."""
    by_raw: dict[int, int]
    by_name: dict[str, int]

    @functools.cached_property
    def table(self) -> np.ndarray:
        """A table indexed by raw label, UNKNOWN where the assignment has no row; raw 0 is unlabelled."""
        table = np.full(max(self.by_raw, default=0) + 1, UNKNOWN, np.int64)
        table[0] = 0
        for raw, label in self.by_raw.items():
            table[raw] = label
        return table


def read_assignment(path: Path = ASSIGNMENT) -> dict[tuple[str, str], RawLabels]:
    """(dataset, category) -> its raw labels, from a `label_assignment.csv`."""
    found: dict[tuple[str, str], RawLabels] = {}
    columns = ("dataset", "category", "raw_label", "raw_name", "broden_label", "broden_name")
    for line, row in enumerate(read_csv_rows(path, columns), start=2):
        where = f"{path}, line {line}"
        try:
            raw, label = int(row["raw_label"]), int(row["broden_label"])
        except ValueError as err:
            raise DataError(f"{where}: labels must be integers ({err})") from None
        if raw < 0:
            raise DataError(f"{where}: raw label {raw} is negative")
        labels = found.setdefault((row["dataset"], row["category"]), RawLabels({}, {}))
        labels.by_raw[raw] = label
        labels.by_name.setdefault(row["raw_name"], label)
    return found


def read_texture_names(path: Path = TEXTURES) -> tuple[str, ...]:
    """The DTD texture names, label 0.. in order."""
    return read_names(path)


@dataclass(frozen=True)
class SplitEntry:
    source: str      # the training source: ade20k_pascal or os
    split: str       # training or validation
    dataset: str     # ade20k, pascal or os
    file_index: int  # index of the image in its dataset's own order
    width: int       # the size the original prepared the image at
    height: int


def read_split_lists(folder: Path = SPLITS) -> list[SplitEntry]:
    """Every record of the four split lists in `folder`, in list order."""
    entries = []
    for (source, split), name in SPLIT_FILES.items():
        path = Path(folder) / name
        if not path.is_file():
            raise DataError(f"split list not found: {path}")
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: cannot read the gzip file ({err})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                entries.append(SplitEntry(source, split, str(r["dataset"]), int(r["file_index"]), int(r["width"]),
                                          int(r["height"])))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise DataError(f"{path}, line {number}: expected dataset, file_index, width and height "
                                f"({type(err).__name__}: {err})") from None
    return entries
