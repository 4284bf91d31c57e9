"""Segmenter: the Python API for segmenting images with a trained or released model."""
from __future__ import annotations

import os
from contextlib import nullcontext

import numpy as np
import torch

from . import zoo
from .config import load_config
from .data.classes import class_names, colorize
from .data.imageio import read_image
from .data.transforms import multi_scale_images, normalise
from .inference import fuse, load_model, scale_logits, slide_logits


class Segmenter:
    """Segments RGB images; labels are 0-based class ids (ADE20K: 0 = wall, ..., 149 = flag).

    `Segmenter.from_pretrained(name)` fetches a released model; `Segmenter.from_config(cfg)` uses
    DIR/{encoder,decoder}_<TEST.checkpoint>. `bf16=True` runs the network in bfloat16.
    """

    def __init__(self, cfg, device: str | torch.device = "cpu", checkpoint: str | None = None,
                 bf16: bool = False) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.model = load_model(cfg, checkpoint or cfg.TEST.checkpoint, self.device)
        self.bf16 = bf16
        self.class_names = class_names(cfg)

    @classmethod
    def from_config(cls, cfg_path: str | os.PathLike, checkpoint_dir: str | None = None,
                    checkpoint: str | None = None, device: str | torch.device = "cpu", opts=(),
                    bf16: bool = False) -> "Segmenter":
        cfg = load_config(cfg_path, opts)
        if checkpoint_dir:
            cfg.DIR = os.fspath(checkpoint_dir)
        return cls(cfg, device, checkpoint, bf16)

    @classmethod
    def from_pretrained(cls, name: str = zoo.DEFAULT_MODEL, device: str | torch.device = "cpu", opts=(),
                        bf16: bool = False) -> "Segmenter":
        directory = zoo.fetch(name)
        return cls.from_config(zoo.config_path(name), directory, zoo.lookup(name).checkpoint, device, opts, bf16)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _logits(self, image: np.ndarray) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """The logits to fuse and the size to fuse them at (whole s x s cells in slide mode)."""
        d, t = self.cfg.DATASET, self.cfg.TEST
        with self._autocast():
            if t.mode == "slide":
                tensor = normalise(torch.from_numpy(image).permute(2, 0, 1)[None])
                logits, s = slide_logits(self.model, tensor, t.crop_size, t.stride, d.padding_constant)
                return [logits], (logits.shape[1] * s, logits.shape[2] * s)
            images = multi_scale_images(image, d.imgSizes, d.imgMaxSize, d.padding_constant)
            return scale_logits(self.model, images), image.shape[:2]

    def predict(self, image, probabilities: bool = False):
        """H x W int64 class ids for an RGB uint8 array or an image path; with `probabilities`, also C x H x W."""
        if isinstance(image, (str, os.PathLike)):
            image = read_image(os.fspath(image))
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 RGB uint8 array, got shape {image.shape} and {image.dtype}")
        logits, size = self._logits(image)
        h, w = image.shape[:2]
        if probabilities:
            pred, prob = fuse(logits, size, probabilities=True)
            return pred[:h, :w].cpu().numpy(), prob[:, :h, :w].cpu().numpy()
        return fuse(logits, size)[:h, :w].cpu().numpy()

    def predict_batch(self, images) -> list:
        """`predict` for each image (each keeps its own size)."""
        return [self.predict(image) for image in images]

    @staticmethod
    def colorize(labels: np.ndarray) -> np.ndarray:
        """An RGB picture of 0-based labels in the class colours."""
        return colorize(labels)
