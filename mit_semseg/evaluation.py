"""Evaluation over the validation set, split into contiguous shards, one worker process per device.

Workers send per-image confusion counts to the main process, which shows one progress bar,
accumulates the confusion matrix and reports. A worker that raises or dies stops the whole run
within seconds, naming the worker, the image and the error.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import queue as queue_module
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from multiprocessing import connection

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from yacs.config import CfgNode

from .data.records import write_json
from .precision import autocast, inference_dtype
from .progress import Progress
from .tasks import Task, task_for

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
    return list(itertools.pairwise(bounds))


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
    slot: queue_module.Queue = queue_module.Queue(maxsize=2)
    stopped = threading.Event()

    def load():
        for i in indices:
            if stopped.is_set():
                return
            try:
                entry = (i, dataset[i], None)
            except Exception as err:  # handed to the consumer
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


def _worker(
    shard: Shard, cfg_text: str, records: list[dict], send: Callable[[tuple], None], stop: threading.Event | None = None
) -> None:
    """Evaluate `records`, the list's entries shard.start..shard.stop; `send`s every message: (kind, worker, ...).

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
        task = task_for(cfg)
        model = task.model.load(cfg.VAL.checkpoint, shard.device)
        dtype = inference_dtype(cfg.VAL.precision, shard.device, "VAL.precision")
        with closing(_prefetched(task.evaluation.dataset(records), range(len(records)))) as items:
            for k, item in items:
                current = shard.start + k
                if stop is not None and stop.is_set():
                    return
                picture = picture_path(cfg.DIR, item["info"]) if cfg.VAL.visualize else None
                with autocast(shard.device, dtype):
                    counts = task.evaluation.measure(model, item, picture)
                send(("image", shard.worker, current, counts))
        send(("done", shard.worker))
    except BaseException as err:  # reported to the main process, which stops the run
        if isinstance(err, LoadFailed):
            current, err = shard.start + err.index, err.__cause__
        send(("error", shard.worker, current, f"{type(err).__name__}: {err}", traceback.format_exc()))
        raise SystemExit(1) from None


def picture_path(directory: str, image: str) -> str:
    """VAL.visualize's picture of `image`: DIR/result/<name of the image>.png."""
    return os.path.join(directory, "result", f"{os.path.splitext(os.path.basename(image))[0]}.png")


def _shards(devices: list[str], processes_per_device: int, num_records: int) -> list[Shard]:
    """The workers' shares of the records: contiguous ranges, one per worker on its device, CPU threads split."""
    slots = [d for d in devices for _ in range(processes_per_device)][:num_records]
    cpu_slots = sum(d == "cpu" for d in slots)
    threads = max(1, (os.cpu_count() or 1) // max(cpu_slots, 1))
    return [
        Shard(k, device, a, b, threads) for k, (device, (a, b)) in enumerate(zip(slots, split(num_records, len(slots))))
    ]


class _Pipes:
    """The worker processes' messages, a pipe each, read as a queue (`get(timeout)`). A worker killed while
    writing loses its own pipe only: one queue shared by all would be left half-written or locked, and the
    run would wait forever instead of naming the dead worker."""

    def __init__(self, receivers: list) -> None:
        self.open, self.pending = list(receivers), deque()

    def get(self, timeout: float) -> tuple:
        if not self.pending:
            for receiver in connection.wait(self.open, timeout):
                try:
                    self.pending.append(receiver.recv())
                except (EOFError, OSError, pickle.UnpicklingError):  # its worker ended: `_check_alive` says how
                    self.open.remove(receiver)
                    receiver.close()
        if not self.pending:
            raise queue_module.Empty
        return self.pending.popleft()


def _start_workers(shards: list[Shard], cfg, records: list[dict], stop: threading.Event) -> tuple[list, object]:
    """The started workers, and where their messages arrive (`get(timeout)`, `queue.Empty` when none came)."""
    if len(shards) == 1 and shards[0].device == "cpu":
        # One CPU worker: a thread of this process, which costs no start-up and has nothing to isolate.
        results = queue_module.Queue()
        args = (shards[0], cfg.dump(), records, results.put, stop)
        thread = threading.Thread(target=_worker, args=args, daemon=True)
        thread.start()
        return [thread], results
    # Processes are spawned, never forked: forking after torch has run threads can deadlock the child.
    context = mp.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in shards]  # (receiver, sender)
    workers = [
        context.Process(target=_worker, args=(s, cfg.dump(), records[s.start : s.stop], sender.send), daemon=True)
        for s, (_, sender) in zip(shards, pipes)
    ]
    for w in workers:
        w.start()
    for _, sender in pipes:
        sender.close()  # the worker holds the only writing end: its pipe ends when it does
    return workers, _Pipes([receiver for receiver, _ in pipes])


