"""The .odgt tool, the synthetic generator, downloads and the ADE20K script, all offline."""

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from httpserver import closed_port_url, serve

from mit_semseg.data.records import read_odgt
from mit_semseg.hub import DownloadError, download
from mit_semseg.prepare import ade20k, make_odgt
from mit_semseg.synthetic import scenes as synthetic

REPO = Path(__file__).resolve().parents[1]


def _tree(root):
    (root / "img" / "sub").mkdir(parents=True)
    (root / "ann" / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "img" / "a.jpg"), np.zeros((10, 20, 3), np.uint8))
    cv2.imwrite(str(root / "ann" / "a.png"), np.array([[0, 3] * 10] * 10, np.uint8))
    cv2.imwrite(str(root / "img" / "sub" / "b.png"), np.zeros((30, 15, 3), np.uint8))
    cv2.imwrite(str(root / "ann" / "sub" / "b.png"), np.full((30, 15), 7, np.uint8))
    cv2.imwrite(str(root / "img" / "lonely.jpg"), np.zeros((5, 5, 3), np.uint8))
    cv2.imwrite(str(root / "ann" / "orphan.png"), np.zeros((5, 5), np.uint8))
    cv2.imwrite(str(root / "img" / "mismatch.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(root / "ann" / "mismatch.png"), np.zeros((9, 8), np.uint8))


def test_make_odgt_pairs_reports_and_writes(tmp_path, capsys):
    _tree(tmp_path)
    out = tmp_path / "list.odgt"
    assert make_odgt.main([str(tmp_path / "img"), str(tmp_path / "ann"), str(out)]) == 0
    printed = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [
        {"fpath_img": "img/a.jpg", "fpath_segm": "ann/a.png", "width": 20, "height": 10},
        {"fpath_img": "img/sub/b.png", "fpath_segm": "ann/sub/b.png", "width": 15, "height": 30},
    ]
    assert "images without a label (1):" in printed and "lonely.jpg" in printed
    assert "labels without an image (1):" in printed and "orphan.png" in printed
    assert "pairs left out (1):" in printed and "mismatch.png is 8x9 but its image" in printed
    assert "label values found (3 distinct): 0, 3, 7" in printed and "DATASET.num_class 7" in printed
    assert len(read_odgt(out, tmp_path)) == 2


def test_make_odgt_errors(tmp_path, capsys):
    assert make_odgt.main([str(tmp_path / "none"), str(tmp_path), str(tmp_path / "x.odgt")]) == 1
    assert "folder not found" in capsys.readouterr().err
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    assert make_odgt.main([str(tmp_path / "img"), str(tmp_path / "ann"), str(tmp_path / "x.odgt")]) == 1
    assert not (tmp_path / "x.odgt").exists()


def test_synthetic_set_is_deterministic_and_varied(tmp_path):
    a = synthetic.generate(str(tmp_path / "a"), 6, 2, seed=4)
    synthetic.generate(str(tmp_path / "b"), 6, 2, seed=4)
    synthetic.generate(str(tmp_path / "c"), 6, 2, seed=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 * 2 + 2 * 2 + 3
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / "training.odgt").read_text() != (tmp_path / "c" / "training.odgt").read_text()
    records = read_odgt(a["training"], tmp_path / "a")
    assert any(r["height"] > r["width"] for r in records) and any(r["height"] < r["width"] for r in records)
    values = set()
    for r in records:
        label = cv2.imread(r["fpath_segm"], cv2.IMREAD_UNCHANGED)
        assert label.shape == (r["height"], r["width"])
        values.update(np.unique(label).tolist())
    assert 0 in values and max(values) <= synthetic.NUM_CLASS and len(values) >= 6


PAYLOAD = os.urandom(300_000)


def test_download_whole_file(tmp_path):
    with serve({"/w.pth": PAYLOAD}) as (url, _):
        path = download(
            url + "/w.pth", str(tmp_path / "w.pth"), sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False
        )
    assert Path(path).read_bytes() == PAYLOAD and not Path(path + ".part").exists()


def test_download_resumes_a_partial_file(tmp_path):
    dest = tmp_path / "w.pth"
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD[:100_000])
    with serve({"/w.pth": PAYLOAD}) as (url, server):
        download(url + "/w.pth", str(dest), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/w.pth", "bytes=100000-")]


def test_truncated_download_keeps_the_part_for_resuming(tmp_path):
    dest = tmp_path / "w.pth"
    with serve({"/w.pth": PAYLOAD}, truncated={"/w.pth"}) as (url, _):
        with pytest.raises(DownloadError, match=r"truncated|broke off") as err:
            download(url + "/w.pth", str(dest), progress=False)
    assert str(dest) in str(err.value) and not dest.exists()
    assert 0 < (tmp_path / "w.pth.part").stat().st_size < len(PAYLOAD)
    with serve({"/w.pth": PAYLOAD}) as (url, _):
        download(url + "/w.pth", str(dest), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_corrupted_download_is_removed(tmp_path):
    dest = tmp_path / "w.pth"
    with serve({"/w.pth": PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF])}) as (url, _):
        with pytest.raises(DownloadError, match="is corrupt: SHA-256"):
            download(url + "/w.pth", str(dest), sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert not dest.exists() and not (tmp_path / "w.pth.part").exists()


def test_missing_and_offline_downloads_fail_fast(tmp_path):
    with serve({}) as (url, _):
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(url + "/nothing", str(tmp_path / "n"), progress=False)
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"failed .*put it at .*offline.zip"):
        download(closed_port_url(), str(tmp_path / "offline.zip"), progress=False)
    assert time.monotonic() - started < 5


def _ade_zip(tmp_path):
    tree = tmp_path / "src" / "ADEChallengeData2016"
    generated = synthetic.generate(str(tree), 3, 2, seed=1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for p in tree.rglob("*"):
            if p.is_file() and p.suffix in (".jpg", ".png"):
                z.write(p, p.relative_to(tmp_path / "src"))
    return buffer.getvalue(), generated


def test_ade20k_download_unzips_and_writes_lists(tmp_path):
    archive, _ = _ade_zip(tmp_path)
    data = tmp_path / "data"
    with serve({"/ADEChallengeData2016.zip": archive}) as (url, _):
        assert ade20k.main(["--data", str(data), "--url", url + "/ADEChallengeData2016.zip"]) == 0
    training = read_odgt(data / "training.odgt", data)
    validation = read_odgt(data / "validation.odgt", data)
    assert len(training) == 3 and len(validation) == 2
    assert training[0]["fpath_img"] == str(data / "ADEChallengeData2016/images/training/synthetic_training_00000.jpg")


def test_download_script_offline_fails_within_seconds(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "download_ADE20K.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, ADE20K_URL=closed_port_url("/ADEChallengeData2016.zip"), PYTHON=sys.executable),
    )
    assert result.returncode != 0 and time.monotonic() - started < 20
    assert "download of http://127.0.0.1" in result.stderr and "failed" in result.stderr


def test_a_wheel_holds_every_module_and_table():
    """setuptools packs only folders with __init__.py and the package-data globs: every module and table is in one."""
    import tomllib
    from setuptools import find_packages

    packages = set(find_packages(str(REPO), include=["mit_semseg*"]))
    folders = {str(p.parent.relative_to(REPO)).replace(os.sep, ".") for p in (REPO / "mit_semseg").rglob("*.py")}
    assert folders <= packages, folders - packages
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mit_semseg"]
    shipped = {p for g in globs for p in (REPO / "mit_semseg").glob(g)}
    tables = {p for p in (REPO / "mit_semseg" / "data" / "tables").rglob("*") if p.is_file()}
    assert tables and tables <= shipped, tables - shipped
