"""The original's Broden+ assignment of raw source labels and its split lists.

`label_assignment.csv` maps (dataset, category, raw_label) to a Broden label, 0 meaning "not
used" (-1 for scenes); OpenSurfaces' raw labels are the red values of
`opensurfaces_substance_colors.csv`. A raw label of a source's vocabulary without a row is "not
used" too, as in the original (whose tables are zero-filled arrays indexed by raw label); only a
value outside the vocabulary is an error of the data. The split lists give, per record, a source
dataset, the record's index in that dataset and the size of the prepared image. All ship with the
package, beside the label tables, with the ADE challenge's scene list and Pascal-Context's labels.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...data.label_tables import BRODEN_TABLES, read_csv_rows
from ...data.records import DataError

ASSIGNMENT = BRODEN_TABLES / "label_assignment.csv"
SUBSTANCES = BRODEN_TABLES / "opensurfaces_substance_colors.csv"
PASCAL_CONTEXT_LABELS = BRODEN_TABLES / "pascal_context_labels.txt"
SPLITS = BRODEN_TABLES / "splits"
# (training source, split) -> the original's split list; the ADE20K and Pascal images form one source.
SPLIT_FILES = {
    ("ade20k_pascal", "training"): "broden_ade20k_pascal_train.jsonl.gz",
    ("ade20k_pascal", "validation"): "broden_ade20k_pascal_val.jsonl.gz",
    ("os", "training"): "broden_os_train.jsonl.gz",
    ("os", "validation"): "broden_os_val.jsonl.gz",
}


@dataclass(frozen=True)
class RawLabels:
    """One (dataset, category) of the assignment: raw label -> Broden label, raw name -> Broden label."""

    by_raw: dict[int, int]
    by_name: dict[str, int]


Vocabulary = tuple[str, ...]  # a source's raw label names, indexed by raw label (0: unlabelled, named "")


@dataclass
class Assigner:
    """Maps a source's raw labels to Broden labels, within the source's vocabulary.

    `unassigned` counts, per (dataset, category, raw label), the pixels of raw labels that have no
    row in the assignment: they become 0 ("not used"), as in the original.
    """

    assignment: dict[tuple[str, str], RawLabels]
    vocabularies: dict[tuple[str, str], Vocabulary]
    unassigned: Counter = field(default_factory=Counter)
    _tables: dict = field(default_factory=dict, repr=False)

    def _table(self, key: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        """(Broden label per raw label of the vocabulary, whether the assignment has its row)."""
        if key not in self._tables:
            size = len(self.vocabularies[key])
            labels, assigned = np.zeros(size, np.int64), np.zeros(size, bool)
            assigned[0] = True
            for raw, label in self.assignment[key].by_raw.items():
                if raw < size:
                    labels[raw], assigned[raw] = max(label, 0), True
            self._tables[key] = labels, assigned
        return self._tables[key]

    def labels(self, dataset: str, category: str, raw: np.ndarray, path: str) -> np.ndarray:
        """A raw label map as a uint16 map of Broden labels; a value outside the vocabulary names `path`."""
        labels, assigned = self._table((dataset, category))
        raw = np.asarray(raw).astype(np.int64)
        outside = np.unique(raw[(raw < 0) | (raw >= len(labels))])
        if outside.size:
            raise DataError(
                f"{path}: raw {category} label {', '.join(map(str, outside[:10].tolist()))} is outside "
                f"{dataset}'s {len(labels) - 1} {category} labels"
            )
        counts = np.bincount(raw.ravel(), minlength=len(labels))
        for value in np.flatnonzero(counts * ~assigned):
            self.unassigned[dataset, category, int(value)] += int(counts[value])
        return labels[raw].astype(np.uint16)

    def named(self, dataset: str, category: str, name: str, path: str) -> int:
        """The Broden label of a raw name (Pascal-Part's parts, ADE20K's scenes); an unknown name names `path`."""
        label = self.assignment[dataset, category].by_name.get(name)
        if label is None:
            raise DataError(f"{path}: unknown raw {category} {name!r} (not in label_assignment.csv)")
        return label


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


def read_substance_colors(path: Path = SUBSTANCES) -> dict[int, tuple[int, str]]:
    """OpenSurfaces' substance id -> (red value of the label images, substance name)."""
    try:
        return {
            int(r["substance_id"]): (int(r["red_color"]), r["substance_name"])
            for r in read_csv_rows(path, ("substance_id", "substance_name", "red_color"))
        }
    except ValueError as err:
        raise DataError(f"{path}: ids and colours must be integers ({err})") from None


def substance_vocabulary(path: Path = SUBSTANCES) -> Vocabulary:
    """OpenSurfaces' raw material labels: substance names by red value."""
    by_red = dict(read_substance_colors(path).values())
    return ("",) + tuple(by_red.get(red, "") for red in range(1, max(by_red, default=0) + 1))


def pascal_context_vocabulary(path: Path = PASCAL_CONTEXT_LABELS) -> Vocabulary:
    """Pascal-Context's 459 object names by raw label (its `labels.txt`: `index: name` lines)."""
    names = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        index, sep, name = line.partition(": ")
        if not sep or not index.isdigit():
            raise DataError(f"{path}, line {number}: expected 'index: name', got {line!r}")
        names[int(index)] = name.strip()
    return ("",) + tuple(names.get(i, "") for i in range(1, max(names, default=0) + 1))


@dataclass(frozen=True)
class SplitEntry:
    source: str  # the training source: ade20k_pascal or os
    split: str  # training or validation
    dataset: str  # ade20k, pascal or os
    file_index: int  # index of the image in its dataset's own order
    width: int  # the size the original prepared the image at
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
                entries.append(
                    SplitEntry(
                        source, split, str(r["dataset"]), int(r["file_index"]), int(r["width"]), int(r["height"])
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise DataError(
                    f"{path}, line {number}: expected dataset, file_index, width and height "
                    f"({type(err).__name__}: {err})"
                ) from None
    return entries
