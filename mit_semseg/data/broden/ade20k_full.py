"""ADE20K full release (ADE20K_2016_07_26): `index_ade20k.mat`, `*_seg.png` objects, `*_parts_1.png` parts.

Both PNGs encode a class as R // 10 * 256 + G (0 = unlabelled) in the index's object name list;
the scene is the index's scene name, "misc" meaning none.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np

from ..imageio import read_image
from ..records import DataError
from .raw import RawItem, assign, check_size, load_mat, require, strings
from .tables import RawLabels

FOLDER = "ade20k"
INDEX = "index_ade20k.mat"
NO_SCENE = "misc"


def _image_folder(root: Path, folder: str) -> Path:
    """The index's folder (`ADE20K_2016_07_26/images/...` on the authors' machine) under `root`."""
    parts = PurePosixPath(folder.replace("\\", "/")).parts
    return root.joinpath(*parts[parts.index("images"):]) if "images" in parts else root / folder


def items(raw: Path) -> list[RawItem]:
    root = require(raw / FOLDER, "ADE20K folder")
    path = str(require(root / INDEX, "ADE20K index"))
    index = load_mat(path, "index")
    try:
        names, folders, scenes = strings(index.filename), strings(index.folder), strings(index.scene)
    except AttributeError as err:
        raise DataError(f"{path}: the index lacks a field ({err})") from None
    if not len(names) == len(folders) == len(scenes):
        raise DataError(f"{path}: filename, folder and scene have {len(names)}, {len(folders)} and {len(scenes)} "
                        "entries")
    found = []
    for i, (name, folder, scene) in enumerate(zip(names, folders, scenes)):
        image = _image_folder(root, folder) / name
        base = os.path.splitext(str(image))[0]
        found.append(RawItem("ade20k", i, f"ade20k/{os.path.splitext(name)[0]}", str(image),
                             (f"{base}_seg.png", f"{base}_parts_1.png"), scene=scene))
    return found


def scene_label(scene: str, scenes: RawLabels, where: str) -> int:
    """The Broden scene of an ADE20K scene name (`a/b` and `a b` are written `a_b`); "misc" is none (-1)."""
    name = scene.strip().strip("/").replace("/", "_").replace(" ", "_")
    if name == NO_SCENE:
        return -1
    label = scenes.by_name.get(f"{name}-s")
    if label is None:
        raise DataError(f"{where}: unknown scene {scene!r} (not in label_assignment.csv)")
    return label


def _classes(path: str, image: np.ndarray) -> np.ndarray:
    rgb = read_image(path)
    check_size(rgb, image, path)
    return rgb[..., 0].astype(np.int64) // 10 * 256 + rgb[..., 1]


def read_labels(item: RawItem, image: np.ndarray, assignment: dict) -> tuple[dict[str, np.ndarray], int]:
    """(object and part maps in Broden labels, scene label); the part map only where `_parts_1.png` exists."""
    seg, parts = item.annotations
    maps = {"object": assign(assignment["ade20k", "object"].table, _classes(seg, image), seg, "object")}
    if os.path.isfile(parts):
        maps["part"] = assign(assignment["ade20k", "part"].table, _classes(parts, image), parts, "part")
    return maps, scene_label(item.scene, assignment["ade20k", "scene"], item.image)
