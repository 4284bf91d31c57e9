"""The tasks: what differs between semantic segmentation and Unified Perceptual Parsing, one module each.

The decoder of a config decides its task: `task_for(cfg)` is asked once by training, evaluation,
`test.py`, `Segmenter` and the benches, which then only call the task's methods (`Task`).
"""

from __future__ import annotations

from ..models.builder import DECODERS, lookup
from .base import Task
from .segmentation import SegmentationTask
from .unified import UnifiedParsingTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (SegmentationTask, UnifiedParsingTask)}


def task_class(arch_decoder: str) -> type[Task]:
    """The task whose decoders include `arch_decoder`."""
    decoder = lookup(DECODERS, arch_decoder, "decoder").cls
    return next(task for task in TASKS.values() if issubclass(decoder, task.decoder_base))


def task_for(cfg) -> Task:
    """The task of the config (its MODEL.arch_decoder's)."""
    return task_class(cfg.MODEL.arch_decoder)(cfg)


def build_model(cfg, weights=None, inference: bool = False):
    """The config's model in its task's module: see `Task.build_model`."""
    return task_for(cfg).build_model(weights, inference)


__all__ = ["TASKS", "SegmentationTask", "Task", "UnifiedParsingTask", "build_model", "task_class", "task_for"]
