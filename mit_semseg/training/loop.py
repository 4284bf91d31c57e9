"""Setting training up: one process over one or many devices, or one process per device under torchrun.

`train` builds the config's model (the task's), its data, optimizer and precision, restores a resume
state, and runs the `Trainer` with its hooks.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import nn

from ..checkpoints import PARTS, epoch_files, latest_state, load_state, state_path, state_pattern
from ..data.sampling import LoaderRequest
from ..nn import to_distributed
from ..parallel import DictDataParallel
from ..precision import training_amp
from ..tasks import Stage, stage_for
from .hooks import CheckpointHook, FiniteLossHook, HistoryHook, ProgressHook, TrainingError
from .init_from import init_from
from .monitor import setup_logging
from .optim import OptimizerSettings, build_optimizer
from .record import RunRecordHook
from .state import set_rng_state, training_parts
from .trainer import Hook, Position, Schedule, Trainer
from .validation import EpochValidation, RankValidationHook

log = logging.getLogger("mit_semseg")

__all__ = ["Runtime", "TrainingError", "train"]


@dataclass
class Runtime:
    """Where this process trains: its devices, and its rank among the processes."""

    devices: list[torch.device]
    rank: int = 0
    world_size: int = 1
    launched: bool = False  # by torchrun: one process per device, in a process group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.launched or self.world_size > 1


class Autocast(nn.Module):
    """Runs the wrapped module under autocast; inside the module so every replica thread enters it."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, batch: dict):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(batch)


def freeze_bn(model: nn.Module) -> None:
    """TRAIN.fix_bn: batch norms keep their statistics and affine parameters (fine-tuning)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _restore(model, directory: str, stage: Stage, optimizer, scaler, resume: bool) -> Position:
    """Where to start: a resume state of the stage (--resume, or TRAIN.start_epoch with its state), else epoch
    start_epoch."""
    path, prefix = None, stage.files_prefix
    if resume:
        path = latest_state(directory, prefix)
        if path is None:
            raise TrainingError(f"--resume: no resume state ({state_pattern(prefix)}) in {directory}")
    elif stage.start_epoch > 0:
        candidate = state_path(directory, stage.start_epoch, 0, prefix)
        path = candidate if os.path.isfile(candidate) else None
        if path is None:
            log.info(
                "no resume state for epoch %d: continuing from its weights with a fresh optimizer", stage.start_epoch
            )
            return Position(epoch=stage.start_epoch)
    if path is None:
        return Position()
    state = load_state(path)
    model.encoder.load_state_dict(state["encoder"])
    model.decoder.load_state_dict(state["decoder"])
    saved, parts = state.get("training_parts", {}), training_parts(model)
    if saved.keys() != parts.keys():
        raise TrainingError(
            f"{path} was saved with the training-only parts {sorted(saved) or 'none'}, this config has "
            f"{sorted(parts) or 'none'} (MODEL.aux_head): resume with the config it was trained with"
        )
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    base_lrs = [g["base_lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, base_lr in zip(optimizer.param_groups, base_lrs):  # the config's rates win
        group["base_lr"] = base_lr
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resuming from %s (epoch %d, iteration %d)", path, state["epoch"] + 1, state["iteration"])
    return Position(state["epoch"], state["iteration"], list(state["history"]))


def _start_weights(directory: str, stage: Stage, resume: bool) -> dict[str, str] | None:
    """The weights training starts from: with TRAIN.start_epoch N, as the original, DIR's epoch N (unless a resume
    state brings its own); else the config's (`TaskModel.build`)."""
    return epoch_files(directory, stage.start_epoch) if stage.start_epoch > 0 and not resume else None


def _training_data(stage: Stage, runtime: Runtime, per_step: int, accum_steps: int, pin_memory: bool):
    """Reads the training records; returns `batches_for(epoch, start)`, the epoch's loader from batch `start`
    (`accum_steps` passes of `per_step` batches an iteration)."""
    records = stage.data.read(stage.list_train)
    about = stage.data.describe(records)
    log.info("%d training records from %s%s", len(records), stage.list_train, f"; {about}" if about else "")
    request = LoaderRequest(
        stage.epoch_iters * per_step * accum_steps,
        per_step,
        rank=runtime.rank,
        world_size=runtime.world_size,
        pin_memory=pin_memory,
    )
    return lambda epoch, start: stage.data.loader(records, replace(request, epoch=epoch, start=start))


def _step_module(model: nn.Module, stage: Stage, runtime: Runtime, amp: str, compile_: bool) -> nn.Module:
    """What runs a step: the model under autocast, compiled, and spread over the devices or processes."""
    device = runtime.devices[0]
    step_module = model
    if amp != "none":
        step_module = Autocast(model, device.type, torch.bfloat16 if amp == "bf16" else torch.float16)
    if compile_:
        step_module = torch.compile(step_module, dynamic=True)
    if runtime.distributed:
        if device.type == "cuda":
            to_distributed(model)
        else:
            log.info("distributed on CPUs (gloo): batch-norm statistics are per process, not synchronized")
        return nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=stage.model.find_unused_parameters,
        )
    if len(runtime.devices) > 1:
        return DictDataParallel(step_module, runtime.devices)
    return step_module


