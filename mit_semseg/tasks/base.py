"""The interface of a task, and the model factory every entry point uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .. import checkpoints
from ..data.sampling import LoaderRequest
from ..inference import prepare_for_inference
from ..models.builder import ENCODERS, build_decoder, build_encoder


class Task:
    """What is specific to a task: config checks, the training module and its losses, the training data and its
    batches, evaluation metrics and summary, prediction and output files.

    Training, evaluation, `test.py`, `Segmenter` and the benches ask `task_for(cfg)` once and then only
    call these methods. A task serves the decoders that subclass its `decoder_base`.
    """

    name: ClassVar[str]
    decoder_base: ClassVar[type]
    find_unused_parameters: ClassVar[bool] = False  # whether a training step may leave parameters without gradient
    files_prefix: ClassVar[str] = ""  # of the training run's resume states, history, plot and config in DIR

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    # configuration ------------------------------------------------------------------------------------------------

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ConfigError for what this task cannot do with `cfg`."""

    # the model ----------------------------------------------------------------------------------------------------

    def build_model(self, weights: Mapping[str, str] | None = None, inference: bool = False) -> nn.Module:
        """The model of the config: encoder and decoder (their map widths from the encoder's spec) in the task's module.

        `weights` ({"encoder": path, "decoder": path}) loads checkpoints, else MODEL.weights_encoder and
        MODEL.weights_decoder, else ImageNet weights (MODEL.pretrained) and a fresh decoder. `inference`:
        the decoder gives probabilities, and no ImageNet weights are fetched.
        """
        m = self.cfg.MODEL
        weights = weights or {"encoder": m.weights_encoder, "decoder": m.weights_decoder}
        imagenet = m.pretrained and not (inference or m.init_from)  # init_from brings its own encoder weights
        encoder = build_encoder(m.arch_encoder, weights["encoder"], imagenet, m.bn_momentum)
        decoder = build_decoder(
            m.arch_decoder,
            ENCODERS[m.arch_encoder].feature_channels,
            self.cfg.DATASET.num_class,
            self.cfg.DATASET.label_tables,
            weights["decoder"],
            inference,
            m.bn_momentum,
            m.decoder_dropout,
        )
        return self.module(encoder, decoder, inference)

    def model_files(self, checkpoint: str) -> dict[str, str]:
        """The weights files of DIR's `checkpoint` for `build_model` (`checkpoints.model_files`; a missing one is an
        error naming it)."""
        return checkpoints.model_files(self.cfg.DIR, checkpoint)

    def load(self, checkpoint: str, device: torch.device | str = "cpu", optimize: bool = True) -> nn.Module:
        """The model of `model_files(checkpoint)`, on `device`, in eval mode.

        With `optimize` (the default) it is prepared for fast inference (`prepare_for_inference`); such
        a model is for predicting only, not for training or saving.
        """
        model = self.build_model(self.model_files(checkpoint), inference=True).to(device).eval()
        return prepare_for_inference(model) if optimize else model

    def epoch_parts(self, model: nn.Module, epoch: int) -> tuple[str, dict[str, nn.Module]]:
        """What training writes to DIR after each epoch: the checkpoint's name and its parts (for
        `checkpoints.save_parts`)."""
        return checkpoints.epoch_checkpoint(epoch), {part: getattr(model, part) for part in checkpoints.PARTS}

    def module(self, encoder: nn.Module, decoder: nn.Module, inference: bool = False) -> nn.Module:
        """Encoder and decoder with the task's losses: `forward(batch)` gives (loss, raw statistics). For `inference`,
        without what serves training only."""
        raise NotImplementedError

    def step_statistics(self, raw) -> dict[str, torch.Tensor]:
        """The module's training statistics by name (accuracies end in `acc`, losses in `loss`)."""
        raise NotImplementedError

    # training data ------------------------------------------------------------------------------------------------

    def read_records(self, path: str) -> list[dict]:
        raise NotImplementedError

    def describe_records(self, records: Sequence[dict]) -> str:
        """A few words on the training records, after their count (e.g. their sources)."""
        return ""

    def train_loader(self, records: Sequence[dict], request: LoaderRequest):
        """The requested training batches (`sampling.LoaderRequest`)."""
        raise NotImplementedError

    # evaluation ---------------------------------------------------------------------------------------------------

    def val_records(self) -> list[dict]:
        """The records evaluation reads: DATASET.list_val's."""
        return self.read_records(self.cfg.DATASET.list_val)

    def val_dataset(self, records: Sequence[dict]):
        raise NotImplementedError

    def measure(self, model: nn.Module, item: dict, picture_path: str | None):
        """One validation image's counts for `metrics().add`; with `picture_path`, also its picture there."""
        raise NotImplementedError

    def metrics(self):
        """An accumulator of `measure` results: `add(counts)`, `summary()`."""
        raise NotImplementedError

    def print_summary(self, summary: dict, path: str) -> None:
        raise NotImplementedError

    # inference ----------------------------------------------------------------------------------------------------

    def class_names(self) -> list[str]:
        """The names of the classes `Segmenter.predict` returns (0-based)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, image: np.ndarray, probabilities: bool = False):
        """A prediction for one RGB image, from a model built with `inference=True` (see `Segmenter.predict`)."""
        raise NotImplementedError

    # ONNX ---------------------------------------------------------------------------------------------------------

    def output_names(self, model: nn.Module) -> list[str]:
        """The names of the exported file's outputs for `model`, in `export_outputs`'s order."""
        raise NotImplementedError

    def export_outputs(self, model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the exported file computes: each output's probabilities at the input size (a model built with
        `inference=True`)."""
        raise NotImplementedError

    def onnx_model(self, session) -> nn.Module:
        """An `onnx_runtime.OnnxModel` over an ONNX Runtime session of an exported file, which `predict` can use."""
        raise NotImplementedError

    def classes_per_head(self, pred) -> dict[str, np.ndarray]:
        """A `predict` answer as the classes of each head (an image-level head's: one value), to compare predictions."""
        raise NotImplementedError

    def write_outputs(self, image: np.ndarray, pred, stem: str) -> tuple[list[str], list[str]]:
        """`test.py`'s files for one image, named from `stem`; returns their paths and the lines to print about it."""
        raise NotImplementedError
