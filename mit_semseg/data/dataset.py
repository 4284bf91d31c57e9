"""The original's training samples and batches, their one error path, the training loader, and validation items."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .imageio import UnreadableImage, read_image, read_label
from .records import DataError
from .sampling import LoaderRequest, aspect_sampler
from .transforms import (
    label_cells,
    normalise_batch,
    prediction_images,
    resize_image,
    resize_label,
    round_up,
    scaled_size,
)

log = logging.getLogger("mit_semseg")
T = TypeVar("T")

# (record index, short side of the batch, flip horizontally): what the sampler asks the dataset for.
SampleKey = tuple[int, int, bool]


@dataclass
class FailedSample:
    """A training sample that could not be read: `error`, an unreadable file (skipped, counted by `SkippedSamples`),
    or `fatal`, bad data that must stop training."""

    path: str
    error: str = ""
    fatal: str = ""


def read_sample(path: str, read: Callable[[], T]) -> T | FailedSample:
    """`read()`, or the `FailedSample` of `path` when it raises a data error: every dataset's one error path."""
    try:
        return read()
    except UnreadableImage as err:
        return FailedSample(path, error=str(err))
    except DataError as err:
        return FailedSample(path, fatal=str(err))


@dataclass
class TrainSample:
    image: np.ndarray  # H x W x 3 RGB uint8, resized
    label: np.ndarray  # H x W class indices (0 = unlabelled), resized


class TrainDataset(Dataset):
    """Reads, flips and resizes one training sample; `TrainCollate` pads and normalises the batch."""

    def __init__(self, records: Sequence[dict], num_class: int, img_max_size: int) -> None:
        self.records, self.num_class, self.img_max_size = list(records), num_class, img_max_size

    def __len__(self) -> int:
        return len(self.records)

    def portrait(self) -> list[bool]:
        return [r["height"] > r["width"] for r in self.records]

    def __getitem__(self, key: SampleKey) -> TrainSample | FailedSample:
        index, short, flip = key
        record = self.records[index]
        return read_sample(record["fpath_img"], lambda: self._sample(record, short, flip))

    def _sample(self, record: dict, short: int, flip: bool) -> TrainSample:
        image = read_image(record["fpath_img"])
        label = read_label(record["fpath_segm"], self.num_class, size=image.shape[:2])
        if flip:
            image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        h, w = scaled_size(image.shape[0], image.shape[1], short, self.img_max_size)
        return TrainSample(resize_image(image, h, w), resize_label(label, h, w))


