"""Evaluating Unified Perceptual Parsing, per head:

- object, material: pixel accuracy over labelled pixels (label > 0) and the IoU of each class
  1..n-1 (a class never seen nor predicted counts 0), averaged over those classes.
- scene: top-1 accuracy over the images with a scene label.
- part, per object with parts, over the images where the object is annotated and its part group
  is valid: predicted parts only inside the predicted object, ground-truth parts only inside the
  ground-truth object; accuracy over ground-truth part pixels > 0, IoU of each part 1..n_i-1 and
  their mean; the reported part figures are means over the groups seen in validation.
- texture (with a texture head and DATASET.list_texture_val): image-level top-1 accuracy over the
  texture records, the texture whose probability averaged over the image's pixels is highest; and
  each texture's accuracy over its images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ...data.label_tables import PIXEL_HEADS, LabelTables
from ...data.multitask import MultiTaskValDataset, PartTargets
from ...data.textures import read_texture_records
from ...inference import each_scale, fuse
from ...metrics import ConfusionMatrix, confusion_counts
from ...models.unified import UnifiedParsingModule
from ...pictures import write_picture
from .model import UnifiedData, UnifiedModel
from .prediction import PIXEL_TASKS, predict_multitask, prediction_panels

log = logging.getLogger("mit_semseg")


@torch.inference_mode()
def texture_probabilities(
    model: UnifiedParsingModule, img_data: list[torch.Tensor], flip: bool = False
) -> torch.Tensor:
    """The texture head's probabilities (T) averaged over the pixels of an image given at every scale (the first
    scale's size), and over the scales."""
    logits = each_scale(model, img_data, flip, lambda features: {"texture": model.texture(features[0])})
    _, probs = fuse([x["texture"] for x in logits], tuple(img_data[0].shape[-2:]), probabilities=True)
    return probs.mean((1, 2)).cpu()


def measure(pred: dict, maps: dict[str, np.ndarray], scene: int, tables: LabelTables, targets: PartTargets) -> dict:
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
    return {
        "pixel_accuracy": full["pixel_accuracy"],
        "mean_iou": float(np.mean([c["iou"] for c in classes])),
        "labelled_pixels": full["labelled_pixels"],
        "classes": classes,
    }


class UnifiedMetrics:
    """Accumulates `measure` results; `summary()` gives every task's figures with class names (`texture` when a
    texture image was measured)."""

    def __init__(self, tables: LabelTables) -> None:
        self.tables = tables
        self.textures = ConfusionMatrix(max(len(tables.textures), 1))
        self.pixels = {
            "object": ConfusionMatrix(len(tables.objects)),
            "material": ConfusionMatrix(len(tables.materials)),
        }
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
        if "texture" in counts:
            label, predicted = counts["texture"]
            self.textures.update(np.array([predicted]), np.array([label]))

    def summary(self) -> dict:
        t = self.tables
        out = {
            "object": _without_unlabelled(self.pixels["object"], list(t.objects)),
            "material": _without_unlabelled(self.pixels["material"], list(t.materials)),
            "scene": {"accuracy": self.scene_correct / max(self.scene_images, 1), "images": self.scene_images},
        }
        groups = []
        for g, group in enumerate(t.groups):
            if self.part_images[g]:
                figures = _without_unlabelled(self.parts[g], list(group.part_names))
                groups.append({"object": group.object_name, "images": self.part_images[g], **figures})
        out["part"] = {
            "mean_iou": float(np.mean([g["mean_iou"] for g in groups])) if groups else 0.0,
            "pixel_accuracy": float(np.mean([g["pixel_accuracy"] for g in groups])) if groups else 0.0,
            "groups": groups,
        }
        images = self.textures.matrix.sum(1)
        if images.sum():
            out["texture"] = {
                "accuracy": float(np.trace(self.textures.matrix) / images.sum()),
                "images": int(images.sum()),
                "classes": [
                    {"name": name, "images": int(n), "accuracy": float(self.textures.matrix[k, k] / n)}
                    for k, (name, n) in enumerate(zip(t.textures, images))
                    if n
                ],
            }
        return out


class UnifiedEvaluation:
    """DATASET.list_val's multi-source images (every head they are labelled for) and, with a texture head,
    DATASET.list_texture_val's texture images."""

    def __init__(self, cfg, model: UnifiedModel, data: UnifiedData) -> None:
        self.cfg, self.model, self.data = cfg, model, data
        self.tables = model.tables
        self.targets = PartTargets(self.tables)

    def records(self) -> list[dict]:
        """DATASET.list_val's records, then DATASET.list_texture_val's when it is set and VAL.checkpoint has a texture
        head."""
        d = self.cfg.DATASET
        records = self.data.read(d.list_val)
        if d.list_texture_val and "texture" in self.model.files(self.cfg.VAL.checkpoint):
            records += read_texture_records(d.list_texture_val, d.root_dataset, self.tables.textures, d.check_files)
        elif d.list_texture_val:
            log.warning("DATASET.list_texture_val: %s has no texture head, textures are not evaluated", self.cfg.DIR)
        return records

    def dataset(self, records: Sequence[dict]) -> MultiTaskValDataset:
        return MultiTaskValDataset(records, self.cfg, self.tables)

    def measure(self, model, item: dict, picture_path: str | None) -> dict:
        """The image's counts; with `picture_path`, also its image | object | part | material picture there (a
        texture image: its (texture, predicted texture), no picture)."""
        if "texture" in item:
            probs = texture_probabilities(model, item["img_data"], self.cfg.TEST.flip)
            return {"texture": (item["texture"], int(probs.argmax()))}
        out = predict_multitask(model, item["img_data"], item["img_ori"].shape[:2], self.cfg.TEST.flip)
        pred = {k: v.numpy() for k, v in out.items()}
        if picture_path:
            labels = dict(pred, part=self.tables.part_labels(pred["object"], pred["part"]))
            write_picture(picture_path, prediction_panels(item["img_ori"], labels, self.tables))
        return measure(pred, item["maps"], item["scene"], self.tables, self.targets)

    def metrics(self) -> UnifiedMetrics:
        return UnifiedMetrics(self.tables)

    def print_summary(self, summary: dict, path: str) -> None:
        print(f"{'task':<10}{'mean IoU':>10}{'accuracy':>10}")
        for task in PIXEL_HEADS:
            figures = summary[task]
            print(f"{task:<10}{figures['mean_iou']:>10.4f}{100 * figures['pixel_accuracy']:>9.2f}%")
        print(
            f"{'scene':<10}{'':>10}{100 * summary['scene']['accuracy']:>9.2f}%  ({summary['scene']['images']} "
            "images with a scene label)"
        )
        if "texture" in summary:
            texture = summary["texture"]
            print(f"{'texture':<10}{'':>10}{100 * texture['accuracy']:>9.2f}%  ({texture['images']} texture images)")
        print(
            f"[Eval Summary] {summary['images']} images in {summary['seconds']:.1f} s; per-class and per-group "
            f"figures: {path}"
        )
