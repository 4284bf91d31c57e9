"""Pascal VOC 2012 with the SBD augmentation in our layout: 21 classes (background is class 1), 0 = ignore.

    python -m mit_semseg.prepare.voc download RAW      (download_VOC.sh: the public VOC 2012 and SBD archives)
    python -m mit_semseg.prepare.voc prepare RAW OUT

RAW holds `VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}` (VOCtrainval_11-May-2012.tar)
and, optionally, `benchmark_RELEASE/dataset/{cls,img,train.txt,val.txt}` (SBD's benchmark.tgz). VOC's labels are
palette PNGs: the palette index is the class (255, the boundaries, becomes 0). SBD's are `cls/<id>.mat`
(struct GTcls, field Segmentation, classes 0..20). OUT gets `train.odgt` (VOC train, 1,464 images), `val.odgt`
(VOC val, 1,449) and, with SBD, `trainaug.odgt` (VOC train and SBD train and val, less VOC val: 10,582 images, each
once; an id VOC labels takes VOC's map), the images (hard links), the labels and `classes.csv`. An image without its
label is named and left out, and the command exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from ..data.classes import palette
from ..data.imageio import read_image
from ..data.records import DataError
from ..hub import DownloadError, download
from .broden.download import unpack
from .common import Pair, add_prepare_command, finish, lookup_table, require_folder, run_pairs, run_prepare

CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
BOUNDARY = 255
VOC = Path("VOCdevkit", "VOC2012")
SBD = Path("benchmark_RELEASE", "dataset")
# (archive, URL, MD5, what it unpacks to): the public archives, as torchvision's VOC and SBD datasets list them
ARCHIVES = (
    (
        "VOCtrainval_11-May-2012.tar",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        "6cd6e144f989b92b3379bac3b3de84fd",
        VOC,
    ),
    (
        "benchmark.tgz",
        "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        "82b4d87ceb2ed10f6038a1cba92111cb",
        SBD,
    ),
)
# our labels from VOC's palette indices: class k -> k + 1, the boundary -> 0
VOC_TABLE = lookup_table({k: k + 1 for k in range(len(CLASSES))})


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"split list not found: {path}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def read_palette_label(path: str) -> np.ndarray:
    """The palette indices of a VOC label PNG (not its colours)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DataError(f"{path}: a VOC label is a palette PNG, this one is mode {image.mode}")
            return np.array(image)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read label {path} ({err})") from None


def read_sbd_label(path: str) -> np.ndarray:
    """The class map (0..20) of an SBD `cls/<id>.mat`."""
    from scipy.io import loadmat

    try:
        return np.asarray(loadmat(path)["GTcls"]["Segmentation"][0, 0], dtype=np.uint8)
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise DataError(f"cannot read SBD label {path} ({type(err).__name__}: {err})") from None


def convert(pair: Pair) -> tuple[np.ndarray, tuple[int, int]]:
    size = read_image(pair.image).shape[:2]
    raw = read_sbd_label(pair.label) if pair.label.endswith(".mat") else read_palette_label(pair.label)
    bad = sorted(set(np.unique(raw).tolist()) - set(range(len(CLASSES))) - {BOUNDARY})
    if bad:
        raise DataError(f"{pair.label}: values {bad} are no VOC classes (0..20, 255 the boundary)")
    return VOC_TABLE[raw], size


