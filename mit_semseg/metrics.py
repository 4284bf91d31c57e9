"""Segmentation metrics from a confusion matrix accumulated with `bincount` (label -1 is ignored)."""

from __future__ import annotations

import numpy as np

# VAL.mean_iou_over: the classes mean IoU averages. all: every class, one absent from both the labels and the
# predictions counting 0 (the original's); present: only the classes in the labels or the predictions
# (mmsegmentation's: the IoU of the others is NaN, left out of its nanmean)
MEAN_IOU_OVER = ("all", "present")


def confusion(pred: np.ndarray, label: np.ndarray, num_class: int) -> np.ndarray:
    """One image's C x C confusion matrix (rows: labels, columns: predictions).

    Pixels labelled -1 (unlabelled) are ignored; so are labels or predictions outside 0..C-1.
    """
    pred, label = np.asarray(pred).ravel(), np.asarray(label).ravel()
    c = num_class
    if label.size and (label.min() < -1 or label.max() >= c or pred.min() < 0 or pred.max() >= c):
        valid = (label >= 0) & (label < c) & (pred >= 0) & (pred < c)
        pred, label = pred[valid], label[valid]
    # Unlabelled pixels (-1) land in an extra first row, which is dropped: no masking needed.
    flat = np.add(label, 1, dtype=np.intp)
    np.multiply(flat, c, out=flat)
    np.add(flat, pred, out=flat)
    return np.bincount(flat, minlength=(c + 1) * c)[c:].reshape(c, c)


def confusion_counts(pred: np.ndarray, label: np.ndarray, num_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero cells of one image's confusion matrix: flat indices (label * C + pred) and counts."""
    cells = confusion(pred, label, num_class).ravel()
    index = np.flatnonzero(cells)
    return index, cells[index]


class ConfusionMatrix:
    """Rows are true classes, columns predicted ones."""

    def __init__(self, num_class: int) -> None:
        self.num_class = num_class
        self.matrix = np.zeros((num_class, num_class), dtype=np.int64)

    def add(self, index: np.ndarray, counts: np.ndarray) -> None:
        self.matrix.ravel()[index] += counts

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        self.matrix += confusion(pred, label, self.num_class)

    def summary(self, class_names: list[str] | None = None, mean_iou_over: str = "all") -> dict:
        """Pixel accuracy, per-class IoU and accuracy, mean IoU (over `mean_iou_over`'s classes, `MEAN_IOU_OVER`),
        frequency-weighted IoU."""
        m = self.matrix.astype(np.float64)
        intersection = np.diag(m)
        labelled, predicted = m.sum(1), m.sum(0)
        union = labelled + predicted - intersection
        iou = intersection / (union + 1e-10)
        class_acc = intersection / (labelled + 1e-10)
        total = labelled.sum()
        averaged = iou if mean_iou_over == "all" else iou[union > 0]
        names = class_names or [f"class {i + 1}" for i in range(self.num_class)]
        return {
            "pixel_accuracy": float(intersection.sum() / (total + 1e-10)),
            "mean_iou": float(averaged.mean()) if averaged.size else 0.0,
            "mean_iou_over": mean_iou_over,
            "mean_accuracy": float(class_acc[labelled > 0].mean()) if (labelled > 0).any() else 0.0,
            "frequency_weighted_iou": float((labelled / (total + 1e-10) * iou).sum()),
            "labelled_pixels": int(total),
            "classes": [
                {
                    "index": i,
                    "name": names[i],
                    "iou": float(iou[i]),
                    "accuracy": float(class_acc[i]),
                    "labelled_pixels": int(labelled[i]),
                    "predicted_pixels": int(predicted[i]),
                }
                for i in range(self.num_class)
            ],
        }
