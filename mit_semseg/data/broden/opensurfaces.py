"""OpenSurfaces (opensurfaces-release-0): `photos.csv`, `photos/<id>.jpg`, and `photos-labels/<id>.png`
whose red channel is the substance (opensurfaces_substance_colors.csv), the raw material label."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..imageio import read_image
from ..records import DataError
from .raw import RawItem, assign, check_size, require

FOLDER = "opensurfaces"


def items(raw: Path) -> list[RawItem]:
    root = require(raw / FOLDER, "OpenSurfaces folder")
    listing = require(root / "photos.csv", "OpenSurfaces photo list")
    with open(listing, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "photo_id" not in rows[0]:
        raise DataError(f"{listing}: no photo_id column")
    return [RawItem("os", i, f"os/{row['photo_id']}", str(root / "photos" / f"{row['photo_id']}.jpg"),
                    (str(root / "photos-labels" / f"{row['photo_id']}.png"),)) for i, row in enumerate(rows)]


def read_labels(item: RawItem, image: np.ndarray, assignment: dict) -> tuple[dict[str, np.ndarray], int]:
    """(the material map, no scene)."""
    path = item.annotations[0]
    label = read_image(path)
    check_size(label, image, path)
    return {"material": assign(assignment["os", "material"].table, label[..., 0], path, "material")}, -1