def find_pairs(raw: Path) -> tuple[list[Pair], list[str], bool]:
    """VOC train ("train"), the ids only SBD adds ("aug") and VOC val ("val"); the ids without a label; whether
    SBD is there."""
    voc, sbd = raw / VOC, raw / SBD
    require_folder(str(voc), "VOC 2012 (VOCtrainval_11-May-2012.tar, unpacked)")
    lists = voc / "ImageSets" / "Segmentation"
    train, val = _read_ids(lists / "train.txt"), _read_ids(lists / "val.txt")
    pairs, problems = [], []

    def voc_pair(split: str, name: str) -> None:
        label = voc / "SegmentationClass" / f"{name}.png"
        if label.is_file():
            pairs.append(Pair(split, name, str(voc / "JPEGImages" / f"{name}.jpg"), str(label)))
        else:
            problems.append(f"{voc / 'JPEGImages' / f'{name}.jpg'}: no label {label}")

    for name in train:
        voc_pair("train", name)
    for name in val:
        voc_pair("val", name)
    has_sbd = sbd.is_dir()
    if has_sbd:
        seen = set(train) | set(val)
        for name in dict.fromkeys(_read_ids(sbd / "train.txt") + _read_ids(sbd / "val.txt")):
            if name in seen:
                continue
            seen.add(name)
            if (voc / "SegmentationClass" / f"{name}.png").is_file():
                voc_pair("aug", name)
                continue
            label = sbd / "cls" / f"{name}.mat"
            image = voc / "JPEGImages" / f"{name}.jpg"
            image = image if image.is_file() else sbd / "img" / f"{name}.jpg"
            if label.is_file():
                pairs.append(Pair("aug", name, str(image), str(label)))
            else:
                problems.append(f"{image}: no label {label}")
    return pairs, problems, has_sbd


def prepare(raw: str, out: str, workers: int = 4, progress: bool = True) -> tuple[str, bool]:
    """Prepare RAW into OUT; returns the summary and whether every listed image was prepared."""
    pairs, problems, has_sbd = find_pairs(Path(raw))
    report = run_pairs(pairs, out, convert, len(CLASSES), workers, progress, problems)
    lists = {"train": ("train",), "val": ("val",)}
    if has_sbd:
        lists["trainaug"] = ("train", "aug")
    lines = [finish(report, out, lists, CLASSES, palette(len(CLASSES)))]  # VOC's colours: background black
    if not has_sbd:
        lines.append(f"no SBD in {Path(raw) / SBD}: trainaug.odgt not written")
    return "\n".join(lines), not report.problems


def md5sum(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(raw: str, progress: bool = True) -> list[str]:
    """Download, verify (MD5) and unpack the VOC 2012 and SBD archives into RAW, skipping what is there; returns the
    failures. `$MIT_SEMSEG_VOC_MIRROR` replaces the archives' hosts (a folder URL holding them)."""
    mirror = os.environ.get("MIT_SEMSEG_VOC_MIRROR")
    failures = []
    for archive, url, md5, unpacked in ARCHIVES:
        if (Path(raw) / unpacked).is_dir():
            print(f"{unpacked}: already in {raw}")
            continue
        dest = os.path.join(raw, "downloads", archive)
        try:
            download(f"{mirror.rstrip('/')}/{archive}" if mirror else url, dest, progress=progress)
            actual = md5sum(dest)
            if actual != md5:
                os.remove(dest)
                raise DataError(f"{dest} is corrupt: MD5 {actual}, expected {md5}; it was removed, run again")
            unpack(Path(dest), Path(raw))
            if not (Path(raw) / unpacked).is_dir():
                raise DataError(f"{archive} did not unpack to {unpacked}: it is not the expected archive")
            os.remove(dest)
            print(f"{archive}: unpacked into {raw}")
        except (DownloadError, DataError) as err:
            failures.append(str(err))
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mit_semseg.prepare.voc", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="download and unpack VOC 2012 and SBD (resumable)")
    get.add_argument("raw", help="raw folder")
    get.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_prepare_command(
        commands, "folder with VOCdevkit/ and, optionally, benchmark_RELEASE/", "prepare the unpacked archives"
    )
    args = parser.parse_args(argv)
    if args.command == "download":
        failures = fetch(args.raw, not args.no_progress)
        for failure in failures:
            print(f"error: {failure}", file=sys.stderr)
        return 1 if failures else 0
    return run_prepare(prepare, args)


if __name__ == "__main__":
    sys.exit(main())
