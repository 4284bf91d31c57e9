"""The order of training batches, written once for every pipeline: seeded, shared among ranks, resumable.

Every random choice is made here, from streams seeded by (seed, epoch) for the order of the records (the same on
every rank, each rank taking its own share) and (seed, epoch, rank) for each batch's choices, so the same seed gives
the same batches whatever the number of data-loader workers, and a run resumed at batch `start` draws what the
interrupted one would have.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from .records import DataError

# A batch's sample keys from its record indices, with its random choices drawn from the generator given.
BatchKeys = Callable[[list[int], np.random.Generator], list[tuple]]


@dataclass(frozen=True)
class LoaderRequest:
    """Which training batches a loader gives: `num_batches` of epoch `epoch` from batch `start` on, `per_step` of
    them (one per device) making one step, for process `rank` of `world_size`."""

    num_batches: int
    per_step: int = 1
    epoch: int = 0
    start: int = 0
    rank: int = 0
    world_size: int = 1
    pin_memory: bool = False


def shuffled_shares(num_records: int, seed: int, epoch: int, rank: int, world_size: int) -> Iterator[int]:
    """Record indices for ever, one random permutation after another, drawn from a stream seeded by (seed, epoch)
    that every rank shares; rank r takes every `world_size`-th index from the r-th (disjoint shares)."""
    order = np.random.default_rng([seed, epoch])
    while True:
        yield from order.permutation(num_records)[rank::world_size].tolist()


class ResumableSampler(Sampler[list[tuple]]):
    """Batches `start`..`num_batches` of the request from `batches()`, the epoch's batches from the first."""

    def __init__(self, request: LoaderRequest) -> None:
        self.request = request

    def batches(self) -> Iterator[list[tuple]]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.request.num_batches - self.request.start

    def __iter__(self) -> Iterator[list[tuple]]:
        return itertools.islice(self.batches(), self.request.start, self.request.num_batches)


class SeededBatchSampler(ResumableSampler):
    """Batches of `batch_size` records of one group each (`groups`: each record's, such as its orientation), in the
    shuffled shares of (seed, epoch); `keys` makes a batch's sample keys from its records with the (seed, epoch,
    rank) stream."""

    def __init__(
        self, groups: Sequence[int], batch_size: int, keys: BatchKeys, seed: int, request: LoaderRequest
    ) -> None:
        super().__init__(request)
        if len(groups) < request.world_size:
            raise DataError(f"{len(groups)} records cannot be shared among {request.world_size} processes")
        self.groups = np.asarray(groups, np.int64)
        self.batch_size, self.keys, self.seed = batch_size, keys, seed

    def batches(self) -> Iterator[list[tuple]]:
        r = self.request
        rng = np.random.default_rng([self.seed, r.epoch, r.rank])
        buckets: dict[int, list[int]] = {}
        for index in shuffled_shares(len(self.groups), self.seed, r.epoch, r.rank, r.world_size):
            bucket = buckets.setdefault(int(self.groups[index]), [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                yield self.keys(bucket, rng)
                bucket.clear()


def aspect_keys(img_sizes: Sequence[int], random_flip: bool) -> BatchKeys:
    """The original's batches: one drawn short side for the batch, and a flip for each image: (index, short, flip)."""
    sizes = tuple(img_sizes)

    def keys(indices: list[int], rng: np.random.Generator) -> list[tuple]:
        short = int(sizes[rng.integers(len(sizes))])
        flips = rng.random(len(indices)) < 0.5 if random_flip else np.zeros(len(indices), bool)
        return [(i, short, bool(f)) for i, f in zip(indices, flips)]

    return keys


def seeded_keys(indices: list[int], rng: np.random.Generator) -> list[tuple]:
    """Each sample with the seed of its own random choices (crops, textures): (index, seed)."""
    return [(i, int(rng.integers(2**63))) for i in indices]


def aspect_sampler(
    portrait: Sequence[bool],
    batch_size: int,
    img_sizes: Sequence[int],
    random_flip: bool,
    seed: int,
    request: LoaderRequest,
) -> SeededBatchSampler:
    """Batches of images of one orientation (portrait or landscape), each with a drawn short side and flips."""
    keys = aspect_keys(img_sizes, random_flip)
    return SeededBatchSampler(np.asarray(portrait, bool), batch_size, keys, seed, request)


class MultiSourceBatchSampler(ResumableSampler):
    """Batches from one source per step, drawn with probability proportional to its number of records.

    Step t takes `per_step` consecutive batches (one per device) of the source drawn for t from a stream seeded by
    (seed, epoch, t), the same on every rank; each source has its own `SeededBatchSampler` stream (seeded apart) of
    batches of one group each, with `keys`.
    """

    SOURCE_SEED_STRIDE = 1_000_003

    def __init__(
        self,
        sources: Sequence[str],
        groups: Sequence[int],
        batch_size: int,
        keys: BatchKeys,
        seed: int,
        request: LoaderRequest,
    ) -> None:
        super().__init__(request)
        self.names = sorted(set(sources))
        self.members = [np.flatnonzero(np.asarray(sources) == name) for name in self.names]
        self.weights = np.array([len(m) for m in self.members], np.float64) / len(sources)
        groups = np.asarray(groups, np.int64)
        seeds = [seed + self.SOURCE_SEED_STRIDE * (k + 1) for k in range(len(self.names))]
        self.streams = [
            SeededBatchSampler(groups[m], batch_size, keys, s, request) for m, s in zip(self.members, seeds)
        ]
        self.seed = seed

    def source_of(self, step: int) -> int:
        rng = np.random.default_rng([self.seed, self.request.epoch, step])
        return int(rng.choice(len(self.names), p=self.weights))

    def batches(self) -> Iterator[list[tuple]]:
        streams = [s.batches() for s in self.streams]
        for i in itertools.count():
            k = self.source_of(i // self.request.per_step)
            yield [(int(self.members[k][index]), *rest) for index, *rest in next(streams[k])]
