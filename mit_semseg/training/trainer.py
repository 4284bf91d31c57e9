"""The epoch loop: batches in, optimisation steps out; everything else (checkpoints, logs, plots, checks) is a hook."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.dataset import SkippedSamples
from ..parallel import DictDataParallel, to_device
from .optim import scheduled_lr, set_lr

log = logging.getLogger("mit_semseg")
BOOKKEEPING = ("failed", "fatal", "num_samples")  # batch entries about the data, not for the model


@dataclass
class Position:
    epoch: int = 0  # completed epochs
    iteration: int = 0  # completed iterations of the current epoch
    history: list = field(default_factory=list)
    interrupted: bool = False  # the run ended on Ctrl-C, with a resume state saved
    finished: bool = False  # the run reached the schedule's last epoch


@dataclass(frozen=True)
class Schedule:
    num_epoch: int
    epoch_iters: int
    per_step: int  # batches per optimisation step: one per device of this process
    lr_pow: float
    disp_iter: int  # statistics are averaged over this many iterations, then reported
    stop_after_epoch: int | None = None  # end the run (resumably) once this epoch is done
    lr_min: float = 0.0  # the poly schedule's floor
    accum_steps: int = 1  # forward-backward passes of `per_step` batches per optimisation step (an iteration)
    warmup_iters: int = 0  # a linear warm-up before the poly schedule (`optim.scheduled_lr`)
    warmup_ratio: float = 1e-6

    @property
    def batches_per_iteration(self) -> int:
        return self.per_step * self.accum_steps

    @property
    def max_iter(self) -> int:
        return self.epoch_iters * self.num_epoch

    @property
    def last_epoch(self) -> int:
        return min(self.num_epoch, self.stop_after_epoch or self.num_epoch)


class Hook:
    """What the trainer calls at each point of a run; each method does nothing unless overridden."""

    def before_train(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer, loss: float, stats: dict[str, float]) -> None:
        """After an optimisation step (an iteration whose batches were all unreadable has none)."""

    def after_iteration(self, trainer: Trainer) -> None: ...

    def after_window(self, trainer: Trainer, means: dict[str, float]) -> None:
        """Every TRAIN.disp_iter iterations and at the end of an epoch: the mean loss and statistics since the last."""

    def after_epoch(self, trainer: Trainer) -> None: ...

    def after_interrupt(self, trainer: Trainer) -> None:
        """The run stops on Ctrl-C, at `trainer.position`."""

    def after_train(self, trainer: Trainer) -> None:
        """Always, last (also when the run stops on an error)."""


class StopRequest:
    """The first Ctrl-C asks training to stop after the current iteration; a second one aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this iteration and saving a resume state (Ctrl-C again to abort)")

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _forward(step_module: nn.Module, group: list[dict], device: torch.device, memory_format) -> dict[str, torch.Tensor]:
    """The mean `loss` and other named values of one pass over the batches of all devices."""
    group = [dict(b, img_data=b["img_data"].contiguous(memory_format=memory_format)) for b in group]
    if isinstance(step_module, DictDataParallel):
        results = step_module(group)
    else:
        results = [step_module(to_device(group[0], device, non_blocking=True))]
    return {name: sum(r[name].float() for r in results) / len(results) for name in results[0]}


def train_step(
    step_module: nn.Module,
    groups: list[list[dict]],
    device: torch.device,
    memory_format: torch.memory_format,
    optimizer: torch.optim.Optimizer,
    scaler,
) -> tuple[float, dict[str, float]]:
    """One optimisation step over `groups`, each the batches of all devices for one forward-backward pass
    (TRAIN.accum_steps of them: each pass's loss divided by their number, so that K passes of batch b step as one
    pass of batch K x b; under DistributedDataParallel the gradients are averaged across processes on the last pass
    only). Returns the mean `loss` and the means of the module's other named values (see `tasks.TaskModel`)."""
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for k, group in enumerate(groups):
        last = k == len(groups) - 1
        syncing = last or not isinstance(step_module, nn.parallel.DistributedDataParallel)
        with contextlib.nullcontext() if syncing else step_module.no_sync():
            values = _forward(step_module, group, device, memory_format)
            scaler.scale(values["loss"] / len(groups)).backward()
        for name, value in values.items():  # on the device: one transfer per value per step, not per pass
            share = value.detach() / len(groups)
            totals[name] = totals[name] + share if name in totals else share
    scaler.step(optimizer)
    scaler.update()
    means = {name: value.item() for name, value in totals.items()}
    return means.pop("loss"), means


