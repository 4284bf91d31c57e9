"""Download and unpack the raw Broden+ sources: ADE20K full, Pascal VOC 2010, Pascal-Context, Pascal-Part,
OpenSurfaces and DTD, each into its own folder under the raw folder.

Downloads resume; a source whose folder is already whole is skipped; an archive is unpacked into a
temporary folder and moved into place only when whole, then deleted. $MIT_SEMSEG_BRODEN_MIRROR
fetches every archive from one mirror (by its archive name) instead. OpenSurfaces' archive holds
only JSON dumps: its step then writes the photo list, renders the label images and fetches the
photos the split lists use (`opensurfaces_release`).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...data.records import DataError
from ...hub import DownloadError, download
from . import opensurfaces_release
from .tables import SPLITS


@dataclass(frozen=True)
class Step:
    name: str  # the source, as a user knows it
    url: str
    archive: str  # the file name it is saved under (and fetched by from a mirror)
    folder: str  # its folder under the raw folder
    marker: str  # a path inside `folder` that is there once the archive is unpacked
    # what remains to be done in the unpacked folder (folder, split lists, progress) -> what was done
    complete: Callable[[Path, Path, bool], str] | None = None


STEPS = (
    Step(
        "ADE20K full release (ADE20K_2016_07_26)",
        "http://groups.csail.mit.edu/vision/datasets/ADE20K/ADE20K_2016_07_26.zip",
        "ADE20K_2016_07_26.zip",
        "ade20k",
        "index_ade20k.mat",
    ),
    Step(
        "Pascal VOC 2010",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
        "VOCtrainval_03-May-2010.tar",
        "voc2010",
        "ImageSets/Main/trainval.txt",
    ),
    Step(
        "Pascal-Context",
        "https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz",
        "pascal_context_trainval.tar.gz",
        "pascal_context",
        "trainval",
    ),
    Step(
        "Pascal-Part",
        "http://www.stat.ucla.edu/~xianjie.chen/pascal_part_dataset/trainval.tar.gz",
        "pascal_part_trainval.tar.gz",
        "pascal_part",
        "Annotations_Part",
    ),
    Step(
        "OpenSurfaces",
        "http://labelmaterial.s3.amazonaws.com/release/opensurfaces-release-0.zip",
        "opensurfaces-release-0.zip",
        "opensurfaces",
        opensurfaces_release.RELEASE_MARKER,
        opensurfaces_release.complete,
    ),
    Step(
        "DTD (Describable Textures)",
        "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
        "dtd-r1.0.1.tar.gz",
        "dtd",
        "labels/labels_joint_anno.txt",
    ),
)
MARKER_DEPTH = 3  # how deep in an archive the folder holding the marker may be


def source_url(step: Step) -> str:
    mirror = os.environ.get("MIT_SEMSEG_BRODEN_MIRROR")
    return f"{mirror.rstrip('/')}/{step.archive}" if mirror else step.url


def unpack(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive; tar members that would land outside `into` are refused."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(into)
        else:
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as err:
        raise DataError(
            f"{archive} cannot be unpacked ({type(err).__name__}: {err}); delete it and run again"
        ) from None


def _holding(root: Path, marker: str) -> Path | None:
    """The folder under `root` (itself or down to MARKER_DEPTH levels) that holds `marker`."""
    level = [root]
    for _ in range(MARKER_DEPTH + 1):
        for folder in level:
            if (folder / marker).exists():
                return folder
        level = [d for folder in level for d in sorted(folder.iterdir()) if d.is_dir()]
    return None


def fetch(step: Step, raw: Path, progress: bool = True, splits: Path = SPLITS) -> str:
    """Download and unpack one source unless it is there, then complete it; returns what was done."""
    dest = raw / step.folder
    there = dest.is_dir() and _holding(dest, step.marker) is not None
    done = f"{step.name}: already in {dest}" if there else _unpack(step, raw, progress)
    if step.complete is None:
        return done
    try:
        return f"{done}\n{step.name}: {step.complete(dest, splits, progress)}"
    except DataError as err:
        raise DataError(f"{step.name}: {err}") from None


def _unpack(step: Step, raw: Path, progress: bool) -> str:
    dest = raw / step.folder
    archive = raw / "downloads" / step.archive
    try:
        download(source_url(step), str(archive), progress=progress)
    except DownloadError as err:
        raise DownloadError(f"{step.name}: {err}") from None
    staging = raw / f".unpacking-{step.folder}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        unpack(archive, staging)
    except DataError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{step.name}: {err}") from None
    found = _holding(staging, step.marker)
    if found is None:
        shutil.rmtree(staging)
        raise DataError(f"{step.name}: {archive} holds no {step.marker}; it is not the expected archive")
    if dest.exists():
        shutil.rmtree(dest)  # an incomplete folder from an earlier attempt
    found.rename(dest)
    shutil.rmtree(staging, ignore_errors=True)
    archive.unlink()
    return f"{step.name}: unpacked into {dest}"


def fetch_all(raw: str | os.PathLike, progress: bool = True, splits: str | os.PathLike = SPLITS) -> list[str]:
    """Every step, going on past failures; returns the failures (empty when all is there)."""
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    failures = []
    for step in STEPS:
        try:
            print(fetch(step, raw, progress, Path(splits)), flush=True)
        except (DownloadError, DataError) as err:
            failures.append(str(err))
    return failures
