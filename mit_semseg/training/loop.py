"""The training loop: one process over one or many devices, or one process per device under torchrun."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from ..data.dataset import SkippedSamples, build_train_loader
from ..data.label_tables import read_label_tables
from ..data.multitask import build_multitask_train_loader, read_multitask_records, source_tasks
from ..data.records import read_odgt
from ..models import ModelBuilder, SegmentationModule
from ..models.builder import is_multitask
from ..models.unified import UnifiedParsingModule
from ..models.upp import TASKS
from ..nn import to_distributed
from ..parallel import DictDataParallel, to_device
from ..precision import training_amp
from .monitor import TensorBoard, plot_history, setup_logging
from .optim import build_optimizer, set_lr
from .state import atomic_save, latest_state, load_state, rng_state, set_rng_state, state_path

log = logging.getLogger("mit_semseg")
BOOKKEEPING = ("failed", "fatal", "num_samples")  # batch entries about the data, not for the model


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, say); the message says where and what is kept."""


class StopRequest:
    """The first Ctrl-C asks training to stop after the current iteration; a second one aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = None

    def __enter__(self) -> "StopRequest":
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


@dataclass
class Position:
    epoch: int = 0  # completed epochs
    iteration: int = 0  # completed iterations of the current epoch
    history: list = field(default_factory=list)


@dataclass
class Runtime:
    """Where this process trains: its devices, and its rank among the processes."""
    devices: list[torch.device]
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


class Autocast(nn.Module):
    """Runs the wrapped module under autocast; inside the module so every replica thread enters it."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, batch: dict):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(batch)


def build_model(cfg) -> SegmentationModule | UnifiedParsingModule:
    """The training module of `cfg`: SegmentationModule, or UnifiedParsingModule for a UPP decoder."""
    m = cfg.MODEL
    encoder = ModelBuilder.build_encoder(m.arch_encoder, m.fc_dim, m.weights_encoder, m.pretrained, m.bn_momentum)
    decoder = ModelBuilder.build_decoder(m.arch_decoder, m.fc_dim, cfg.DATASET.num_class, m.weights_decoder,
                                         bn_momentum=m.bn_momentum, label_tables=cfg.DATASET.label_tables)
    if is_multitask(m.arch_decoder):
        weights = {task: cfg.TRAIN[f"loss_weight_{task}"] for task in TASKS}
        return UnifiedParsingModule(encoder, decoder, read_label_tables(cfg.DATASET.label_tables), weights)
    deep_sup = cfg.TRAIN.deep_sup_scale if m.arch_decoder.endswith("deepsup") else None
    return SegmentationModule(encoder, decoder, nn.NLLLoss(ignore_index=-1), deep_sup_scale=deep_sup)


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


def _save_epoch(seg: SegmentationModule, cfg, position: Position, optimizer, scaler) -> None:
    epoch = position.epoch
    atomic_save(seg.encoder.state_dict(), os.path.join(cfg.DIR, f"encoder_epoch_{epoch}.pth"))
    atomic_save(seg.decoder.state_dict(), os.path.join(cfg.DIR, f"decoder_epoch_{epoch}.pth"))
    _save_state(seg, cfg, position, optimizer, scaler)
    tmp = os.path.join(cfg.DIR, "history.json.tmp")
    with open(tmp, "w") as f:
        json.dump(position.history, f)
    os.replace(tmp, os.path.join(cfg.DIR, "history.json"))
    plot_history(position.history, os.path.join(cfg.DIR, "training.png"))


