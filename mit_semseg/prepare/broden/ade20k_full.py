"""ADE20K full release (ADE20K_2016_07_26): `index_ade20k.mat`, `*_seg.png` objects, `*_parts_1.png` parts.

Both PNGs encode a class as R // 10 * 256 + G (0 = unlabelled), class k being the index's object
name k (1-based): the vocabulary of objects and parts. The scene is not the index's `scene` field
but, as in the original, the ADE challenge's `scene_categories.txt` (shipped with the package): line
i names index entry i's image and its scene, "misc" meaning none.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path, PurePosixPath

import numpy as np

from ...data.imageio import read_image
from ...data.label_tables import BRODEN_TABLES
from ...data.records import DataError
from .raw import RawItem, RawSource, check_size, load_mat, require, strings
from .tables import Assigner

FOLDER = "ade20k"
INDEX = "index_ade20k.mat"
SCENES = BRODEN_TABLES / "scene_categories.txt.gz"
NO_SCENE = "misc"


def _image_folder(root: Path, folder: str) -> Path:
    """The index's folder (`ADE20K_2016_07_26/images/...` on the authors' machine) under `root`."""
    parts = PurePosixPath(folder.replace("\\", "/")).parts
    return root.joinpath(*parts[parts.index("images") :]) if "images" in parts else root / folder


def read_scene_list(path: Path = SCENES) -> list[tuple[str, str]]:
    """(image name, scene) per line of the ADE challenge's `scene_categories.txt` (gzipped or not)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read the scene list {path} ({err})") from None
    found = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 2:
            raise DataError(f"{path}, line {number}: expected '<image> <scene>', got {line!r}")
        found.append((fields[0], fields[1]))
    return found


def scenes_of(filenames: list[str], index: str, scene_list: Path = SCENES) -> list[str]:
    """Index entry i's scene: line i of the scene list, whose image must be entry i's (a mismatch names the line)."""
    listed = read_scene_list(scene_list)
    if len(filenames) > len(listed):
        raise DataError(
            f"{index}: entry {len(listed) + 1} ({filenames[len(listed)]}) has no line in {scene_list} "
            f"({len(listed)} lines)"
        )
    for number, (filename, (name, _)) in enumerate(zip(filenames, listed), start=1):
        if f"{name}.jpg" != filename:
            raise DataError(f"{scene_list}, line {number}: {name} is not entry {number} of {index} ({filename})")
    return [scene for _, scene in listed[: len(filenames)]]


def read(raw: Path) -> RawSource:
    root = require(raw / FOLDER, "ADE20K folder")
    path = str(require(root / INDEX, "ADE20K index"))
    index = load_mat(path, "index")
    try:
        names, folders = strings(index.filename), strings(index.folder)
        objects = ("",) + tuple(strings(index.objectnames))
    except AttributeError as err:
        raise DataError(f"{path}: the index lacks a field ({err})") from None
    if len(names) != len(folders):
        raise DataError(f"{path}: filename and folder have {len(names)} and {len(folders)} entries")
    scenes = scenes_of(names, path)
    items = []
    for i, (name, folder, scene) in enumerate(zip(names, folders, scenes)):
        image = _image_folder(root, folder) / name
        base = os.path.splitext(str(image))[0]
        items.append(
            RawItem(
                "ade20k",
                i,
                f"ade20k/{os.path.splitext(name)[0]}",
                str(image),
                (f"{base}_seg.png", f"{base}_parts_1.png"),
                scene=scene,
            )
        )
    return RawSource(items, {"object": objects, "part": objects})


def _classes(path: str, image: np.ndarray) -> np.ndarray:
    rgb = read_image(path)
    check_size(rgb, image, path)
    return rgb[..., 0].astype(np.int64) // 10 * 256 + rgb[..., 1]


def read_labels(item: RawItem, image: np.ndarray, assigner: Assigner) -> tuple[dict[str, np.ndarray], int]:
    """(object and part maps in Broden labels, scene label); the part map only where `_parts_1.png` exists."""
    seg, parts = item.annotations
    maps = {"object": assigner.labels("ade20k", "object", _classes(seg, image), seg)}
    if os.path.isfile(parts):
        maps["part"] = assigner.labels("ade20k", "part", _classes(parts, image), parts)
    scene = -1 if item.scene == NO_SCENE else assigner.named("ade20k", "scene", f"{item.scene}-s", item.image)
    return maps, scene
