"""A model behind a bounded queue: one thread runs the queued requests in turn, so that a burst never grows a backlog
past the queue's size and the device never runs two at once."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..segmenter import Segmenter

log = logging.getLogger("mit_semseg.serve")


class QueueFull(Exception):
    """The model's queue holds as many requests as it may."""


@dataclass
class _Job:
    image: np.ndarray
    future: Future = field(default_factory=Future)


_STOP = None  # what `close` queues


class ModelRunner:
    """`submit(image)` queues an image for `segmenter` and returns a Future of (prediction, seconds computing, images
    computed together); a full queue raises `QueueFull`. A job cancelled while it waits (its request timed out) is
    skipped. With `batch` > 1, up to that many queued images of one size go through the network together
    (`Segmenter.predict_batch`), in their order."""

    def __init__(self, name: str, segmenter: Segmenter, queue_size: int, batch: int = 1) -> None:
        self.name, self.segmenter, self.batch = name, segmenter, batch
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.thread = threading.Thread(target=self._run, name=f"model {name}", daemon=True)
        self.thread.start()

    def busy(self) -> bool:
        """Whether the queue is full now."""
        return self.jobs.full()

    def busy_message(self) -> str:
        return f"model {self.name} is busy: {self.jobs.maxsize} requests are waiting"

    def submit(self, image: np.ndarray) -> Future:
        job = _Job(image)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull(self.busy_message()) from None
        return job.future

    def _group(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """`first` and the queued jobs after it of its image's size, up to `batch`; the job that ended the group
        (another size), if one; whether `close` was met."""
        group = [first]
        while len(group) < self.batch:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return group, None, True
            if job.image.shape != first.image.shape:
                return group, job, False
            group.append(job)
        return group, None, False

    def _run(self) -> None:
        held, stopping = None, False
        while not stopping:
            first = held or self.jobs.get()
            if first is _STOP:
                return
            group, held, stopping = self._group(first)
            group = [job for job in group if job.future.set_running_or_notify_cancel()]  # skip the abandoned
            if group:
                self._compute(group)

    def _compute(self, group: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            images = [job.image for job in group]
            answers = self.segmenter.predict_batch(images) if len(group) > 1 else [self.segmenter.predict(images[0])]
        except Exception as err:  # handed to the requests, which answer for it
            for job in group:
                job.future.set_exception(err)
            return
        seconds = time.perf_counter() - started
        for job, answer in zip(group, answers):
            job.future.set_result((answer, seconds, len(group)))

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self.jobs.put(_STOP)
        self.thread.join()
