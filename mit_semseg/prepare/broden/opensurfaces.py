"""OpenSurfaces as the download leaves it: `photos.csv` (the original's photo order), `photos/<id>.jpg`
and `photos-labels/<id>.png`, whose red channel is the substance (opensurfaces_substance_colors.csv),
the raw material label.

The label image is rendered at height 1024, not at the photo's size: as in the original, it is
resized to the photo's prepared size without comparing the two.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...data.imageio import read_image
from ...data.records import DataError
from .opensurfaces_release import PHOTO_LIST, find_dumps
from .raw import MissingSource, RawItem, RawSource, require
from .tables import Assigner, substance_vocabulary

FOLDER = "opensurfaces"


def read(raw: Path) -> RawSource:
    root = require(raw / FOLDER, "OpenSurfaces folder")
    listing = root / PHOTO_LIST
    if not listing.is_file():
        hint = (
            " (its JSON dumps are there: `python -m mit_semseg.prepare.broden download` writes the list, fetches "
            "the photos and renders the labels)"
            if find_dumps(root)
            else ""
        )
        raise MissingSource(f"OpenSurfaces photo list not found: {listing}{hint}")
    with open(listing, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "photo_id" not in rows[0]:
        raise DataError(f"{listing}: no photo_id column")
    items = [
        RawItem(
            "os",
            i,
            f"os/{row['photo_id']}",
            str(root / "photos" / f"{row['photo_id']}.jpg"),
            (str(root / "photos-labels" / f"{row['photo_id']}.png"),),
        )
        for i, row in enumerate(rows)
    ]
    return RawSource(items, {"material": substance_vocabulary()})


def read_labels(item: RawItem, image: np.ndarray, assigner: Assigner) -> tuple[dict[str, np.ndarray], int]:
    """(the material map at the label image's own size, no scene)."""
    path = item.annotations[0]
    return {"material": assigner.labels("os", "material", read_image(path)[..., 0], path)}, -1
