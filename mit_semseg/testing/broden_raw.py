"""Writes small raw Broden+ source trees in each dataset's own format, for tests and the prepare bench.

Images are given as arrays; labels as raw label maps in each source's own label space. The ADE20K
index has the real release's 22,210 entries in the real order (the ADE challenge's scene list) and
3,688 object names; OpenSurfaces is its release's Django JSON dumps.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat

from mit_semseg.prepare.broden.ade20k_full import read_scene_list
from mit_semseg.prepare.broden.tables import read_substance_colors

ADE_OBJECT_NAMES = 3688


def _jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])


def _png_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb.astype(np.uint8), cv2.COLOR_RGB2BGR))


def ade_encode(classes: np.ndarray) -> np.ndarray:
    """ADE20K's class encoding: R = class // 256 * 10, G = class % 256 (B, the instance, set to 7)."""
    rgb = np.zeros((*classes.shape, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = classes // 256 * 10, classes % 256, 7
    return rgb


def write_ade20k(raw: Path, images: dict[int, dict], renamed: dict[int, str] | None = None) -> None:
    """images: index entry (0-based, the release's order) -> folder (as in the index), image, objects (raw
    classes), parts (raw classes or None). The index's own `scene` field holds names unlike the scene list's,
    as the real one does. `renamed`: entries whose file name differs from the scene list's."""
    root = raw / "ade20k"
    names = [f"{name}.jpg" for name, _ in read_scene_list()]
    names = [(renamed or {}).get(i, name) for i, name in enumerate(names)]
    folders = ["ADE20K_2016_07_26/images/training/u/unused"] * len(names)
    for i, im in images.items():
        folders[i] = im["folder"]
        folder = root.joinpath(*Path(im["folder"]).parts[1:])  # the index's folder starts with ADE20K_2016_07_26
        _jpeg(folder / names[i], im["image"])
        stem = folder / names[i].rsplit(".", 1)[0]
        _png_rgb(Path(f"{stem}_seg.png"), ade_encode(im["objects"]))
        if im.get("parts") is not None:
            _png_rgb(Path(f"{stem}_parts_1.png"), ade_encode(im["parts"]))
    index = {
        "filename": np.array(names, dtype=object),
        "folder": np.array(folders, dtype=object),
        "scene": np.array(["~not labeled", "forest/broadleaf", "bakery/shop"] * (len(names) // 3 + 1), dtype=object)[
            : len(names)
        ],
        "objectnames": np.array([f"object {k}" for k in range(1, ADE_OBJECT_NAMES + 1)], dtype=object),
    }
    root.mkdir(parents=True, exist_ok=True)
    savemat(str(root / "index_ade20k.mat"), {"index": index})


def _struct_array(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    array = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            array[0, i][f] = row[f]
    return array


def write_pascal(raw: Path, images: list[dict]) -> None:
    """images: id, image, context (raw Pascal-Context labels), objects (list of {class, parts: [(name, mask)]},
    possibly empty) or None for no Pascal-Part file."""
    voc = raw / "voc2010"
    for im in images:
        _jpeg(voc / "JPEGImages" / f"{im['id']}.jpg", im["image"])
        (raw / "pascal_context" / "trainval").mkdir(parents=True, exist_ok=True)
        savemat(
            str(raw / "pascal_context" / "trainval" / f"{im['id']}.mat"), {"LabelMap": im["context"].astype(np.uint16)}
        )
        (raw / "pascal_part" / "Annotations_Part").mkdir(parents=True, exist_ok=True)
        if im.get("objects") is None:
            continue
        objects = []
        for k, obj in enumerate(im["objects"]):
            parts = (
                _struct_array(
                    [{"part_name": n, "mask": m.astype(np.uint8)} for n, m in obj["parts"]], ("part_name", "mask")
                )
                if obj["parts"]
                else np.zeros((0, 0))
            )
            mask = np.zeros(im["context"].shape, np.uint8)
            objects.append({"class": obj["class"], "class_ind": k + 1, "mask": mask, "parts": parts})
        anno = {"imname": im["id"], "objects": _struct_array(objects, ("class", "class_ind", "mask", "parts"))}
        savemat(str(raw / "pascal_part" / "Annotations_Part" / f"{im['id']}.mat"), {"anno": anno})
    listing = voc / "ImageSets" / "Main" / "trainval.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{im['id']}\n" for im in images))


def write_opensurfaces_release(raw: Path, photos: list[dict], shapes: list[dict], failed_substances=()) -> Path:
    """OpenSurfaces' release dumps: photos (pk and fields of photos.photo.json), shapes (likewise), the real
    substances (opensurfaces_substance_colors.csv) plus `failed_substances` (pk, name) marked failed."""
    root = raw / "opensurfaces"
    root.mkdir(parents=True, exist_ok=True)
    substances = [(pk, name, False) for pk, (_, name) in read_substance_colors().items()]
    substances += [(pk, name, True) for pk, name in failed_substances]
    dumps = {
        "photos.photo.json": photos,
        "shapes.materialshape.json": shapes,
        "photos.photoscenecategory.json": [
            {"pk": 1, "name": "kitchen", "description": ""},
            {"pk": 2, "name": "bathroom", "description": ""},
        ],
        "shapes.shapesubstance.json": [
            {"pk": pk, "name": name, "fail": fail, "parent": None} for pk, name, fail in substances
        ],
        "shapes.shapename.json": [{"pk": 1, "name": "Wall", "fail": False}, {"pk": 2, "name": "Floor", "fail": False}],
        "licenses.license.json": [{"pk": 1, "name": "Attribution License", "creative_commons": True}],
    }
    for name, rows in dumps.items():
        entries = [
            {"pk": row["pk"], "model": name.rsplit(".", 1)[0], "fields": {k: v for k, v in row.items() if k != "pk"}}
            for row in rows
        ]
        (root / name).write_text(json.dumps(entries))
    return root


def write_opensurfaces_downloaded(raw: Path, photos: list[dict]) -> None:
    """OpenSurfaces as the download leaves it: photos: photo_id, image, substance (red values of the label image,
    at the label's own size)."""
    root = raw / "opensurfaces"
    for p in photos:
        _jpeg(root / "photos" / f"{p['photo_id']}.jpg", p["image"])
        rgb = np.zeros((*p["substance"].shape, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = p["substance"], 3, 1  # G, B: OpenSurfaces' name and scene
        _png_rgb(root / "photos-labels" / f"{p['photo_id']}.png", rgb)
    with open(root / "photos.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["photo_id", "scene_category_name"])
        writer.writerows([[p["photo_id"], "kitchen"] for p in photos])


def write_dtd(raw: Path, images: list[dict]) -> None:
    """images: name (`banded/banded_0001.jpg`), image, textures, split (train, val or test)."""
    root = raw / "dtd"
    for im in images:
        _jpeg(root / "images" / im["name"], im["image"])
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "labels_joint_anno.txt").write_text(
        "".join(f"{im['name']} {' '.join(im['textures'])} \n" for im in images)
    )
    for split in ("train", "val", "test"):
        (root / "labels" / f"{split}1.txt").write_text(
            "".join(f"{im['name']}\n" for im in images if im["split"] == split)
        )


def write_split_lists(folder: Path, lists: dict[str, list[dict]]) -> Path:
    """lists: file name (broden_ade20k_pascal_train.jsonl.gz, ...) -> records (dataset, file_index, width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in lists.items():
        with gzip.open(folder / name, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return folder