def _collect(workers, results, shards: list[Shard], records: list[dict], metrics) -> None:
    """Add every image's counts to `metrics` as the workers report them; a failed or dead worker stops the run."""
    progress = {s.worker: s.start for s in shards}
    done: set[int] = set()
    checked = time.perf_counter()
    with Progress(len(records), "evaluating", unit="img") as bar:
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


def _records(cfg, task: Task) -> list[dict]:
    """DATASET.list_val's records, the first VAL.max_images of them when set."""
    task.model.files(cfg.VAL.checkpoint)  # a missing checkpoint is named before anything starts
    records = task.evaluation.records()
    if cfg.VAL.visualize:
        os.makedirs(os.path.join(cfg.DIR, "result"), exist_ok=True)
    return records[: cfg.VAL.max_images] if cfg.VAL.max_images else records


def _summary(cfg, metrics, images: int, started: float) -> dict:
    summary = metrics.summary()
    summary.update(
        checkpoint=cfg.VAL.checkpoint,
        images=images,
        seconds=time.perf_counter() - started,
        flip=cfg.TEST.flip,
        mode=cfg.TEST.mode,
        ratios=list(cfg.TEST.ratios),
        img_sizes=list(cfg.DATASET.imgSizes),
    )
    return summary


def _measure(shards: list[Shard], cfg, records: list[dict], metrics) -> None:
    """Run the shards' workers over `records`, adding each image's counts to `metrics`."""
    stop = threading.Event()
    workers, results = _start_workers(shards, cfg, records, stop)
    try:
        _collect(workers, results, shards, records, metrics)
    finally:
        _stop(workers, stop)


def evaluate(cfg, devices: list[str], processes_per_device: int = 1) -> dict:
    """Evaluate DIR/{encoder,decoder}_<VAL.checkpoint> on DATASET.list_val; returns the summary."""
    task = task_for(cfg)
    records = _records(cfg, task)
    metrics, started = task.evaluation.metrics(), time.perf_counter()
    _measure(_shards(devices, processes_per_device, len(records)), cfg, records, metrics)
    return _summary(cfg, metrics, len(records), started)


class _Counts(list):
    """Each image's counts, in the order they came."""

    def add(self, counts) -> None:
        self.append(counts)


def evaluate_across_ranks(cfg, device: str) -> dict | None:
    """`evaluate` shared by the processes of torch.distributed: each evaluates its contiguous share of the records
    on its `device`, rank 0 adds every image's counts and returns the summary (the other ranks None)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    task = task_for(cfg)
    records = _records(cfg, task)
    start, stop = split(len(records), world)[rank]
    started, counts = time.perf_counter(), _Counts()
    if stop > start:
        _measure(_shards([device], 1, stop - start), cfg, records[start:stop], counts)
    shares: list = [None] * world
    dist.all_gather_object(shares, counts)
    if rank:
        return None
    metrics = task.evaluation.metrics()
    for share in shares:
        for image in share:
            metrics.add(image)
    return _summary(cfg, metrics, len(records), started)


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
        how = (
            "stopped"
            if code is None
            else f"killed by signal {signal.Signals(-code).name}"
            if code < 0
            else f"exit code {code}"
        )
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


def report(summary: dict, directory: str, task: Task) -> str:
    """Write DIR/eval_<checkpoint>.json (a checkpoint file given by its path: its name) and print the summary as the
    task does."""
    name = os.path.splitext(os.path.basename(summary["checkpoint"]))[0]
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"eval_{name}.json")
    write_json(path, summary, indent=1)
    task.evaluation.print_summary(summary, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """`eval_multipro.py`: evaluate a checkpoint over the validation set on every device."""
    import argparse

    from . import cli
    from .config import ConfigError, load_config

    prog = "eval_multipro.py"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Evaluate a checkpoint on the validation set, one process per device.",
        epilog="Example: python eval_multipro.py --cfg config/ade20k-resnet50dilated-ppm_deepsup.yaml --gpus 0-7",
    )
    parser.add_argument("--cfg", required=True, metavar="FILE", help="config file")
    parser.add_argument("--gpus", default="0", help="GPUs: 0-7, 0,2,4,6, 0 or cpu (default: 0)")
    parser.add_argument(
        "--procs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes per device; on the CPU they share the cores (default: 1)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(args.cfg, args.opts)
        devices = [str(d) for d in cli.devices(args.gpus, prog)]
        if args.procs < 1:
            raise ValueError(f"--procs must be at least 1, got {args.procs}")
    except (ConfigError, ValueError) as err:
        return cli.usage(prog, err)
    try:
        summary = evaluate(cfg, devices, args.procs)
    except KeyboardInterrupt:
        return cli.interrupted(prog)
    except (EvaluationError, *cli.RUN_ERRORS) as err:
        return cli.fail(prog, err)
    report(summary, cfg.DIR, task_for(cfg))
    return 0
