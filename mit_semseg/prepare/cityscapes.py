"""Cityscapes (fine annotations) in our layout: 19 classes, the `trainId`s of cityscapesscripts' label table.

    python -m mit_semseg.prepare.cityscapes prepare RAW OUT

RAW holds the unpacked `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` (downloading them needs an
account: fetch them by hand or with cityscapesscripts' `csDownload`), or the two zips themselves, which are
unpacked there first. Each `leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png` of train and val gets its
`gtFine/<split>/<city>/<frame>_gtFine_labelIds.png`, its ids turned into trainId + 1 (ids without a trainId, 0).
OUT gets `images/` (hard links), `annotations/`, `train.odgt`, `val.odgt` and `classes.csv` (names and colours).
A frame without its label, or a label without its frame, is named and left out, and the command exits 1.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np

from ..data.imageio import UnreadableImage, read_image, read_label
from ..data.records import DataError
from .broden.download import unpack
from .common import Pair, add_prepare_command, finish, lookup_table, require_folder, run_pairs, run_prepare

SPLITS = ("train", "val")
ARCHIVES = {"leftImg8bit": "leftImg8bit_trainvaltest.zip", "gtFine": "gtFine_trainvaltest.zip"}
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def label_table():
    """cityscapesscripts' labels with an id of a label image (0..33): (ids to ours, names, colours) of the classes."""
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as err:
        raise DataError(
            "the Cityscapes preparation reads the label table of cityscapesscripts: pip install cityscapesscripts "
            "(or pip install 'mit-semseg[cityscapes]')"
        ) from err
    classes = sorted((label.trainId, label.name, label.color) for label in labels if 0 <= label.trainId < 255)
    mapping = {label.id: label.trainId + 1 for label in labels if label.id >= 0 and 0 <= label.trainId < 255}
    valid_ids = {label.id for label in labels if label.id >= 0}
    return mapping, valid_ids, [name for _, name, _ in classes], np.array([c for _, _, c in classes], np.uint8)


def _unpack_archives(raw: str) -> list[str]:
    """Unpack the official zips found in RAW whose folder is not there yet; returns what was done."""
    done = []
    for folder, archive in ARCHIVES.items():
        path = os.path.join(raw, archive)
        if not os.path.isdir(os.path.join(raw, folder)) and os.path.isfile(path):
            unpack(path, raw)
            done.append(f"unpacked {path}")
    return done


def find_pairs(raw: str) -> tuple[list[Pair], list[str]]:
    """The train and val frames with their labels, and the frames or labels that lack their other half."""
    pairs, problems = [], []
    for split in SPLITS:
        images_dir, labels_dir = (os.path.join(raw, kind, split) for kind in ARCHIVES)
        require_folder(images_dir, f"Cityscapes {split} images (leftImg8bit_trainvaltest.zip, unpacked)")
        require_folder(labels_dir, f"Cityscapes {split} labels (gtFine_trainvaltest.zip, unpacked)")
        images = {
            os.path.relpath(p, images_dir)[: -len(IMAGE_SUFFIX)]: p
            for p in glob.glob(os.path.join(images_dir, "*", "*" + IMAGE_SUFFIX))
        }
        labels = {
            os.path.relpath(p, labels_dir)[: -len(LABEL_SUFFIX)]: p
            for p in glob.glob(os.path.join(labels_dir, "*", "*" + LABEL_SUFFIX))
        }
        for frame in sorted(images.keys() - labels.keys()):
            problems.append(f"{images[frame]}: no label {os.path.join(labels_dir, frame + LABEL_SUFFIX)}")
        for frame in sorted(labels.keys() - images.keys()):
            problems.append(f"{labels[frame]}: no image {os.path.join(images_dir, frame + IMAGE_SUFFIX)}")
        for frame in sorted(images.keys() & labels.keys()):
            pairs.append(Pair(split, os.path.basename(frame), images[frame], labels[frame]))
    return pairs, problems


def prepare(raw: str, out: str, workers: int = 4, progress: bool = True) -> tuple[str, bool]:
    """Prepare RAW into OUT; returns the summary and whether every frame was prepared."""
    mapping, valid_ids, names, colors = label_table()
    table = lookup_table(mapping)
    notes = _unpack_archives(raw)
    pairs, problems = find_pairs(raw)

    def convert(pair: Pair):
        size = read_image(pair.image).shape[:2]
        try:
            ids = read_label(pair.label, None, size=size)
        except UnreadableImage as err:
            raise DataError(str(err)) from None
        unknown = sorted(set(np.unique(ids).tolist()) - valid_ids)
        if unknown:
            raise DataError(f"{pair.label}: values {unknown} are no Cityscapes label ids (0..33)")
        return table[ids], size

    report = run_pairs(pairs, out, convert, len(names), workers, progress, problems)
    summary = finish(report, out, {split: (split,) for split in SPLITS}, names, colors)
    return "\n".join([*notes, summary]), not report.problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mit_semseg.prepare.cityscapes", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_prepare_command(
        commands, "folder with leftImg8bit/ and gtFine/ (or their zips)", "prepare the unpacked (or zipped) archives"
    )
    return run_prepare(prepare, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
