"""The prepared multi-task layout of Unified Perceptual Parsing: record lists, samples, batches, sources.

A record list has one JSON object per line: `fpath_img`, `width`, `height`, `source` (a free name
such as `ade20k`) and any of `fpath_object` (16-bit PNG of object labels, 0 = unlabelled),
`fpath_part` (16-bit PNG of part labels, 0 = none), `fpath_material` (8-bit PNG of material labels,
0 = unlabelled) and `scene` (a scene label; absent or -1 = none). Paths are relative to
`DATASET.root_dataset`. The tasks a source trains are the annotations its records carry; every
batch of one training iteration comes from one source, so every device runs the same heads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .dataset import GroupedBatchSampler, SampleKey, TrainLoader, padded_images, train_loader
from .imageio import UnreadableImage, read_image, read_label
from .label_tables import HEADS, PIXEL_HEADS, LabelTables
from .records import DataError, check_files_exist, check_record, read_json_lines
from .textures import texture_val_item
from .transforms import label_cells, prediction_images, resize_image, resize_label, scaled_size

MAPS = {head: f"fpath_{head}" for head in PIXEL_HEADS}  # head: the record's key of its label map


def read_multitask_records(
    path: str | os.PathLike, root: str | os.PathLike, tables: LabelTables, check_files: bool = True
) -> list[dict]:
    """Read and validate a multi-task record list; paths are resolved against `root`, `scene` defaults to -1."""
    records = [_record(record, where, root, tables) for where, record in read_json_lines(path)]
    if check_files:
        check_files_exist(path, (r[k] for r in records for k in ("fpath_img", *MAPS.values()) if k in r))
    return records


def _record(record: dict, where: str, root, tables: LabelTables) -> dict:
    check_record(record, where, ("fpath_img", "width", "height", "source"))
    scene = record.setdefault("scene", -1)
    if isinstance(scene, bool) or not isinstance(scene, int) or not -1 <= scene < len(tables.scenes):
        raise DataError(f"{where}: scene must be -1 (none) or a label 0..{len(tables.scenes) - 1}, got {scene!r}")
    if not any(k in record for k in MAPS.values()) and scene < 0:
        raise DataError(f"{where}: no annotation (fpath_object, fpath_part, fpath_material or scene)")
    if "fpath_part" in record and "fpath_object" not in record:
        raise DataError(f"{where}: fpath_part needs fpath_object (parts are read inside their objects)")
    for key in ("fpath_img", *MAPS.values()):
        if key in record:
            record[key] = os.path.join(os.fspath(root), record[key])
    return record


def source_tasks(records: Sequence[dict]) -> dict[str, tuple[str, ...]]:
    """The tasks each source trains: those any of its records annotates, in head order."""
    found: dict[str, set[str]] = {}
    for r in records:
        tasks = found.setdefault(str(r["source"]), set())
        tasks.update(task for task, key in MAPS.items() if key in r)
        if r["scene"] >= 0:
            tasks.add("scene")
    return {source: tuple(t for t in HEADS if t in tasks) for source, tasks in found.items()}


@dataclass
class MultiTaskSample:
    image: np.ndarray | None = None
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # object / part / material label maps, resized
    scene: int = -1
    tasks: tuple[str, ...] = ()
    path: str = ""
    error: str = ""
    fatal: str = ""


def read_maps(record: dict, tables: LabelTables, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The record's label maps, checked against the tables' label ranges and the image's size."""
    top = {"object": len(tables.objects) - 1, "part": len(tables.parts) - 1, "material": len(tables.materials) - 1}
    return {
        task: read_label(record[key], top[task], size, f"the last label of {task}.csv in {tables.folder}")
        for task, key in MAPS.items()
        if key in record
    }


class MultiTaskTrainDataset(Dataset):
    """Reads, flips and resizes one multi-task training sample (labels by nearest neighbour)."""

    def __init__(self, records: Sequence[dict], tables: LabelTables, img_max_size: int) -> None:
        self.records, self.tables, self.img_max_size = list(records), tables, img_max_size
        self.tasks = source_tasks(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey) -> MultiTaskSample:
        index, short, flip = key
        record = self.records[index]
        path, tasks = record["fpath_img"], self.tasks[str(record["source"])]
        try:
            image = read_image(path)
            maps = read_maps(record, self.tables, image.shape[:2])
        except UnreadableImage as err:
            return MultiTaskSample(path=path, error=str(err), tasks=tasks)
        except DataError as err:
            return MultiTaskSample(path=path, fatal=str(err), tasks=tasks)
        if flip:
            image, maps = cv2.flip(image, 1), {k: cv2.flip(v, 1) for k, v in maps.items()}
        h, w = scaled_size(image.shape[0], image.shape[1], short, self.img_max_size)
        return MultiTaskSample(
            resize_image(image, h, w), {k: resize_label(v, h, w) for k, v in maps.items()}, record["scene"], tasks, path
        )


class PartTargets:
    """Part ground truth from object and part label maps: each pixel's index within its object's part group.

    A pixel of an object with parts whose part label is in the object's list gets its index there
    (0 otherwise, and everywhere else); group g is valid for an image when an index above 0 of g is
    present (after resizing to the label resolution).
    """

    def __init__(self, tables: LabelTables) -> None:
        self.index = np.zeros((len(tables.objects), len(tables.parts)), np.int64)
        self.group = np.full(len(tables.objects), -1, np.int64)
        for g, group in enumerate(tables.groups):
            self.group[group.object_label] = g
            self.index[group.object_label, list(group.part_labels)] = np.arange(len(group.part_labels))
        self.num_groups = len(tables.groups)

    def __call__(self, objects: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part index map, validity of each group) for one image's maps at label resolution."""
        index = self.index[objects, parts]
        valid = np.zeros(self.num_groups, bool)
        groups = self.group[objects[index > 0]]
        valid[groups[groups >= 0]] = True
        return index, valid


