"""Unified Perceptual Parsing's answer for one image (every head, over the test scales), `test.py`'s files of it,
and the exported ONNX file's outputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch
from torch import nn

from ...data.classes import palette
from ...data.label_tables import LabelTables
from ...data.transforms import prediction_images
from ...inference import each_scale, fuse
from ...models.decoders import class_softmax, resize
from ...models.unified import UnifiedParsingModule
from ...onnx_runtime import OnnxModel
from ...pictures import ClassMap, labelled, shares, with_title, write_picture
from ..segmentation import describe

PIXEL_TASKS = ("object", "material")  # heads scored by a confusion matrix over classes 1..n-1
TOP_SCENES = 5
TOP_TEXTURES = 5


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


def class_tables(tables: LabelTables, texture: bool) -> dict[str, tuple[list[str], np.ndarray]]:
    """Each pixel head's 0-based class names and colours (the tables' label 0, unlabelled, left out)."""
    heads = {
        task: (list(names[1:]), palette(len(names))[1:])
        for task, names in (("object", tables.objects), ("part", tables.parts), ("material", tables.materials))
    }
    if texture:
        heads["texture"] = (list(tables.textures), palette(len(tables.textures) + 1)[1:])
    return heads


def class_maps(pred: dict, tables: LabelTables) -> dict[str, ClassMap]:
    """Each pixel head's map for people from `Segmenter`'s answer (maps of table labels; 0, unlabelled, is -1)."""
    return {
        task: ClassMap(pred[task] if task == "texture" else pred[task] - 1, names, colors)
        for task, (names, colors) in class_tables(tables, "texture" in pred).items()
    }


def prediction_panels(image: np.ndarray, pred: dict, tables: LabelTables) -> list[np.ndarray]:
    """image (with the top scene named) | objects | parts | materials (| textures), in colours with their legends."""
    scene = tables.scenes[int(np.argmax(pred["scene"]))]
    return [with_title(image, scene)] + [labelled(*m) for m in class_maps(pred, tables).values()]


class UnifiedPrediction:
    """Every head's answer for one image, in table labels; `test.py` writes the panels, each head's map and a JSON
    summary."""

    def __init__(self, cfg, tables: LabelTables) -> None:
        self.cfg, self.tables = cfg, tables

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

    def classes_per_head(self, pred: dict) -> dict[str, np.ndarray]:
        return {head: (np.argmax(v) if head == "scene" else v) for head, v in pred.items()}

    def predict_batch(self, model, images: list[np.ndarray]) -> list[dict]:
        """`predict` for each image, one by one."""
        return [self.predict(model, image) for image in images]

    def class_tables(self, model) -> dict[str, tuple[list[str], np.ndarray]]:
        """Each head's class names and colours, for `model` (`object`, `part`, `material`, `texture` if it has one)."""
        return class_tables(self.tables, getattr(model, "texture", None) is not None)

    def class_maps(self, pred: dict) -> dict[str, ClassMap]:
        """The answer's maps for people, by head (`object`, `part`, `material`, with a texture head `texture`)."""
        return class_maps(pred, self.tables)

    def label_maps(self, pred: dict) -> dict[str, np.ndarray]:
        """The label files' maps, by head: table labels (object and part 16-bit, material 8-bit), texture index + 1."""
        maps = {"object": pred["object"].astype(np.uint16), "part": pred["part"].astype(np.uint16)}
        maps["material"] = pred["material"].astype(np.uint8)
        if "texture" in pred:
            maps["texture"] = (pred["texture"] + 1).astype(np.uint8)
        return maps

    def scenes(self, pred: dict) -> list[dict]:
        """The TOP_SCENES most likely scenes: name and probability."""
        return [
            {"name": self.tables.scenes[i], "probability": float(pred["scene"][i])}
            for i in np.argsort(-pred["scene"])[:TOP_SCENES]
        ]

    def write_outputs(self, image: np.ndarray, pred: dict, stem: str) -> tuple[list[str], list[str]]:
        """`<stem>.png` (image with the top scene | objects | parts | materials (| textures), with legends),
        `<stem>_object.png`, `<stem>_part.png` (16-bit table labels), `<stem>_material.png` (8-bit), with a texture
        head `<stem>_texture.png` (8-bit, texture index + 1), and `<stem>.json` (the top-5 scenes with probabilities,
        the shares of objects, materials and the top-5 textures)."""
        t = self.tables
        write_picture(f"{stem}.png", prediction_panels(image, pred, t))
        maps = self.label_maps(pred)
        summary = {
            "scenes": self.scenes(pred),
            "objects": {t.objects[c]: s for c, s in shares(pred["object"], len(t.objects))},
            "materials": {t.materials[c]: s for c, s in shares(pred["material"], len(t.materials))},
        }
        if "texture" in pred:
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


class _OnnxDecoder:
    """The part of a UPP decoder `predict_multitask` uses, from an ONNX Runtime session."""

    def __init__(self, session, tables: LabelTables) -> None:
        self.session, self.part_group_sizes = session, tables.part_group_sizes
        self.groups = len(tables.groups)

    def logits(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.session.run(image)
        parts = torch.cat([out.pop(f"part_{g}") for g in range(self.groups)], 1)
        return dict(out, part=parts)  # scene, object, material (and texture)


class UnifiedExport:
    """Outputs `scene`, `object`, `material`, `part_0`.. (one per part group), and `texture` with a texture head."""

    def __init__(self, tables: LabelTables) -> None:
        self.tables = tables

    def output_names(self, model) -> list[str]:
        parts = [f"part_{g}" for g in range(len(self.tables.groups))]
        return ["scene", "object", "material", *parts] + (["texture"] if model.texture is not None else [])

    def outputs(self, model, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = model.encoder(image, return_feature_maps=True)
        out = model.decoder(features, segSize=image.shape[-2:])
        outputs = (out["scene"], out["object"], out["material"], *out["part"])
        if model.texture is None:
            return outputs
        return (*outputs, class_softmax(resize(model.texture(features[0]), image.shape[-2:]), 1))

    def onnx_model(self, session) -> nn.Module:
        decoder = _OnnxDecoder(session, self.tables)
        groups = [g.object_label for g in self.tables.groups]
        texture = "texture" in session.names or None  # what `class_tables` asks: whether it has a texture head
        return OnnxModel(decoder, part_objects=groups, logits=decoder.logits, texture=texture)
