"""Writes small raw Broden+ source trees in each dataset's own format, for tests and the prepare bench.

Images are given as arrays; labels as raw label maps in each source's own label space.
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import cv2
import numpy as np
from scipy.io import savemat


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


def write_ade20k(raw: Path, images: list[dict]) -> None:
    """images: name, folder (as in the index), scene, image, objects (raw classes), parts (raw classes or None)."""
    root = raw / "ade20k"
    for im in images:
        folder = root.joinpath(*Path(im["folder"]).parts[1:])  # the index's folder starts with ADE20K_2016_07_26
        _jpeg(folder / im["name"], im["image"])
        stem = folder / im["name"].rsplit(".", 1)[0]
        _png_rgb(Path(f"{stem}_seg.png"), ade_encode(im["objects"]))
        if im.get("parts") is not None:
            _png_rgb(Path(f"{stem}_parts_1.png"), ade_encode(im["parts"]))
    index = {key: np.array([im[field] for im in images], dtype=object)
             for key, field in (("filename", "name"), ("folder", "folder"), ("scene", "scene"))}
    index["objectnames"] = np.array(["-", "abacus"], dtype=object)
    savemat(str(root / "index_ade20k.mat"), {"index": index})


def _struct_array(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    array = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            array[0, i][f] = row[f]
    return array


def write_pascal(raw: Path, images: list[dict]) -> None:
    """images: id, image, context (raw Pascal-Context labels), objects (list of {class, parts: [(name, mask)]})
    or None for no Pascal-Part file."""
    voc = raw / "voc2010"
    for im in images:
        _jpeg(voc / "JPEGImages" / f"{im['id']}.jpg", im["image"])
        (raw / "pascal_context" / "trainval").mkdir(parents=True, exist_ok=True)
        savemat(str(raw / "pascal_context" / "trainval" / f"{im['id']}.mat"),
                {"LabelMap": im["context"].astype(np.uint16)})
        (raw / "pascal_part" / "Annotations_Part").mkdir(parents=True, exist_ok=True)
        if im.get("objects") is None:
            continue
        objects = []
        for k, obj in enumerate(im["objects"]):
            parts = _struct_array([{"part_name": n, "mask": m.astype(np.uint8)} for n, m in obj["parts"]],
                                  ("part_name", "mask")) if obj["parts"] else np.zeros((0, 0))
            mask = np.zeros(im["context"].shape, np.uint8)
            objects.append({"class": obj["class"], "class_ind": k + 1, "mask": mask, "parts": parts})
        anno = {"imname": im["id"], "objects": _struct_array(objects, ("class", "class_ind", "mask", "parts"))}
        savemat(str(raw / "pascal_part" / "Annotations_Part" / f"{im['id']}.mat"), {"anno": anno})
    listing = voc / "ImageSets" / "Main" / "trainval.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{im['id']}\n" for im in images))


def write_opensurfaces(raw: Path, photos: list[dict]) -> None:
    """photos: photo_id, image, substance (red values of the label image)."""
    root = raw / "opensurfaces"
    for p in photos:
        _jpeg(root / "photos" / f"{p['photo_id']}.jpg", p["image"])
        rgb = np.zeros((*p["substance"].shape, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = p["substance"], 3, 200  # G, B: OpenSurfaces' name and scene
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
        "".join(f"{im['name']} {' '.join(im['textures'])} \n" for im in images))
    for split in ("train", "val", "test"):
        (root / "labels" / f"{split}1.txt").write_text("".join(f"{im['name']}\n" for im in images
                                                               if im["split"] == split))


def write_split_lists(folder: Path, lists: dict[str, list[dict]]) -> Path:
    """lists: file name (broden_ade20k_pascal_train.jsonl.gz, ...) -> records (dataset, file_index, width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in lists.items():
        with gzip.open(folder / name, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    return folder
