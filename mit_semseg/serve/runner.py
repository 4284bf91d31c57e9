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


class ModelRunner:
    """`submit(image)` queues an image for `segmenter` and returns a Future of (prediction, seconds computing); a
    full queue raises `QueueFull`. A job cancelled while it waits (its request timed out) is skipped."""

    def __init__(self, name: str, segmenter: Segmenter, queue_size: int) -> None:
        self.name, self.segmenter = name, segmenter
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

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if not job.future.set_running_or_notify_cancel():
                continue  # its request gave up waiting
            started = time.perf_counter()
            try:
                job.future.set_result((self.segmenter.predict(job.image), time.perf_counter() - started))
            except Exception as err:  # handed to the request, which answers for it
                job.future.set_exception(err)

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        self.jobs.put(None)
        self.thread.join()
