"""Evaluating Unified Perceptual Parsing: its metrics, accumulated per image and summarised over the validation set.

- object, material: pixel accuracy over labelled pixels (label > 0) and the IoU of each class
  1..n-1 (a class never seen nor predicted counts 0), averaged over those classes.
- scene: top-1 accuracy over the images with a scene label.
- part, per object with parts, over the images where the object is annotated and its part group
  is valid: predicted parts only inside the predicted object, ground-truth parts only inside the
  ground-truth object; accuracy over ground-truth part pixels > 0, IoU of each part 1..n_i-1 and
  their mean; the reported part figures are means over the groups seen in validation.
"""
from __future__ import annotations

import cv2
import numpy as np

from .data.classes import colorize
from .data.label_tables import LabelTables, read_label_tables
from .data.multitask import MultiTaskValDataset, PartTargets, read_multitask_records
from .evaluation import write_picture
from .inference import predict_multitask
from .metrics import ConfusionMatrix, confusion_counts

PIXEL_TASKS = ("object", "material")


def measure(pred: dict, maps: dict[str, np.ndarray], scene: int, tables: LabelTables,
            targets: PartTargets) -> dict:
    """One image's counts: confusion cells per pixel task and part group, and the scene (label, prediction)."""
    counts: dict = {}
    sizes = {"object": len(tables.objects), "material": len(tables.materials)}
    for task in PIXEL_TASKS:
        if task in maps:
            label = maps[task].astype(np.int64)
            counts[task] = confusion_counts(pred[task], np.where(label > 0, label, -1), sizes[task])
    if scene >= 0:
        counts["scene"] = (scene, int(np.argmax(pred["scene"])))
    if "part" in maps:
        objects = maps["object"].astype(np.int64)
        index, valid = targets(objects, maps["part"].astype(np.int64))
        counts["part"] = {}
        for g in np.flatnonzero(valid).tolist():
            obj, n = tables.groups[g].object_label, len(tables.groups[g].part_labels)
            label = np.where((objects == obj) & (index > 0), index, -1)
            predicted = np.where(pred["object"] == obj, pred["part"], 0)
            counts["part"][g] = confusion_counts(predicted, label, n)
    return counts


def _without_unlabelled(matrix: ConfusionMatrix, names: list[str]) -> dict:
    """Accuracy and IoUs of classes 1..n-1 of a matrix whose class 0 is 'unlabelled' (never a label)."""
    full = matrix.summary(names)
    classes = full["classes"][1:]
    return {"pixel_accuracy": full["pixel_accuracy"], "mean_iou": float(np.mean([c["iou"] for c in classes])),
            "labelled_pixels": full["labelled_pixels"], "classes": classes}


class UnifiedMetrics:
    """Accumulates `measure` results; `summary()` gives every task's figures with class names."""

    def __init__(self, tables: LabelTables) -> None:
        self.tables = tables
        self.pixels = {"object": ConfusionMatrix(len(tables.objects)),
                       "material": ConfusionMatrix(len(tables.materials))}
        self.parts = [ConfusionMatrix(len(g.part_labels)) for g in tables.groups]
        self.part_images = [0] * len(tables.groups)
        self.scene_correct = self.scene_images = 0

    def add(self, counts: dict) -> None:
        for task in PIXEL_TASKS:
            if task in counts:
                self.pixels[task].add(*counts[task])
        if "scene" in counts:
            label, predicted = counts["scene"]
            self.scene_images += 1
            self.scene_correct += int(label == predicted)
        for g, cells in counts.get("part", {}).items():
            self.parts[g].add(*cells)
            self.part_images[g] += 1

    def summary(self) -> dict:
        t = self.tables
        out = {"object": _without_unlabelled(self.pixels["object"], list(t.objects)),
               "material": _without_unlabelled(self.pixels["material"], list(t.materials)),
               "scene": {"accuracy": self.scene_correct / max(self.scene_images, 1), "images": self.scene_images}}
        groups = []
        for g, group in enumerate(t.groups):
            if self.part_images[g]:
                figures = _without_unlabelled(self.parts[g], list(group.part_names))
                groups.append({"object": group.object_name, "images": self.part_images[g], **figures})
        out["part"] = {"mean_iou": float(np.mean([g["mean_iou"] for g in groups])) if groups else 0.0,
                       "pixel_accuracy": float(np.mean([g["pixel_accuracy"] for g in groups])) if groups else 0.0,
                       "groups": groups}
        return out


class UnifiedEvaluation:
    """What evaluating a Unified Perceptual Parsing model reads, measures per image and accumulates."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.tables = read_label_tables(cfg.DATASET.label_tables)
        self.targets = PartTargets(self.tables)

    def records(self) -> list[dict]:
        d = self.cfg.DATASET
        return read_multitask_records(d.list_val, d.root_dataset, self.tables, d.check_files)

    def dataset(self, records: list[dict]) -> MultiTaskValDataset:
        return MultiTaskValDataset(records, self.cfg, self.tables)

    def measure(self, model, item: dict, picture_dir: str | None) -> dict:
        """The image's counts; with `picture_dir`, also its image | object | part | material picture there."""
        pred = {k: v.numpy() for k, v in predict_multitask(model, item["img_data"], item["img_ori"].shape[:2],
                                                           self.cfg.VAL.flip).items()}
        if picture_dir:
            labels = dict(pred, part=self.tables.part_labels(pred["object"], pred["part"]))
            write_picture(prediction_panels(item["img_ori"], labels, self.tables), item["info"], picture_dir)
        return measure(pred, item["maps"], item["scene"], self.tables, self.targets)

    def metrics(self) -> UnifiedMetrics:
        return UnifiedMetrics(self.tables)

    @staticmethod
    def print_summary(summary: dict, path: str) -> None:
        print(f"{'task':<10}{'mean IoU':>10}{'accuracy':>10}")
        for task in ("object", "part", "material"):
            figures = summary[task]
            print(f"{task:<10}{figures['mean_iou']:>10.4f}{100 * figures['pixel_accuracy']:>9.2f}%")
        print(f"{'scene':<10}{'':>10}{100 * summary['scene']['accuracy']:>9.2f}%  ({summary['scene']['images']} "
              "images with a scene label)")
        print(f"[Eval Summary] {summary['images']} images in {summary['seconds']:.1f} s; per-class and per-group "
              f"figures: {path}")


def prediction_panels(image: np.ndarray, pred: dict, tables: LabelTables) -> list[np.ndarray]:
    """image (with the top scene named) | objects | parts | materials, in colours, from `Segmenter`'s answer
    (scene probabilities and maps of table labels)."""
    picture = image.copy()
    scene = tables.scenes[int(np.argmax(pred["scene"]))]
    cv2.putText(picture, scene, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, scene, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return [picture, colorize(pred["object"] - 1), colorize(pred["part"] - 1),
            colorize(pred["material"] - 1)]
