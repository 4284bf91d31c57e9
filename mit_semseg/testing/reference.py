"""The original's metric helpers, written again from their definition: references for the tests and baselines for
the benches."""

from __future__ import annotations

import numpy as np


def original_intersection_and_union(pred, label, num_class):
    """Per-class intersection and union by histograms of 1-based classes, as the original's helper computes them."""
    pred, label = np.asarray(pred).copy() + 1, np.asarray(label).copy() + 1
    pred = pred * (label > 0)
    intersection = pred * (pred == label)
    area_i, _ = np.histogram(intersection, bins=num_class, range=(1, num_class))
    area_p, _ = np.histogram(pred, bins=num_class, range=(1, num_class))
    area_l, _ = np.histogram(label, bins=num_class, range=(1, num_class))
    return area_i, area_p + area_l - area_i


def original_accuracy(pred, label):
    """Pixel accuracy over labelled pixels (label >= 0), and their number."""
    valid = label >= 0
    return float((valid * (pred == label)).sum()) / (valid.sum() + 1e-10), valid.sum()
