"""The tasks: what differs between semantic segmentation and Unified Perceptual Parsing, one module each.

The decoder of a config decides its task: `task_for(cfg)` is asked once by training, evaluation,
`test.py`, `Segmenter` and the benches, which then only use the task's roles (see `base`). Training
asks `stage_for(cfg)`: the task's own stage, or TRAIN.stage's (`train.py --stage`), which serves the
same decoders.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..models.builder import DECODERS, lookup
from .base import Stage, StageSpec, Task
from .segmentation import SegmentationTask
from .texture import TEXTURE_STAGE
from .unified import UnifiedParsingTask

TASKS: dict[str, type[Task]] = {task.name: task for task in (SegmentationTask, UnifiedParsingTask)}
STAGES: dict[str, StageSpec] = {"texture": TEXTURE_STAGE}  # TRAIN.stage: what else a task's model can train


def task_class(arch_decoder: str) -> type[Task]:
    """The task whose decoders include `arch_decoder`."""
    decoder = lookup(DECODERS, arch_decoder, "decoder").cls
    return next(task for task in TASKS.values() if issubclass(decoder, task.decoder_base))


def _stage_spec(cfg) -> StageSpec | None:
    stage = cfg.TRAIN.stage
    if not stage:
        return None
    if stage not in STAGES:
        raise ConfigError(f"TRAIN.stage: unknown stage '{stage}'; valid: '' (the model) or {', '.join(STAGES)}")
    if not issubclass(lookup(DECODERS, cfg.MODEL.arch_decoder, "decoder").cls, STAGES[stage].decoder_base):
        raise ConfigError(
            f"TRAIN.stage {stage}: decoder {cfg.MODEL.arch_decoder} has no such stage (a UPP decoder has)"
        )
    return STAGES[stage]


def check_config(cfg) -> None:
    """Raise ConfigError for what the config's task, and its TRAIN.stage, cannot do with it."""
    spec = _stage_spec(cfg)
    task_class(cfg.MODEL.arch_decoder).check_config(cfg)
    if spec:
        spec.check_config(cfg)


def task_for(cfg) -> Task:
    """The task of the config's MODEL.arch_decoder (whatever stage TRAIN.stage trains)."""
    return task_class(cfg.MODEL.arch_decoder)(cfg)


def stage_for(cfg) -> Stage:
    """What `train.py` trains with the config: its task's own stage, or TRAIN.stage's."""
    task, spec = task_for(cfg), _stage_spec(cfg)
    return spec.stage(task) if spec else task.stage()


def build_model(cfg, weights=None, inference: bool = False):
    """The config's model in its task's module: see `TaskModel.build`."""
    return task_for(cfg).model.build(weights, inference)


__all__ = [
    "STAGES",
    "TASKS",
    "SegmentationTask",
    "Stage",
    "Task",
    "UnifiedParsingTask",
    "build_model",
    "check_config",
    "stage_for",
    "task_class",
    "task_for",
]
