"""TRAIN.class_weights: one loss weight per class, read from a file or balanced by median frequency."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable

import numpy as np
import torch

from .imageio import read_label
from .records import DataError, read_odgt, write_json

MEDIAN_FREQUENCY = "median_frequency"
CACHE = "class_weights.json"  # in DIR: the median-frequency weights and what they were counted from

log = logging.getLogger("mit_semseg")


def median_frequency_weights(label_paths: Iterable[str], num_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen and Fergus's median frequency balancing: w_c = median(f) / f_c, f_c = the pixels of class c over the
    labelled pixels of the images that hold c (labels 1..num_class, 0 unlabelled). A class no image holds gets 0.
    Returns (weights, pixels per class)."""
    pixels = np.zeros(num_class, np.int64)
    seen_with = np.zeros(num_class, np.int64)  # labelled pixels of the images holding each class
    for path in label_paths:
        counts = np.bincount(read_label(path, num_class).ravel(), minlength=num_class + 1)[1:]
        pixels += counts
        seen_with[counts > 0] += counts.sum()
    present = pixels > 0
    if not present.any():
        raise DataError("TRAIN.class_weights median_frequency: the training labels hold no labelled pixel")
    frequency = pixels[present] / seen_with[present]
    weights = np.zeros(num_class)
    weights[present] = np.median(frequency) / frequency
    return weights, pixels


def read_weights_file(path: str, num_class: int) -> np.ndarray:
    """Weights in class order from a text file (numbers separated by spaces, commas or lines; `#` starts a comment),
    a JSON list, or a JSON object with "weights" (as DIR/class_weights.json)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise DataError(f"TRAIN.class_weights: cannot read {path}: {err.strerror or err}") from err
    try:
        if path.endswith(".json"):
            value = json.loads(text)
            numbers = value["weights"] if isinstance(value, dict) else value
        else:
            numbers = [float(n) for n in re.split(r"[\s,]+", re.sub(r"#[^\n]*", "", text)) if n]
        weights = np.asarray(numbers, np.float64)
    except (ValueError, TypeError, KeyError) as err:
        raise DataError(f"TRAIN.class_weights {path}: not a list of numbers ({err})") from err
    if weights.shape != (num_class,):
        raise DataError(f"TRAIN.class_weights {path}: {weights.size} weights for DATASET.num_class {num_class}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise DataError(f"TRAIN.class_weights {path}: weights must be finite and 0 or more, got {weights.tolist()}")
    return weights


def _list_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _median_frequency_cached(cfg) -> np.ndarray:
    """The median-frequency weights of DATASET.list_train, from DIR/class_weights.json while it was counted from
    the same list (its bytes), root and number of classes; else counted now and written there."""
    data = cfg.DATASET
    source = {"list_train": data.list_train, "sha256": _list_digest(data.list_train), "root": data.root_dataset}
    cache = os.path.join(cfg.DIR, CACHE)
    try:
        with open(cache, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("source") == source and len(cached.get("weights", ())) == data.num_class:
            return np.asarray(cached["weights"], np.float64)
    except (OSError, ValueError):
        pass
    records = read_odgt(data.list_train, data.root_dataset, check_files=False)
    log.info("TRAIN.class_weights median_frequency: counting the classes of %d training labels", len(records))
    weights, pixels = median_frequency_weights((r["fpath_segm"] for r in records), data.num_class)
    os.makedirs(cfg.DIR, exist_ok=True)
    write_json(
        cache, {"method": MEDIAN_FREQUENCY, "source": source, "weights": weights.tolist(), "pixels": pixels.tolist()}
    )
    absent = int((pixels == 0).sum())
    log.info(
        "class weights %.3g..%.3g written to %s%s",
        weights[pixels > 0].min(),
        weights.max(),
        cache,
        f" ({absent} classes absent: weight 0)" if absent else "",
    )
    return weights


def class_weights(cfg) -> torch.Tensor | None:
    """TRAIN.class_weights as a float tensor of DATASET.num_class weights; None when unset."""
    setting = cfg.TRAIN.class_weights
    if not setting:
        return None
    if setting == MEDIAN_FREQUENCY:
        weights = _median_frequency_cached(cfg)
    else:
        weights = read_weights_file(setting, cfg.DATASET.num_class)
    return torch.tensor(weights, dtype=torch.float32)
