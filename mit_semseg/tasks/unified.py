"""Unified Perceptual Parsing: the scene, objects, their parts and materials, from multi-source records.

Evaluation, per head:
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

import json
import logging
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from .. import checkpoints
from ..data.classes import palette
from ..data.label_tables import HEADS, PIXEL_HEADS, LabelTables, read_label_tables
from ..data.multitask import (
    MultiTaskValDataset,
    PartTargets,
    build_multitask_train_loader,
    read_multitask_records,
    source_tasks,
)
from ..data.records import DataError
from ..data.textures import read_texture_records
from ..data.transforms import prediction_images
from ..errors import ConfigError
from ..inference import each_scale, fuse
from ..metrics import ConfusionMatrix, confusion_counts
from ..models.decoders import class_softmax, resize
from ..models.texture import build_texture_head
from ..models.unified import UnifiedParsingModule
from ..models.upp import UPPDecoder
from ..onnx_runtime import OnnxModel
from ..pictures import labelled, shares, with_title, write_picture
from .base import Task
from .segmentation import describe

PIXEL_TASKS = ("object", "material")  # heads scored by a confusion matrix over classes 1..n-1
TOP_SCENES = 5
TOP_TEXTURES = 5
_WARNED: set[str] = set()  # texture head files found missing, said once
log = logging.getLogger("mit_semseg")


@torch.inference_mode()
def predict_multitask(
    model: UnifiedParsingModule,
    img_data: list[torch.Tensor],
    size: tuple[int, int],
    flip: bool = False,
    probabilities: bool = False,
):
    """Every head's prediction for one image given at every scale (probabilities averaged over scales).

    `scene`: S probabilities; `object`, `material`: H x W class maps; `part`: H x W, each pixel's index
    within the part group of its predicted object (0 where that object has no parts); with a texture
    head, `texture`: H x W texture indices. All on the CPU. With `probabilities`, also each head's mean
    probabilities: `scene` (S), `object`, `material` and `texture` (C x H x W), `part` (a list, one
    n_i x H x W tensor per group).
    """
    logits = each_scale(model, img_data, flip, model.logits)
    scene = torch.stack([torch.softmax(x["scene"], 0) for x in logits]).mean(0)
    bounds = [0, *torch.tensor(model.decoder.part_group_sizes).cumsum(0).tolist()]
    maps = [task for task in (*PIXEL_TASKS, "texture") if task in logits[0]]
    fused = {task: fuse([x[task] for x in logits], size, probabilities) for task in maps}
    objects = fused["object"][0] if probabilities else fused["object"]
    part = torch.zeros_like(objects)
    part_probs = []
    for g, obj in enumerate(model.part_objects):
        inside = objects == obj
        if not (probabilities or inside.any()):
            continue
        group = fuse([x["part"][bounds[g] : bounds[g + 1]] for x in logits], size, probabilities)
        index = group[0] if probabilities else group
        part[inside] = index[inside]
        if probabilities:
            part_probs.append(group[1].cpu())
    pred = {"scene": scene.cpu(), "object": objects.cpu(), "part": part.cpu()}
    if not probabilities:
        return dict(pred, **{task: fused[task].cpu() for task in maps[1:]})
    pred.update({task: fused[task][0].cpu() for task in maps[1:]})
    probs = {"scene": scene.cpu(), "part": part_probs, **{task: fused[task][1].cpu() for task in fused}}
    return pred, probs


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


def prediction_panels(image: np.ndarray, pred: dict, tables: LabelTables) -> list[np.ndarray]:
    """image (with the top scene named) | objects | parts | materials (| textures), in colours with their legends,
    from `Segmenter`'s answer (scene probabilities and maps of table labels; 0 is unlabelled, black)."""
    scene = tables.scenes[int(np.argmax(pred["scene"]))]
    panels = [with_title(image, scene)]
    for task, names in (("object", tables.objects), ("part", tables.parts), ("material", tables.materials)):
        panels.append(labelled(pred[task] - 1, names[1:], palette(len(names))[1:]))
    if "texture" in pred:
        panels.append(labelled(pred["texture"], tables.textures, palette(len(tables.textures) + 1)[1:]))
    return panels


