"""Validation while training (TRAIN.eval_period) and the best checkpoint (TRAIN.best_metric).

After every N epochs the checkpoint just written is evaluated as `eval_multipro.py` evaluates it (the same
`evaluation.evaluate`, the config's VAL and TEST settings, VAL.max_images), on the devices training uses: under
torch.distributed every rank evaluates its share of the images on its device (the ranks other than 0 from their own
copy of rank 0's weights, sent to them, so that no folder needs to be shared), and rank 0 adds them up. Its
figures join the history (`{"epoch": N, "validation": {...}}`, so the resume state keeps them), and the best epoch's
parts are copied to DIR/<part>_best.pth with DIR/best.json saying which epoch and what figure; a resumed run reads
that record and goes on from it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable

import torch.distributed as dist
from torch import nn

from ..checkpoints import BEST_CHECKPOINT, best_record_path, copy_checkpoint, epoch_checkpoint, save_parts
from ..data.records import write_json
from ..evaluation import evaluate, evaluate_across_ranks
from .trainer import Hook, Trainer

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


def _on_cpu(state: dict) -> dict:
    return {k: v.cpu() for k, v in state.items()}


class EpochValidation:
    """Called by the checkpoint hook between the epoch's parts and its resume state (see the module); on the ranks
    other than 0 of torch.distributed, by `RankValidationHook`. `epoch_parts` is the model role's (the checkpoint's
    name and the parts of a model)."""

    def __init__(
        self,
        cfg,
        devices: list[str],
        epoch_parts: Callable[[nn.Module, int], tuple[str, dict[str, nn.Module]]],
        parts: list[str],
        prefix: str = "",
    ) -> None:
        self.cfg, self.devices, self.epoch_parts, self.parts = cfg, devices, epoch_parts, parts
        self.period, self.metric = cfg.TRAIN.eval_period, cfg.TRAIN.best_metric
        self.record_path = best_record_path(cfg.DIR, prefix)

    def _best(self) -> dict | None:
        if not os.path.isfile(self.record_path):
            return None
        with open(self.record_path) as f:
            return json.load(f)

    def _summary(self, model: nn.Module, epoch: int) -> dict | None:
        """The epoch's evaluation summary; under torch.distributed, shared by the ranks (None but on rank 0)."""
        cfg = self.cfg.clone()
        checkpoint, parts = self.epoch_parts(model, epoch)
        cfg.VAL.checkpoint = checkpoint
        if not (dist.is_available() and dist.is_initialized()):
            return evaluate(cfg, self.devices)
        # rank 0's weights and batch-norm statistics (without synchronized batch norm, each rank's own differ)
        states = [{name: _on_cpu(part.state_dict()) for name, part in parts.items()} if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(states)
        with tempfile.TemporaryDirectory() as folder:
            if dist.get_rank():  # rank 0 has just written them in DIR
                for name, part in parts.items():
                    part.load_state_dict(states[0][name])  # as DDP's next forward would broadcast them
                save_parts(folder, checkpoint, parts)
                cfg.DIR = folder
            return evaluate_across_ranks(cfg, self.devices[0])

    def __call__(self, trainer: Trainer) -> None:
        epoch = trainer.position.epoch
        if epoch % self.period:
            return
        summary = self._summary(trainer.model, epoch)
        if summary is None:
            return
        found = figures(summary)
        trainer.position.history.append({"epoch": float(epoch), "validation": found})
        log.info(
            "epoch %d validation (%d images): %s",
            epoch,
            summary["images"],
            ", ".join(f"{k} {v:.4f}" for k, v in found.items()),
        )
        name = metric_name(self.metric, found)
        best = self._best()
        value = found[name]
        better = best is None or (value < best["value"] if lower_is_better(name) else value > best["value"])
        if better:
            copy_checkpoint(self.cfg.DIR, epoch_checkpoint(epoch), BEST_CHECKPOINT, self.parts)
            record = {"epoch": epoch, "metric": name, "value": value, "checkpoint": BEST_CHECKPOINT}
            write_json(self.record_path, record)
            log.info("epoch %d is the best so far (%s %.4f): %s", epoch, name, value, BEST_CHECKPOINT)


class RankValidationHook(Hook):
    """On the ranks other than 0: their share of each validation (rank 0's runs in its checkpoint hook)."""

    def __init__(self, validation: EpochValidation) -> None:
        self.validation = validation

    def after_epoch(self, trainer: Trainer) -> None:
        self.validation(trainer)