def _setup_run(cfg, runtime: Runtime, prefix: str) -> None:
    """Logging (to DIR/train.log on the main process) and the config the run trains with, DIR/<prefix>config.yaml."""
    if runtime.main:
        os.makedirs(cfg.DIR, exist_ok=True)
        setup_logging(cfg.DIR)
        with open(os.path.join(cfg.DIR, f"{prefix}config.yaml"), "w") as f:
            f.write(cfg.dump())
    else:
        setup_logging(None)
        log.setLevel(logging.WARNING)
    torch.manual_seed(cfg.TRAIN.seed)
    if runtime.devices[0].type == "cuda":
        torch.backends.cudnn.benchmark = cfg.TRAIN.cudnn_benchmark


def _model(stage: Stage, cfg, device: torch.device, resume: bool) -> tuple[nn.Module, torch.memory_format]:
    """The model training starts from (see `_start_weights`, MODEL.init_from), on `device` in its memory format."""
    model = stage.model.build(_start_weights(cfg.DIR, stage, resume))
    if stage.init_from:
        if resume:
            log.info("--resume: the resume state's weights, not MODEL.init_from's")
        else:
            log.info(init_from(model, stage.init_from))
    if cfg.TRAIN.fix_bn:
        freeze_bn(model)
    memory_format = torch.channels_last if cfg.TRAIN.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format), memory_format


def _hooks(stage: Stage, cfg, runtime: Runtime, precision: str) -> list[Hook]:
    """History, checkpoints, progress and the run's record on the main process (the other ranks take their share
    of validation); the non-finite-loss stop everywhere."""
    prefix, directory = stage.files_prefix, cfg.DIR
    devices = [str(d) for d in runtime.devices]
    validation = None
    if cfg.TRAIN.eval_period:
        validation = EpochValidation(cfg, devices, stage.model.epoch_parts, list(PARTS), prefix)
    hooks = [  # the checkpoint hook first: the validation it runs belongs in the history written next
        CheckpointHook(directory, stage.model.epoch_parts, prefix, validation, cfg.TRAIN.keep_last),
        HistoryHook(directory, prefix),
        ProgressHook(),
        RunRecordHook(cfg, devices, runtime.world_size, precision, prefix),
    ]
    if not runtime.main:
        hooks = [RankValidationHook(validation)] if validation else []
    return [*hooks, FiniteLossHook(directory)]


def train(cfg, runtime: Runtime, resume: bool = False, stop_after_epoch: int | None = None) -> Position:
    """Train as `cfg` says; returns where training ended (`interrupted` after Ctrl-C, with a resume state saved).
    Checkpoints go to cfg.DIR (rank 0 writes them). `stop_after_epoch` ends the run, resumably, once that
    epoch is done. TRAIN.stage picks what is trained (`stage_for`: the model, or a stage with its own schedule)."""
    stage = stage_for(cfg)
    t, device = cfg.TRAIN, runtime.devices[0]
    _setup_run(cfg, runtime, stage.files_prefix)
    per_step = 1 if runtime.distributed else len(runtime.devices)
    batches_for = _training_data(stage, runtime, per_step, t.accum_steps, pin_memory=device.type == "cuda")
    model, memory_format = _model(stage, cfg, device, resume)
    optimizer = build_optimizer(model, stage.lr_encoder, stage.lr_decoder, OptimizerSettings.from_config(t))
    amp = training_amp(t.amp, device)
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("TRAIN.amp fp16 needs a GPU; on the CPU use bf16")
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16" and device.type == "cuda")
    position = _restore(model, cfg.DIR, stage, optimizer, scaler, resume)
    step_module = _step_module(model, stage, runtime, amp, t.compile)
    schedule = Schedule(
        stage.num_epoch,
        stage.epoch_iters,
        per_step,
        t.lr_pow,
        t.disp_iter,
        stop_after_epoch,
        stage.lr_min,
        t.accum_steps,
        t.warmup_iters,
        t.warmup_ratio,
    )
    log.info(
        "training %s + %s%s on %s for epochs %d..%d, %d iterations each, precision %s",
        cfg.MODEL.arch_encoder,
        cfg.MODEL.arch_decoder,
        f" (stage {t.stage})" if t.stage else "",
        ", ".join(map(str, runtime.devices)) + (f" x {runtime.world_size} processes" if runtime.distributed else ""),
        position.epoch + 1,
        stage.num_epoch,
        stage.epoch_iters,
        "fp32" if amp == "none" else amp,
    )
    trainer = Trainer(
        model,
        step_module,
        optimizer,
        scaler,
        batches_for,
        schedule,
        position,
        _hooks(stage, cfg, runtime, "fp32" if amp == "none" else amp),
        device,
        memory_format,
        freeze_bn if t.fix_bn else lambda m: None,
    )
    position = trainer.run()
    if runtime.distributed and not position.interrupted:
        _check_replicas_agree(model)
    return position


def _check_replicas_agree(model: nn.Module) -> None:
    digest = weights_digest(model)
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise TrainingError(f"the ranks' weights differ after training: {digests}")
    log.info("weights identical on all %d ranks (sha256 %s)", len(digests), digest[:16])
