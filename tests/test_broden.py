"""Broden+ preparation from raw fixture trees in each source's format, checked pixel for pixel; its download."""
import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from broden_raw import write_ade20k, write_dtd, write_opensurfaces, write_pascal, write_split_lists
from httpserver import closed_port_url, serve
from mit_semseg.data.broden import prepare as broden_prepare
from mit_semseg.data.broden.__main__ import main as broden_main
from mit_semseg.data.broden.download import STEPS
from mit_semseg.data.broden.pascal import SPELT_OUT, part_name
from mit_semseg.data.broden.tables import ASSIGNMENT, SPLITS, read_assignment, read_split_lists, read_texture_names
from mit_semseg.data.label_tables import BRODEN_TABLES, read_label_tables
from mit_semseg.data.multitask import read_multitask_records
from mit_semseg.data.records import DataError

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "broden"
H, W = 700, 1030  # an ADE20K image whose short side is above the limit: 753x512 once prepared


def _image(seed, h, w):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _stripes(h, w, a, b):
    """Raw label a or b in a checker of 7x5 cells: every resize error shows."""
    y, x = np.mgrid[:h, :w]
    return np.where((x // 7 + y // 5) % 2, a, b)


def _nearest(label, w, h):
    """The reference resize: output pixel (i, j) is the source pixel its centre falls in, in exact fractions."""
    rows = [int((Fraction(2 * i + 1, 2) * label.shape[0]) // h) for i in range(h)]
    cols = [int((Fraction(2 * j + 1, 2) * label.shape[1]) // w) for j in range(w)]
    return label[np.ix_(rows, cols)]


def _ade_street():
    objects = np.full((20, 30), 3)          # abacus: not used (0)
    objects[:10] = 2420                     # sky -> 2
    objects[10:, :15] = 312                 # building -> 5
    parts = np.zeros((20, 30), np.int64)
    parts[12:, :5] = 774                    # door -> 8
    parts[12:, 5:8] = 1433                  # leg -> 1
    return objects, parts


def _pascal_parts():
    head, foot, wheel = (np.zeros((16, 24), bool) for _ in range(3))
    head[:4, 4:8] = True
    foot[8:11, 4:8] = True
    wheel[14:, 20:22] = True
    front = np.zeros((16, 24), bool)
    front[12:14, 20:] = True
    return [{"class": "person", "parts": [("head", head), ("lfoot", foot)]},
            {"class": "car", "parts": [("frontside", front), ("wheel_2", wheel)]},
            {"class": "chair", "parts": []}], head, foot, wheel, front


def _pascal_context():
    context = np.full((16, 24), 284)        # person -> 6
    context[:, :4] = 0                      # unlabelled
    context[12:, 20:] = 59                  # car -> 13
    return context


def write_raw_tree(raw: Path, splits: Path) -> None:
    street_objects, street_parts = _ade_street()
    write_ade20k(raw, [
        {"name": "ADE_train_00000001.jpg", "folder": "ADE20K_2016_07_26/images/training/s/street", "scene": "street",
         "image": _image(1, 20, 30), "objects": street_objects, "parts": street_parts},
        {"name": "ADE_train_00000002.jpg", "folder": "ADE20K_2016_07_26/images/training/m/misc", "scene": "misc",
         "image": _image(2, H, W), "objects": _stripes(H, W, 1831, 401), "parts": None},
        {"name": "ADE_val_00000001.jpg", "folder": "ADE20K_2016_07_26/images/validation/a/apse/indoor",
         "scene": "apse/indoor", "image": _image(3, 24, 24), "objects": np.full((24, 24), 471), "parts": None},
    ])
    objects = _pascal_parts()[0]
    write_pascal(raw, [
        {"id": "2008_000002", "image": _image(4, 16, 24), "context": _pascal_context(), "objects": objects},
        {"id": "2008_000003", "image": _image(5, 16, 24), "context": np.full((16, 24), 360), "objects": None},
    ])
    write_opensurfaces(raw, [
        {"photo_id": 11, "image": _image(6, 600, 900), "substance": _stripes(600, 900, 43, 3)},
        {"photo_id": 12, "image": _image(7, 40, 50), "substance": np.where(np.arange(50) < 25, 29, 5)[None].repeat(40, 0)},
    ])
    write_dtd(raw, [
        {"name": "banded/banded_0001.jpg", "image": _image(8, 40, 40), "textures": ["banded", "bumpy"], "split": "train"},
        {"name": "zigzagged/zigzagged_0002.jpg", "image": _image(9, 30, 40), "textures": ["zigzagged"], "split": "test"},
    ])
    write_split_lists(splits, {
        "broden_ade20k_pascal_train.jsonl.gz": [
            {"dataset": "ade20k", "file_index": 0, "width": 30, "height": 20, "nr_part": 1},
            {"dataset": "pascal", "file_index": 0, "width": 24, "height": 16, "nr_part": 1},
            {"dataset": "ade20k", "file_index": 1, "width": 753, "height": 512, "nr_part": 0}],
        "broden_ade20k_pascal_val.jsonl.gz": [
            {"dataset": "ade20k", "file_index": 2, "width": 24, "height": 24, "nr_part": 0},
            {"dataset": "pascal", "file_index": 1, "width": 24, "height": 16, "nr_part": 0}],
        "broden_os_train.jsonl.gz": [{"dataset": "os", "file_index": 0, "width": 768, "height": 512}],
        "broden_os_val.jsonl.gz": [{"dataset": "os", "file_index": 1, "width": 50, "height": 40}],
    })


def _prepare_cli(raw, out, splits, *extra):
    return subprocess.run([sys.executable, "-m", "mit_semseg.data.broden", "prepare", str(raw), str(out),
                           "--splits", str(splits), "--no-progress", *extra],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("broden")
    write_raw_tree(root / "raw", root / "splits")
    return root


@pytest.fixture(scope="module")
def prepared(raw_tree):
    result = _prepare_cli(raw_tree / "raw", raw_tree / "out", raw_tree / "splits", "--workers", "2")
    assert result.returncode == 0, result.stderr
    return raw_tree / "out", result.stdout


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _label(out, path):
    return cv2.imread(str(out / path), cv2.IMREAD_UNCHANGED)


# The shipped tables ------------------------------------------------------------------------------------------


def test_shipped_tables_are_the_originals():
    if not REFERENCE.is_dir():
        pytest.skip("shared/reference is not beside this checkout")
    for name in ("label_assignment.csv", "opensurfaces_substance_colors.csv", "texture.csv"):
        assert (BRODEN_TABLES / name).read_bytes() == (REFERENCE / name).read_bytes(), name
    for path in REFERENCE.glob("*.jsonl.gz"):
        assert gzip.decompress((SPLITS / path.name).read_bytes()) == gzip.decompress(path.read_bytes()), path.name


def test_assignment_agrees_with_the_label_tables():
    """Every Broden label the assignment names is the same class in object/part/scene/material.csv."""
    tables, seen = read_label_tables(), 0
    names = {"object": tables.objects, "part": tables.parts, "scene": tables.scenes, "material": tables.materials}
    with open(ASSIGNMENT, newline="") as f:
        for row in csv.DictReader(f):
            label = int(row["broden_label"])
            if label > 0:
                assert names[row["category"]][label] == row["broden_name"], row
                seen += 1
    assert seen > 1900
    assignment = read_assignment()
    assert set(assignment) == {("ade20k", "object"), ("ade20k", "part"), ("ade20k", "scene"), ("pascal", "object"),
                               ("pascal", "part"), ("os", "material")}
    with open(BRODEN_TABLES / "opensurfaces_substance_colors.csv", newline="") as f:
        substances = {int(r["red_color"]): r["substance_name"] for r in csv.DictReader(f)}
    materials = {raw: name for (dataset, _, raw, name) in _assignment_rows() if dataset == "os"}
    assert set(materials) == {0, *substances}  # the raw OpenSurfaces label is the red value
    for red, name in substances.items():       # "Carpet/rug" is "carpet;rug", "Plastic - clear" "plastic-clear"
        assert materials[red] == name.lower().replace("/", ";").replace(" - ", "-"), red
    assert len(read_texture_names()) == 47 and read_texture_names()[0] == "banded"


def _assignment_rows():
    with open(ASSIGNMENT, newline="") as f:
        return [(r["dataset"], r["category"], int(r["raw_label"]), r["raw_name"]) for r in csv.DictReader(f)]


def test_split_lists_hold_the_originals_counts():
    counts = {}
    for e in read_split_lists():
        counts[e.dataset, e.split] = counts.get((e.dataset, e.split), 0) + 1
    assert counts == {("ade20k", "training"): 20067, ("pascal", "training"): 9015, ("ade20k", "validation"): 2143,
                      ("pascal", "validation"): 1088, ("os", "training"): 17226, ("os", "validation"): 1914}


def test_pascal_part_names_collapse_to_the_assignments_names():
    known = read_assignment()["pascal", "part"].by_name
    assert part_name("lfuleg") == "leg" and part_name("rfho") == "hoof" and part_name("engine_3") == "engine"
    assert part_name("hroofside") == "head roof" and part_name("croofside_2") == "coach roof"
    assert part_name("cfrontside_1") == "coach" and part_name("bliplate") == "license plate"
    assert part_name("frontside") == "" and known[""] == 0  # a bare side of a vehicle is not used
    for raw in [*SPELT_OUT, "body", "head", "torso", "neck", "nose", "muzzle", "tail", "beak", "saddle", "handlebar",
                "stern", "cap", "pot", "plant", "screen", "hair", "mouth", "door_1", "window_4", "headlight_2"]:
        assert part_name(raw) in known, raw


# Preparation, pixel for pixel ---------------------------------------------------------------------------------


def test_records_follow_the_split_lists(prepared):
    out, stdout = prepared
    train, val = _lines(out / "training.jsonl"), _lines(out / "validation.jsonl")
    assert [(r["dataset"], r["file_index"], r["source"]) for r in train] == [
        ("ade20k", 0, "ade20k_pascal"), ("pascal", 0, "ade20k_pascal"), ("ade20k", 1, "ade20k_pascal"), ("os", 0, "os")]
    assert [(r["dataset"], r["file_index"]) for r in val] == [("ade20k", 2), ("pascal", 1), ("os", 1)]
    assert [(r["width"], r["height"]) for r in train] == [(30, 20), (24, 16), (753, 512), (768, 512)]
    assert [r["scene"] for r in train[:3]] == [319, -1, -1]  # street; Pascal has none; "misc" is none
    assert val[0]["scene"] == 90  # apse/indoor -> apse_indoor-s -> church/indoor
    assert "fpath_part" in train[0] and "fpath_part" in train[1] and "fpath_part" not in train[2]
    assert "fpath_part" not in val[1]  # no Pascal-Part file for that image
    assert set(train[3]) == {"fpath_img", "width", "height", "source", "dataset", "file_index", "fpath_material"}
    tables = read_label_tables()
    assert len(read_multitask_records(out / "training.jsonl", out, tables)) == 4
    assert "ade20k training              2        0" in stdout and "problems" not in stdout


def test_ade20k_labels_pixel_for_pixel(prepared):
    out, _ = prepared
    objects, parts = _label(out, "ade20k/ADE_train_00000001_object.png"), _label(out, "ade20k/ADE_train_00000001_part.png")
    assert objects.dtype == np.uint16 and parts.dtype == np.uint16 and objects.shape == (20, 30)
    want = np.zeros((20, 30), np.uint16)
    want[:10], want[10:, :15] = 2, 5
    np.testing.assert_array_equal(objects, want)
    want_parts = np.zeros((20, 30), np.uint16)
    want_parts[12:, :5], want_parts[12:, 5:8] = 8, 1
    np.testing.assert_array_equal(parts, want_parts)
    big = _label(out, "ade20k/ADE_train_00000002_object.png")
    assert big.shape == (512, 753)
    np.testing.assert_array_equal(big, _nearest(_stripes(H, W, 6, 13), 753, 512))
    image = cv2.imread(str(out / "ade20k/ADE_train_00000002.jpg"))
    assert image.shape == (512, 753, 3)
    np.testing.assert_array_equal(_label(out, "ade20k/ADE_val_00000001_object.png"), np.full((24, 24), 12))


def test_pascal_labels_pixel_for_pixel(prepared):
    out, _ = prepared
    objects = _label(out, "pascal/2008_000002_object.png")
    want = np.full((16, 24), 6, np.uint16)
    want[:, :4], want[12:, 20:] = 0, 13
    np.testing.assert_array_equal(objects, want)
    _, head, foot, wheel, front = _pascal_parts()
    want_parts = np.zeros((16, 24), np.uint16)
    want_parts[head], want_parts[foot], want_parts[wheel] = 2, 15, 12  # head, foot ("lfoot"), wheel ("wheel_2")
    want_parts[front & ~wheel] = 0                                     # "frontside" is not used
    np.testing.assert_array_equal(_label(out, "pascal/2008_000002_part.png"), want_parts)
    np.testing.assert_array_equal(_label(out, "pascal/2008_000003_object.png"), np.full((16, 24), 2))  # sky


def test_opensurfaces_labels_pixel_for_pixel(prepared):
    out, _ = prepared
    material = _label(out, "os/11_material.png")
    assert material.dtype == np.uint8 and material.shape == (512, 768)
    np.testing.assert_array_equal(material, _nearest(_stripes(600, 900, 25, 3), 768, 512))  # wood, carpet
    small = _label(out, "os/12_material.png")
    np.testing.assert_array_equal(small, np.where(np.arange(50) < 25, 17, 0)[None].repeat(40, 0))  # plastic; chalk 0
    assert (out / "os/12.jpg").read_bytes() == (out.parent / "raw/opensurfaces/photos/12.jpg").read_bytes()


def test_dtd_textures_stay_in_the_records(prepared):
    out, _ = prepared
    records = _lines(out / "textures.jsonl")
    assert [(r["fpath_img"], r["texture"], r["split"]) for r in records] == [
        ("dtd/banded/banded_0001.jpg", [0, 4], "train"), ("dtd/zigzagged/zigzagged_0002.jpg", [46], "test")]
    assert (records[1]["width"], records[1]["height"]) == (40, 30)


def test_summary_counts_images_and_labels(prepared):
    out, _ = prepared
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"]["ade20k training"] == {"prepared": 2}
    assert summary["images"]["os validation"] == {"prepared": 1}
    assert summary["labels"]["training"]["object"] == {"2": 1, "5": 1, "6": 2, "13": 2}
    assert summary["labels"]["training"]["part"] == {"1": 1, "2": 1, "8": 1, "12": 1, "15": 1}
    assert summary["labels"]["training"]["material"] == {"3": 1, "25": 1}
    assert summary["problems"] == [] and summary["notes"] == []


def test_workers_make_the_same_files_as_one_process(prepared, raw_tree, tmp_path):
    out, _ = prepared
    broden_prepare.prepare(raw_tree / "raw", tmp_path, splits=raw_tree / "splits", workers=1, progress=False)
    made = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert made == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                          if p.is_file() and not p.name.startswith("."))
    for path in made:
        if path.name != "summary.json":
            assert (out / path).read_bytes() == (tmp_path / path).read_bytes(), path


def test_long_side_limit_and_split_list_size_notes(raw_tree, tmp_path):
    summary = broden_prepare.prepare(raw_tree / "raw", tmp_path, broden_prepare.Settings(512, "long"),
                                     splits=raw_tree / "splits", workers=1, progress=False)
    train = _lines(tmp_path / "training.jsonl")
    assert [(r["width"], r["height"]) for r in train[2:]] == [(512, 348), (512, 341)]
    assert summary["notes"] == []  # the split lists' sizes are the short-side rule's: not compared
    with pytest.raises(DataError, match="was prepared with"):
        broden_prepare.prepare(raw_tree / "raw", tmp_path, splits=raw_tree / "splits", workers=1, progress=False)


def test_split_list_sizes_are_kept_within_a_pixel_and_noted_beyond(raw_tree, tmp_path):
    write_split_lists(tmp_path / "splits", {
        "broden_ade20k_pascal_train.jsonl.gz": [{"dataset": "ade20k", "file_index": 1, "width": 754, "height": 512},
                                                {"dataset": "pascal", "file_index": 0, "width": 48, "height": 32}],
        "broden_ade20k_pascal_val.jsonl.gz": [], "broden_os_train.jsonl.gz": [], "broden_os_val.jsonl.gz": []})
    summary = broden_prepare.prepare(raw_tree / "raw", tmp_path / "out", splits=tmp_path / "splits", workers=1,
                                     progress=False)
    assert [(r["width"], r["height"]) for r in _lines(tmp_path / "out/training.jsonl")] == [(754, 512), (24, 16)]
    assert summary["notes"] == [f"{raw_tree / 'raw/voc2010/JPEGImages/2008_000002.jpg'}: 24x16, prepared at 24x16, "
                                "but the split list has 48x32"]
    np.testing.assert_array_equal(_label(tmp_path / "out", "ade20k/ADE_train_00000002_object.png"),
                                  _nearest(_stripes(H, W, 6, 13), 754, 512))


# Re-running, bad input ------------------------------------------------------------------------------------------


def test_rerun_skips_finished_images_and_redoes_missing_ones(raw_tree, tmp_path):
    out = tmp_path / "out"
    first = broden_prepare.prepare(raw_tree / "raw", out, splits=raw_tree / "splits", workers=1, progress=False)
    assert first["prepared_now"] == 9
    lists = (out / "training.jsonl").read_bytes()
    again = broden_prepare.prepare(raw_tree / "raw", out, splits=raw_tree / "splits", workers=1, progress=False)
    assert again["prepared_now"] == 0 and (out / "training.jsonl").read_bytes() == lists
    assert again["labels"] == first["labels"]
    (out / "os/11_material.png").unlink()
    with open(out / ".journal.jsonl", "a") as f:
        f.write('{"key": "pascal/0", "spl')  # a line an interrupted run cut short
    third = broden_prepare.prepare(raw_tree / "raw", out, splits=raw_tree / "splits", workers=1, progress=False)
    assert third["prepared_now"] == 1 and (out / "os/11_material.png").is_file()
    assert (out / "training.jsonl").read_bytes() == lists


def test_without_scipy_the_mat_sources_are_left_out_and_named(raw_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(broden_prepare, "_scipy_missing", lambda: "reading its .mat files needs scipy: pip install x")
    (tmp_path / "os").mkdir()
    (tmp_path / "os/11.jpg.tmp").write_bytes(b"half")  # a killed run's leftover
    summary = broden_prepare.prepare(raw_tree / "raw", tmp_path, splits=raw_tree / "splits", workers=1, progress=False)
    assert summary["problems"] == ["ade20k: left out: reading its .mat files needs scipy: pip install x",
                                   "pascal: left out: reading its .mat files needs scipy: pip install x"]
    assert set(summary["images"]) == {"os training", "os validation", "dtd textures"}
    assert not (tmp_path / "os/11.jpg.tmp").exists() and (tmp_path / "os/11.jpg").is_file()


def _break(raw: Path, splits: Path) -> None:
    (raw / "voc2010/JPEGImages/2008_000003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    val_seg = raw / "ade20k/images/validation/a/apse/indoor/ADE_val_00000001_seg.png"
    rgb = cv2.imread(str(val_seg))
    rgb[0, 0] = (7, 2, 0)  # BGR: class 0 * 256 + 2, a raw label the assignment does not list
    cv2.imwrite(str(val_seg), rgb)
    label = raw / "opensurfaces/photos-labels/12.png"
    cv2.imwrite(str(label), np.zeros((40, 51, 3), np.uint8))
    shutil.rmtree(raw / "dtd")
    with gzip.open(splits / "broden_os_val.jsonl.gz", "at") as f:
        f.write(json.dumps({"dataset": "os", "file_index": 99, "width": 50, "height": 40}) + "\n")


def test_bad_input_is_named_and_the_rest_goes_on(raw_tree, tmp_path):
    raw, splits = tmp_path / "raw", tmp_path / "splits"
    shutil.copytree(raw_tree / "raw", raw)
    shutil.copytree(raw_tree / "splits", splits)
    _break(raw, splits)
    result = _prepare_cli(raw, tmp_path / "out", splits)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    problems = "\n".join(summary["problems"])
    assert f"dtd: left out: DTD folder not found: {raw / 'dtd'}" in problems
    assert f"cannot read image {raw / 'voc2010/JPEGImages/2008_000003.jpg'}: unreadable or corrupt" in problems
    assert f"{raw / 'ade20k/images/validation/a/apse/indoor/ADE_val_00000001_seg.png'}: unknown raw object label 2" \
        in problems
    assert f"{raw / 'opensurfaces/photos-labels/12.png'} is 51x40 but its image is 50x40" in problems
    assert "os: 1 split-list entries (file_index 99..99) are beyond the 2 images of the raw dataset" in problems
    assert len(summary["problems"]) == 5
    assert "5 problems (left out):" in result.stdout and "unknown raw object label 2" in result.stdout
    kept = [(r["dataset"], r["file_index"]) for r in _lines(tmp_path / "out/training.jsonl")]
    assert kept == [("ade20k", 0), ("pascal", 0), ("ade20k", 1), ("os", 0)]
    assert not (tmp_path / "out/validation.jsonl").exists() and not (tmp_path / "out/textures.jsonl").exists()
    assert not list((tmp_path / "out").rglob("*.tmp")) and not (tmp_path / "out/os/12_material.png").exists()


def test_unknown_pascal_part_and_missing_folders(raw_tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(raw_tree / "raw", raw)
    objects = _pascal_parts()[0]
    objects[0]["parts"].append(("tentacle", np.ones((16, 24), bool)))
    write_pascal(raw, [{"id": "2008_000002", "image": _image(4, 16, 24), "context": _pascal_context(),
                        "objects": objects}])
    summary = broden_prepare.prepare(raw, tmp_path / "out", splits=raw_tree / "splits", workers=1, progress=False)
    assert any("2008_000002.mat: unknown raw part 'tentacle'" in p for p in summary["problems"])
    assert summary["images"]["pascal training"] == {"skipped": 1}
    shutil.rmtree(raw / "pascal_part")
    summary = broden_prepare.prepare(raw, tmp_path / "out", splits=raw_tree / "splits", workers=1, progress=False)
    assert f"pascal: left out: Pascal-Part folder not found: {raw / 'pascal_part/Annotations_Part'}" \
        in summary["problems"]
    assert broden_main(["prepare", str(tmp_path / "nothing"), str(tmp_path / "o2"), "--no-progress"]) == 1


# The download ---------------------------------------------------------------------------------------------------


def _tar(members: dict[str, bytes], mode="w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


ARCHIVES = {
    "/ADE20K_2016_07_26.zip": _zip({"ADE20K_2016_07_26/index_ade20k.mat": b"index",
                                    "ADE20K_2016_07_26/images/training/a/abbey/ADE_train_00000001.jpg": b"jpg"}),
    "/VOCtrainval_03-May-2010.tar": _tar({"VOCdevkit/VOC2010/ImageSets/Main/trainval.txt": b"2008_000002\n"}, "w"),
    "/pascal_context_trainval.tar.gz": _tar({"trainval/2008_000002.mat": b"mat"}),
    "/pascal_part_trainval.tar.gz": _tar({"trainval/Annotations_Part/2008_000002.mat": b"mat"}),
    "/opensurfaces-release-0.zip": _zip({"opensurfaces-release-0/photos.csv": b"photo_id\n11\n"}),
    "/dtd-r1.0.1.tar.gz": _tar({"dtd/labels/labels_joint_anno.txt": b"banded/banded_0001.jpg banded\n"}),
}


def _download(env_mirror, data_dir, timeout=120):
    env = {**os.environ, "MIT_SEMSEG_BRODEN_MIRROR": env_mirror, "PYTHON": sys.executable}
    start = time.monotonic()
    script = data_dir / "download_Broden+.sh"
    result = subprocess.run([str(script), "--no-progress"], capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=data_dir)
    return result, time.monotonic() - start


@pytest.fixture
def checkout(tmp_path):
    """The script in a folder of its own, so that its data/broden/raw lands in tmp_path."""
    shutil.copy(REPO / "download_Broden+.sh", tmp_path)
    return tmp_path


def test_download_script_fetches_and_unpacks_every_source(checkout):
    assert [s.archive for s in STEPS] == [name.lstrip("/") for name in ARCHIVES]
    with serve(ARCHIVES, truncated={"/dtd-r1.0.1.tar.gz"}) as (url, server):
        result, _ = _download(url, checkout)
        assert result.returncode == 1 and "DTD (Describable Textures): download of" in result.stderr
        raw = checkout / "data/broden/raw"
        assert (raw / "ade20k/images/training/a/abbey/ADE_train_00000001.jpg").read_bytes() == b"jpg"
        assert (raw / "voc2010/ImageSets/Main/trainval.txt").read_text() == "2008_000002\n"
        assert (raw / "pascal_context/trainval/2008_000002.mat").is_file()
        assert (raw / "pascal_part/Annotations_Part/2008_000002.mat").is_file()
        assert (raw / "opensurfaces/photos.csv").is_file()
        assert (raw / "downloads/dtd-r1.0.1.tar.gz.part").is_file() and not (raw / "dtd").exists()
        server.truncated.clear()
        server.requests.clear()
        result, _ = _download(url, checkout)
        assert result.returncode == 0, result.stderr
        assert [path for path, _ in server.requests] == ["/dtd-r1.0.1.tar.gz"]  # the rest was skipped
        assert server.requests[0][1].startswith("bytes=")                       # and the part resumed
        assert "Pascal-Context: already in" in result.stdout
    assert (raw / "dtd/labels/labels_joint_anno.txt").is_file()
    assert sorted(p.name for p in raw.iterdir()) == ["ade20k", "downloads", "dtd", "opensurfaces", "pascal_context",
                                                     "pascal_part", "voc2010"]
    assert list((raw / "downloads").iterdir()) == []  # archives are deleted once unpacked


def test_download_refuses_unexpected_and_unsafe_archives(checkout):
    files = dict(ARCHIVES)
    files["/pascal_part_trainval.tar.gz"] = _tar({"../escape.txt": b"x", "trainval/Annotations_Part/a.mat": b"m"})
    files["/opensurfaces-release-0.zip"] = _zip({"something/else.txt": b"x"})
    with serve(files) as (url, _):
        result, _ = _download(url, checkout)
    raw = checkout / "data/broden/raw"
    assert result.returncode == 1
    assert "Pascal-Part: data/broden/raw/downloads/pascal_part_trainval.tar.gz cannot be unpacked " \
           "(OutsideDestinationError" in result.stderr
    assert "OpenSurfaces: data/broden/raw/downloads/opensurfaces-release-0.zip holds no photos.csv" in result.stderr
    assert not (checkout / "data/broden/escape.txt").exists() and not (raw / "opensurfaces").exists()
    assert not list(raw.glob(".unpacking-*")) and (raw / "dtd").is_dir()


def test_download_script_offline_fails_within_seconds(checkout):
    result, seconds = _download(closed_port_url("/"), checkout, timeout=60)
    assert result.returncode == 1 and seconds < 20
    for step in STEPS:
        assert f"error: {step.name}: download of http://127.0.0.1" in result.stderr, step.name


# End to end: prepared fixture -> train.py -> eval_multipro.py ---------------------------------------------------


def test_prepared_fixture_trains_and_evaluates(prepared, tmp_path):
    out, _ = prepared
    opts = ["DIR", str(tmp_path / "ckpt"), "DATASET.root_dataset", str(out), "DATASET.list_train",
            str(out / "training.jsonl"), "DATASET.list_val", str(out / "validation.jsonl"), "MODEL.arch_encoder",
            "resnet18", "MODEL.arch_decoder", "upp_lite", "MODEL.fc_dim", "512", "MODEL.pretrained", "False",
            "DATASET.imgSizes", "(64,)", "DATASET.imgMaxSize", "128", "TRAIN.num_epoch", "1", "TRAIN.epoch_iters", "4",
            "TRAIN.batch_size_per_gpu", "2", "TRAIN.workers", "1", "TRAIN.disp_iter", "1", "VAL.checkpoint",
            "epoch_1.pth"]
    config = str(REPO / "config/broden-resnet50-upp.yaml")
    train = subprocess.run([sys.executable, "train.py", "--cfg", config, "--gpus", "cpu", *opts],
                           capture_output=True, text=True, timeout=600, cwd=REPO)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "ade20k_pascal (" in train.stderr and "os (" in train.stderr
    evaluate = subprocess.run([sys.executable, "eval_multipro.py", "--cfg", config, "--gpus", "cpu", *opts],
                              capture_output=True, text=True, timeout=600, cwd=REPO)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    summary = json.loads((tmp_path / "ckpt/eval_epoch_1.json").read_text())
    assert summary["images"] == 3
    for task in ("object", "material"):
        assert 0 <= summary[task]["mean_iou"] <= 1 and 0 <= summary[task]["pixel_accuracy"] <= 1
    assert 0 <= summary["scene"]["accuracy"] <= 1  # the one ADE20K validation image with a scene
