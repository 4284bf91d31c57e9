"""Write an `.odgt` record list for a dataset laid out as an image folder and an annotation folder.

    python -m mit_semseg.prepare.make_odgt IMAGES ANNOTATIONS OUT.odgt [--root DIR]

Images and annotations are paired by file stem (`a/b.jpg` with `a/b.png`), searched recursively.
Paths in the list are relative to `--root` (default: the folder of OUT.odgt). Unmatched files and
pairs whose sizes differ are reported and left out; the label values found are reported too.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..data.imageio import read_image, read_label
from ..data.records import DataError, write_odgt

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LABEL_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")


@dataclass
class OdgtReport:
    records: list[dict] = field(default_factory=list)
    images_without_label: list[str] = field(default_factory=list)
    labels_without_image: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)


def _by_stem(folder: str, extensions: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for directory, _, files in os.walk(folder):
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in extensions:
                found[os.path.relpath(os.path.join(directory, stem), folder)] = os.path.join(directory, name)
    return found


def _inspect(image_path: str, label_path: str) -> tuple[tuple[int, int] | None, np.ndarray | None, str]:
    """(height, width), the label values, and what is wrong with the pair ("" when nothing)."""
    try:
        size = read_image(image_path).shape[:2]
        label = read_label(label_path, None, size=size)
    except DataError as err:
        return None, None, f"{err} (image {image_path})"
    return size, np.unique(label), ""


def make_odgt(images: str, annotations: str, root: str, workers: int = 4) -> OdgtReport:
    """Pair, check and describe the files; the records' paths are relative to `root`."""
    for folder in (images, annotations):
        if not os.path.isdir(folder):
            raise DataError(f"folder not found: {folder}")
    image_files, label_files = _by_stem(images, IMAGE_EXTENSIONS), _by_stem(annotations, LABEL_EXTENSIONS)
    report = OdgtReport(
        images_without_label=sorted(image_files[s] for s in image_files.keys() - label_files.keys()),
        labels_without_image=sorted(label_files[s] for s in label_files.keys() - image_files.keys()),
    )
    stems = sorted(image_files.keys() & label_files.keys())
    values: set[int] = set()
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda s: _inspect(image_files[s], label_files[s]), stems)
        for stem, (size, found, problem) in zip(stems, results):
            if problem:
                report.problems.append(problem)
                continue
            values.update(int(v) for v in found)
            report.records.append(
                {
                    "fpath_img": os.path.relpath(image_files[stem], root),
                    "fpath_segm": os.path.relpath(label_files[stem], root),
                    "width": size[1],
                    "height": size[0],
                }
            )
    report.label_values = sorted(values)
    return report


def summary(report: OdgtReport, out: str) -> str:
    """What `make_odgt` found, as printed: counts, unmatched files, pairs left out, label values."""
    lines = [f"wrote {len(report.records)} records to {out}"]
    for title, items in (
        ("images without a label", report.images_without_label),
        ("labels without an image", report.labels_without_image),
        ("pairs left out", report.problems),
    ):
        if items:
            lines.append(f"{title} ({len(items)}):")
            lines += [f"  {item}" for item in items[:20]]
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more")
    v = report.label_values
    if v:
        listed = ", ".join(map(str, v)) if len(v) <= 40 else f"{v[0]}..{v[-1]}"
        lines.append(f"label values found ({len(v)} distinct): {listed}")
        lines.append(f"0 is unlabelled; classes are 1..{v[-1]}: set DATASET.num_class {v[-1]} (or more)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", help="folder of images")
    parser.add_argument("annotations", help="folder of single-channel label PNGs (0 unlabelled, 1..num_class)")
    parser.add_argument("out", help="the .odgt file to write")
    parser.add_argument("--root", help="paths are written relative to this folder (default: the folder of OUT)")
    args = parser.parse_args(argv)
    root = args.root or os.path.dirname(os.path.abspath(args.out))
    try:
        report = make_odgt(args.images, args.annotations, root)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not report.records:
        print(
            summary(report, args.out).replace("wrote 0 records to", "no valid pairs; nothing written to"),
            file=sys.stderr,
        )
        return 1
    write_odgt(args.out, report.records)
    print(summary(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
