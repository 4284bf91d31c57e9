"""The trainer's hooks: checkpoints and resume states, the history and its plot, progress, the non-finite-loss stop."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable

from torch import nn

from ..checkpoints import (
    atomic_save,
    epoch_checkpoint,
    latest_state,
    part_name,
    remove_epochs_before,
    save_parts,
    state_path,
)
from ..data.records import write_json
from ..progress import Progress
from .monitor import TensorBoard, plot_history
from .state import rng_state, training_parts
from .trainer import Hook, Trainer

log = logging.getLogger("mit_semseg")


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, say); the message says where and what is kept."""


def describe_stats(stats: dict[str, float]) -> str:
    """`loss 0.1234, acc 95.12%, ...`: the total loss, the accuracies in percent, then the heads' losses."""
    order = sorted(stats, key=lambda name: (name != "loss", not name.endswith("acc"), name))
    return ", ".join(
        f"{name} {100 * stats[name]:.2f}%" if name.endswith("acc") else f"{name} {stats[name]:.4f}" for name in order
    )


def save_state(trainer: Trainer, directory: str, prefix: str = "") -> str:
    """The resume state at the trainer's position (`prefix`: the stage's); older ones are removed once it is safely
    written."""
    position = trainer.position
    path = state_path(directory, position.epoch, position.iteration, prefix)
    older = latest_state(directory, prefix)
    atomic_save(
        {
            "epoch": position.epoch,
            "iteration": position.iteration,
            "history": position.history,
            "encoder": trainer.model.encoder.state_dict(),
            "decoder": trainer.model.decoder.state_dict(),
            "training_parts": {name: part.state_dict() for name, part in training_parts(trainer.model).items()},
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": rng_state(),
        },
        path,
    )
    if older and older != path:
        os.remove(older)
    return path


class CheckpointHook(Hook):
    """After each epoch, the parts the task saves (`parts(model, epoch)`: the checkpoint's name and its parts, for a
    model DIR/encoder_epoch_N.pth and decoder_epoch_N.pth, plain state dicts, the original's files), then
    `validation(trainer)` if given (it reads those files, and what it adds to the history belongs in the state), then
    a resume state; with `keep_last` N, the parts of older epochs removed. On Ctrl-C, a resume state where training
    stopped. `prefix` names the stage's resume states."""

    def __init__(
        self,
        directory: str,
        parts: Callable[[nn.Module, int], tuple[str, dict[str, nn.Module]]],
        prefix: str = "",
        validation: Callable[[Trainer], None] | None = None,
        keep_last: int = 0,
    ) -> None:
        self.directory, self.parts, self.prefix = directory, parts, prefix
        self.validation, self.keep_last = validation, keep_last

    def after_epoch(self, trainer: Trainer) -> None:
        epoch = trainer.position.epoch
        checkpoint, parts = self.parts(trainer.model, epoch)
        names = save_parts(self.directory, checkpoint, parts)
        log.info("epoch %d done: checkpoints %s in %s", epoch, " and ".join(names), self.directory)
        if self.validation is not None:
            self.validation(trainer)
        save_state(trainer, self.directory, self.prefix)
        if self.keep_last:
            removed = remove_epochs_before(self.directory, epoch - self.keep_last + 1, parts)
            if removed:
                log.info("TRAIN.keep_last %d: removed %s", self.keep_last, ", ".join(removed))

    def after_interrupt(self, trainer: Trainer) -> None:
        log.warning("interrupted: saved %s; continue with --resume", save_state(trainer, self.directory, self.prefix))


class HistoryHook(Hook):
    """The history of the mean loss and statistics (part of the resume state), `history.json` and the plot
    `training.png` after each epoch (`prefix`: the stage's, before each name), TensorBoard scalars when it is
    installed, and each epoch's last means in the log."""

    def __init__(self, directory: str, prefix: str = "") -> None:
        self.directory, self.prefix = directory, prefix
        self.board = TensorBoard(directory, f"{prefix}tensorboard")

    def after_window(self, trainer: Trainer, means: dict[str, float]) -> None:
        s, position = trainer.schedule, trainer.position
        position.history.append(
            {"epoch": position.epoch + position.iteration / s.epoch_iters, **means, "lr": trainer.lr}
        )
        self.board.scalars(trainer.step, lr=trainer.lr, **means)

    def after_epoch(self, trainer: Trainer) -> None:
        history = trainer.position.history
        windows = [h for h in history if "validation" not in h]
        if windows:
            last = {k: v for k, v in windows[-1].items() if k not in ("epoch", "lr")}
            log.info("epoch %d: %s", trainer.position.epoch, describe_stats(last))
        if history and "validation" in history[-1]:
            self.board.scalars(trainer.step, **{f"validation/{k}": v for k, v in history[-1]["validation"].items()})
        write_json(os.path.join(self.directory, f"{self.prefix}history.json"), history)
        plot_history(history, os.path.join(self.directory, f"{self.prefix}training.png"))

    def after_train(self, trainer: Trainer) -> None:
        self.board.close()


class ProgressHook(Hook):
    """A progress bar per epoch on a terminal; elsewhere (a log file, a batch scheduler) a plain log line every
    TRAIN.disp_iter iterations."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def _open(self, trainer: Trainer) -> None:
        s, position = trainer.schedule, trainer.position
        self.bar = Progress(
            s.epoch_iters,
            f"epoch {position.epoch + 1}/{s.num_epoch}",
            initial=position.iteration,
            every=s.disp_iter,
            printer=log.info,
            stream=sys.stderr,
        )

    def before_train(self, trainer: Trainer) -> None:
        self._open(trainer)

    def after_window(self, trainer: Trainer, means: dict[str, float]) -> None:
        data, step = trainer.timing
        self.bar.set_postfix(
            **{
                name: (f"{100 * v:.2f}%" if name.endswith("acc") else f"{v:.4f}")
                for name, v in means.items()
                if name == "loss" or name.endswith("acc")
            },
            lr=f"{trainer.lr:.2e}",
            data=f"{data:.3f}s",
            step=f"{step:.3f}s",
        )

    def after_iteration(self, trainer: Trainer) -> None:
        self.bar.update()

    def after_epoch(self, trainer: Trainer) -> None:
        self.bar.close()
        if trainer.position.epoch < trainer.schedule.last_epoch:
            self._open(trainer)

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()


class FiniteLossHook(Hook):
    """A NaN or infinite loss stops the run, naming the iteration; the last good checkpoint stays."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def after_step(self, trainer: Trainer, loss: float, stats: dict[str, float]) -> None:
        if not math.isfinite(loss):
            position = trainer.position
            last = part_name("encoder", epoch_checkpoint(position.epoch)) if position.epoch else "none yet"
            raise TrainingError(
                f"the loss is {loss} at epoch {position.epoch + 1}, iteration {position.iteration + 1} "
                f"(step {trainer.step + 1}): training stopped; the last good checkpoint in "
                f"{self.directory} is kept ({last})"
            )
