"""What a task is made of: a few roles with one job each, and the training stages built from them.

A `Task` (one per family of decoders) holds its roles: `model` (the module and its losses, its weight
files), `data` (the training records and batches), `evaluation` (validation items, counts, figures),
`prediction` (one image's answer and `test.py`'s files) and `export` (the ONNX file's outputs). Training
runs a `Stage`: a model role, a data role and a schedule; the model's own stage comes from the config's
TRAIN keys, another stage (`tasks.STAGES`) brings its own roles and schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from .. import checkpoints
from ..data.sampling import LoaderRequest
from ..inference import prepare_for_inference
from ..models.builder import ENCODERS, build_decoder, build_encoder


class TaskModel:
    """The task's model and its losses: built from the config, loaded from checkpoints, saved by training.

    The module's training `forward(batch)` gives its named values: `loss`, what training minimises, and
    statistics to log (a head's loss ends in `loss`, an accuracy in `acc`), as detectron2's models do.
    """

    find_unused_parameters: ClassVar[bool] = False  # whether a training step may leave parameters without gradient

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def build(self, weights: Mapping[str, str] | None = None, inference: bool = False) -> nn.Module:
        """The model of the config: encoder and decoder (their map widths from the encoder's spec) in the task's module.

        `weights` ({"encoder": path, "decoder": path}) loads checkpoints, else MODEL.weights_encoder and
        MODEL.weights_decoder, else ImageNet weights (MODEL.pretrained) and a fresh decoder. `inference`:
        the decoder gives probabilities, and no ImageNet weights are fetched.
        """
        m = self.cfg.MODEL
        weights = weights or {"encoder": m.weights_encoder, "decoder": m.weights_decoder}
        imagenet = m.pretrained and not (inference or m.init_from)  # init_from brings its own encoder weights
        hub = ENCODERS[m.arch_encoder].imagenet_hub if imagenet and not weights["encoder"] else ""
        encoder_weights = checkpoints.hub_imagenet(m.arch_encoder, hub) if hub else weights["encoder"]
        encoder = build_encoder(m.arch_encoder, encoder_weights, imagenet, m.bn_momentum, m.drop_path_rate)
        decoder = build_decoder(
            m.arch_decoder,
            ENCODERS[m.arch_encoder].feature_channels,
            self.cfg.DATASET.num_class,
            self.cfg.DATASET.label_tables,
            weights["decoder"],
            inference,
            m.bn_momentum,
            m.decoder_dropout,
            m.align_corners,
        )
        return self.module(encoder, decoder, inference)

    def module(self, encoder: nn.Module, decoder: nn.Module, inference: bool = False) -> nn.Module:
        """Encoder and decoder with the task's losses; for `inference`, without what serves training only."""
        raise NotImplementedError

    def files(self, checkpoint: str) -> dict[str, str]:
        """The weights files of DIR's `checkpoint`, or of another project's file, for `build`
        (`checkpoints.model_files`; a missing one is an error naming it)."""
        return checkpoints.model_files(self.cfg.DIR, checkpoint, decoder=self.cfg.MODEL.arch_decoder)

    def load(self, checkpoint: str, device: torch.device | str = "cpu", optimize: bool = True) -> nn.Module:
        """The model of `files(checkpoint)`, on `device`, in eval mode.

        With `optimize` (the default) it is prepared for fast inference (`prepare_for_inference`); such
        a model is for predicting only, not for training or saving.
        """
        model = self.build(self.files(checkpoint), inference=True).to(device).eval()
        return prepare_for_inference(model) if optimize else model

    def epoch_parts(self, model: nn.Module, epoch: int) -> tuple[str, dict[str, nn.Module]]:
        """What training writes to DIR after each epoch: the checkpoint's name and its parts (for
        `checkpoints.save_parts`)."""
        return checkpoints.epoch_checkpoint(epoch), {part: getattr(model, part) for part in checkpoints.PARTS}


class TrainingData(Protocol):
    """The training records of a stage and their batches."""

    def read(self, path: str) -> list[dict]: ...

    def describe(self, records: Sequence[dict]) -> str:
        """A few words on the records, after their count (e.g. their sources); may be empty."""

    def loader(self, records: Sequence[dict], request: LoaderRequest):
        """The requested training batches (`sampling.LoaderRequest`)."""


class Evaluation(Protocol):
    """Validation: its records and items, each image's counts, their accumulation and the printed summary."""

    def records(self) -> list[dict]:
        """The records evaluation reads (DATASET.list_val's, and what the task adds)."""

    def dataset(self, records: Sequence[dict]): ...

    def measure(self, model: nn.Module, item: dict, picture_path: str | None):
        """One validation item's counts for `metrics().add`; with `picture_path`, also its picture there."""

    def metrics(self):
        """An accumulator of `measure` results: `add(counts)`, `summary()`."""

    def print_summary(self, summary: dict, path: str) -> None: ...


class Prediction(Protocol):
    """One image's answer (`Segmenter.predict`), and the files `test.py` writes of it."""

    def class_names(self) -> list[str]:
        """The names of the classes `predict` returns (0-based)."""

    def predict(self, model: nn.Module, image: np.ndarray, probabilities: bool = False):
        """A prediction for one RGB image, from a model built with `inference=True`."""

    def classes_per_head(self, pred) -> dict[str, np.ndarray]:
        """A `predict` answer as the classes of each head (an image-level head's: one value), to compare predictions."""

    def write_outputs(self, image: np.ndarray, pred, stem: str) -> tuple[list[str], list[str]]:
        """`test.py`'s files for one image, named from `stem`; returns their paths and the lines to print about it."""


class Export(Protocol):
    """What the exported ONNX file computes, and a model `Prediction.predict` can use over its session."""

    def output_names(self, model: nn.Module) -> list[str]:
        """The names of the file's outputs for `model`, in `outputs`'s order."""

    def outputs(self, model: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each output's probabilities at the input size (a model built with `inference=True`)."""

    def onnx_model(self, session) -> nn.Module:
        """An `onnx_runtime.OnnxModel` over an ONNX Runtime session of an exported file."""


@dataclass(frozen=True)
class Stage:
    """What one training run trains, from which records, on what schedule, and the name prefix of its files in DIR
    (resume states, history, plot, config)."""

    model: TaskModel
    data: TrainingData
    list_train: str
    num_epoch: int
    epoch_iters: int
    lr_encoder: float
    lr_decoder: float
    lr_min: float
    start_epoch: int = 0  # TRAIN.start_epoch: continue from DIR's epoch N
    init_from: str = ""  # MODEL.init_from: fine-tune from another model's weights
    files_prefix: str = ""


class Task:
    """A family of decoders and the roles that serve them (see the module). Training, evaluation, `test.py`,
    `Segmenter` and the benches ask `task_for(cfg)` once and then only call its roles."""

    name: ClassVar[str]
    decoder_base: ClassVar[type]
    model: TaskModel
    data: TrainingData
    evaluation: Evaluation
    prediction: Prediction
    export: Export

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ConfigError for what this task cannot do with `cfg`."""

    def stage(self) -> Stage:
        """The model's own training: DATASET.list_train, the TRAIN schedule, TRAIN.start_epoch, MODEL.init_from."""
        t = self.cfg.TRAIN
        return Stage(
            self.model,
            self.data,
            self.cfg.DATASET.list_train,
            t.num_epoch,
            t.epoch_iters,
            t.lr_encoder,
            t.lr_decoder,
            t.lr_min,
            t.start_epoch,
            self.cfg.MODEL.init_from,
        )


@dataclass(frozen=True)
class StageSpec:
    """A training stage other than the model's own (TRAIN.stage): the decoders it serves, its config checks (beyond
    the task's), and the `Stage` it trains for the config's task."""

    decoder_base: type
    check_config: Callable[..., None]
    stage: Callable[[Task], Stage]
