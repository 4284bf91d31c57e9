"""Segmenter: the Python API for segmenting images with a trained or released model."""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2
import numpy as np
import torch

from . import checkpoints, hf, zoo
from .config import config_from_text, load_config
from .data.classes import class_colors, colorize
from .data.imageio import read_image
from .data.records import DataError
from .precision import autocast, inference_dtype
from .tasks import task_for


class Segmenter:
    """Segments RGB images; labels are 0-based class ids (ADE20K: 0 = wall, ..., 149 = flag).

    With a Unified Perceptual Parsing model, `predict` gives every head's answer: a dict of `scene`
    probabilities and `object`, `part`, `material` maps in the label tables' labels, and with a texture
    head (DIR/texture_<checkpoint>) a `texture` map of 0-based texture indices.

    `Segmenter.from_pretrained(name)` fetches a released model; `Segmenter.from_config(cfg)` uses
    DIR/{encoder,decoder}_<TEST.checkpoint>; `Segmenter.from_onnx(path)` runs an exported file through
    ONNX Runtime (on the CPU). `precision` (default TEST.precision, `auto`) runs the network in bfloat16
    where the device computes it natively; `fp32` or `bf16` force one.
    """

    def __init__(
        self,
        cfg,
        device: str | torch.device = "cpu",
        checkpoint: str | None = None,
        precision: str | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.task = task_for(cfg)
        checkpoint = checkpoint or cfg.TEST.checkpoint
        self.model = model if model is not None else self.task.model.load(checkpoint, self.device)
        self.asked = precision or cfg.TEST.precision
        self.dtype = inference_dtype(self.asked, self.device, "Segmenter")
        self.class_names = self.task.prediction.class_names()

    @classmethod
    def from_config(
        cls,
        cfg_path: str | os.PathLike,
        checkpoint_dir: str | None = None,
        checkpoint: str | None = None,
        device: str | torch.device = "cpu",
        opts=(),
        precision: str | None = None,
    ) -> Segmenter:
        cfg = load_config(cfg_path, opts)
        if checkpoint_dir:
            cfg.DIR = os.fspath(checkpoint_dir)
        return cls(cfg, device, checkpoint, precision)

    @classmethod
    def from_pretrained(
        cls, name: str = zoo.DEFAULT_MODEL, device: str | torch.device = "cpu", opts=(), precision: str | None = None
    ) -> Segmenter:
        """A released model by its name (`zoo`), or a Hugging Face UperNet: a Hub repository id
        (`openmmlab/upernet-convnext-small`) or a local folder in its layout."""
        if name not in zoo.MODELS and hf.is_hf_source(name):
            _, checkpoint, options = checkpoints.hf_model(name)
            return cls(load_config(None, [*options, *opts]), device, checkpoint, precision)
        directory = checkpoints.fetch_released(name)
        checkpoint = checkpoints.released_checkpoint(name)
        return cls.from_config(zoo.config_path(name), directory, checkpoint, device, opts, precision)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, opts=()) -> Segmenter:
        """Predict with an exported file (`python -m mit_semseg.export`) through ONNX Runtime, in float32, with the
        config stored in it (and `opts` over it): the same pre- and post-processing as the PyTorch model."""
        from .onnx_runtime import OnnxSession

        session = OnnxSession(path)
        cfg = config_from_text(session.config, session.path, opts)
        return cls(cfg, "cpu", precision="fp32", model=task_for(cfg).export.onnx_model(session))

    @property
    def precision(self) -> str:
        """What it computes in: `bf16` or `fp32` (what `auto` resolved to)."""
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def predict(self, image, probabilities: bool = False):
        """H x W int64 class ids for an RGB uint8 array or an image path; with `probabilities`, also C x H x W.

        A multi-task model gives a dict instead: `scene` (S probabilities), `object`, `part` and
        `material` (H x W int64 maps of table labels; a pixel's part is in its predicted object's group),
        `texture` with a texture head (H x W int64 texture indices);
        with `probabilities`, also a dict of each head's probabilities (`part`: one array per part group).
        """
        image = self._rgb(image)
        with autocast(self.device, self.dtype):
            return self.task.prediction.predict(self.model, image, probabilities)

    @staticmethod
    def _rgb(image) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            image = read_image(os.fspath(image))
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 RGB uint8 array, got shape {image.shape} and {image.dtype}")
        return image

    def predict_video(self, path: str | os.PathLike) -> Iterator[tuple[np.ndarray, object]]:
        """(RGB frame, `predict`'s answer) for each frame of a video OpenCV reads, in order."""
        capture = cv2.VideoCapture(os.fspath(path))
        if not capture.isOpened():
            raise DataError(f"cannot read video {os.fspath(path)}: not a video OpenCV can open")
        try:
            while True:
                read, frame = capture.read()
                if not read:
                    return
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yield frame, self.predict(frame)
        finally:
            capture.release()

    def predict_batch(self, images) -> list:
        """`predict` for each image (each keeps its own size); images of one size go through the network together
        where the task and TEST.mode allow (a segmentation model's whole images)."""
        images = [self._rgb(image) for image in images]
        answers: list = [None] * len(images)
        sizes: dict[tuple, list[int]] = {}
        for k, image in enumerate(images):
            sizes.setdefault(image.shape, []).append(k)
        with autocast(self.device, self.dtype):
            for group in sizes.values():
                for k, answer in zip(group, self.task.prediction.predict_batch(self.model, [images[k] for k in group])):
                    answers[k] = answer
        return answers

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """An RGB picture of 0-based labels in the class colours (the original's for ADE20K)."""
        return colorize(labels, class_colors(len(self.class_names)))
