"""Pascal VOC 2010 images, Pascal-Context objects (`LabelMap`) and Pascal-Part parts (`anno`).

The images are those of Pascal-Part's annotations, in the sorted order of their file names, as the
original lists them: the split lists' `file_index` counts in it.

Pascal-Context's raw labels are its 459 classes (`labels.txt`, shipped with the package).
Pascal-Part's abbreviated part names are spelt out and their adjectives dropped ("lfuleg", left
front upper leg, is a "leg"; "hroofside" of a train is a "head roof"), the names
label_assignment.csv lists.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .raw import RawItem, RawSource, check_size, load_mat, require
from .tables import Assigner, pascal_context_vocabulary

VOC, CONTEXT, PART = "voc2010", "pascal_context", "pascal_part"
ADJECTIVES = frozenset({"left", "right", "front", "back", "upper", "lower", "side"})
SPELT_OUT = {
    "lwing": "left wing",
    "rwing": "right wing",
    "fwheel": "front wheel",
    "bwheel": "back wheel",
    "chainwheel": "chain wheel",
    "leye": "left eye",
    "reye": "right eye",
    "lear": "left ear",
    "rear": "right ear",
    "lebrow": "left eyebrow",
    "rebrow": "right eyebrow",
    "lhorn": "left horn",
    "rhorn": "right horn",
    "lleg": "left leg",
    "rleg": "right leg",
    "lfoot": "left foot",
    "rfoot": "right foot",
    "lhand": "left hand",
    "rhand": "right hand",
    "llarm": "left lower arm",
    "luarm": "left upper arm",
    "rlarm": "right lower arm",
    "ruarm": "right upper arm",
    "llleg": "left lower leg",
    "luleg": "left upper leg",
    "rlleg": "right lower leg",
    "ruleg": "right upper leg",
    "lfleg": "left front leg",
    "rfleg": "right front leg",
    "lbleg": "left back leg",
    "rbleg": "right back leg",
    "lfpa": "left front paw",
    "rfpa": "right front paw",
    "lbpa": "left back paw",
    "rbpa": "right back paw",
    "lfuleg": "left front upper leg",
    "lflleg": "left front lower leg",
    "rfuleg": "right front upper leg",
    "rflleg": "right front lower leg",
    "lbuleg": "left back upper leg",
    "lblleg": "left back lower leg",
    "rbuleg": "right back upper leg",
    "rblleg": "right back lower leg",
    "lfho": "left front hoof",
    "rfho": "right front hoof",
    "lbho": "left back hoof",
    "rbho": "right back hoof",
    "frontside": "front side",
    "backside": "back side",
    "leftside": "left side",
    "rightside": "right side",
    "roofside": "roof side",
    "leftmirror": "left mirror",
    "rightmirror": "right mirror",
    "fliplate": "front license plate",
    "bliplate": "back license plate",
    "hfrontside": "head front side",
    "hbackside": "head back side",
    "hleftside": "head left side",
    "hrightside": "head right side",
    "hroofside": "head roof side",
    "cfrontside": "coach front side",
    "cbackside": "coach back side",
    "cleftside": "coach left side",
    "crightside": "coach right side",
    "croofside": "coach roof side",
}


def part_name(raw: str) -> str:
    """A Pascal-Part part name (`engine_2`, `lfuleg`) spelt out, numbered copies merged, adjectives dropped."""
    words = SPELT_OUT.get(re.sub(r"_\d+$", "", raw), re.sub(r"_\d+$", "", raw)).split()
    return " ".join(w for w in words if w not in ADJECTIVES)


def read(raw: Path) -> RawSource:
    voc = require(raw / VOC, "Pascal VOC 2010 folder")
    context = require(raw / CONTEXT / "trainval", "Pascal-Context folder")
    part = require(raw / PART / "Annotations_Part", "Pascal-Part folder")
    ids = sorted(p.stem for p in part.iterdir() if p.suffix == ".mat")
    items = [
        RawItem(
            "pascal",
            i,
            f"pascal/{name}",
            str(voc / "JPEGImages" / f"{name}.jpg"),
            (str(context / f"{name}.mat"), str(part / f"{name}.mat")),
        )
        for i, name in enumerate(ids)
    ]
    return RawSource(items, {"object": pascal_context_vocabulary()})


def _parts(path: str, image: np.ndarray, assigner: Assigner) -> np.ndarray:
    anno = load_mat(path, "anno")
    parts = np.zeros(image.shape[:2], np.uint16)
    for obj in np.atleast_1d(getattr(anno, "objects", [])):
        for part in np.atleast_1d(getattr(obj, "parts", [])):
            if not hasattr(part, "part_name"):
                continue
            label = assigner.named("pascal", "part", part_name(str(part.part_name)), path)
            mask = np.asarray(part.mask)
            check_size(mask, image, f"{path}: the mask of {part.part_name!r}")
            parts[mask > 0] = label
    return parts


def read_labels(item: RawItem, image: np.ndarray, assigner: Assigner) -> tuple[dict[str, np.ndarray], int]:
    """(object map from Pascal-Context, part map from Pascal-Part, no scene)."""
    context, part = item.annotations
    labels = np.asarray(load_mat(context, "LabelMap"))
    check_size(labels, image, context)
    return {"object": assigner.labels("pascal", "object", labels, context), "part": _parts(part, image, assigner)}, -1