class MultiTaskCollate:
    """Pads one source's samples into a batch: uint8 images, and per task its labels at label resolution.

    `seg_object`, `seg_material`: N x h x w label maps (0 unlabelled and padding); `seg_part`: the
    pixels' index in their object's part group, with `valid_part` (N x groups); `scene`: N labels
    (-1 none); `tasks`: the heads this batch trains.
    """

    def __init__(self, tables: LabelTables, padding_constant: int, segm_downsampling_rate: int) -> None:
        self.padding, self.rate, self.parts = padding_constant, segm_downsampling_rate, PartTargets(tables)

    def __call__(self, samples: list[MultiTaskSample]) -> dict:
        batch, good = padded_images(samples, self.padding)
        if not good:
            return batch
        tasks = good[0].tasks
        _, height, width, _ = batch["images"].shape
        shape = (len(good), height // self.rate, width // self.rate)
        maps = {task: np.zeros(shape, np.int64) for task in PIXEL_HEADS if task in tasks}
        valid = np.zeros((len(good), self.parts.num_groups), bool)
        for i, s in enumerate(good):
            cells = {task: label_cells(m, self.rate).astype(np.int64) for task, m in s.maps.items()}
            if "part" in tasks and "object" in cells:
                cells["part"], valid[i] = self.parts(cells["object"], cells.get("part", np.zeros_like(cells["object"])))
            for task, target in maps.items():
                if task in cells:
                    target[i, : cells[task].shape[0], : cells[task].shape[1]] = cells[task]
        batch.update(tasks=tasks, **{f"seg_{task}": torch.from_numpy(m) for task, m in maps.items()})
        if "part" in tasks:
            batch["valid_part"] = torch.from_numpy(valid)
        if "scene" in tasks:
            batch["scene"] = torch.tensor([s.scene for s in good], dtype=torch.int64)
        return batch


class MultiSourceBatchSampler(Sampler[list[SampleKey]]):
    """Batches from one source per iteration, drawn with probability proportional to its number of records.

    Iteration t takes `per_step` consecutive batches (one per device) of the source drawn for t from
    a stream seeded by (seed, epoch, t), the same on every rank; each source has its own aspect-ratio
    grouped stream of batches (rank shares as `GroupedBatchSampler`). `start` resumes exactly.
    """

    def __init__(
        self,
        sources: Sequence[str],
        portrait: Sequence[bool],
        batch_size: int,
        img_sizes: Sequence[int],
        random_flip: bool,
        num_batches: int,
        per_step: int,
        seed: int,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.names = sorted(set(sources))
        self.members = [np.flatnonzero(np.asarray(sources) == name) for name in self.names]
        self.weights = np.array([len(m) for m in self.members], np.float64) / len(sources)
        portrait = np.asarray(portrait, bool)
        self.streams = [
            GroupedBatchSampler(
                portrait[m],
                batch_size,
                img_sizes,
                random_flip,
                num_batches,
                seed + 1_000_003 * (k + 1),
                epoch,
                0,
                rank,
                world_size,
            )
            for k, m in enumerate(self.members)
        ]
        self.num_batches, self.per_step, self.seed, self.epoch, self.start = num_batches, per_step, seed, epoch, start

    def __len__(self) -> int:
        return self.num_batches - self.start

    def source_of(self, iteration: int) -> int:
        return int(np.random.default_rng([self.seed, self.epoch, iteration]).choice(len(self.names), p=self.weights))

    def __iter__(self) -> Iterator[list[SampleKey]]:
        streams = [iter(s) for s in self.streams]
        for i in range(self.num_batches):
            k = self.source_of(i // self.per_step)
            batch = next(streams[k])
            if i >= self.start:
                yield [(int(self.members[k][index]), short, flip) for index, short, flip in batch]


def build_multitask_train_loader(
    records: Sequence[dict],
    tables: LabelTables,
    cfg,
    num_batches: int,
    per_step: int,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> TrainLoader:
    """`build_train_loader` for multi-task records: each iteration's `per_step` batches come from one source."""
    data = cfg.DATASET
    dataset = MultiTaskTrainDataset(records, tables, data.imgMaxSize)
    sampler = MultiSourceBatchSampler(
        [str(r["source"]) for r in records],
        [r["height"] > r["width"] for r in records],
        cfg.TRAIN.batch_size_per_gpu,
        data.imgSizes,
        data.random_flip,
        num_batches,
        per_step,
        cfg.TRAIN.seed,
        epoch,
        start,
        rank,
        world_size,
    )
    collate = MultiTaskCollate(tables, data.padding_constant, data.segm_downsampling_rate)
    return train_loader(dataset, sampler, collate, cfg, epoch, pin_memory)


class MultiTaskValDataset(Dataset):
    """Each image at every test scale (`prediction_images`), its full-size label maps, its scene, its source's tasks;
    a texture record (`data.textures`) as `texture_val_item` gives it."""

    def __init__(self, records: Sequence[dict], cfg, tables: LabelTables) -> None:
        self.records, self.cfg, self.tables = list(records), cfg, tables

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        if "texture" in record:
            return texture_val_item(record, self.cfg)
        image = read_image(record["fpath_img"])
        return {
            "img_ori": image,
            "maps": read_maps(record, self.tables, image.shape[:2]),
            "scene": record["scene"],
            "img_data": prediction_images(image, self.cfg),
            "info": record["fpath_img"],
        }
