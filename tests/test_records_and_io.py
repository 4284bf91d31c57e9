"""Record lists and image/label reading, including every kind of bad input."""

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from mit_semseg.data.imageio import UnreadableImage, read_image, read_label
from mit_semseg.data.records import DataError, read_odgt, write_odgt


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _record(img="a.jpg", seg="a.png", w=4, h=3):
    return json.dumps({"fpath_img": img, "fpath_segm": seg, "width": w, "height": h})


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"fpath_img": "a.jpg", ', r"line 2: malformed JSON"),
        ('{"fpath_img": "a.jpg", "fpath_segm": "a.png", "width": 4}', r"line 2: missing key 'height'"),
        ('{"fpath_img": "a.jpg", "fpath_segm": "a.png", "width": 0, "height": 3}', r"line 2: width must be a positive"),
        (
            '{"fpath_img": "a.jpg", "fpath_segm": "a.png", "width": 4, "height": -3}',
            r"line 2: height must be a positive",
        ),
        ("[1, 2]", r"line 2: expected a JSON object"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, bad_line, message):
    path = _write_lines(tmp_path / "list.odgt", [_record(), bad_line])
    with pytest.raises(DataError, match=message) as err:
        read_odgt(path, tmp_path, check_files=False)
    assert str(path) in str(err.value)


def test_empty_list_and_missing_list(tmp_path):
    (tmp_path / "empty.odgt").write_text("\n")
    with pytest.raises(DataError, match="empty.odgt: the record list is empty"):
        read_odgt(tmp_path / "empty.odgt")
    with pytest.raises(DataError, match="record list not found: .*nope.odgt"):
        read_odgt(tmp_path / "nope.odgt")


def test_all_missing_files_reported_together(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    path = _write_lines(tmp_path / "list.odgt", [_record(), _record("b.jpg", "b.png"), _record("c.jpg", "a.png")])
    with pytest.raises(DataError, match=r"3 files listed are missing") as err:
        read_odgt(path, tmp_path)
    for name in ("b.jpg", "b.png", "c.jpg"):
        assert str(tmp_path / name) in str(err.value)
    assert len(read_odgt(path, tmp_path, check_files=False)) == 3


def test_paths_relative_to_root_or_absolute(tmp_path):
    absolute = str(tmp_path / "abs.jpg")
    path = _write_lines(tmp_path / "list.odgt", [_record(), _record(absolute, "b.png")])
    records = read_odgt(path, "/data/root", check_files=False)
    assert records[0]["fpath_img"] == "/data/root/a.jpg" and records[1]["fpath_img"] == absolute
    write_odgt(tmp_path / "copy.odgt", [{"fpath_img": "x.jpg", "fpath_segm": "x.png", "width": 2, "height": 1}])
    assert json.loads((tmp_path / "copy.odgt").read_text()) == {
        "fpath_img": "x.jpg",
        "fpath_segm": "x.png",
        "width": 2,
        "height": 1,
    }


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_palette_png(path, indices, colors):
    """An 8-bit indexed-colour PNG, written by hand (OpenCV cannot write one)."""
    h, w = indices.shape
    raw = b"".join(b"\x00" + row.astype(np.uint8).tobytes() for row in indices)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
        + _png_chunk(b"PLTE", bytes(np.asarray(colors, np.uint8).ravel()))
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(png)


def test_every_image_kind_loads_as_rgb(tmp_path):
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], np.uint8)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    assert np.array_equal(read_image(str(tmp_path / "rgb.png")), rgb)

    cv2.imwrite(str(tmp_path / "gray.png"), np.array([[7, 250]], np.uint8))
    assert np.array_equal(read_image(str(tmp_path / "gray.png")), [[[7, 7, 7], [250, 250, 250]]])

    rgba = np.concatenate([rgb[..., ::-1], np.full((1, 2, 1), 128, np.uint8)], 2)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert np.array_equal(read_image(str(tmp_path / "rgba.png")), rgb)

    cv2.imwrite(str(tmp_path / "deep.png"), np.array([[[0, 0, 65535], [257 * 16, 0, 0]]], np.uint16))
    assert np.array_equal(read_image(str(tmp_path / "deep.png")), [[[255, 0, 0], [0, 0, 16]]])

    write_palette_png(tmp_path / "palette.png", np.array([[0, 1], [1, 0]]), [[255, 0, 0], [0, 0, 255]])
    assert np.array_equal(
        read_image(str(tmp_path / "palette.png")), [[[255, 0, 0], [0, 0, 255]], [[0, 0, 255], [255, 0, 0]]]
    )


def test_corrupt_and_missing_images_are_unreadable(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UnreadableImage, match="bad.jpg: unreadable or corrupt"):
        read_image(str(tmp_path / "bad.jpg"))
    with pytest.raises(UnreadableImage, match="missing.jpg: file not found"):
        read_image(str(tmp_path / "missing.jpg"))


def test_bad_labels_name_the_file(tmp_path):
    cv2.imwrite(str(tmp_path / "color.png"), np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(DataError, match=r"label .*color.png has 3 channels"):
        read_label(str(tmp_path / "color.png"), 150)
    cv2.imwrite(str(tmp_path / "high.png"), np.array([[0, 151]], np.uint8))
    with pytest.raises(DataError, match=r"label .*high.png has value 151, above DATASET.num_class \(150\)"):
        read_label(str(tmp_path / "high.png"), 150)
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((3, 4), np.uint8))
    with pytest.raises(DataError, match=r"label .*small.png is 4x3 but its image is 5x3"):
        read_label(str(tmp_path / "small.png"), 150, size=(3, 5))
    cv2.imwrite(str(tmp_path / "ok16.png"), np.array([[0, 300]], np.uint16))
    assert read_label(str(tmp_path / "ok16.png"), 300).tolist() == [[0, 300]]