def _save_state(seg, cfg, position: Position, optimizer, scaler) -> str:
    """The resume state at `position`; older ones are removed once it is safely written."""
    path = state_path(cfg.DIR, position.epoch, position.iteration)
    older = latest_state(cfg.DIR)
    atomic_save({"epoch": position.epoch, "iteration": position.iteration, "history": position.history,
                 "encoder": seg.encoder.state_dict(), "decoder": seg.decoder.state_dict(),
                 "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state()}, path)
    if older and older != path:
        os.remove(older)
    return path


def _restore(seg, cfg, optimizer, scaler, resume: bool) -> Position:
    """Where to start: a resume state (--resume, or TRAIN.start_epoch with its state), else epoch start_epoch."""
    path = None
    if resume:
        path = latest_state(cfg.DIR)
        if path is None:
            raise TrainingError(f"--resume: no resume state (train_state_epoch_*_iter_*.pth) in {cfg.DIR}")
    elif cfg.TRAIN.start_epoch > 0:
        candidate = state_path(cfg.DIR, cfg.TRAIN.start_epoch, 0)
        path = candidate if os.path.isfile(candidate) else None
        if path is None:
            log.info("no resume state for epoch %d: continuing from its weights with a fresh optimizer",
                     cfg.TRAIN.start_epoch)
            return Position(epoch=cfg.TRAIN.start_epoch)
    if path is None:
        return Position()
    state = load_state(path)
    seg.encoder.load_state_dict(state["encoder"])
    seg.decoder.load_state_dict(state["decoder"])
    base_lrs = [g["base_lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, base_lr in zip(optimizer.param_groups, base_lrs):  # the config's rates win
        group["base_lr"] = base_lr
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    log.info("resuming from %s (epoch %d, iteration %d)", path, state["epoch"] + 1, state["iteration"])
    return Position(state["epoch"], state["iteration"], list(state["history"]))


def _start_weights(cfg) -> None:
    """TRAIN.start_epoch N, as the original: the model starts from DIR/{encoder,decoder}_epoch_N.pth."""
    if cfg.TRAIN.start_epoch > 0:
        cfg.MODEL.weights_encoder = os.path.join(cfg.DIR, f"encoder_epoch_{cfg.TRAIN.start_epoch}.pth")
        cfg.MODEL.weights_decoder = os.path.join(cfg.DIR, f"decoder_epoch_{cfg.TRAIN.start_epoch}.pth")


def _training_data(cfg, runtime: Runtime, per_step: int, pin_memory: bool):
    """Reads the training records; returns `loader_for(epoch, start)`, the epoch's loader from batch `start`."""
    data, t = cfg.DATASET, cfg.TRAIN
    if is_multitask(cfg.MODEL.arch_decoder):
        tables = read_label_tables(data.label_tables)
        records = read_multitask_records(data.list_train, data.root_dataset, tables, data.check_files)
        sources = source_tasks(records)
        log.info("%d training records from %s; sources: %s", len(records), data.list_train,
                 "; ".join(f"{name} ({sum(str(r['source']) == name for r in records)} images: {', '.join(tasks)})"
                           for name, tasks in sources.items()))
        return lambda epoch, start: build_multitask_train_loader(
            records, tables, cfg, t.epoch_iters * per_step, per_step, epoch, start, runtime.rank,
            runtime.world_size, pin_memory)
    records = read_odgt(data.list_train, data.root_dataset, check_files=data.check_files)
    log.info("%d training records from %s", len(records), data.list_train)
    return lambda epoch, start: build_train_loader(records, cfg, t.epoch_iters * per_step, epoch, start, runtime.rank,
                                                   runtime.world_size, pin_memory)


def train(cfg, runtime: Runtime, resume: bool = False, stop_after_epoch: int | None = None) -> Position:
    """Train as `cfg` says; returns where training ended. Checkpoints go to cfg.DIR (rank 0 writes them).

    `stop_after_epoch` ends the run, resumably, once that epoch is done.
    """
    if runtime.main:
        os.makedirs(cfg.DIR, exist_ok=True)
        setup_logging(cfg.DIR)
        with open(os.path.join(cfg.DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
    else:
        setup_logging(None)
        log.setLevel(logging.WARNING)
    t = cfg.TRAIN
    device = runtime.devices[0]
    torch.manual_seed(t.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = t.cudnn_benchmark
    per_step = 1 if runtime.distributed else len(runtime.devices)
    loader_for = _training_data(cfg, runtime, per_step, pin_memory=device.type == "cuda")

    if not resume:
        _start_weights(cfg)
    seg = build_model(cfg)
    if t.fix_bn:
        freeze_bn(seg)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    seg.to(device, memory_format=memory_format)
    optimizer = build_optimizer(seg.encoder, seg.decoder, cfg)
    amp = training_amp(t.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16" and device.type == "cuda")
    if amp == "fp16" and device.type != "cuda":
        raise TrainingError("TRAIN.amp fp16 needs a GPU; on the CPU use bf16")
    position = _restore(seg, cfg, optimizer, scaler, resume)

    step_module: nn.Module = seg
    if amp != "none":
        step_module = Autocast(seg, device.type, torch.bfloat16 if amp == "bf16" else torch.float16)
    if t.compile:
        step_module = torch.compile(step_module, dynamic=True)
    if runtime.distributed:
        if device.type == "cuda":
            to_distributed(seg)
        else:
            log.info("distributed on CPUs (gloo): batch-norm statistics are per process, not synchronized")
        # UPP trains some heads in an iteration (the same ones on every rank): the others get no gradient
        step_module = nn.parallel.DistributedDataParallel(step_module, device_ids=[device] if device.type == "cuda"
                                                          else None,
                                                          find_unused_parameters=is_multitask(cfg.MODEL.arch_decoder))
    elif len(runtime.devices) > 1:
        step_module = DictDataParallel(step_module, runtime.devices)

    max_iter = t.epoch_iters * t.num_epoch
    skipped = SkippedSamples()
    board = TensorBoard(cfg.DIR if runtime.main else None)
    log.info("training %s + %s on %s for epochs %d..%d, %d iterations each, precision %s", cfg.MODEL.arch_encoder,
             cfg.MODEL.arch_decoder, ", ".join(map(str, runtime.devices)) +
             (f" x {runtime.world_size} processes" if runtime.distributed else ""),
             position.epoch + 1, t.num_epoch, t.epoch_iters, "fp32" if amp == "none" else amp)
    try:
        with StopRequest() as stop:
            while position.epoch < t.num_epoch:
                _train_epoch(cfg, runtime, seg, step_module, optimizer, scaler, position, loader_for, per_step,
                             max_iter, skipped, board, memory_format, stop)
                if position.iteration < t.epoch_iters:
                    raise KeyboardInterrupt
                position.epoch, position.iteration = position.epoch + 1, 0
                if runtime.main:
                    _save_epoch(seg, cfg, position, optimizer, scaler)
                    log.info("epoch %d done: checkpoints encoder_epoch_%d.pth and decoder_epoch_%d.pth in %s",
                             position.epoch, position.epoch, position.epoch, cfg.DIR)
                if stop_after_epoch is not None and position.epoch >= stop_after_epoch:
                    break
    except KeyboardInterrupt:
        if runtime.main:
            path = _save_state(seg, cfg, position, optimizer, scaler)
            log.warning("interrupted: saved %s; continue with --resume", path)
        raise
    finally:
        board.close()
    if runtime.distributed:
        _check_replicas_agree(seg)
    return position


def _check_replicas_agree(seg: nn.Module) -> None:
    digest = weights_digest(seg)
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise TrainingError(f"the ranks' weights differ after training: {digests}")
    log.info("weights identical on all %d ranks (sha256 %s)", len(digests), digest[:16])


def _train_epoch(cfg, runtime: Runtime, seg, step_module, optimizer, scaler, position: Position, loader_for,
                 per_step: int, max_iter: int, skipped: SkippedSamples, board: TensorBoard, memory_format,
                 stop: StopRequest) -> None:
    """Train until the epoch ends or a stop is requested; `position` says how far it got."""
    t = cfg.TRAIN
    batches = iter(loader_for(position.epoch, position.iteration * per_step))
    seg.train()
    if t.fix_bn:
        freeze_bn(seg)
    bar = tqdm(total=t.epoch_iters, initial=position.iteration, desc=f"epoch {position.epoch + 1}/{t.num_epoch}",
               disable=not runtime.main, dynamic_ncols=True)
    sums: dict[str, list[float]] = {}  # name: [total, count] since the last display
    tick = time.perf_counter()
    with bar:
        while position.iteration < t.epoch_iters:
            step = position.epoch * t.epoch_iters + position.iteration
            group = []
            for _ in range(per_step):
                batch = next(batches)
                skipped.update(batch)
                if "img_data" in batch:
                    group.append({k: v for k, v in batch.items() if k not in BOOKKEEPING})
            data_time = time.perf_counter() - tick
            set_lr(optimizer, step, max_iter, t.lr_pow)
            if group:
                loss, stats = _step(step_module, group, runtime.devices[0], memory_format, optimizer, scaler)
                if not math.isfinite(loss):
                    last = f"encoder_epoch_{position.epoch}.pth" if position.epoch else "none yet"
                    raise TrainingError(f"the loss is {loss} at epoch {position.epoch + 1}, iteration "
                                        f"{position.iteration + 1} (step {step + 1}): training stopped; the last "
                                        f"good checkpoint in {cfg.DIR} is kept ({last})")
                for name, value in {"loss": loss, **stats}.items():
                    total = sums.setdefault(name, [0.0, 0])
                    total[0] += value
                    total[1] += 1
            position.iteration += 1
            step_time = time.perf_counter() - tick
            lr = optimizer.param_groups[0]["lr"]
            if runtime.main and sums and (position.iteration % t.disp_iter == 0
                                          or position.iteration == t.epoch_iters):
                means = {name: total / count for name, (total, count) in sums.items()}
                position.history.append({"epoch": position.epoch + position.iteration / t.epoch_iters, **means,
                                         "lr": lr})
                board.scalars(step + 1, lr=lr, **means)
                log.debug("epoch %d iter %d %s", position.epoch + 1, position.iteration, describe_stats(means))
                bar.set_postfix(**{name: (f"{100 * v:.2f}%" if name.endswith("acc") else f"{v:.4f}")
                                   for name, v in means.items() if name == "loss" or name.endswith("acc")},
                                lr=f"{lr:.2e}", data=f"{data_time:.3f}s", step=f"{step_time:.3f}s", refresh=False)
                sums = {}
            bar.update(1)
            if stop.requested:
                break
            tick = time.perf_counter()
    if runtime.main and position.history:
        last = {k: v for k, v in position.history[-1].items() if k not in ("epoch", "lr")}
        log.info("epoch %d: %s", position.epoch + 1, describe_stats(last))


def describe_stats(stats: dict[str, float]) -> str:
    """`loss 0.1234, acc 95.12%, ...`: the total loss, the accuracies in percent, then the heads' losses."""
    order = sorted(stats, key=lambda name: (name != "loss", not name.endswith("acc"), name))
    return ", ".join(f"{name} {100 * stats[name]:.2f}%" if name.endswith("acc") else f"{name} {stats[name]:.4f}"
                     for name in order)


def _step(step_module, group: list[dict], device, memory_format, optimizer,
          scaler) -> tuple[float, dict[str, float]]:
    """One optimisation step over the batches of all devices; returns the mean loss and the mean statistics.

    A segmentation module's statistic is its pixel accuracy (`acc`); UPP's are per-head losses and accuracies.
    """
    if isinstance(step_module, DictDataParallel):
        results = step_module(group)
    else:
        batch = to_device(group[0], device, non_blocking=True)
        batch["img_data"] = batch["img_data"].contiguous(memory_format=memory_format)
        results = [step_module(batch)]
    loss = sum(r[0].float() for r in results) / len(results)
    stats = [r[1] if isinstance(r[1], dict) else {"acc": r[1]} for r in results]
    means = {name: sum(s[name].float() for s in stats) / len(stats) for name in stats[0]}
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), {name: value.item() for name, value in means.items()}
