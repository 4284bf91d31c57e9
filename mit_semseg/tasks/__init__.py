"""The tasks: what differs between semantic segmentation and Unified Perceptual Parsing, one module each.

The decoder of a config decides its task: `task_for(cfg)` is asked once by training, evaluation,
`test.py`, `Segmenter` and the benches, which then only call the task's methods (`Task`). A training
stage (TRAIN.stage, `train.py --stage`) is a task of its own that serves the same decoders.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..models.builder import DECODERS, lookup
from .base import Task
from .segmentation import SegmentationTask
from .texture import TextureStageTask
from .unified import UnifiedParsingTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (SegmentationTask, UnifiedParsingTask)}
STAGES: dict[str, type[Task]] = {"texture": TextureStageTask}  # TRAIN.stage: the task that trains it


def task_class(arch_decoder: str, stage: str = "") -> type[Task]:
    """The task whose decoders include `arch_decoder`, or the training `stage`'s (which must serve that decoder)."""
    decoder = lookup(DECODERS, arch_decoder, "decoder").cls
    if not stage:
        return next(task for task in TASKS.values() if issubclass(decoder, task.decoder_base))
    if stage not in STAGES:
        raise ConfigError(f"TRAIN.stage: unknown stage '{stage}'; valid: '' (the model) or {', '.join(STAGES)}")
    if not issubclass(decoder, STAGES[stage].decoder_base):
        raise ConfigError(f"TRAIN.stage {stage}: decoder {arch_decoder} has no such stage (a UPP decoder has)")
    return STAGES[stage]


def task_for(cfg) -> Task:
    """The task of the config: its MODEL.arch_decoder's, or its TRAIN.stage's."""
    return task_class(cfg.MODEL.arch_decoder, cfg.TRAIN.stage)(cfg)


def build_model(cfg, weights=None, inference: bool = False):
    """The config's model in its task's module: see `Task.build_model`."""
    return task_for(cfg).build_model(weights, inference)


__all__ = [
    "STAGES",
    "TASKS",
    "SegmentationTask",
    "Task",
    "TextureStageTask",
    "UnifiedParsingTask",
    "build_model",
    "task_class",
    "task_for",
]
