"""Validation while training (TRAIN.eval_period) and the best checkpoint (TRAIN.best_metric).

After every N epochs the checkpoint just written is evaluated as `eval_multipro.py` evaluates it (the same
`evaluation.evaluate`, the config's VAL and TEST settings, VAL.max_images), on the devices training uses. Its
figures join the history (`{"epoch": N, "validation": {...}}`, so the resume state keeps them), and the best epoch's
parts are copied to DIR/<part>_best.pth with DIR/best.json saying which epoch and what figure; a resumed run reads
that record and goes on from it.
"""

from __future__ import annotations

import json
import logging
import os

from ..checkpoints import BEST_CHECKPOINT, best_record_path, copy_checkpoint, epoch_checkpoint
from ..data.records import write_json
from ..evaluation import evaluate
from .trainer import Trainer

log = logging.getLogger("mit_semseg")


class ValidationError(RuntimeError):
    """TRAIN.best_metric names no figure of the evaluation."""


def figures(summary: dict) -> dict[str, float]:
    """The evaluation summary's figures by name: its top-level numbers (`mean_iou`), and each head's of a
    multi-task summary as `head/name` (`object/mean_iou`, `scene/accuracy`); counts and per-class lists left out."""
    out = {}
    for key, value in summary.items():
        if isinstance(value, float) and key != "seconds":
            out[key] = value
        elif isinstance(value, dict):
            out |= {f"{key}/{k}": v for k, v in value.items() if isinstance(v, float)}
    return out


def metric_name(name: str, available: dict[str, float]) -> str:
    """TRAIN.best_metric among the figures: the name itself, else the first head's of that name."""
    if name in available:
        return name
    for key in available:
        if key.endswith(f"/{name}"):
            return key
    raise ValidationError(f"TRAIN.best_metric '{name}' is none of the evaluation's figures: {', '.join(available)}")


def lower_is_better(name: str) -> bool:
    return name.endswith(("loss", "error"))


class EpochValidation:
    """Called by the checkpoint hook between the epoch's parts and its resume state (see the module)."""

    def __init__(self, cfg, devices: list[str], parts: list[str], prefix: str = "") -> None:
        self.cfg, self.devices, self.parts = cfg, devices, parts
        self.period, self.metric = cfg.TRAIN.eval_period, cfg.TRAIN.best_metric
        self.record_path = best_record_path(cfg.DIR, prefix)

    def _best(self) -> dict | None:
        if not os.path.isfile(self.record_path):
            return None
        with open(self.record_path) as f:
            return json.load(f)

    def __call__(self, trainer: Trainer) -> None:
        epoch = trainer.position.epoch
        if epoch % self.period:
            return
        cfg = self.cfg.clone()
        cfg.VAL.checkpoint = epoch_checkpoint(epoch)
        found = figures(evaluate(cfg, self.devices))
        trainer.position.history.append({"epoch": float(epoch), "validation": found})
        log.info("epoch %d validation: %s", epoch, ", ".join(f"{k} {v:.4f}" for k, v in found.items()))
        name = metric_name(self.metric, found)
        best = self._best()
        value = found[name]
        better = best is None or (value < best["value"] if lower_is_better(name) else value > best["value"])
        if better:
            copy_checkpoint(self.cfg.DIR, epoch_checkpoint(epoch), BEST_CHECKPOINT, self.parts)
            record = {"epoch": epoch, "metric": name, "value": value, "checkpoint": BEST_CHECKPOINT}
            write_json(self.record_path, record)
            log.info("epoch %d is the best so far (%s %.4f): %s", epoch, name, value, BEST_CHECKPOINT)
