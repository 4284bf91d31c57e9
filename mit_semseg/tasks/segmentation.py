"""Semantic segmentation (the original's task): one class per pixel, `.odgt` record lists, a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..data.class_weights import class_weights
from ..data.classes import class_names, config_colors
from ..data.crops import build_crop_loader
from ..data.dataset import ValDataset, build_train_loader
from ..data.records import read_odgt
from ..data.sampling import LoaderRequest
from ..data.transforms import prediction_images
from ..errors import ConfigError
from ..inference import fuse, predict_logits, scale_logits
from ..metrics import ConfusionMatrix, confusion_counts
from ..models.builder import ENCODERS, ModelBuilder, decoder_norm
from ..models.decoders import Decoder, FCNHead
from ..models.losses import PixelLoss
from ..models.segmentation import SegmentationModule
from ..onnx_runtime import OnnxModel
from ..pictures import ClassMap, labelled, shares, write_picture
from .base import Task, TaskModel


def predict(model: SegmentationModule, img_data: list[torch.Tensor], size: tuple[int, int], cfg, probabilities=False):
    """The class map (H x W, int64 on the CPU) for one image given at every test scale (`prediction_images`), as
    TEST.mode, TEST.ratios and TEST.flip say; with `probabilities`, also the mean probabilities (C x H x W)."""
    logits, extents = predict_logits(model, img_data, size, cfg)
    out = fuse(logits, size, probabilities, extents, cfg.MODEL.align_corners)
    return tuple(x.cpu() for x in out) if probabilities else out.cpu()


# MODEL.aux_head: the auxiliary heads of training
AUX_HEADS = {"fcn": FCNHead}
# DATASET.pipeline: the training batches' builders
PIPELINES = {"aspect": build_train_loader, "crop": build_crop_loader}


class SegmentationMetrics:
    """The confusion matrix of all images, summarised with the class names."""

    def __init__(self, num_class: int, names: list[str], mean_iou_over: str = "all") -> None:
        self.matrix, self.names, self.mean_iou_over = ConfusionMatrix(num_class), names, mean_iou_over

    def add(self, counts: tuple[np.ndarray, np.ndarray]) -> None:
        self.matrix.add(*counts)

    def summary(self) -> dict:
        return self.matrix.summary(self.names, self.mean_iou_over)


def describe(labels: np.ndarray, names: Sequence[str]) -> list[str]:
    """The classes covering more than 0.1% of the map, largest first, with their shares."""
    return [f"  {names[c]}: {100 * share:.2f}%" for c, share in shares(labels, len(names))]


class _OnnxDecoder:
    """The part of a segmentation decoder `predict` uses, from an ONNX Runtime session."""

    def __init__(self, session) -> None:
        self.session = session

    def main_logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.session.run(image)["probabilities"]


class SegmentationModel(TaskModel):
    """The encoder and decoder in a `SegmentationModule`: NLL loss (for training, with TRAIN.class_weights, OHEM
    and TRAIN.extra_loss), deep supervision, the auxiliary head."""

    def module(self, encoder: nn.Module, decoder: nn.Module, inference: bool = False) -> SegmentationModule:
        m = self.cfg.MODEL
        scale = self.cfg.TRAIN.deep_sup_scale if decoder.deep_sup else None
        aux = None
        if m.aux_head and not inference:
            widths = ENCODERS[m.arch_encoder].feature_channels
            aux = AUX_HEADS[m.aux_head](widths[-2], self.cfg.DATASET.num_class, norm_layer=decoder_norm(m.bn_momentum))
            aux.apply(ModelBuilder.weights_init)
        crit, aux_crit = (nn.NLLLoss(ignore_index=-1), None) if inference else self.losses()
        return SegmentationModule(encoder, decoder, crit, scale, aux, self.cfg.TRAIN.aux_loss_weight, aux_crit)

    def losses(self) -> tuple[PixelLoss, PixelLoss]:
        """The main head's loss and the other heads' (deep supervision, MODEL.aux_head): TRAIN.class_weights weigh
        both; OHEM and TRAIN.extra_loss are the main head's, as mmsegmentation's configs put them."""
        t = self.cfg.TRAIN
        weights = class_weights(self.cfg)
        main = PixelLoss(weights, t.ohem_threshold, t.ohem_min_kept, t.extra_loss, t.extra_loss_weight)
        return main, PixelLoss(weights)


class SegmentationData:
    """`.odgt` records; batches of DATASET.pipeline (the original's aspect-ratio batches, or fixed crops)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def read(self, path: str) -> list[dict]:
        return read_odgt(path, self.cfg.DATASET.root_dataset, check_files=self.cfg.DATASET.check_files)

    def describe(self, records: Sequence[dict]) -> str:
        return ""

    def loader(self, records: Sequence[dict], request: LoaderRequest):
        return PIPELINES[self.cfg.DATASET.pipeline](records, self.cfg, request)


class SegmentationEvaluation:
    """DATASET.list_val's images predicted as TEST.* says, counted in one confusion matrix."""

    def __init__(self, cfg, data: SegmentationData, names: list[str], colors: np.ndarray) -> None:
        self.cfg, self.data, self.names, self.colors = cfg, data, names, colors

    def records(self) -> list[dict]:
        return self.data.read(self.cfg.DATASET.list_val)

    def dataset(self, records: Sequence[dict]) -> ValDataset:
        return ValDataset(records, self.cfg)

    def measure(self, model, item: dict, picture_path: str | None):
        """The image's confusion cells; with `picture_path`, also image | ground truth | prediction there."""
        label = item["seg_label"].numpy()
        pred = predict(model, item["img_data"], label.shape, self.cfg).numpy()
        if picture_path:
            write_picture(
                picture_path,
                [item["img_ori"], labelled(label, self.names, self.colors), labelled(pred, self.names, self.colors)],
            )
        return confusion_counts(pred, label, self.cfg.DATASET.num_class)

    def metrics(self) -> SegmentationMetrics:
        return SegmentationMetrics(self.cfg.DATASET.num_class, self.names, self.cfg.VAL.mean_iou_over)

    def print_summary(self, summary: dict, path: str) -> None:
        """The ten worst classes and the summary lines, ending with the original's."""
        print("Ten worst classes by IoU:")
        for c in sorted(summary["classes"], key=lambda c: c["iou"])[:10]:
            print(f"  {c['name']:<24} IoU {c['iou']:.4f}  accuracy {100 * c['accuracy']:.2f}%")
        print(f"Per-class IoU and accuracy: {path}")
        print(
            f"[Eval Summary] {summary['images']} images in {summary['seconds']:.1f} s; pixel accuracy "
            f"{100 * summary['pixel_accuracy']:.2f}%, mean class accuracy {100 * summary['mean_accuracy']:.2f}%, "
            f"frequency-weighted IoU {summary['frequency_weighted_iou']:.4f}"
        )
        print(f"Mean IoU: {summary['mean_iou']:.4f}, Accuracy: {100 * summary['pixel_accuracy']:.2f}%")


class SegmentationPrediction:
    """A class map per image; `test.py` writes the picture and the label PNG."""

    def __init__(self, cfg, names: list[str], colors: np.ndarray) -> None:
        self.cfg, self.names, self.colors = cfg, names, colors

    def class_names(self) -> list[str]:
        return list(self.names)

    def predict(self, model, image: np.ndarray, probabilities: bool = False):
        """H x W int64 0-based classes; with `probabilities`, also their C x H x W probabilities.

        As TEST.mode says: whole (the image at every test scale) or slide (overlapping TEST.crop_size windows);
        TEST.ratios and TEST.flip add scales and the mirrored image.
        """
        out = predict(model, prediction_images(image, self.cfg), image.shape[:2], self.cfg, probabilities)
        return tuple(x.numpy() for x in out) if probabilities else out.numpy()

    def predict_batch(self, model, images: list[np.ndarray]) -> list[np.ndarray]:
        """`predict` for images of one size, each test scale's network pass run for all of them together (the
        original's pipeline, TEST.mode whole); one by one otherwise."""
        test = self.cfg.TEST
        if len({im.shape for im in images}) > 1 or test.mode != "whole" or test.pipeline != "original":
            return [self.predict(model, image) for image in images]
        scales = [torch.cat(s) for s in zip(*(prediction_images(image, self.cfg) for image in images))]
        logits = scale_logits(model, scales, test.flip)
        size, aligned = images[0].shape[:2], self.cfg.MODEL.align_corners
        return [fuse([x[i] for x in logits], size, align_corners=aligned).cpu().numpy() for i in range(len(images))]

    def classes_per_head(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        return {"classes": pred}

    def class_tables(self, model) -> dict[str, tuple[list[str], np.ndarray]]:
        """Each head's class names and colours (one head: `classes`)."""
        return {"classes": (list(self.names), self.colors)}

    def class_maps(self, pred: np.ndarray) -> dict[str, ClassMap]:
        """The answer's maps for people, by head (one: `classes`)."""
        return {"classes": ClassMap(pred, self.names, self.colors)}

    def label_maps(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        """The label files' maps, by head: class index + 1, the ADE20K annotation format (16-bit past 255 classes)."""
        return {"classes": (pred + 1).astype(np.uint8 if len(self.names) < 256 else np.uint16)}

    def scenes(self, pred: np.ndarray) -> list[dict]:
        return []

    def write_outputs(self, image: np.ndarray, pred: np.ndarray, stem: str) -> tuple[list[str], list[str]]:
        """`<stem>.png`: image | coloured prediction with its legend; `<stem>_label.png`: `label_maps`'."""
        write_picture(f"{stem}.png", [image, labelled(*self.class_maps(pred)["classes"])])
        cv2.imwrite(f"{stem}_label.png", self.label_maps(pred)["classes"])
        return [f"{stem}.png", f"{stem}_label.png"], describe(pred, self.names)


class SegmentationExport:
    """One output, `probabilities`."""

    def output_names(self, model) -> list[str]:
        return ["probabilities"]

    def outputs(self, model, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (model.decoder(model.encoder(image, return_feature_maps=True), segSize=image.shape[-2:]),)

    def onnx_model(self, session) -> nn.Module:
        return OnnxModel(_OnnxDecoder(session))


class SegmentationTask(Task):
    name = "segmentation"
    decoder_base = Decoder

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        try:
            names, colors = class_names(cfg), config_colors(cfg)
        except (ValueError, FileNotFoundError) as err:
            raise ConfigError(f"DATASET.class_info: {err}") from err
        self.model = SegmentationModel(cfg)
        self.data = SegmentationData(cfg)
        self.evaluation = SegmentationEvaluation(cfg, self.data, names, colors)
        self.prediction = SegmentationPrediction(cfg, names, colors)
        self.export = SegmentationExport()

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.MODEL.aux_head and cfg.MODEL.aux_head not in AUX_HEADS:
            raise ConfigError(f"MODEL.aux_head: unknown '{cfg.MODEL.aux_head}'; valid: '', {', '.join(AUX_HEADS)}")
        if cfg.MODEL.aux_head and len(ENCODERS[cfg.MODEL.arch_encoder].feature_channels) < 2:
            raise ConfigError(
                f"MODEL.aux_head reads the encoder's second-to-last map; {cfg.MODEL.arch_encoder} gives only one"
            )
        if cfg.DATASET.num_class < 2:
            raise ConfigError(
                f"DATASET.num_class is {cfg.DATASET.num_class}: with one class the loss is always 0 and nothing is "
                "learnt; label 0 is unlabelled (ignored), so two classes (background 1, foreground 2) need num_class 2"
            )
