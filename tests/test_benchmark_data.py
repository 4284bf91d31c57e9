"""Cityscapes and Pascal VOC (+ SBD) preparations, on raw trees written in the archives' real formats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile

import cv2
import numpy as np
import pytest
from httpserver import serve
from PIL import Image
from scipy.io import savemat

from mit_semseg.data.classes import palette
from mit_semseg.data.records import read_odgt
from mit_semseg.prepare import cityscapes, voc

W, H = 64, 32


def cityscapes_frame(raw, split, city, frame, objects, image=True, label=True):
    """One frame as the archives hold it: the photo, the polygons, and the label images cityscapesscripts draws from
    them (labelIds.png, as shipped; trainIds.png, the reference)."""
    json2labelImg = pytest.importorskip("cityscapesscripts.preparation.json2labelImg").json2labelImg
    stem = f"{city}_{frame}"
    if image:
        folder = raw / "leftImg8bit" / split / city
        folder.mkdir(parents=True, exist_ok=True)
        photo = np.random.default_rng(len(stem)).integers(0, 255, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{stem}_leftImg8bit.png"), photo)
    gt = raw / "gtFine" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    polygons = gt / f"{stem}_gtFine_polygons.json"
    polygons.write_text(
        json.dumps(
            {"imgHeight": H, "imgWidth": W, "objects": [{"label": n, "polygon": p, "deleted": 0} for n, p in objects]}
        )
    )
    reference = gt / f"{stem}_reference_trainIds.png"
    json2labelImg(str(polygons), str(reference), "trainIds")
    if label:
        json2labelImg(str(polygons), str(gt / f"{stem}_gtFine_labelIds.png"), "ids")
    return stem, reference


STREET = [
    ("road", [[0, 16], [63, 16], [63, 31], [0, 31]]),
    ("sky", [[0, 0], [63, 0], [63, 8], [0, 8]]),
    ("cargroup", [[10, 12], [30, 12], [30, 28], [10, 28]]),  # a group: drawn as car
    ("license plate", [[15, 20], [25, 20], [25, 24], [15, 24]]),  # id -1: never drawn, the car stays
    ("parking", [[40, 18], [50, 18], [50, 30], [40, 30]]),  # no trainId: ignored
    ("rider", [[52, 2], [60, 2], [60, 20], [52, 20]]),
]


def test_cityscapes_labels_are_the_official_train_ids(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    frames = [
        cityscapes_frame(raw, "train", "aachen", "000000_000019", STREET),
        cityscapes_frame(raw, "train", "bochum", "000001_000019", STREET[::-1]),
        cityscapes_frame(raw, "val", "frankfurt", "000000_000294", STREET[1:]),
    ]
    summary, complete = cityscapes.prepare(str(raw), str(out), progress=False)
    assert complete, summary
    train = read_odgt(out / "train.odgt", out)
    val = read_odgt(out / "val.odgt", out)
    assert [len(train), len(val)] == [2, 1]
    for record, (stem, reference) in zip(train + val, frames):
        official = np.array(Image.open(reference))
        expected = np.where(official == 255, 0, official.astype(np.int64) + 1)
        ours = cv2.imread(record["fpath_segm"], cv2.IMREAD_UNCHANGED)
        assert ours.dtype == np.uint8 and np.array_equal(ours, expected), stem
        split = record["fpath_segm"].split("/")[-2]
        assert record["fpath_img"].endswith(f"images/{split}/{stem}.png")
        assert (record["width"], record["height"]) == (W, H)
    labels = cv2.imread(train[0]["fpath_segm"], cv2.IMREAD_UNCHANGED)
    assert labels[22, 20] == 14  # the car under the plate: trainId 13
    assert labels[25, 45] == 0 and labels[30, 5] == 1 and labels[3, 5] == 11  # parking ignored, road, sky
    with open(out / "classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 19 and rows[0]["Name"] == "road" and rows[18]["Name"] == "bicycle"
    assert [rows[0][c] for c in "RGB"] == ["128", "64", "128"]


def test_cityscapes_names_frames_without_labels_and_exits_1(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    cityscapes_frame(raw, "train", "aachen", "000000_000019", STREET)
    cityscapes_frame(raw, "train", "aachen", "000002_000019", STREET, label=False)
    cityscapes_frame(raw, "val", "lindau", "000000_000019", STREET, image=False)
    cityscapes_frame(raw, "val", "lindau", "000001_000019", STREET)
    run = subprocess.run(
        [sys.executable, "-m", "mit_semseg.prepare.cityscapes", "prepare", str(raw), str(out), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1
    assert "aachen_000002_000019_leftImg8bit.png: no label" in run.stdout
    assert "lindau_000000_000019_gtFine_labelIds.png: no image" in run.stdout
    assert "train.odgt: 1 records" in run.stdout and "val.odgt: 1 records" in run.stdout


def test_cityscapes_from_the_zips_and_bad_ids(tmp_path):
    source, raw, out = tmp_path / "source", tmp_path / "raw", tmp_path / "out"
    cityscapes_frame(source, "train", "aachen", "000000_000019", STREET)
    cityscapes_frame(source, "val", "lindau", "000000_000019", STREET)
    raw.mkdir()
    for folder, archive in cityscapes.ARCHIVES.items():
        with zipfile.ZipFile(raw / archive, "w") as z:
            for path in sorted((source / folder).rglob("*")):
                z.write(path, path.relative_to(source))
    summary, complete = cityscapes.prepare(str(raw), str(out), progress=False)
    assert complete and "unpacked" in summary and (raw / "gtFine" / "val" / "lindau").is_dir()
    bad = raw / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"
    cv2.imwrite(str(bad), np.full((H, W), 40, np.uint8))
    summary, complete = cityscapes.prepare(str(raw), str(out), progress=False)
    assert not complete and f"{bad}: values [40] are no Cityscapes label ids" in summary


def voc_label(path, indices):
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette(256).ravel().tolist())
    image.save(path)


def sbd_label(path, classes):
    savemat(
        path,
        {
            "GTcls": {
                "Segmentation": classes.astype(np.uint8),
                "Boundaries": np.array([np.zeros((H, W), np.uint8)] * 20 + [None], dtype=object)[:20, None],
                "CategoriesPresent": np.unique(classes[classes > 0]).astype(np.uint8),
            }
        },
    )


def voc_tree(raw, with_sbd=True):
    """VOC train {a, b}, val {c}; SBD train {a, d}, val {c, e, f}; f has no label. Returns each id's class map."""
    devkit = raw / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (devkit / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    maps = {}
    for name in ("2007_000032", "2007_000039", "2007_000063", "2008_000002", "2008_000003", "2008_000004"):
        cv2.imwrite(str(devkit / "JPEGImages" / f"{name}.jpg"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        maps[name] = rng.integers(0, 21, (H, W))
    for name in ("2007_000032", "2007_000039", "2007_000063"):
        indices = maps[name].copy()
        indices[0, :] = 255  # the boundary band
        voc_label(devkit / "SegmentationClass" / f"{name}.png", indices)
        maps[name] = indices
    (devkit / "ImageSets/Segmentation/train.txt").write_text("2007_000032\n2007_000039\n")
    (devkit / "ImageSets/Segmentation/val.txt").write_text("2007_000063\n")
    if with_sbd:
        sbd = raw / "benchmark_RELEASE" / "dataset"
        (sbd / "cls").mkdir(parents=True)
        (sbd / "img").mkdir()
        for name in ("2007_000032", "2008_000002", "2007_000063", "2008_000003"):
            sbd_label(sbd / "cls" / f"{name}.mat", (maps[name] + 1) % 21)  # differs from VOC's where both have one
        for name in ("2008_000002", "2008_000003"):
            maps[name] = (maps[name] + 1) % 21
        (sbd / "train.txt").write_text("2007_000032\n2008_000002\n")
        (sbd / "val.txt").write_text("2007_000063\n2008_000003\n2008_000004\n")
    return maps


def expected(indices):
    return np.where(indices == 255, 0, indices + 1)


def test_voc_and_sbd_prepare_to_the_class_maps(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    maps = voc_tree(raw)
    summary, complete = voc.prepare(str(raw), str(out), progress=False)
    assert not complete and "2008_000004.jpg: no label" in summary and "1 images left out" in summary
    lists = {name: read_odgt(out / f"{name}.odgt", out) for name in ("train", "val", "trainaug")}
    names = {k: [r["fpath_img"].rsplit("/", 1)[1][:-4] for r in v] for k, v in lists.items()}
    assert names == {
        "train": ["2007_000032", "2007_000039"],
        "val": ["2007_000063"],
        "trainaug": ["2007_000032", "2007_000039", "2008_000002", "2008_000003"],
    }
    for record in lists["trainaug"] + lists["val"]:
        name = record["fpath_img"].rsplit("/", 1)[1][:-4]
        ours = cv2.imread(record["fpath_segm"], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(ours, expected(maps[name])), name  # VOC's map where VOC has one
    assert (cv2.imread(lists["train"][0]["fpath_segm"], cv2.IMREAD_UNCHANGED)[0] == 0).all()  # boundary: ignored
    with open(out / "classes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["Name"] for r in rows[:2]] == ["background", "aeroplane"] and [rows[1][c] for c in "RGB"] == [
        "128",
        "0",
        "0",
    ]


def test_voc_without_sbd_and_rgb_labels(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    voc_tree(raw, with_sbd=False)
    summary, complete = voc.prepare(str(raw), str(out), progress=False)
    assert complete and "trainaug.odgt not written" in summary and not (out / "trainaug.odgt").exists()
    bad = raw / "VOCdevkit/VOC2012/SegmentationClass/2007_000039.png"
    cv2.imwrite(str(bad), np.zeros((H, W, 3), np.uint8))  # a colour image, not the palette
    summary, complete = voc.prepare(str(raw), str(out), progress=False)
    assert not complete and f"{bad}: a VOC label is a palette PNG, this one is mode RGB" in summary


def test_voc_download_verifies_and_unpacks(tmp_path, monkeypatch):
    source = tmp_path / "source"
    voc_tree(source)
    files, md5 = {}, {}
    for archive, _, _, unpacked in voc.ARCHIVES:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz" if archive.endswith("tgz") else "w") as t:
            t.add(source / unpacked.parts[0], arcname=unpacked.parts[0])
        files[f"/{archive}"] = buffer.getvalue()
        md5[archive] = hashlib.md5(buffer.getvalue()).hexdigest()
    monkeypatch.setattr(voc, "ARCHIVES", tuple((a, u, md5[a], p) for a, u, _, p in voc.ARCHIVES))
    with serve(files) as (url, _):
        monkeypatch.setenv("MIT_SEMSEG_VOC_MIRROR", url)
        assert voc.fetch(str(tmp_path / "raw"), progress=False) == []
        assert (tmp_path / "raw" / voc.VOC / "SegmentationClass" / "2007_000032.png").is_file()
        assert (tmp_path / "raw" / voc.SBD / "cls" / "2008_000002.mat").is_file()
        assert not (tmp_path / "raw" / "downloads" / "benchmark.tgz").exists()  # removed once unpacked
        files["/benchmark.tgz"] = b"not the archive"
        failures = voc.fetch(str(tmp_path / "again"), progress=False)
    assert len(failures) == 1 and "benchmark.tgz is corrupt: MD5" in failures[0]
    summary, _ = voc.prepare(str(tmp_path / "raw"), str(tmp_path / "out"), progress=False)
    assert "trainaug.odgt: 4 records" in summary
