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
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import FailedSample, SampleKey, TrainLoader, padded_images, read_sample, train_loader
from .imageio import read_image, read_label
from .label_tables import HEADS, PIXEL_HEADS, LabelTables
from .records import DataError, check_files_exist, check_record, read_json_lines
from .sampling import LoaderRequest, MultiSourceBatchSampler, aspect_keys
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
    image: np.ndarray
    maps: dict[str, np.ndarray]  # object / part / material label maps, resized
    scene: int
    tasks: tuple[str, ...]


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

    def __getitem__(self, key: SampleKey) -> MultiTaskSample | FailedSample:
        index, short, flip = key
        record = self.records[index]
        return read_sample(record["fpath_img"], lambda: self._sample(record, short, flip))

    def _sample(self, record: dict, short: int, flip: bool) -> MultiTaskSample:
        image = read_image(record["fpath_img"])
        maps = read_maps(record, self.tables, image.shape[:2])
        if flip:
            image, maps = cv2.flip(image, 1), {k: cv2.flip(v, 1) for k, v in maps.items()}
        h, w = scaled_size(image.shape[0], image.shape[1], short, self.img_max_size)
        maps = {k: resize_label(v, h, w) for k, v in maps.items()}
        return MultiTaskSample(resize_image(image, h, w), maps, record["scene"], self.tasks[str(record["source"])])


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

    def __call__(self, samples: list[MultiTaskSample | FailedSample]) -> dict:
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


def build_multitask_train_loader(
    records: Sequence[dict], tables: LabelTables, cfg, request: LoaderRequest
) -> TrainLoader:
    """`build_train_loader` for multi-task records: each step's `per_step` batches come from one source."""
    data = cfg.DATASET
    dataset = MultiTaskTrainDataset(records, tables, data.imgMaxSize)
    sampler = MultiSourceBatchSampler(
        [str(r["source"]) for r in records],
        [r["height"] > r["width"] for r in records],
        cfg.TRAIN.batch_size_per_gpu,
        aspect_keys(data.imgSizes, data.random_flip),
        cfg.TRAIN.seed,
        request,
    )
    collate = MultiTaskCollate(tables, data.padding_constant, data.segm_downsampling_rate)
    return train_loader(dataset, sampler, collate, cfg, request)


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
