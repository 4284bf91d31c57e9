"""Segmenter: the Python API for segmenting images with a trained or released model."""
from __future__ import annotations

import os

import numpy as np
import torch

from . import zoo
from .config import load_config
from .data.classes import class_colors, class_names, colorize
from .data.imageio import read_image
from .data.transforms import multi_scale_images, normalise
from .data.label_tables import read_label_tables
from .inference import fuse, load_model, predict_multitask, scale_logits, slide_logits
from .models.builder import is_multitask
from .precision import autocast, inference_dtype


class Segmenter:
    """Segments RGB images; labels are 0-based class ids (ADE20K: 0 = wall, ..., 149 = flag).

    With a Unified Perceptual Parsing model (`multitask`), `predict` gives every head's answer: a
    dict of `scene` probabilities and `object`, `part`, `material` maps in the label tables' labels.

    `Segmenter.from_pretrained(name)` fetches a released model; `Segmenter.from_config(cfg)` uses
    DIR/{encoder,decoder}_<TEST.checkpoint>. `precision` (default TEST.precision, `auto`) runs the
    network in bfloat16 where the device computes it natively; `fp32` or `bf16` force one.
    """

    def __init__(self, cfg, device: str | torch.device = "cpu", checkpoint: str | None = None,
                 precision: str | None = None) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.model = load_model(cfg, checkpoint or cfg.TEST.checkpoint, self.device)
        self.asked = precision or cfg.TEST.precision
        self.dtype = inference_dtype(self.asked, self.device, "Segmenter")
        self.multitask = is_multitask(cfg.MODEL.arch_decoder)
        self.tables = read_label_tables(cfg.DATASET.label_tables) if self.multitask else None
        self.class_names = list(self.tables.objects) if self.multitask else class_names(cfg)

    @classmethod
    def from_config(cls, cfg_path: str | os.PathLike, checkpoint_dir: str | None = None,
                    checkpoint: str | None = None, device: str | torch.device = "cpu", opts=(),
                    precision: str | None = None) -> "Segmenter":
        cfg = load_config(cfg_path, opts)
        if checkpoint_dir:
            cfg.DIR = os.fspath(checkpoint_dir)
        return cls(cfg, device, checkpoint, precision)

    @classmethod
    def from_pretrained(cls, name: str = zoo.DEFAULT_MODEL, device: str | torch.device = "cpu", opts=(),
                        precision: str | None = None) -> "Segmenter":
        directory = zoo.fetch(name)
        return cls.from_config(zoo.config_path(name), directory, zoo.lookup(name).checkpoint, device, opts,
                               precision)

    def _logits(self, image: np.ndarray) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """The logits to fuse and the size to fuse them at (whole s x s cells in slide mode)."""
        d, t = self.cfg.DATASET, self.cfg.TEST
        with autocast(self.device, self.dtype):
            if t.mode == "slide":
                tensor = normalise(torch.from_numpy(image).permute(2, 0, 1)[None], self.cfg.MODEL.input_normalisation)
                logits, s = slide_logits(self.model, tensor, t.crop_size, t.stride, d.padding_constant)
                return [logits], (logits.shape[1] * s, logits.shape[2] * s)
            images = multi_scale_images(image, d.imgSizes, d.imgMaxSize, d.padding_constant,
                                        self.cfg.MODEL.input_normalisation)
            return scale_logits(self.model, images), image.shape[:2]

    @property
    def precision(self) -> str:
        """What it computes in: `bf16` or `fp32` (what `auto` resolved to)."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def predict(self, image, probabilities: bool = False):
        """H x W int64 class ids for an RGB uint8 array or an image path; with `probabilities`, also C x H x W.

        A multi-task model gives a dict instead: `scene` (S probabilities), `object`, `part` and
        `material` (H x W int64 maps of table labels; a pixel's part is in its predicted object's group).
        """
        if isinstance(image, (str, os.PathLike)):
            image = read_image(os.fspath(image))
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 RGB uint8 array, got shape {image.shape} and {image.dtype}")
        if self.multitask:
            return self._predict_multitask(image)
        logits, size = self._logits(image)
        h, w = image.shape[:2]
        if probabilities:
            pred, prob = fuse(logits, size, probabilities=True)
            return pred[:h, :w].cpu().numpy(), prob[:, :h, :w].cpu().numpy()
        return fuse(logits, size)[:h, :w].cpu().numpy()

    def _predict_multitask(self, image: np.ndarray) -> dict[str, np.ndarray]:
        d = self.cfg.DATASET
        images = multi_scale_images(image, d.imgSizes, d.imgMaxSize, d.padding_constant,
                                    self.cfg.MODEL.input_normalisation)
        with autocast(self.device, self.dtype):
            pred = {k: v.numpy() for k, v in predict_multitask(self.model, images, image.shape[:2]).items()}
        pred["part"] = self.tables.part_labels(pred["object"], pred["part"])
        return pred

    def predict_batch(self, images) -> list:
        """`predict` for each image (each keeps its own size)."""
        return [self.predict(image) for image in images]

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """An RGB picture of 0-based labels in the class colours (the original's for ADE20K)."""
        return colorize(labels, class_colors(len(self.class_names)))
