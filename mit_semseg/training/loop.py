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
from ..data.records import read_odgt
from ..models import ModelBuilder, SegmentationModule
from ..nn import to_distributed
from ..parallel import DictDataParallel, to_device
from ..precision import training_amp
from .monitor import TensorBoard, plot_history, setup_logging
from .optim import build_optimizer, set_lr
from .state import atomic_save, latest_state, load_state, rng_state, set_rng_state, state_path

log = logging.getLogger("mit_semseg")


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


def build_model(cfg) -> SegmentationModule:
    m = cfg.MODEL
    encoder = ModelBuilder.build_encoder(m.arch_encoder, m.fc_dim, m.weights_encoder, m.pretrained, m.bn_momentum)
    decoder = ModelBuilder.build_decoder(m.arch_decoder, m.fc_dim, cfg.DATASET.num_class, m.weights_decoder,
                                         bn_momentum=m.bn_momentum)
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
    records = read_odgt(cfg.DATASET.list_train, cfg.DATASET.root_dataset, check_files=cfg.DATASET.check_files)
    log.info("%d training records from %s", len(records), cfg.DATASET.list_train)

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
        step_module = nn.parallel.DistributedDataParallel(step_module, device_ids=[device] if device.type == "cuda"
                                                          else None)
    elif len(runtime.devices) > 1:
        step_module = DictDataParallel(step_module, runtime.devices)

    per_step = 1 if runtime.distributed else len(runtime.devices)
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
                _train_epoch(cfg, runtime, seg, step_module, optimizer, scaler, position, records, per_step, max_iter,
                             skipped, board, memory_format, stop)
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


def _train_epoch(cfg, runtime: Runtime, seg, step_module, optimizer, scaler, position: Position, records,
                 per_step: int, max_iter: int, skipped: SkippedSamples, board: TensorBoard, memory_format,
                 stop: StopRequest) -> None:
    """Train until the epoch ends or a stop is requested; `position` says how far it got."""
    t = cfg.TRAIN
    device = runtime.devices[0]
    loader = build_train_loader(records, cfg, t.epoch_iters * per_step, epoch=position.epoch,
                                start=position.iteration * per_step, rank=runtime.rank,
                                world_size=runtime.world_size, pin_memory=device.type == "cuda")
    batches = iter(loader)
    seg.train()
    if t.fix_bn:
        freeze_bn(seg)
    bar = tqdm(total=t.epoch_iters, initial=position.iteration, desc=f"epoch {position.epoch + 1}/{t.num_epoch}",
               disable=not runtime.main, dynamic_ncols=True)
    sums = {"loss": 0.0, "acc": 0.0, "n": 0}
    tick = time.perf_counter()
    with bar:
        while position.iteration < t.epoch_iters:
            step = position.epoch * t.epoch_iters + position.iteration
            group = []
            for _ in range(per_step):
                batch = next(batches)
                skipped.update(batch)
                if "img_data" in batch:
                    group.append({k: batch[k] for k in ("img_data", "seg_label")})
            data_time = time.perf_counter() - tick
            set_lr(optimizer, step, max_iter, t.lr_pow)
            if group:
                loss, acc = _step(step_module, group, device, memory_format, optimizer, scaler)
                if not math.isfinite(loss):
                    last = f"encoder_epoch_{position.epoch}.pth" if position.epoch else "none yet"
                    raise TrainingError(f"the loss is {loss} at epoch {position.epoch + 1}, iteration "
                                        f"{position.iteration + 1} (step {step + 1}): training stopped; the last "
                                        f"good checkpoint in {cfg.DIR} is kept ({last})")
                sums["loss"] += loss
                sums["acc"] += acc
                sums["n"] += 1
            position.iteration += 1
            step_time = time.perf_counter() - tick
            lr = optimizer.param_groups[0]["lr"]
            if runtime.main and sums["n"] and (position.iteration % t.disp_iter == 0
                                               or position.iteration == t.epoch_iters):
                mean_loss, mean_acc = sums["loss"] / sums["n"], sums["acc"] / sums["n"]
                position.history.append({"epoch": position.epoch + position.iteration / t.epoch_iters,
                                         "loss": mean_loss, "acc": mean_acc, "lr": lr})
                board.scalars(step + 1, loss=mean_loss, accuracy=mean_acc, lr=lr)
                log.debug("epoch %d iter %d loss %.4f acc %.4f", position.epoch + 1, position.iteration, mean_loss,
                          mean_acc)
                bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{100 * mean_acc:.2f}%", lr=f"{lr:.2e}",
                                data=f"{data_time:.3f}s", step=f"{step_time:.3f}s", refresh=False)
                sums = {"loss": 0.0, "acc": 0.0, "n": 0}
            bar.update(1)
            if stop.requested:
                break
            tick = time.perf_counter()
    if runtime.main and position.history:
        last = position.history[-1]
        log.info("epoch %d: loss %.4f, pixel accuracy %.2f%%", position.epoch + 1, last["loss"], 100 * last["acc"])


def _step(step_module, group: list[dict], device, memory_format, optimizer, scaler) -> tuple[float, float]:
    """One optimisation step over the batches of all devices; returns the mean loss and accuracy."""
    if isinstance(step_module, DictDataParallel):
        results = step_module(group)
    else:
        batch = to_device(group[0], device, non_blocking=True)
        batch["img_data"] = batch["img_data"].contiguous(memory_format=memory_format)
        results = [step_module(batch)]
    loss = sum(r[0].float() for r in results) / len(results)
    acc = sum(r[1].float() for r in results) / len(results)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item(), acc.item()