class _OnnxDecoder:
    """The part of a UPP decoder `predict_multitask` uses, from an ONNX Runtime session."""

    def __init__(self, session, tables: LabelTables) -> None:
        self.session, self.part_group_sizes = session, tables.part_group_sizes
        self.groups = len(tables.groups)

    def logits(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.session.run(image)
        parts = torch.cat([out.pop(f"part_{g}") for g in range(self.groups)], 1)
        return dict(out, part=parts)  # scene, object, material (and texture)


class UnifiedParsingTask(Task):
    name = "unified_parsing"
    decoder_base = UPPDecoder
    find_unused_parameters = True  # the heads a step does not train get no gradient

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.tables = read_label_tables(cfg.DATASET.label_tables)
        self.targets = PartTargets(self.tables)

    @classmethod
    def check_config(cls, cfg) -> None:
        try:
            read_label_tables(cfg.DATASET.label_tables)
        except DataError as err:
            raise ConfigError(f"DATASET.label_tables: {err}") from err
        if cfg.DATASET.pipeline != "aspect" or cfg.MODEL.aux_head:
            raise ConfigError(
                f"a UPP decoder ({cfg.MODEL.arch_decoder}) trains on the original's aspect-ratio batches without an "
                "auxiliary head: use DATASET.pipeline aspect and MODEL.aux_head ''"
            )
        if cfg.TEST.mode != "whole":
            raise ConfigError(
                f"TEST.mode {cfg.TEST.mode}: a UPP decoder ({cfg.MODEL.arch_decoder}) predicts whole "
                "images only; use TEST.mode whole"
            )

    def build_model(self, weights=None, inference: bool = False) -> UnifiedParsingModule:
        """The encoder and decoder (see `Task.build_model`), with a texture head when `weights` has a `texture` file."""
        model = super().build_model(weights, inference)
        if weights and weights.get("texture"):
            m = self.cfg.MODEL
            model.texture = build_texture_head(
                m.arch_encoder, len(self.tables.textures), weights["texture"], m.bn_momentum
            )
        return model

    def model_files(self, checkpoint: str) -> dict[str, str]:
        """The encoder and decoder and, when the tables have `texture.csv` and it exists, the texture head of DIR's
        `checkpoint`; without it, a warning (once) that no texture is predicted."""
        if not self.tables.textures:
            return super().model_files(checkpoint)
        files = checkpoints.model_files(self.cfg.DIR, checkpoint, optional=(checkpoints.TEXTURE,))
        texture = checkpoints.part_path(self.cfg.DIR, checkpoints.TEXTURE, checkpoint)
        if checkpoints.TEXTURE not in files and texture not in _WARNED:
            _WARNED.add(texture)
            log.warning(
                "no texture head (%s not found): predicting scene, objects, parts and materials; "
                "train.py --stage texture trains one",
                texture,
            )
        return files

    def module(self, encoder: nn.Module, decoder: nn.Module, inference: bool = False) -> UnifiedParsingModule:
        weights = {head: self.cfg.TRAIN[f"loss_weight_{head}"] for head in HEADS}
        return UnifiedParsingModule(encoder, decoder, self.tables, weights)

    def step_statistics(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return raw

    def read_records(self, path: str) -> list[dict]:
        d = self.cfg.DATASET
        return read_multitask_records(path, d.root_dataset, self.tables, d.check_files)

    def describe_records(self, records: Sequence[dict]) -> str:
        return "sources: " + "; ".join(
            f"{name} ({sum(str(r['source']) == name for r in records)} images: {', '.join(tasks)})"
            for name, tasks in source_tasks(records).items()
        )

    def train_loader(self, records, request):
        return build_multitask_train_loader(records, self.tables, self.cfg, request)

    def val_records(self) -> list[dict]:
        """DATASET.list_val's records, then DATASET.list_texture_val's when it is set and VAL.checkpoint has a texture
        head."""
        records, d = super().val_records(), self.cfg.DATASET
        if d.list_texture_val and "texture" in self.model_files(self.cfg.VAL.checkpoint):
            records += read_texture_records(d.list_texture_val, d.root_dataset, self.tables.textures, d.check_files)
        elif d.list_texture_val:
            log.warning("DATASET.list_texture_val: %s has no texture head, textures are not evaluated", self.cfg.DIR)
        return records

    def val_dataset(self, records: Sequence[dict]) -> MultiTaskValDataset:
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

    def class_names(self) -> list[str]:
        return list(self.tables.objects)

    def predict(self, model, image: np.ndarray, probabilities: bool = False):
        """`scene` (S probabilities), `object`, `part`, `material` (H x W int64 maps of table labels; a pixel's part is
        in its predicted object's group), with a texture head `texture` (H x W texture indices, 0-based); with
        `probabilities`, also each head's probabilities (`predict_multitask`)."""
        images = prediction_images(image, self.cfg)
        out = predict_multitask(model, images, image.shape[:2], self.cfg.TEST.flip, probabilities)
        pred, probs = out if probabilities else (out, None)
        pred = {k: v.numpy() for k, v in pred.items()}
        pred["part"] = self.tables.part_labels(pred["object"], pred["part"])
        if not probabilities:
            return pred
        return pred, {k: [g.numpy() for g in v] if k == "part" else v.numpy() for k, v in probs.items()}

    def output_names(self, model) -> list[str]:
        parts = [f"part_{g}" for g in range(len(self.tables.groups))]
        return ["scene", "object", "material", *parts] + (["texture"] if model.texture is not None else [])

    def export_outputs(self, model, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = model.encoder(image, return_feature_maps=True)
        out = model.decoder(features, segSize=image.shape[-2:])
        outputs = (out["scene"], out["object"], out["material"], *out["part"])
        if model.texture is None:
            return outputs
        return (*outputs, class_softmax(resize(model.texture(features[0]), image.shape[-2:]), 1))

    def onnx_model(self, session) -> nn.Module:
        decoder = _OnnxDecoder(session, self.tables)
        return OnnxModel(decoder, part_objects=[g.object_label for g in self.tables.groups], logits=decoder.logits)

    def classes_per_head(self, pred: dict) -> dict[str, np.ndarray]:
        return {head: (np.argmax(v) if head == "scene" else v) for head, v in pred.items()}

    def write_outputs(self, image: np.ndarray, pred: dict, stem: str) -> tuple[list[str], list[str]]:
        """`<stem>.png` (image with the top scene | objects | parts | materials (| textures), with legends),
        `<stem>_object.png`, `<stem>_part.png` (16-bit table labels), `<stem>_material.png` (8-bit), with a texture
        head `<stem>_texture.png` (8-bit, texture index + 1), and `<stem>.json` (the top-5 scenes with probabilities,
        the shares of objects, materials and the top-5 textures)."""
        t = self.tables
        write_picture(f"{stem}.png", prediction_panels(image, pred, t))
        maps = {"object": pred["object"].astype(np.uint16), "part": pred["part"].astype(np.uint16)}
        maps["material"] = pred["material"].astype(np.uint8)
        top = np.argsort(-pred["scene"])[:TOP_SCENES]
        summary = {
            "scenes": [{"name": t.scenes[i], "probability": float(pred["scene"][i])} for i in top],
            "objects": {t.objects[c]: s for c, s in shares(pred["object"], len(t.objects))},
            "materials": {t.materials[c]: s for c, s in shares(pred["material"], len(t.materials))},
        }
        if "texture" in pred:
            maps["texture"] = (pred["texture"] + 1).astype(np.uint8)
            textures = shares(pred["texture"], len(t.textures))[:TOP_TEXTURES]
            summary["textures"] = {t.textures[c]: s for c, s in textures}
        for task, labels in maps.items():
            cv2.imwrite(f"{stem}_{task}.png", labels)
        with open(f"{stem}.json", "w") as f:
            json.dump(summary, f, indent=1)
        scenes = ", ".join(f"{s['name']} {100 * s['probability']:.1f}%" for s in summary["scenes"][:3])
        lines = [f"  scene: {scenes}"] + describe(pred["object"], t.objects)
        if "textures" in summary:
            lines.append("  textures: " + ", ".join(f"{n} {100 * v:.1f}%" for n, v in summary["textures"].items()))
        return [f"{stem}.png", *(f"{stem}_{task}.png" for task in maps), f"{stem}.json"], lines
