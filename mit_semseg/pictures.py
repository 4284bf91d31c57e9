"""Pictures of predictions for people: panels side by side, each coloured map with a legend of its classes.

Evaluation (`VAL.visualize`) and `test.py` both draw with these.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np

from .data.classes import colorize

LEGEND_ROW = 18  # pixels per legend line
LEGEND_LIMIT = 12  # classes listed at most, the largest first
MIN_SHARE = 0.001  # a class covering less of the map is not listed
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.42


class ClassMap(NamedTuple):
    """One head's answer for people: 0-based classes (-1: none) with their names and colours."""

    labels: np.ndarray
    names: Sequence[str]
    colors: np.ndarray


def shares(labels: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """(class, share of the map) of the classes covering more than 0.1% of `labels`, largest first (ties: lower
    class first); negative labels (unlabelled) count in the map's size but are not a class."""
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=num_classes)
    order = np.argsort(-counts, kind="stable")
    return [(int(c), counts[c] / labels.size) for c in order if counts[c] / labels.size > MIN_SHARE]


def legend(labels: np.ndarray, names: Sequence[str], colors: np.ndarray, width: int) -> np.ndarray:
    """A white panel `width` wide listing the 0-based classes present in `labels`, largest first (at most
    LEGEND_LIMIT): a swatch of each one's colour, its name and share (no class: one empty line)."""
    entries = shares(labels, len(names))[:LEGEND_LIMIT]
    panel = np.full((LEGEND_ROW * max(1, len(entries)) + 4, width, 3), 255, np.uint8)
    for row, (c, share) in enumerate(entries):
        top = 2 + row * LEGEND_ROW
        panel[top + 2 : top + LEGEND_ROW - 2, 2 : 2 + LEGEND_ROW - 4] = colors[c]
        text = f"{names[c]} {100 * share:.0f}%"
        cv2.putText(panel, text, (LEGEND_ROW + 2, top + LEGEND_ROW - 5), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def labelled(labels: np.ndarray, names: Sequence[str], colors: np.ndarray) -> np.ndarray:
    """The 0-based class map in `colors`, with its legend below."""
    picture = colorize(labels, colors)
    return np.concatenate([picture, legend(labels, names, colors, picture.shape[1])], axis=0)


def overlay(image: np.ndarray, classes: ClassMap, opacity: float = 0.5) -> np.ndarray:
    """The RGB photo with each labelled pixel's class colour over it at `opacity`."""
    painted = image.astype(np.float32)
    inside = classes.labels >= 0
    colors = np.asarray(classes.colors, np.float32)
    painted[inside] = (1 - opacity) * painted[inside] + opacity * colors[classes.labels[inside]]
    return painted.round().astype(np.uint8)


def side_by_side(panels: Sequence[np.ndarray]) -> np.ndarray:
    """RGB panels left to right, aligned at the top; shorter ones are padded with white below."""
    height = max(p.shape[0] for p in panels)
    padded = [
        np.concatenate([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) if p.shape[0] < height else p
        for p in panels
    ]
    return np.concatenate(padded, axis=1).astype(np.uint8)


def with_title(image: np.ndarray, title: str) -> np.ndarray:
    """A copy of the image with `title` written at its top left, white on a black outline."""
    picture = image.copy()
    cv2.putText(picture, title, (4, 16), FONT, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, title, (4, 16), FONT, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def write_picture(path: str, panels: Sequence[np.ndarray]) -> None:
    """The panels side by side, as an RGB PNG at `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(side_by_side(panels), cv2.COLOR_RGB2BGR))
