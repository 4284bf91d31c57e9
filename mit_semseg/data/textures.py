"""Texture records for the texture stage of Unified Perceptual Parsing: one texture per image (DTD's, say).

A texture record list has one JSON object per line with `fpath_img` (relative to
`DATASET.root_dataset`) and `texture`, a label of the tables' `texture.csv` (0..T-1); other keys
are kept. Images are resized to a short side of TRAIN.texture_size (the paper's 64) by antialiased
bilinear resizing; training takes a random square of that side from it, mirrored half the time,
and the image's texture is the target at every pixel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .dataset import FailedSample, padded_images, read_sample, train_loader
from .imageio import read_image
from .records import DataError, check_files_exist, read_json_lines
from .sampling import LoaderRequest, SeededBatchSampler, seeded_keys
from .transforms import normalise, round_up


def read_texture_records(
    path: str | os.PathLike, root: str | os.PathLike, textures: Sequence[str], check_files: bool = True
) -> list[dict]:
    """Read and validate a texture record list; `fpath_img` is resolved against `root`."""
    records = []
    for where, record in read_json_lines(path):
        missing = [k for k in ("fpath_img", "texture") if k not in record]
        if missing:
            raise DataError(f"{where}: missing key {', '.join(repr(k) for k in missing)}")
        texture = record["texture"]
        if isinstance(texture, bool) or not isinstance(texture, int) or not 0 <= texture < len(textures):
            raise DataError(
                f"{where}: texture must be a label of texture.csv (0..{len(textures) - 1}), got {texture!r}"
            )
        record["fpath_img"] = os.path.join(os.fspath(root), record["fpath_img"])
        records.append(record)
    if check_files:
        check_files_exist(path, (r["fpath_img"] for r in records))
    return records


def short_side_image(image: np.ndarray, short: int, padding: int = 1) -> np.ndarray:
    """The RGB uint8 image resized (antialiased bilinear) to a short side of `short`, each side rounded up to a
    multiple of `padding`."""
    height, width = image.shape[:2]
    scale = short / min(height, width)
    size = (round_up(max(short, round(height * scale)), padding), round_up(max(short, round(width * scale)), padding))
    if size == (height, width):
        return image
    source = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    resized = F.interpolate(source, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()


@dataclass
class TextureSample:
    image: np.ndarray  # S x S x 3 RGB uint8
    texture: int


class TextureTrainDataset(Dataset):
    """One training sample: the image at short side `size`, a random `size` x `size` square of it, maybe mirrored.
    Keys are (record index, seed of the sample's random choices), as `sampling.seeded_keys` gives them."""

    def __init__(self, records: Sequence[dict], size: int, random_flip: bool) -> None:
        self.records, self.size, self.random_flip = list(records), size, random_flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> TextureSample | FailedSample:
        index, seed = key
        record = self.records[index]
        return read_sample(record["fpath_img"], lambda: self._sample(record, np.random.default_rng(seed)))

    def _sample(self, record: dict, rng: np.random.Generator) -> TextureSample:
        image = short_side_image(read_image(record["fpath_img"]), self.size)
        top = int(rng.integers(image.shape[0] - self.size + 1))
        left = int(rng.integers(image.shape[1] - self.size + 1))
        image = image[top : top + self.size, left : left + self.size]
        if self.random_flip and rng.random() < 0.5:
            image = image[:, ::-1]
        return TextureSample(np.ascontiguousarray(image), record["texture"])


def collate_textures(samples: list[TextureSample | FailedSample]) -> dict:
    """A batch of squares (`padded_images`) and their `texture` labels (N, int64)."""
    batch, good = padded_images(samples, 1)
    if good:
        batch["texture"] = torch.tensor([s.texture for s in good], dtype=torch.int64)
    return batch


def build_texture_loader(records: Sequence[dict], cfg, request: LoaderRequest):
    """A loader of the requested texture batches (TRAIN.texture_batch_size_per_gpu squares each); the same batches
    for any number of workers, and on resuming."""
    t = cfg.TRAIN
    sampler = SeededBatchSampler([0] * len(records), t.texture_batch_size_per_gpu, seeded_keys, t.seed, request)
    dataset = TextureTrainDataset(records, t.texture_size, cfg.DATASET.random_flip)
    return train_loader(dataset, sampler, collate_textures, cfg, request)


def texture_val_item(record: dict, cfg) -> dict:
    """A validation item of a texture record: the image at short side TRAIN.texture_size (sides rounded up to
    DATASET.padding_constant), normalised, and its `texture`."""
    image = read_image(record["fpath_img"])
    small = short_side_image(image, cfg.TRAIN.texture_size, cfg.DATASET.padding_constant)
    tensor = normalise(
        torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)[None], cfg.MODEL.input_normalisation
    )
    return {"img_ori": image, "img_data": [tensor], "texture": record["texture"], "info": record["fpath_img"]}