class TrainCollate:
    """Pads a list of samples into one batch at one size, as `TrainLoader` hands it over.

    Images stay uint8 (N x H x W x 3, a quarter of the bytes to pass between processes) with their
    sizes; `TrainLoader` normalises them. Images are padded to a multiple of `padding_constant`;
    labels are shifted to 0-based classes (-1 unlabelled and padding) and sampled once per
    `segm_downsampling_rate` cell.
    """

    def __init__(self, padding_constant: int, segm_downsampling_rate: int) -> None:
        self.padding, self.rate = padding_constant, segm_downsampling_rate

    def __call__(self, samples: list[TrainSample | FailedSample]) -> dict:
        batch, good = padded_images(samples, self.padding)
        if not good:
            return batch
        _, height, width, _ = batch["images"].shape
        labels = np.full((len(good), height // self.rate, width // self.rate), -1, dtype=np.int64)
        for i, s in enumerate(good):
            cells = label_cells(s.label, self.rate).astype(np.int64) - 1
            labels[i, : cells.shape[0], : cells.shape[1]] = cells
        batch["seg_label"] = torch.from_numpy(labels)
        return batch


def padded_images(samples: list, padding: int) -> tuple[dict, list]:
    """The start of a training batch from samples with an `image` and `FailedSample`s: the bookkeeping (`failed`,
    `fatal`, `num_samples`) and, when any sample was read, its `images` (uint8, padded to a multiple of
    `padding`) and `sizes`. Also returns the samples that were read."""
    good = [s for s in samples if not isinstance(s, FailedSample)]
    failed = [s for s in samples if isinstance(s, FailedSample)]
    batch: dict = {
        "failed": [s.error for s in failed if s.error],
        "fatal": next((s.fatal for s in failed if s.fatal), ""),
        "num_samples": len(samples),
    }
    if good:
        height = round_up(max(s.image.shape[0] for s in good), padding)
        width = round_up(max(s.image.shape[1] for s in good), padding)
        images = np.zeros((len(good), height, width, 3), dtype=np.uint8)
        for i, s in enumerate(good):
            images[i, : s.image.shape[0], : s.image.shape[1]] = s.image
        batch.update(images=torch.from_numpy(images), sizes=torch.tensor([s.image.shape[:2] for s in good]))
    return batch, good


class TrainLoader:
    """Training batch dicts `{'img_data': N x 3 x H x W float32, 'seg_label': N x h x w int64}`.

    Wraps a DataLoader over `TrainDataset` and `TrainCollate`; each dict also says how many
    samples were drawn (`num_samples`), which were skipped (`failed`) and any `fatal` data error.
    A batch whose samples all failed has no `img_data`.
    """

    def __init__(self, loader: DataLoader, normalisation: str = "imagenet") -> None:
        self.loader, self.normalisation = loader, normalisation

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            yield finish_batch(batch, self.normalisation)


def finish_batch(batch: dict, normalisation: str = "imagenet") -> dict:
    """Normalise the uint8 images of a `TrainCollate` batch into `img_data` (MODEL.input_normalisation)."""
    if "images" in batch:
        batch["img_data"] = normalise_batch(batch.pop("images"), batch.pop("sizes"), normalisation)
    return batch


class SkippedSamples:
    """Counts the samples drawn and those skipped as unreadable; stops the run past `limit` of them.

    Bad data that is not merely unreadable (a label with wrong values, channels or size) stops at once.
    """

    def __init__(self, limit: float = 0.01) -> None:
        self.limit, self.drawn, self.failed = limit, 0, []

    def update(self, batch: dict) -> None:
        if batch["fatal"]:
            raise DataError(batch["fatal"])
        self.drawn += batch["num_samples"]
        for message in batch["failed"]:
            log.warning("skipped a training sample: %s", message)
            self.failed.append(message)
        if len(self.failed) > 1 and len(self.failed) > self.limit * self.drawn:
            listed = "\n  ".join(self.failed)
            raise DataError(
                f"{len(self.failed)} of the {self.drawn} training samples drawn could not be read "
                f"(more than {self.limit:.0%}):\n  {listed}"
            )


def seed_worker(worker_id: int) -> None:
    """Give each data-loader worker its own numpy and python random streams (from torch's per-worker seed)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_train_loader(records: Sequence[dict], cfg, request: LoaderRequest) -> TrainLoader:
    """A loader of the requested training batch dicts (the original's aspect-ratio grouped batches)."""
    data = cfg.DATASET
    dataset = TrainDataset(records, data.num_class, data.imgMaxSize)
    sampler = aspect_sampler(
        dataset.portrait(), cfg.TRAIN.batch_size_per_gpu, data.imgSizes, data.random_flip, cfg.TRAIN.seed, request
    )
    collate = TrainCollate(data.padding_constant, data.segm_downsampling_rate)
    return train_loader(dataset, sampler, collate, cfg, request)


def train_loader(dataset: Dataset, sampler: Sampler, collate, cfg, request: LoaderRequest) -> TrainLoader:
    """The data loader of training: TRAIN.workers processes, seeded by TRAIN.seed and the epoch."""
    workers = cfg.TRAIN.workers
    return TrainLoader(
        DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=request.pin_memory,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(cfg.TRAIN.seed + request.epoch),
            prefetch_factor=4 if workers else None,
        ),
        cfg.MODEL.input_normalisation,
    )


class ValDataset(Dataset):
    """Each image at every test scale (`prediction_images`), with the original image and its full-size 0-based label."""

    def __init__(self, records: Sequence[dict], cfg) -> None:
        self.records, self.cfg = list(records), cfg

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = read_image(record["fpath_img"])
        label = read_label(record["fpath_segm"], self.cfg.DATASET.num_class, size=image.shape[:2])
        return {
            "img_ori": image,
            "seg_label": torch.from_numpy(label.astype(np.int64) - 1),
            "img_data": prediction_images(image, self.cfg),
            "info": record["fpath_img"],
        }
