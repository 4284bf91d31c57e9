"""The original's ADE20K class table and colours ship with the package; other class counts get our palette."""

import csv
from pathlib import Path

import numpy as np
import pytest

from mit_semseg.data.classes import ade20k_class_names, class_colors, colorize, palette

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ade20k"


def test_the_original_table_with_its_statistics():
    from mit_semseg.data.classes import OBJECT150_CSV

    with open(OBJECT150_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["Idx", "Ratio", "Train", "Val", "Stuff", "Name"]
    assert rows[0] == {"Idx": "1", "Ratio": "0.1576", "Train": "11664", "Val": "1172", "Stuff": "1", "Name": "wall"}
    assert all(row["Ratio"] and row["Train"] and row["Val"] and row["Stuff"] in ("0", "1") for row in rows)
    names = ade20k_class_names()
    assert len(names) == 150 and names[:3] == ("wall", "building", "sky") and names[149] == "flag"


def test_150_classes_are_drawn_in_the_original_colours():
    colors = class_colors(150)
    assert colors.shape == (150, 3) and tuple(colors[0]) == (120, 120, 120) and tuple(colors[1]) == (180, 120, 120)
    picture = colorize(np.array([[0, -1], [2, 149]]), colors)
    assert picture.tolist() == [[[120, 120, 120], [0, 0, 0]], [[6, 230, 230], colors[149].tolist()]]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared/reference is not beside this checkout")
def test_shipped_tables_equal_the_reference():
    from mit_semseg.data.classes import COLOR150_CSV, OBJECT150_CSV

    assert OBJECT150_CSV.read_bytes() == (REFERENCE / "object150_info.csv").read_bytes()
    assert COLOR150_CSV.read_bytes() == (REFERENCE / "color150.csv").read_bytes()


def test_other_class_counts_use_the_generated_palette():
    colors = class_colors(8)
    assert np.array_equal(colors, palette(9)[1:])
    assert np.array_equal(colorize(np.array([[0, 7]]), colors)[0], colors[[0, 7]])
    assert np.array_equal(colorize(np.array([[-1, 3]])), palette(256)[[0, 4]][None])
    with pytest.raises(ValueError, match="label 8 has no colour: only 8 classes"):
        colorize(np.array([[8]]), colors)
