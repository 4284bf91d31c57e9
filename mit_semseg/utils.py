"""The original's metric helpers, with their names and meaning, for scripts that import them."""

from __future__ import annotations

import numpy as np


def accuracy(preds: np.ndarray, label: np.ndarray):
    """(pixel accuracy over labelled pixels, number of labelled pixels); label < 0 is unlabelled."""
    valid = label >= 0
    acc_sum = (valid * (preds == label)).sum()
    valid_sum = valid.sum()
    return float(acc_sum) / (valid_sum + 1e-10), valid_sum


def intersectionAndUnion(imPred: np.ndarray, imLab: np.ndarray, numClass: int):
    """Per-class (intersection, union) pixel counts for 0-based maps; unlabelled (-1) pixels are ignored.

    Classes 0..numClass-1 are counted; predictions on unlabelled pixels are not.
    """
    pred = np.asarray(imPred).astype(np.int64) + 1
    lab = np.asarray(imLab).astype(np.int64) + 1
    pred = pred * (lab > 0)
    bins = max(int(numClass), 1)

    def counts(values: np.ndarray) -> np.ndarray:
        values = values[(values >= 1) & (values <= bins)]
        return np.bincount(values - 1, minlength=bins).astype(np.int64)

    area_intersection = counts(pred[pred == lab])
    area_pred, area_lab = counts(pred), counts(lab)
    return area_intersection, area_pred + area_lab - area_intersection
