"""Evaluation over the validation set, split into contiguous shards, one worker process per device.

Workers send per-image confusion counts to the main process, which shows one progress bar,
accumulates the confusion matrix and reports. A worker that raises or dies stops the whole run
within seconds, naming the worker, the image and the error.
"""
from __future__ import annotations

import json
import logging
import os
import queue as queue_module
import signal
import threading
import time
import traceback
from contextlib import closing
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.multiprocessing as mp
from tqdm import tqdm
from yacs.config import CfgNode

from .data.classes import class_colors, class_names, colorize
from .data.dataset import ValDataset
from .data.records import read_odgt
from .inference import checkpoint_paths, load_model, predict
from .models.builder import is_multitask
from .metrics import ConfusionMatrix, confusion_counts
from .precision import autocast, inference_dtype

log = logging.getLogger("mit_semseg")
POLL_SECONDS = 1.0


class EvaluationError(RuntimeError):
    """A worker failed; the message names it, the image and the error."""


@dataclass
class Shard:
    worker: int
    device: str
    start: int
    stop: int
    threads: int


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (start, stop) ranges covering 0..n, sizes differing by at most one."""
    bounds = [n * k // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:])]


class LoadFailed(Exception):
    """Loading item `index` raised the exception chained as `__cause__`."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _prefetched(dataset, indices):
    """Yields (i, dataset[i]) for each index, loading the next one in a thread while the caller works.

    An item that fails to load raises `LoadFailed` with its index, caused by the loading error.

    When the caller stops early (or the generator is closed), the loading thread is stopped and
    joined, so no thread is left working behind it.
    """
    slot: "queue_module.Queue" = queue_module.Queue(maxsize=2)
    stopped = threading.Event()

    def load():
        for i in indices:
            if stopped.is_set():
                return
            try:
                entry = (i, dataset[i], None)
            except Exception as err:  # noqa: BLE001 - handed to the consumer
                slot.put((i, None, err))
                return
            slot.put(entry)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        for _ in indices:
            i, item, err = slot.get()
            if err is not None:
                raise LoadFailed(i) from err
            yield i, item
    finally:
        stopped.set()
        while loader.is_alive():  # make room for a pending put, then let the thread see `stopped`
            try:
                slot.get(timeout=0.1)
            except queue_module.Empty:
                pass
        loader.join()


