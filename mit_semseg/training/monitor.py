"""What a person watches: a log file, a PNG plot of loss and accuracy, optional TensorBoard events."""

from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

log = logging.getLogger("mit_semseg")


def setup_logging(directory: str | None, filename: str = "train.log") -> None:
    """Log to the console and, when `directory` is given, to a file in it."""
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if directory:
        to_file = logging.FileHandler(os.path.join(directory, filename))
        to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(to_file)


def _panel(xs: list[float], ys: list[float], title: str, width: int = 560, height: int = 360) -> np.ndarray:
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, 20, 40, 50
    cv2.putText(canvas, title, (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    if not xs:
        return canvas
    x0, x1 = 0.0, max(max(xs), 1e-9)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    sx = lambda x: int(left + (x - x0) / (x1 - x0) * (width - left - right))
    sy = lambda y: int(height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))
    for k in range(5):
        value = y0 + (y1 - y0) * k / 4
        cv2.putText(
            canvas, f"{value:.3g}", (5, sy(value) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (80, 80, 80), 1, cv2.LINE_AA
        )
        epoch = x0 + (x1 - x0) * k / 4
        cv2.putText(
            canvas,
            f"{epoch:.2g}",
            (sx(epoch) - 10, height - bottom + 18),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (80, 80, 80),
            1,
            cv2.LINE_AA,
        )
    cv2.putText(
        canvas, "epoch", (width // 2 - 20, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
    )
    points = np.array([[sx(x), sy(y)] for x, y in zip(xs, ys)], np.int32)
    cv2.polylines(canvas, [points], False, (200, 80, 30), 2, cv2.LINE_AA)
    return canvas


def plot_history(history: list[dict], path: str, columns: int = 3) -> None:
    """Loss and each accuracy (`acc`, or a head's `<head>_acc`) against (fractional) epochs, and each validation
    figure against the epochs it was measured at, written atomically.

    One panel each, side by side, `columns` to a row; an accuracy is drawn where it was measured.
    """
    windows = [h for h in history if "validation" not in h]
    accuracies = list(dict.fromkeys(k for h in windows for k in h if k.endswith("acc")))
    panels = [_panel([h["epoch"] for h in windows], [h["loss"] for h in windows], "training loss")]
    for key in accuracies:
        points = [(h["epoch"], 100 * h[key]) for h in windows if key in h]
        title = "pixel accuracy (%)" if key == "acc" else f"{key[: -len('_acc')]} accuracy (%)"
        panels.append(_panel([x for x, _ in points], [y for _, y in points], title))
    validations = [h for h in history if "validation" in h]  # TRAIN.eval_period's figures, where measured
    for key in dict.fromkeys(k for h in validations for k in h["validation"]):
        points = [(h["epoch"], h["validation"][key]) for h in validations if key in h["validation"]]
        panels.append(_panel([x for x, _ in points], [y for _, y in points], f"validation {key}"))
    columns = min(columns, len(panels))
    panels += [np.full_like(panels[0], 255)] * (-len(panels) % columns)
    rows = [np.concatenate(panels[i : i + columns], axis=1) for i in range(0, len(panels), columns)]
    tmp = path + ".tmp.png"
    cv2.imwrite(tmp, np.concatenate(rows, axis=0))
    os.replace(tmp, path)


class TensorBoard:
    """Scalars to TensorBoard event files when `tensorboard` is installed; otherwise nothing."""

    def __init__(self, directory: str | None, name: str = "tensorboard") -> None:
        self.writer = None
        if directory:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.writer = SummaryWriter(os.path.join(directory, name))

    def scalars(self, step: int, **values: float) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
