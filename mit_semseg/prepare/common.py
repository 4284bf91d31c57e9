"""What the benchmark preparations (Cityscapes, Pascal VOC) share: one job per image pair, run in threads, with a
summary that names every problem, and the class table they write."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..data.records import DataError, write_odgt
from ..progress import Progress

MAX_LISTED = 20


@dataclass(frozen=True)
class Pair:
    """One prepared sample: its image, where its label comes from, and the name it gets in the output."""

    split: str
    name: str
    image: str
    label: str


@dataclass
class Report:
    records: dict[str, list[dict]] = field(default_factory=dict)  # per split
    problems: list[str] = field(default_factory=list)
    classes: np.ndarray | None = None  # pixels per class (index 0: unlabelled)


def link_or_copy(source: str, dest: str) -> None:
    """`dest` as a hard link to `source` (no extra space), or a copy across file systems."""
    if os.path.exists(dest):
        os.remove(dest)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def write_class_table(path: str, names: Sequence[str], colors: np.ndarray) -> None:
    """A class table for DATASET.class_info: Idx (1-based), Name, and the class's colour R, G, B."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Idx", "Name", "R", "G", "B"])
        for i, (name, color) in enumerate(zip(names, colors), start=1):
            writer.writerow([i, name, *map(int, color)])


def run_pairs(
    pairs: Sequence[Pair],
    out: str,
    convert: Callable[[Pair], tuple[np.ndarray, tuple[int, int]]],
    num_class: int,
    workers: int = 4,
    progress: bool = True,
    problems: Sequence[str] = (),
) -> Report:
    """For each pair, `convert` gives the label in our convention (0 unlabelled, 1..num_class) and the image's
    (height, width), or raises DataError; the label is written to OUT/annotations/SPLIT/NAME.png, the image linked
    to OUT/images/SPLIT/NAME<ext>, and a record kept. A pair that fails is named in the report's problems, after
    `problems` (those found before, such as images without a label)."""
    os.makedirs(out, exist_ok=True)
    report = Report(problems=list(problems), classes=np.zeros(num_class + 1, np.int64))

    def one(pair: Pair) -> tuple[dict | None, np.ndarray | None, str]:
        try:
            label, (height, width) = convert(pair)
        except DataError as err:
            return None, None, str(err)
        if label.shape != (height, width):
            return None, None, f"label of {pair.image} is {label.shape[1]}x{label.shape[0]}, its image {width}x{height}"
        image = os.path.join("images", pair.split, pair.name + os.path.splitext(pair.image)[1])
        annotation = os.path.join("annotations", pair.split, pair.name + ".png")
        link_or_copy(pair.image, os.path.join(out, image))
        if not cv2.imwrite(os.path.join(out, annotation), label):
            return None, None, f"cannot write {os.path.join(out, annotation)}"
        record = {"fpath_img": image, "fpath_segm": annotation, "width": width, "height": height}
        return record, np.bincount(label.ravel(), minlength=num_class + 1), ""

    for split in sorted({p.split for p in pairs}):
        for kind in ("images", "annotations"):
            os.makedirs(os.path.join(out, kind, split), exist_ok=True)
        report.records[split] = []
    with ThreadPoolExecutor(workers) as pool, Progress(len(pairs), "preparing", unit="img", enabled=progress) as bar:
        for pair, (record, counts, problem) in zip(pairs, pool.map(one, pairs)):
            bar.update(1)
            if problem:
                report.problems.append(problem)
                continue
            report.records[pair.split].append(record)
            report.classes += counts
    return report


def finish(report: Report, out: str, lists: dict[str, Sequence[str]], names: Sequence[str], colors: np.ndarray) -> str:
    """Write OUT/<list>.odgt for each list (the records of its splits, in order) and OUT/classes.csv (`names`,
    `colors`), and return the summary: records per list, pixels per class, every problem, the class table."""
    table = os.path.join(out, "classes.csv")
    write_class_table(table, names, colors)
    lines = []
    for list_name, splits in lists.items():
        records = [r for split in splits for r in report.records.get(split, [])]
        if records:
            write_odgt(os.path.join(out, f"{list_name}.odgt"), records)
            lines.append(f"{list_name}.odgt: {len(records)} records")
    total = report.classes[1:].sum() or 1
    shares = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in zip(names, report.classes[1:]) if n)
    lines.append(f"labelled pixels by class: {shares or 'none'}")
    if report.problems:
        lines.append(f"{len(report.problems)} images left out:")
        lines += [f"  {p}" for p in report.problems[:MAX_LISTED]]
        if len(report.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(report.problems) - MAX_LISTED} more")
    lines.append(f"classes: {table} (DATASET.class_info, num_class {len(names)})")
    return "\n".join(lines)


def lookup_table(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A table turning raw label values into ours (values not in `mapping` become 0, unlabelled)."""
    table = np.zeros(size, np.uint8)
    for raw, ours in mapping.items():
        table[raw] = ours
    return table


def require_folder(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DataError(f"{what} not found: {path}")


def add_prepare_command(commands, raw_help: str, help: str) -> None:
    """The `prepare RAW OUT [--workers N] [--no-progress]` subcommand of a preparation's command line."""
    make = commands.add_parser("prepare", help=help)
    make.add_argument("raw", help=raw_help)
    make.add_argument("out", help="the prepared folder (DATASET.root_dataset)")
    make.add_argument("--workers", type=int, default=4, help="threads (default 4)")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_prepare(prepare: Callable[..., tuple[str, bool]], args: argparse.Namespace) -> int:
    """Run `prepare(raw, out, workers, progress)` as the command line asked; exit code 1 on an error or when
    images were left out (the summary names them)."""
    try:
        summary, complete = prepare(args.raw, args.out, args.workers, not args.no_progress)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary)
    return 0 if complete else 1