class Trainer:
    """Runs epochs from `position` to the end of `schedule`: per iteration, `per_step` batches, the learning rate
    of the step, one optimisation step; hooks do the rest.

    `model` is the module being trained (with `encoder` and `decoder`); `step_module` is what runs a step
    (the model, or it wrapped for autocast, compilation, several devices or processes). `batches_for(epoch,
    start)` gives an epoch's batches from batch `start`.
    """

    def __init__(
        self,
        model: nn.Module,
        step_module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler,
        batches_for: Callable[[int, int], Iterable[dict]],
        schedule: Schedule,
        position: Position,
        hooks: list[Hook],
        device: torch.device,
        memory_format: torch.memory_format,
        prepare_model: Callable[[nn.Module], None] = lambda model: None,
    ) -> None:
        self.model, self.step_module, self.optimizer, self.scaler = model, step_module, optimizer, scaler
        self.batches_for, self.schedule, self.position, self.hooks = batches_for, schedule, position, hooks
        self.device, self.memory_format = device, memory_format
        self.prepare_model = prepare_model  # called after model.train() each epoch (TRAIN.fix_bn)
        self.skipped = SkippedSamples()
        self.timing = (0.0, 0.0)  # the last iteration's data and step seconds
        self.stop = StopRequest()

    def _call(self, event: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    @property
    def step(self) -> int:
        """Iterations done since the start of training."""
        return self.position.epoch * self.schedule.epoch_iters + self.position.iteration

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def run(self) -> Position:
        s, position = self.schedule, self.position
        try:
            with self.stop:
                self._call("before_train")
                while position.epoch < s.last_epoch and not self.stop.requested:
                    self._epoch()
                    if position.iteration < s.epoch_iters:
                        break
                    position.epoch, position.iteration = position.epoch + 1, 0
                    self._call("after_epoch")
                position.finished = position.epoch >= s.num_epoch
                if self.stop.requested:
                    position.interrupted = True
                    self._call("after_interrupt")
        finally:
            self._call("after_train")
        return position

    def _group(self, batches) -> list[dict]:
        """The next `per_step` batches that hold images (an all-unreadable batch holds none)."""
        group = []
        for _ in range(self.schedule.per_step):
            batch = next(batches)
            self.skipped.update(batch)
            if "img_data" in batch:
                group.append({k: v for k, v in batch.items() if k not in BOOKKEEPING})
        return group

    def _epoch(self) -> None:
        """Train until the epoch ends or a stop is requested; `position` says how far it got."""
        s, position = self.schedule, self.position
        batches = iter(self.batches_for(position.epoch, position.iteration * s.batches_per_iteration))
        self.model.train()
        self.prepare_model(self.model)
        sums: dict[str, list[float]] = {}  # name: [total, count] since the last window
        tick = time.perf_counter()
        while position.iteration < s.epoch_iters and not self.stop.requested:
            groups = [g for g in (self._group(batches) for _ in range(s.accum_steps)) if g]
            data_time = time.perf_counter() - tick
            schedule = (self.step, s.max_iter, s.lr_pow, s.lr_min, s.warmup_iters, s.warmup_ratio)
            set_lr(self.optimizer, lambda base: scheduled_lr(base, *schedule))
            if groups:
                loss, stats = train_step(
                    self.step_module,
                    groups,
                    self.device,
                    self.memory_format,
                    self.optimizer,
                    self.scaler,
                )
                self._call("after_step", loss, stats)
                for name, value in {"loss": loss, **stats}.items():
                    total = sums.setdefault(name, [0.0, 0])
                    total[0] += value
                    total[1] += 1
            position.iteration += 1
            self.timing = (data_time, time.perf_counter() - tick)
            if sums and (position.iteration % s.disp_iter == 0 or position.iteration == s.epoch_iters):
                self._call("after_window", {name: total / count for name, (total, count) in sums.items()})
                sums = {}
            self._call("after_iteration")
            tick = time.perf_counter()