def write_picture(panels: list[np.ndarray], source_path: str, directory: str) -> None:
    """RGB panels side by side as DIRECTORY/<name of the image>.png."""
    name = os.path.splitext(os.path.basename(source_path))[0]
    picture = np.concatenate(panels, axis=1).astype(np.uint8)
    cv2.imwrite(os.path.join(directory, f"{name}.png"), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


class SegmentationEvaluation:
    """What evaluating a segmentation model reads, measures per image and accumulates (a confusion matrix)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def records(self) -> list[dict]:
        d = self.cfg.DATASET
        return read_odgt(d.list_val, d.root_dataset, check_files=d.check_files)

    def dataset(self, records: list[dict]) -> ValDataset:
        return ValDataset(records, self.cfg)

    def measure(self, model, item: dict, picture_dir: str | None):
        """The image's confusion cells; with `picture_dir`, also image | ground truth | prediction there."""
        label = item["seg_label"].numpy()
        pred = predict(model, item["img_data"], label.shape, self.cfg.VAL.flip).numpy()
        if picture_dir:
            colors = class_colors(self.cfg.DATASET.num_class)
            write_picture([item["img_ori"], colorize(label, colors), colorize(pred, colors)], item["info"], picture_dir)
        return confusion_counts(pred, label, self.cfg.DATASET.num_class)

    def metrics(self) -> "SegmentationMetrics":
        return SegmentationMetrics(self.cfg.DATASET.num_class, class_names(self.cfg))

    @staticmethod
    def print_summary(summary: dict, path: str) -> None:
        print_segmentation_summary(summary, path)


class SegmentationMetrics:
    """The confusion matrix of all images, summarised with the class names."""

    def __init__(self, num_class: int, names: list[str]) -> None:
        self.matrix, self.names = ConfusionMatrix(num_class), names

    def add(self, counts: tuple[np.ndarray, np.ndarray]) -> None:
        self.matrix.add(*counts)

    def summary(self) -> dict:
        return self.matrix.summary(self.names)


def evaluation_for(cfg):
    """SegmentationEvaluation, or UnifiedEvaluation for a Unified Perceptual Parsing model."""
    from .unified_evaluation import UnifiedEvaluation  # here: that module builds on this one
    return UnifiedEvaluation(cfg) if is_multitask(cfg.MODEL.arch_decoder) else SegmentationEvaluation(cfg)


def _worker(shard: Shard, cfg_text: str, records: list[dict], results, stop: threading.Event | None = None) -> None:
    """Evaluate `records`, the list's entries shard.start..shard.stop; every message is (kind, worker, ...).

    A worker thread (not a process) also ends, between images, once `stop` is set.
    """
    in_process = threading.current_thread() is not threading.main_thread()
    if not in_process:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process ends the workers
    current = shard.start
    try:
        if not in_process:
            torch.set_num_threads(shard.threads)
        cfg = CfgNode.load_cfg(cfg_text)
        task = evaluation_for(cfg)
        model = load_model(cfg, cfg.VAL.checkpoint, shard.device)
        dtype = inference_dtype(cfg.VAL.precision, shard.device, "VAL.precision")
        result_dir = os.path.join(cfg.DIR, "result")
        with closing(_prefetched(task.dataset(records), range(len(records)))) as items:
            for k, item in items:
                current = shard.start + k
                if stop is not None and stop.is_set():
                    return
                with autocast(shard.device, dtype):
                    counts = task.measure(model, item, result_dir if cfg.VAL.visualize else None)
                results.put(("image", shard.worker, current, counts))
        results.put(("done", shard.worker))
    except BaseException as err:  # noqa: BLE001 - reported to the main process, which stops the run
        if isinstance(err, LoadFailed):
            current, err = shard.start + err.index, err.__cause__
        results.put(("error", shard.worker, current, f"{type(err).__name__}: {err}", traceback.format_exc()))
        raise SystemExit(1)


def evaluate(cfg, devices: list[str], processes_per_device: int = 1) -> dict:
    """Evaluate DIR/{encoder,decoder}_<VAL.checkpoint> on DATASET.list_val; returns the summary."""
    task = evaluation_for(cfg)
    records = task.records()
    checkpoint_paths(cfg, cfg.VAL.checkpoint)
    if cfg.VAL.visualize:
        os.makedirs(os.path.join(cfg.DIR, "result"), exist_ok=True)
    slots = [d for d in devices for _ in range(processes_per_device)][:len(records)]
    cpu_slots = sum(d == "cpu" for d in slots)
    threads = max(1, (os.cpu_count() or 1) // max(cpu_slots, 1))
    shards = [Shard(k, device, a, b, threads) for k, (device, (a, b)) in enumerate(zip(slots, split(len(records),
                                                                                                   len(slots))))]
    stop = threading.Event()
    if len(shards) == 1 and shards[0].device == "cpu":
        # One CPU worker: a thread of this process, which costs no start-up and has nothing to isolate.
        results = queue_module.Queue()
        workers = [threading.Thread(target=_worker, args=(shards[0], cfg.dump(), records, results, stop), daemon=True)]
    else:
        # Processes are spawned, never forked: forking after torch has run threads can deadlock the child.
        context = mp.get_context("spawn")
        results = context.Queue()
        workers = [context.Process(target=_worker, args=(s, cfg.dump(), records[s.start:s.stop], results),
                                   daemon=True) for s in shards]
    for w in workers:
        w.start()
    metrics = task.metrics()
    progress = {s.worker: s.start for s in shards}
    done: set[int] = set()
    started = checked = time.perf_counter()
    try:
        with tqdm(total=len(records), desc="evaluating", dynamic_ncols=True) as bar:
            while len(done) < len(workers):
                if time.perf_counter() - checked > POLL_SECONDS:  # while others keep the queue busy too
                    _check_alive(workers, shards, done, progress, records, crashed_only=True)
                    checked = time.perf_counter()
                try:
                    message = results.get(timeout=POLL_SECONDS)
                except queue_module.Empty:
                    _check_alive(workers, shards, done, progress, records)
                    continue
                kind, worker = message[0], message[1]
                if kind == "image":
                    _, _, index, counts = message
                    metrics.add(counts)
                    progress[worker] = index + 1
                    bar.update(1)
                elif kind == "done":
                    done.add(worker)
                else:
                    _, _, index, error, trace = message
                    log.debug(trace)
                    path = records[index]["fpath_img"]
                    where = "" if path in error else f" on {path}"  # name the image once
                    raise EvaluationError(f"worker {worker} ({shards[worker].device}) failed{where}: {error}")
    finally:
        _stop(workers, stop)
    summary = metrics.summary()
    summary.update(checkpoint=cfg.VAL.checkpoint, images=len(records), seconds=time.perf_counter() - started,
                   flip=cfg.VAL.flip, img_sizes=list(cfg.DATASET.imgSizes))
    return summary


def _check_alive(workers, shards, done, progress, records, crashed_only: bool = False) -> None:
    """A worker that ended without saying it was done stops the run; with `crashed_only`, only one that ended
    with a signal or an error code (one that exited cleanly may have its last messages still in the queue)."""
    for worker, handle in enumerate(workers):
        if worker in done or handle.is_alive():
            continue
        if crashed_only and not getattr(handle, "exitcode", None):
            continue
        shard = shards[worker]
        image = records[progress[worker]]["fpath_img"] if progress[worker] < shard.stop else "(after its last image)"
        code = getattr(handle, "exitcode", None)
        how = ("stopped" if code is None else f"killed by signal {signal.Signals(-code).name}" if code < 0
               else f"exit code {code}")
        raise EvaluationError(f"worker {worker} ({shard.device}) died ({how}) while evaluating {image}")


def _stop(workers, stop: threading.Event) -> None:
    """End the workers: a thread after its current image, processes at once."""
    stop.set()
    for thread in workers:
        if isinstance(thread, threading.Thread):
            thread.join(timeout=30)  # let it end before the interpreter does
    processes = [w for w in workers if not isinstance(w, threading.Thread)]
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + 5
    for process in processes:
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def report(summary: dict, directory: str, task) -> str:
    """Write DIR/eval_<checkpoint>.json and print the summary as `task` (an `evaluation_for` result) does."""
    name = os.path.splitext(summary["checkpoint"])[0]
    path = os.path.join(directory, f"eval_{name}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(path + ".tmp", path)
    task.print_summary(summary, path)
    return path


def print_segmentation_summary(summary: dict, path: str) -> None:
    """The ten worst classes and the summary lines, ending with the original's."""
    print("Ten worst classes by IoU:")
    for c in sorted(summary["classes"], key=lambda c: c["iou"])[:10]:
        print(f"  {c['name']:<24} IoU {c['iou']:.4f}  accuracy {100 * c['accuracy']:.2f}%")
    print(f"Per-class IoU and accuracy: {path}")
    print(f"[Eval Summary] {summary['images']} images in {summary['seconds']:.1f} s; pixel accuracy "
          f"{100 * summary['pixel_accuracy']:.2f}%, mean class accuracy {100 * summary['mean_accuracy']:.2f}%, "
          f"frequency-weighted IoU {summary['frequency_weighted_iou']:.4f}")
    print(f"Mean IoU: {summary['mean_iou']:.4f}, Accuracy: {100 * summary['pixel_accuracy']:.2f}%")


def main(argv: list[str] | None = None) -> int:
    """`eval_multipro.py`: evaluate a checkpoint over the validation set on every device."""
    import argparse
    import sys

    from .config import ConfigError, load_config
    from .data.records import DataError
    from .models import CheckpointError
    from .parallel import parse_gpus

    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on the validation set, one process per "
                                     "device.", epilog="Example: python eval_multipro.py --cfg "
                                     "config/ade20k-resnet50dilated-ppm_deepsup.yaml --gpus 0-7")
    parser.add_argument("--cfg", required=True, metavar="FILE", help="config file")
    parser.add_argument("--gpus", default="0", help="GPUs: 0-7, 0,2,4,6, 0 or cpu (default: 0)")
    parser.add_argument("--procs", type=int, default=1, metavar="N",
                        help="worker processes per device; on the CPU they share the cores (default: 1)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.cfg, args.opts)
        gpus = parse_gpus(args.gpus)
        if args.procs < 1:
            raise ValueError(f"--procs must be at least 1, got {args.procs}")
    except (ConfigError, ValueError) as err:
        print(f"eval_multipro.py: error: {err}", file=sys.stderr)
        return 2
    if gpus and not torch.cuda.is_available():
        print("CUDA is not available: evaluating on the CPU", file=sys.stderr)
        gpus = []
    if gpus and max(gpus) >= torch.cuda.device_count():
        print(f"eval_multipro.py: error: --gpus asks for GPU {max(gpus)}, but only {torch.cuda.device_count()} "
              "are visible", file=sys.stderr)
        return 2
    devices = [f"cuda:{g}" for g in gpus] or ["cpu"]
    try:
        summary = evaluate(cfg, devices, args.procs)
    except KeyboardInterrupt:
        print("eval_multipro.py: interrupted", file=sys.stderr)
        return 130
    except (EvaluationError, DataError, CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"eval_multipro.py: error: {err}", file=sys.stderr)
        return 1
    report(summary, cfg.DIR, evaluation_for(cfg))
    return 0
