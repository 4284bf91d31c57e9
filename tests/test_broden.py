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
from httpserver import closed_port_url, serve

from mit_semseg.data.label_tables import BRODEN_TABLES, read_label_tables
from mit_semseg.data.multitask import read_multitask_records
from mit_semseg.data.records import DataError
from mit_semseg.data.textures import read_texture_records
from mit_semseg.prepare.broden import opensurfaces_release
from mit_semseg.prepare.broden import prepare as broden_prepare
from mit_semseg.prepare.broden.__main__ import main as broden_main
from mit_semseg.prepare.broden.ade20k_full import SCENES, read_scene_list
from mit_semseg.prepare.broden.download import STEPS
from mit_semseg.prepare.broden.pascal import SPELT_OUT, part_name
from mit_semseg.prepare.broden.tables import (
    ASSIGNMENT,
    SPLITS,
    pascal_context_vocabulary,
    read_assignment,
    read_split_lists,
)
from mit_semseg.testing.broden_raw import (
    ADE_OBJECT_NAMES,
    write_ade20k,
    write_dtd,
    write_opensurfaces_release,
    write_pascal,
    write_split_lists,
)

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference" / "broden"
# One worker runs this file (`make test` distributes tests one by one): its module fixtures prepare a Broden+ tree.
pytestmark = pytest.mark.xdist_group("test_broden")
H, W = 700, 1030  # an ADE20K image whose short side is above the limit: 753x512 once prepared
STREET, MISC, ABBEY = (
    16857,
    12289,
    20210,
)  # index entries: ADE_train_00016858 street, ..._00012290 misc, ADE_val_00000001
PHOTO_A, PHOTO_B = (600, 900), (40, 50)  # OpenSurfaces photos 11 and 12, height x width


def _image(seed, h, w):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _jpeg_bytes(image):
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert ok
    return data.tobytes()


def _stripes(h, w, a, b):
    """Raw label a or b in a checker of 7x5 cells: every resize error shows."""
    y, x = np.mgrid[:h, :w]
    return np.where((x // 7 + y // 5) % 2, a, b)


def _nearest(label, w, h):
    """The reference resize (OpenCV's nearest neighbour, the original's): output pixel i is source pixel
    floor(i * H / h), in exact fractions."""
    rows = [int(Fraction(i * label.shape[0], h)) for i in range(h)]
    cols = [int(Fraction(j * label.shape[1], w)) for j in range(w)]
    return label[np.ix_(rows, cols)]


def _ade_street():
    objects = np.full((20, 30), 3)  # abacus: not used (0)
    objects[:10] = 2420  # sky -> 2
    objects[10:, :15] = 312  # building -> 5
    objects[0, :4] = 2  # a raw label without a row in the assignment: 0
    objects[1, :3] = 3500  # beyond the assignment's rows, within the index's names: 0
    parts = np.zeros((20, 30), np.int64)
    parts[12:, :5] = 774  # door -> 8
    parts[12:, 5:8] = 1433  # leg -> 1
    return objects, parts


def _pascal_parts():
    head, foot, wheel = (np.zeros((16, 24), bool) for _ in range(3))
    head[:4, 4:8] = True
    foot[8:11, 4:8] = True
    wheel[14:, 20:22] = True
    front = np.zeros((16, 24), bool)
    front[12:14, 20:] = True
    return (
        [
            {"class": "person", "parts": [("head", head), ("lfoot", foot)]},
            {"class": "car", "parts": [("frontside", front), ("wheel_2", wheel)]},
            {"class": "chair", "parts": []},
        ],
        head,
        foot,
        wheel,
        front,
    )


def _pascal_context():
    context = np.full((16, 24), 284)  # person -> 6
    context[:, :4] = 0  # unlabelled
    context[12:, 20:] = 59  # car -> 13
    context[0, 4:9] = 52  # camel: one of the 52 Pascal-Context classes without a row -> 0
    return context


def _photo(pk, **fields):
    base = {
        "image_orig": f"photos/{pk:04x}.jpg",
        "aspect_ratio": 1.5,
        "scene_category": 1,
        "scene_category_correct": True,
        "scene_category_correct_score": 0.5,
        "special": False,
        "num_vertices": 8,
        "whitebalanced": True,
        "whitebalanced_score": 0.1,
        "fov": 60.0,
        "flickr_user": None,
        "flickr_id": None,
        "license": 1,
    }
    return {"pk": pk, **base, **fields}


def _shape(pk, photo, substance, name, vertices, triangles, num_vertices, **fields):
    return {
        "pk": pk,
        "photo": photo,
        "substance": substance,
        "name": name,
        "vertices": vertices,
        "triangles": triangles,
        "num_vertices": num_vertices,
        "special": False,
        "high_quality": True,
        "planar": True,
        "planar_score": 1.0,
        "bsdf_wd": None,
        "rectified_normal": None,
        **fields,
    }


SQUARE = "0,1,2,0,2,3"  # two triangles over four corners
OPENSURFACES_PHOTOS = [  # in the dump's order; photos.csv keeps 11, 15, 16, 12
    _photo(13, num_vertices=50, scene_category_correct=False),  # wrong scene: left out
    _photo(16, num_vertices=12, scene_category_correct_score=None),  # ties with 12: dump order
    _photo(11, num_vertices=30, scene_category_correct_score=0.9),
    _photo(12, num_vertices=12, scene_category_correct_score=None, aspect_ratio=1.25, scene_category=2),
    _photo(14, num_vertices=40, special=True),  # synthetic: left out
    _photo(15, num_vertices=12, scene_category_correct_score=0.95),
]
OPENSURFACES_SHAPES = [  # photo 11's label is 1536 x 1024, photo 12's 1280 x 1024
    _shape(103, 11, 33, 1, "0,0.5,1,0.5,1,1,0,1", SQUARE, 4, high_quality=False),  # not drawn
    _shape(102, 11, 17, 2, "0.125,0.125,0.5,0.125,0.5,0.5,0.125,0.5", SQUARE, 4),  # carpet over the wood
    _shape(101, 11, 43, 1, "0,0,0.25,0,0,0.375", "0,1,2", 10),  # wood, drawn first
    _shape(104, 11, 33, 1, "0,0,1,0,1,1,0,1", SQUARE, 99, special=True),  # not drawn
    _shape(105, 11, 60, 1, "0.75,0.75,1,0.75,1,1,0.75,1", SQUARE, 4),  # a failed substance: red 0
    _shape(106, 12, 33, 1, "0,0,0.5,0,0.5,1,0,1", SQUARE, 4),  # plastic
    _shape(107, 12, 50, 2, "0.75,0,1,0,1,1,0.75,1", SQUARE, 4),  # chalkboard: not used
]
OPENSURFACES_FILES = {
    "/photos/000b.jpg": _jpeg_bytes(_image(6, *PHOTO_A)),
    "/photos/000c.jpg": _jpeg_bytes(_image(7, *PHOTO_B)),
}


def _opensurfaces_release(raw: Path) -> Path:
    return write_opensurfaces_release(raw, OPENSURFACES_PHOTOS, OPENSURFACES_SHAPES, failed_substances=[(60, "Aaa")])


def write_raw_tree(raw: Path, splits: Path) -> None:
    street_objects, street_parts = _ade_street()
    write_ade20k(
        raw,
        {
            STREET: {
                "folder": "ADE20K_2016_07_26/images/training/s/street",
                "image": _image(1, 20, 30),
                "objects": street_objects,
                "parts": street_parts,
            },
            MISC: {
                "folder": "ADE20K_2016_07_26/images/training/m/misc",
                "image": _image(2, H, W),
                "objects": _stripes(H, W, 1831, 401),
                "parts": None,
            },
            ABBEY: {
                "folder": "ADE20K_2016_07_26/images/validation/a/abbey",
                "image": _image(3, 24, 24),
                "objects": np.full((24, 24), 471),
                "parts": None,
            },
        },
    )
    objects = _pascal_parts()[0]
    write_pascal(
        raw,
        [  # the original lists Pascal-Part's files, sorted: 2008_000001 has none, so is not listed
            {"id": "2008_000001", "image": _image(10, 16, 24), "context": np.full((16, 24), 360), "objects": None},
            {"id": "2008_000002", "image": _image(4, 16, 24), "context": _pascal_context(), "objects": objects},
            {"id": "2008_000003", "image": _image(5, 16, 24), "context": np.full((16, 24), 360), "objects": []},
        ],
    )
    _opensurfaces_release(raw)
    write_dtd(
        raw,
        [
            {
                "name": "banded/banded_0001.jpg",
                "image": _image(8, 40, 40),
                "textures": ["banded", "bumpy"],
                "split": "train",
            },
            {
                "name": "zigzagged/zigzagged_0002.jpg",
                "image": _image(9, 30, 40),
                "textures": ["zigzagged"],
                "split": "test",
            },
            {  # the joint annotation need not list the image's category (its folder) first
                "name": "dotted/dotted_0003.jpg",
                "image": _image(7, 30, 30),
                "textures": ["polka-dotted", "dotted"],
                "split": "val",
            },
        ],
    )
    write_split_lists(
        splits,
        {
            "broden_ade20k_pascal_train.jsonl.gz": [
                {"dataset": "ade20k", "file_index": STREET, "width": 30, "height": 20, "nr_part": 1},
                {"dataset": "pascal", "file_index": 0, "width": 24, "height": 16, "nr_part": 1},
                {"dataset": "ade20k", "file_index": MISC, "width": 753, "height": 512, "nr_part": 0},
            ],
            "broden_ade20k_pascal_val.jsonl.gz": [
                {"dataset": "ade20k", "file_index": ABBEY, "width": 24, "height": 24, "nr_part": 0},
                {"dataset": "pascal", "file_index": 1, "width": 24, "height": 16, "nr_part": 0},
            ],
            "broden_os_train.jsonl.gz": [{"dataset": "os", "file_index": 0, "width": 768, "height": 512}],
            "broden_os_val.jsonl.gz": [{"dataset": "os", "file_index": 3, "width": 50, "height": 40}],
        },
    )


def complete_opensurfaces(raw: Path, splits: Path, files=OPENSURFACES_FILES) -> str:
    """The download's OpenSurfaces step on the unpacked dumps, the photos served on 127.0.0.1."""
    with serve(files) as (url, _), pytest.MonkeyPatch.context() as env:
        env.setenv("MIT_SEMSEG_OPENSURFACES_MIRROR", url)
        return opensurfaces_release.complete(raw / "opensurfaces", splits, progress=False)


def _prepare_cli(raw, out, splits, *extra):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mit_semseg.prepare.broden",
            "prepare",
            str(raw),
            str(out),
            "--splits",
            str(splits),
            "--no-progress",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def raw_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("broden")
    write_raw_tree(root / "raw", root / "splits")
    complete_opensurfaces(root / "raw", root / "splits")
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
    for name in (
        "label_assignment.csv",
        "opensurfaces_substance_colors.csv",
        "texture.csv",
        "pascal_context_labels.txt",
    ):
        assert (BRODEN_TABLES / name).read_bytes() == (REFERENCE / name).read_bytes(), name
    assert gzip.decompress(SCENES.read_bytes()) == (REFERENCE / "scene_categories.txt").read_bytes()
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
    assert set(assignment) == {
        ("ade20k", "object"),
        ("ade20k", "part"),
        ("ade20k", "scene"),
        ("pascal", "object"),
        ("pascal", "part"),
        ("os", "material"),
    }
    with open(BRODEN_TABLES / "opensurfaces_substance_colors.csv", newline="") as f:
        substances = {int(r["red_color"]): r["substance_name"] for r in csv.DictReader(f)}
    materials = {raw: name for (dataset, _, raw, name) in _assignment_rows() if dataset == "os"}
    assert set(materials) == {0, *substances}  # the raw OpenSurfaces label is the red value
    for red, name in substances.items():  # "Carpet/rug" is "carpet;rug", "Plastic - clear" "plastic-clear"
        assert materials[red] == name.lower().replace("/", ";").replace(" - ", "-"), red
    assert len(read_label_tables().textures) == 47 and read_label_tables().textures[0] == "banded"


def test_scene_list_names_every_scene_the_assignment_knows():
    """The ADE challenge's scenes (plus "-s") are the assignment's raw ADE20K scene names, "misc" meaning none."""
    listed = read_scene_list()
    assert len(listed) == 22210 and listed[0] == ("ADE_train_00000001", "airport_terminal")
    assert listed[20210] == ("ADE_val_00000001", "abbey")
    scenes = read_assignment()["ade20k", "scene"].by_name
    assert {f"{scene}-s" for _, scene in listed if scene != "misc"} == set(scenes) - {""}


def test_pascal_context_vocabulary_is_its_459_classes():
    vocabulary = pascal_context_vocabulary()
    assert len(vocabulary) == 460 and vocabulary[2] == "aeroplane" and vocabulary[52] == "camel"
    assigned = read_assignment()["pascal", "object"].by_raw
    assert len([raw for raw in range(1, 460) if raw not in assigned]) == 52  # prepared as 0, as the original


def _assignment_rows():
    with open(ASSIGNMENT, newline="") as f:
        return [(r["dataset"], r["category"], int(r["raw_label"]), r["raw_name"]) for r in csv.DictReader(f)]


def test_split_lists_hold_the_originals_counts():
    counts = {}
    for e in read_split_lists():
        counts[e.dataset, e.split] = counts.get((e.dataset, e.split), 0) + 1
    assert counts == {
        ("ade20k", "training"): 20067,
        ("pascal", "training"): 9015,
        ("ade20k", "validation"): 2143,
        ("pascal", "validation"): 1088,
        ("os", "training"): 17226,
        ("os", "validation"): 1914,
    }


def test_pascal_part_names_collapse_to_the_assignments_names():
    known = read_assignment()["pascal", "part"].by_name
    assert part_name("lfuleg") == "leg" and part_name("rfho") == "hoof" and part_name("engine_3") == "engine"
    assert part_name("hroofside") == "head roof" and part_name("croofside_2") == "coach roof"
    assert part_name("cfrontside_1") == "coach" and part_name("bliplate") == "license plate"
    assert part_name("frontside") == "" and known[""] == 0  # a bare side of a vehicle is not used
    for raw in [
        *SPELT_OUT,
        "body",
        "head",
        "torso",
        "neck",
        "nose",
        "muzzle",
        "tail",
        "beak",
        "saddle",
        "handlebar",
        "stern",
        "cap",
        "pot",
        "plant",
        "screen",
        "hair",
        "mouth",
        "door_1",
        "window_4",
        "headlight_2",
    ]:
        assert part_name(raw) in known, raw


# OpenSurfaces from its release dumps ---------------------------------------------------------------------------


def test_opensurfaces_photo_list_is_the_originals_order(raw_tree):
    root = raw_tree / "raw/opensurfaces"
    with open(root / "photos.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # num_vertices, then the score, descending (a missing score lowest); 16 before 12: their tie keeps the dump's order
    assert [int(r["photo_id"]) for r in rows] == [11, 15, 16, 12]
    assert rows[0]["scene_category_name"] == "kitchen" and rows[3]["scene_category_name"] == "bathroom"
    # only the photos the split lists use (file_index 0 and 3) are fetched and labelled
    assert sorted(p.name for p in (root / "photos").iterdir()) == ["11.jpg", "12.jpg"]
    assert sorted(p.name for p in (root / "photos-labels").iterdir()) == ["11.png", "12.png"]
    assert (root / "photos/11.jpg").read_bytes() == OPENSURFACES_FILES["/photos/000b.jpg"]


def test_opensurfaces_labels_are_rendered_as_the_original(raw_tree):
    """Height 1024, width int(1024 * aspect); (substance, name, scene) colours numbered by name; Pillow's fill."""
    root = raw_tree / "raw/opensurfaces/photos-labels"
    label = cv2.cvtColor(cv2.imread(str(root / "11.png")), cv2.COLOR_BGR2RGB)
    want = np.zeros((1024, 1536, 3), np.uint8)
    want[..., 2] = 2  # kitchen: scenes bathroom 1, kitchen 2
    y, x = np.mgrid[:1024, :1536]
    want[x + y <= 384] = (43, 2, 2)  # wood (43rd substance), Wall (names: Floor 1, Wall 2)
    want[128:513, 192:769] = (3, 1, 2)  # carpet over it: fewer vertices, drawn after
    want[768:, 1152:] = (0, 2, 2)  # a failed substance is not numbered: red 0
    np.testing.assert_array_equal(label, want)
    small = cv2.cvtColor(cv2.imread(str(root / "12.png")), cv2.COLOR_BGR2RGB)
    want = np.zeros((1024, 1280, 3), np.uint8)
    want[..., 2] = 1
    want[:, :641] = (29, 2, 1)  # plastic - opaque
    want[:, 960:] = (5, 1, 1)  # chalkboard
    np.testing.assert_array_equal(small, want)


def test_opensurfaces_substances_must_be_the_shipped_colours(tmp_path):
    root = write_opensurfaces_release(
        tmp_path, OPENSURFACES_PHOTOS, OPENSURFACES_SHAPES, failed_substances=[(60, "Aaa")]
    )
    dump = json.loads((root / "shapes.shapesubstance.json").read_text())
    next(e for e in dump if e["pk"] == 60)["fields"]["fail"] = False  # "Aaa" now takes red 1
    (root / "shapes.shapesubstance.json").write_text(json.dumps(dump))
    write_split_lists(
        tmp_path / "splits",
        {
            "broden_ade20k_pascal_train.jsonl.gz": [],
            "broden_ade20k_pascal_val.jsonl.gz": [],
            "broden_os_val.jsonl.gz": [],
            "broden_os_train.jsonl.gz": [{"dataset": "os", "file_index": 0}],
        },
    )
    with pytest.raises(DataError, match="shapes.shapesubstance.json: its substances give other red values"):
        opensurfaces_release.complete(root, tmp_path / "splits", progress=False)
    assert not (root / "photos-labels").exists()


def test_an_opensurfaces_dump_without_a_field_is_named(tmp_path):
    root = write_opensurfaces_release(
        tmp_path, [{k: v for k, v in OPENSURFACES_PHOTOS[2].items() if k != "aspect_ratio"}], []
    )
    with pytest.raises(DataError, match=r"photos.photo.json: entry pk 11 has no aspect_ratio"):
        opensurfaces_release.complete(root, SPLITS, progress=False)


# Preparation, pixel for pixel ---------------------------------------------------------------------------------


def test_records_follow_the_split_lists(prepared):
    out, stdout = prepared
    train, val = _lines(out / "training.jsonl"), _lines(out / "validation.jsonl")
    assert [(r["dataset"], r["file_index"], r["source"]) for r in train] == [
        ("ade20k", STREET, "ade20k_pascal"),
        ("pascal", 0, "ade20k_pascal"),
        ("ade20k", MISC, "ade20k_pascal"),
        ("os", 0, "os"),
    ]
    assert [(r["dataset"], r["file_index"]) for r in val] == [("ade20k", ABBEY), ("pascal", 1), ("os", 3)]
    assert [r["fpath_img"] for r in train[::2]] == ["ade20k/ADE_train_00016858.jpg", "ade20k/ADE_train_00012290.jpg"]
    assert [(r["width"], r["height"]) for r in train] == [(30, 20), (24, 16), (753, 512), (768, 512)]
    # scenes from the ADE challenge's list, not the index's: street; Pascal has none; "misc" is none
    assert [r["scene"] for r in train[:3]] == [319, -1, -1]
    assert val[0]["scene"] == 91  # abbey -> abbey-s -> church/outdoor
    assert "fpath_part" in train[0] and "fpath_part" in train[1] and "fpath_part" not in train[2]
    assert [r["fpath_img"] for r in (train[1], val[1])] == ["pascal/2008_000002.jpg", "pascal/2008_000003.jpg"]
    assert set(train[3]) == {"fpath_img", "width", "height", "source", "dataset", "file_index", "fpath_material"}
    assert val[2]["fpath_img"] == "os/12.jpg"
    tables = read_label_tables()
    assert len(read_multitask_records(out / "training.jsonl", out, tables)) == 4
    assert "ade20k training              2        0" in stdout and "problems" not in stdout


def test_ade20k_labels_pixel_for_pixel(prepared):
    out, _ = prepared
    objects, parts = (
        _label(out, "ade20k/ADE_train_00016858_object.png"),
        _label(out, "ade20k/ADE_train_00016858_part.png"),
    )
    assert objects.dtype == np.uint16 and parts.dtype == np.uint16 and objects.shape == (20, 30)
    want = np.zeros((20, 30), np.uint16)
    want[:10], want[10:, :15] = 2, 5
    want[0, :4] = want[1, :3] = 0  # raw 2 and 3500: no row in the assignment
    np.testing.assert_array_equal(objects, want)
    want_parts = np.zeros((20, 30), np.uint16)
    want_parts[12:, :5], want_parts[12:, 5:8] = 8, 1
    np.testing.assert_array_equal(parts, want_parts)
    big = _label(out, "ade20k/ADE_train_00012290_object.png")
    assert big.shape == (512, 753)
    np.testing.assert_array_equal(big, _nearest(_stripes(H, W, 6, 13), 753, 512))
    image = cv2.imread(str(out / "ade20k/ADE_train_00012290.jpg"))
    assert image.shape == (512, 753, 3)
    np.testing.assert_array_equal(_label(out, "ade20k/ADE_val_00000001_object.png"), np.full((24, 24), 12))


def test_pascal_labels_pixel_for_pixel(prepared):
    out, _ = prepared
    objects = _label(out, "pascal/2008_000002_object.png")
    want = np.full((16, 24), 6, np.uint16)
    want[:, :4], want[12:, 20:], want[0, 4:9] = 0, 13, 0  # unlabelled, car, camel (no row: not used)
    np.testing.assert_array_equal(objects, want)
    _, head, foot, wheel, front = _pascal_parts()
    want_parts = np.zeros((16, 24), np.uint16)
    want_parts[head], want_parts[foot], want_parts[wheel] = 2, 15, 12  # head, foot ("lfoot"), wheel ("wheel_2")
    want_parts[front & ~wheel] = 0  # "frontside" is not used
    np.testing.assert_array_equal(_label(out, "pascal/2008_000002_part.png"), want_parts)
    np.testing.assert_array_equal(_label(out, "pascal/2008_000003_object.png"), np.full((16, 24), 2))  # sky
    np.testing.assert_array_equal(_label(out, "pascal/2008_000003_part.png"), np.zeros((16, 24)))  # no objects


def test_opensurfaces_labels_pixel_for_pixel(prepared):
    """The 1024-high label resized to the photo's prepared size by nearest neighbour, then the red channel mapped."""
    out, _ = prepared
    material = _label(out, "os/11_material.png")
    assert material.dtype == np.uint8 and material.shape == (512, 768)
    want = np.zeros((512, 768), np.uint8)  # pixel (i, j) is the label's (2i, 2j)
    y, x = np.mgrid[:512, :768]
    want[x + y <= 192] = 25  # wood
    want[64:257, 96:385] = 3  # carpet
    np.testing.assert_array_equal(material, want)
    small = _label(out, "os/12_material.png")  # 40 x 50: the photo is not shrunk, its 1024 x 1280 label is
    want = np.zeros((40, 50), np.uint8)
    want[:, :26] = 17  # plastic where floor(j * 1280 / 50) <= 640; chalkboard is not used
    np.testing.assert_array_equal(small, want)
    assert (out / "os/12.jpg").read_bytes() == OPENSURFACES_FILES["/photos/000c.jpg"]


def test_dtd_textures_stay_in_the_records(prepared):
    out, _ = prepared
    records = _lines(out / "textures.jsonl")
    assert [(r["fpath_img"], r["texture"], r["split"]) for r in records] == [
        ("dtd/banded/banded_0001.jpg", [0, 4], "train"),
        ("dtd/zigzagged/zigzagged_0002.jpg", [46], "test"),
        ("dtd/dotted/dotted_0003.jpg", [30, 10], "val"),
    ]
    assert (records[1]["width"], records[1]["height"]) == (40, 30)


def test_dtd_split_1_becomes_the_texture_stage_lists(prepared):
    """train + val -> texture_training.jsonl, test -> texture_validation.jsonl; the texture is the category (folder),
    whatever order the joint annotation lists it in; the lists read back as texture records."""
    out, _ = prepared
    tables = read_label_tables()
    training, validation = _lines(out / "texture_training.jsonl"), _lines(out / "texture_validation.jsonl")
    assert [(r["fpath_img"], tables.textures[r["texture"]]) for r in training] == [
        ("dtd/banded/banded_0001.jpg", "banded"),
        ("dtd/dotted/dotted_0003.jpg", "dotted"),
    ]
    assert [(r["fpath_img"], r["texture"], r["width"], r["height"]) for r in validation] == [
        ("dtd/zigzagged/zigzagged_0002.jpg", 46, 40, 30)
    ]
    records = read_texture_records(out / "texture_training.jsonl", out, tables.textures)
    assert [r["texture"] for r in records] == [0, 10] and records[1]["fpath_img"] == str(
        out / "dtd/dotted/dotted_0003.jpg"
    )


def test_summary_counts_images_labels_and_unassigned_raw_labels(prepared):
    out, stdout = prepared
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"]["ade20k training"] == {"prepared": 2}
    assert summary["images"]["os validation"] == {"prepared": 1}
    assert summary["labels"]["training"]["object"] == {"2": 1, "5": 1, "6": 2, "13": 2}
    assert summary["labels"]["training"]["part"] == {"1": 1, "2": 1, "8": 1, "12": 1, "15": 1}
    assert summary["labels"]["training"]["material"] == {"3": 1, "25": 1}
    assert summary["unassigned"] == [
        {"dataset": "ade20k", "category": "object", "raw_label": 2, "raw_name": "object 2", "images": 1, "pixels": 4},
        {
            "dataset": "ade20k",
            "category": "object",
            "raw_label": 3500,
            "raw_name": "object 3500",
            "images": 1,
            "pixels": 3,
        },
        {"dataset": "pascal", "category": "object", "raw_label": 52, "raw_name": "camel", "images": 1, "pixels": 5},
    ]
    assert "3 raw labels without a row in label_assignment.csv, prepared as 0" in stdout
    assert "pascal object 52 'camel': 1 images, 5 pixels" in stdout
    assert summary["problems"] == [] and summary["notes"] == []


def test_workers_make_the_same_files_as_one_process(prepared, raw_tree, tmp_path):
    out, _ = prepared
    broden_prepare.prepare(raw_tree / "raw", tmp_path, splits=raw_tree / "splits", workers=1, progress=False)
    made = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert made == sorted(
        p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    for path in made:
        if path.name != "summary.json":
            assert (out / path).read_bytes() == (tmp_path / path).read_bytes(), path


def test_short_side_sizes_are_the_originals_arithmetic():
    short = broden_prepare.Settings()
    assert broden_prepare.target_size(1030, 700, short) == (753, 512)  # round(1030 / 700 * 512)
    assert broden_prepare.target_size(700, 1030, short) == (512, 753)
    assert broden_prepare.target_size(900, 513, short) == (898, 512)  # round(898.245...)
    assert broden_prepare.target_size(3000, 512, short) == (3000, 512)  # the short side is within the limit
    assert broden_prepare.target_size(600, 600, short) == (512, 512)


def test_long_side_limit_and_split_list_size_notes(raw_tree, tmp_path):
    summary = broden_prepare.prepare(
        raw_tree / "raw",
        tmp_path,
        broden_prepare.Settings(512, "long"),
        splits=raw_tree / "splits",
        workers=1,
        progress=False,
    )
    train = _lines(tmp_path / "training.jsonl")
    assert [(r["width"], r["height"]) for r in train[2:]] == [(512, 348), (512, 341)]
    assert summary["notes"] == []  # the split lists' sizes are the short-side rule's: not compared
    with pytest.raises(DataError, match="was prepared with"):
        broden_prepare.prepare(raw_tree / "raw", tmp_path, splits=raw_tree / "splits", workers=1, progress=False)


def test_split_list_sizes_are_kept_within_a_pixel_and_noted_beyond(raw_tree, tmp_path):
    write_split_lists(
        tmp_path / "splits",
        {
            "broden_ade20k_pascal_train.jsonl.gz": [
                {"dataset": "ade20k", "file_index": MISC, "width": 754, "height": 512},
                {"dataset": "pascal", "file_index": 0, "width": 48, "height": 32},
            ],
            "broden_ade20k_pascal_val.jsonl.gz": [],
            "broden_os_train.jsonl.gz": [],
            "broden_os_val.jsonl.gz": [],
        },
    )
    summary = broden_prepare.prepare(
        raw_tree / "raw", tmp_path / "out", splits=tmp_path / "splits", workers=1, progress=False
    )
    assert [(r["width"], r["height"]) for r in _lines(tmp_path / "out/training.jsonl")] == [(754, 512), (24, 16)]
    assert summary["notes"] == [
        f"{raw_tree / 'raw/voc2010/JPEGImages/2008_000002.jpg'}: 24x16, prepared at 24x16, but the split list has 48x32"
    ]
    np.testing.assert_array_equal(
        _label(tmp_path / "out", "ade20k/ADE_train_00012290_object.png"), _nearest(_stripes(H, W, 6, 13), 754, 512)
    )


# Re-running, bad input ------------------------------------------------------------------------------------------


def test_rerun_skips_finished_images_and_redoes_missing_ones(raw_tree, tmp_path):
    out = tmp_path / "out"
    first = broden_prepare.prepare(raw_tree / "raw", out, splits=raw_tree / "splits", workers=1, progress=False)
    assert first["prepared_now"] == 10  # 7 split-list images, 3 DTD
    lists = (out / "training.jsonl").read_bytes()
    again = broden_prepare.prepare(raw_tree / "raw", out, splits=raw_tree / "splits", workers=1, progress=False)
    assert again["prepared_now"] == 0 and (out / "training.jsonl").read_bytes() == lists
    assert again["labels"] == first["labels"] and again["unassigned"] == first["unassigned"]
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
    assert summary["problems"] == [
        "ade20k: left out: reading its .mat files needs scipy: pip install x",
        "pascal: left out: reading its .mat files needs scipy: pip install x",
    ]
    assert set(summary["images"]) == {"os training", "os validation", "dtd textures"}
    assert not (tmp_path / "os/11.jpg.tmp").exists() and (tmp_path / "os/11.jpg").is_file()


def _break(raw: Path, splits: Path) -> None:
    (raw / "voc2010/JPEGImages/2008_000003.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    val_seg = raw / "ade20k/images/validation/a/abbey/ADE_val_00000001_seg.png"
    rgb = cv2.imread(str(val_seg))
    rgb[0, 0] = (0, 2, 150)  # BGR: class 15 * 256 + 2 = 3842, beyond the index's 3688 object names
    cv2.imwrite(str(val_seg), rgb)
    label = raw / "opensurfaces/photos-labels/12.png"
    cv2.imwrite(str(label), np.full((1024, 1280, 3), 46, np.uint8))  # red 46: no such substance
    shutil.rmtree(raw / "dtd")
    with gzip.open(splits / "broden_os_val.jsonl.gz", "at") as f:
        f.write(json.dumps({"dataset": "os", "file_index": 99, "width": 50, "height": 40}) + "\n")


def test_bad_input_is_named_and_the_rest_goes_on(raw_tree, tmp_path):
    raw, splits = tmp_path / "raw", tmp_path / "splits"
    shutil.copytree(raw_tree / "raw", raw)
    shutil.copytree(raw_tree / "splits", splits)
    _break(raw, splits)
    result = _prepare_cli(raw, tmp_path / "out", splits)
    assert (
        result.returncode == 1 and "error: 5 problems left images or sources out (4 images prepared)" in result.stderr
    ), result.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    problems = "\n".join(summary["problems"])
    assert f"dtd: left out: DTD folder not found: {raw / 'dtd'}" in problems
    assert f"cannot read image {raw / 'voc2010/JPEGImages/2008_000003.jpg'}: unreadable or corrupt" in problems
    assert (
        f"{raw / 'ade20k/images/validation/a/abbey/ADE_val_00000001_seg.png'}: raw object label 3842 is outside "
        f"ade20k's {ADE_OBJECT_NAMES} object labels" in problems
    )
    assert (
        f"{raw / 'opensurfaces/photos-labels/12.png'}: raw material label 46 is outside os's 45 material labels"
        in problems
    )
    assert "os: 1 split-list entries (file_index 99..99) are beyond the 4 images of the raw dataset" in problems
    assert len(summary["problems"]) == 5
    assert "5 problems (left out):" in result.stdout and "raw object label 3842" in result.stdout
    kept = [(r["dataset"], r["file_index"]) for r in _lines(tmp_path / "out/training.jsonl")]
    assert kept == [("ade20k", STREET), ("pascal", 0), ("ade20k", MISC), ("os", 0)]
    assert not (tmp_path / "out/validation.jsonl").exists() and not (tmp_path / "out/textures.jsonl").exists()
    assert not list((tmp_path / "out").rglob("*.tmp")) and not (tmp_path / "out/os/12_material.png").exists()


def test_a_scene_list_that_does_not_match_the_index_names_the_line(raw_tree, tmp_path):
    raw = tmp_path / "raw"
    write_ade20k(raw, {}, renamed={4: "ADE_train_00000099.jpg"})
    summary = broden_prepare.prepare(raw, tmp_path / "out", splits=raw_tree / "splits", workers=1, progress=False)
    assert summary["problems"][0] == (
        f"ade20k: left out: {SCENES}, line 5: ADE_train_00000005 is not entry 5 of "
        f"{raw / 'ade20k/index_ade20k.mat'} (ADE_train_00000099.jpg)"
    )


def test_unknown_pascal_part_and_missing_folders(raw_tree, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(raw_tree / "raw", raw)
    objects = _pascal_parts()[0]
    objects[0]["parts"].append(("tentacle", np.ones((16, 24), bool)))
    write_pascal(
        raw, [{"id": "2008_000002", "image": _image(4, 16, 24), "context": _pascal_context(), "objects": objects}]
    )
    summary = broden_prepare.prepare(raw, tmp_path / "out", splits=raw_tree / "splits", workers=1, progress=False)
    assert any("2008_000002.mat: unknown raw part 'tentacle'" in p for p in summary["problems"])
    assert summary["images"]["pascal training"] == {"skipped": 1}
    shutil.rmtree(raw / "pascal_part")
    summary = broden_prepare.prepare(raw, tmp_path / "out", splits=raw_tree / "splits", workers=1, progress=False)
    assert (
        f"pascal: left out: Pascal-Part folder not found: {raw / 'pascal_part/Annotations_Part'}" in summary["problems"]
    )
    assert broden_main(["prepare", str(tmp_path / "nothing"), str(tmp_path / "o2"), "--no-progress"]) == 1


def test_opensurfaces_dumps_without_the_download_step_say_what_to_run(tmp_path, raw_tree):
    root = _opensurfaces_release(tmp_path / "raw")
    nested = root / "opensurfaces"  # where the original's script finds them too
    nested.mkdir()
    for dump in root.glob("*.json"):
        dump.rename(nested / dump.name)
    summary = broden_prepare.prepare(
        tmp_path / "raw", tmp_path / "out", splits=raw_tree / "splits", workers=1, progress=False
    )
    assert any(
        p.startswith(
            f"os: left out: OpenSurfaces photo list not found: {root}/photos.csv (its JSON dumps "
            "are there: `python -m mit_semseg.prepare.broden download`"
        )
        for p in summary["problems"]
    )
    complete_opensurfaces(tmp_path / "raw", raw_tree / "splits")
    assert (root / "photos.csv").read_bytes() == (raw_tree / "raw/opensurfaces/photos.csv").read_bytes()
    assert (root / "photos-labels/11.png").read_bytes() == (
        raw_tree / "raw/opensurfaces/photos-labels/11.png"
    ).read_bytes()


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


def _opensurfaces_zip(tmp: Path) -> bytes:
    root = _opensurfaces_release(tmp)
    return _zip({f"opensurfaces/{p.name}": p.read_bytes() for p in root.iterdir()})


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """The six archives, shaped like the real ones, and OpenSurfaces' photos, as served."""
    return {
        "/ADE20K_2016_07_26.zip": _zip(
            {
                "ADE20K_2016_07_26/index_ade20k.mat": b"index",
                "ADE20K_2016_07_26/images/training/a/abbey/ADE_train_00000001.jpg": b"jpg",
            }
        ),
        "/VOCtrainval_03-May-2010.tar": _tar({"VOCdevkit/VOC2010/ImageSets/Main/trainval.txt": b"2008_000002\n"}, "w"),
        "/pascal_context_trainval.tar.gz": _tar({"trainval/2008_000002.mat": b"mat", "labels.txt": b"1: accordion\n"}),
        "/pascal_part_trainval.tar.gz": _tar({"trainval/Annotations_Part/2008_000002.mat": b"mat"}),
        "/opensurfaces-release-0.zip": _opensurfaces_zip(tmp_path_factory.mktemp("release")),
        "/dtd-r1.0.1.tar.gz": _tar({"dtd/labels/labels_joint_anno.txt": b"banded/banded_0001.jpg banded\n"}),
        **OPENSURFACES_FILES,
    }


def _download(archive_mirror, data_dir, photo_mirror=None, timeout=120):
    env = {
        **os.environ,
        "MIT_SEMSEG_BRODEN_MIRROR": archive_mirror,
        "PYTHON": sys.executable,
        "MIT_SEMSEG_OPENSURFACES_MIRROR": photo_mirror or archive_mirror,
    }
    start = time.monotonic()
    script = data_dir / "download_Broden+.sh"
    result = subprocess.run(
        [str(script), "--no-progress", "--splits", str(data_dir / "splits")],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=data_dir,
    )
    return result, time.monotonic() - start


@pytest.fixture
def checkout(tmp_path, raw_tree):
    """The script in a folder of its own, so that its data/broden/raw lands in tmp_path; the fixture's split lists."""
    shutil.copy(REPO / "download_Broden+.sh", tmp_path)
    shutil.copytree(raw_tree / "splits", tmp_path / "splits")
    return tmp_path


def test_download_script_fetches_and_unpacks_every_source(checkout, archives):
    assert [s.archive for s in STEPS] == [name.lstrip("/") for name in list(archives)[:6]]
    with serve(archives, truncated={"/dtd-r1.0.1.tar.gz"}) as (url, server):
        result, _ = _download(url, checkout)
        assert result.returncode == 1 and "DTD (Describable Textures): download of" in result.stderr
        raw = checkout / "data/broden/raw"
        assert (raw / "ade20k/images/training/a/abbey/ADE_train_00000001.jpg").read_bytes() == b"jpg"
        assert (raw / "voc2010/ImageSets/Main/trainval.txt").read_text() == "2008_000002\n"
        assert (raw / "pascal_context/trainval/2008_000002.mat").is_file()
        assert (raw / "pascal_part/Annotations_Part/2008_000002.mat").is_file()
        assert (raw / "opensurfaces/photos.photo.json").is_file() and (raw / "opensurfaces/photos.csv").is_file()
        assert (raw / "opensurfaces/photos-labels/11.png").is_file()
        assert (raw / "opensurfaces/photos/12.jpg").read_bytes() == OPENSURFACES_FILES["/photos/000c.jpg"]
        assert "OpenSurfaces: 4 photos listed" in result.stdout
        assert (raw / "downloads/dtd-r1.0.1.tar.gz.part").is_file() and not (raw / "dtd").exists()
        server.truncated.clear()
        server.requests.clear()
        result, _ = _download(url, checkout)
        assert result.returncode == 0, result.stderr
        assert [path for path, _ in server.requests] == ["/dtd-r1.0.1.tar.gz"]  # the rest was skipped
        assert server.requests[0][1].startswith("bytes=")  # and the part resumed
        assert "Pascal-Context: already in" in result.stdout
    assert (raw / "dtd/labels/labels_joint_anno.txt").is_file()
    assert sorted(p.name for p in raw.iterdir()) == [
        "ade20k",
        "downloads",
        "dtd",
        "opensurfaces",
        "pascal_context",
        "pascal_part",
        "voc2010",
    ]
    assert list((raw / "downloads").iterdir()) == []  # archives are deleted once unpacked


def test_opensurfaces_photos_offline_missing_and_resumed(checkout, archives):
    """An unreachable photo host fails within seconds, naming it; a missing photo is named; a rerun fetches the rest."""
    with serve({"/opensurfaces-release-0.zip": archives["/opensurfaces-release-0.zip"]}) as (url, _):
        result, seconds = _download(url, checkout, photo_mirror=closed_port_url("/"))
    raw = checkout / "data/broden/raw/opensurfaces"
    assert result.returncode == 1 and seconds < 30
    assert (
        "error: OpenSurfaces: 1 problems with the 2 photos the split lists use (run again to retry):" in result.stderr
    )
    assert (
        "cannot reach the photos' host http://127.0.0.1:" in result.stderr and "2 photos not fetched" in result.stderr
    )
    assert (raw / "photos.csv").is_file() and (raw / "photos-labels/12.png").is_file()  # labels need no photo
    with serve({"/photos/000b.jpg": archives["/photos/000b.jpg"]}) as (url, server):
        result, _ = _download(closed_port_url("/"), checkout, photo_mirror=url)
        assert result.returncode == 1
        assert f"photo 12: download of {url}/photos/000c.jpg failed: HTTP 404" in result.stderr
        assert (raw / "photos/11.jpg").is_file() and not (raw / "photos/12.jpg").exists()
    with serve(OPENSURFACES_FILES) as (url, server):
        _download(closed_port_url("/"), checkout, photo_mirror=url)
        assert [path for path, _ in server.requests] == ["/photos/000c.jpg"]
    assert (raw / "photos/12.jpg").read_bytes() == OPENSURFACES_FILES["/photos/000c.jpg"]


def test_download_refuses_unexpected_and_unsafe_archives(checkout, archives):
    files = dict(archives)
    files["/pascal_part_trainval.tar.gz"] = _tar({"../escape.txt": b"x", "trainval/Annotations_Part/a.mat": b"m"})
    files["/opensurfaces-release-0.zip"] = _zip({"something/else.txt": b"x"})
    with serve(files) as (url, _):
        result, _ = _download(url, checkout)
    raw = checkout / "data/broden/raw"
    assert result.returncode == 1
    assert (
        "Pascal-Part: data/broden/raw/downloads/pascal_part_trainval.tar.gz cannot be unpacked "
        "(OutsideDestinationError" in result.stderr
    )
    assert (
        "OpenSurfaces: data/broden/raw/downloads/opensurfaces-release-0.zip holds no photos.photo.json" in result.stderr
    )
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
    opts = [
        "DIR",
        str(tmp_path / "ckpt"),
        "DATASET.root_dataset",
        str(out),
        "DATASET.list_train",
        str(out / "training.jsonl"),
        "DATASET.list_val",
        str(out / "validation.jsonl"),
        "MODEL.arch_encoder",
        "resnet18",
        "MODEL.arch_decoder",
        "upp_lite",
        "MODEL.fc_dim",
        "512",
        "MODEL.pretrained",
        "False",
        "DATASET.imgSizes",
        "(64,)",
        "DATASET.imgMaxSize",
        "128",
        "TRAIN.num_epoch",
        "1",
        "TRAIN.epoch_iters",
        "4",
        "TRAIN.batch_size_per_gpu",
        "2",
        "TRAIN.workers",
        "1",
        "TRAIN.disp_iter",
        "1",
        "VAL.checkpoint",
        "epoch_1.pth",
    ]
    config = str(REPO / "config/broden-resnet50-upp.yaml")
    train = subprocess.run(
        [sys.executable, "train.py", "--cfg", config, "--gpus", "cpu", *opts],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "ade20k_pascal (" in train.stderr and "os (" in train.stderr
    evaluate = subprocess.run(
        [sys.executable, "eval_multipro.py", "--cfg", config, "--gpus", "cpu", *opts],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    summary = json.loads((tmp_path / "ckpt/eval_epoch_1.json").read_text())
    assert summary["images"] == 3
    for task in ("object", "material"):
        assert 0 <= summary[task]["mean_iou"] <= 1 and 0 <= summary[task]["pixel_accuracy"] <= 1
    assert 0 <= summary["scene"]["accuracy"] <= 1  # the one ADE20K validation image with a scene
