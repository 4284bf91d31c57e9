"""The crop pipeline of mmsegmentation's recipes (DATASET.pipeline crop): random rescale, a crop no class fills, flip,
photometric distortion, padding to the crop size.

Every random choice of a sample comes from one generator seeded by the sampler, so the same TRAIN.seed gives the
same crops whatever the number of data-loader workers, and a resumed run draws what the interrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from torch.utils.data import Dataset

from .dataset import FailedSample, TrainCollate, TrainSample, read_sample, train_loader
from .imageio import read_image, read_label
from .sampling import LoaderRequest, SeededBatchSampler, seeded_keys
from .transforms import resize_image, resize_label

CROP_TRIES = 10  # crops drawn at most while one class fills too much of it (mmsegmentation's)
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # in OpenCV's hue units (0..179)

# (record index, seed of the sample's random choices): what the sampler (`sampling.seeded_keys`) asks the dataset for.
CropKey = tuple[int, int]


def rescaled_size(height: int, width: int, scale: Sequence[float], ratio: float) -> tuple[int, int]:
    """(height, width) keeping the aspect ratio, as large as fits in `scale` (long side, short side) times `ratio`:
    mmsegmentation's keep-ratio rescale."""
    long_side, short_side = max(scale) * ratio, min(scale) * ratio
    factor = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def crop_box(
    label: np.ndarray, crop: Sequence[int], cat_max_ratio: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of a random crop of at most `crop` (height, width).

    While one class covers `cat_max_ratio` or more of the crop's labelled pixels (label > 0), or the crop holds
    fewer than two classes, another is drawn, up to CROP_TRIES crops; then the last one is kept. With
    `cat_max_ratio` 1 the first crop is kept.
    """
    height, width = label.shape
    ch, cw = min(crop[0], height), min(crop[1], width)
    for _ in range(CROP_TRIES):
        top = int(rng.integers(height - ch + 1))
        left = int(rng.integers(width - cw + 1))
        if cat_max_ratio >= 1.0:
            break
        window = label[top : top + ch, left : left + cw]
        counts = np.bincount(window[window > 0].ravel())
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            break
    return top, left, top + ch, left + cw


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast (before or after the rest), saturation and hue of an RGB uint8 image, each
    applied with probability 0.5 (mmsegmentation's PhotoMetricDistortion)."""
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        out = np.clip(out + rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA), 0, 255)
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(*CONTRAST_RANGE) if rng.random() < 0.5 else None
    if contrast_first and contrast is not None:
        out = np.clip(out * contrast, 0, 255)
    saturation = rng.uniform(*SATURATION_RANGE) if rng.random() < 0.5 else None
    hue = int(rng.integers(-HUE_DELTA, HUE_DELTA + 1)) if rng.random() < 0.5 else None
    if saturation is not None or hue is not None:
        hsv = cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if saturation is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0] + hue) % 180
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first and contrast is not None:
        out = np.clip(out * contrast, 0, 255)
    return out.astype(np.uint8)


class CropDataset(Dataset):
    """One training sample of the crop pipeline: rescaled, cropped, flipped, distorted, padded to DATASET.crop_size
    (image 0, label 0 = unlabelled). `TrainCollate` makes the batch."""

    def __init__(self, records: Sequence[dict], data) -> None:
        self.records, self.data = list(records), data

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: CropKey) -> TrainSample | FailedSample:
        index, seed = key
        record = self.records[index]
        return read_sample(record["fpath_img"], lambda: self._sample(record, np.random.default_rng(seed)))

    def _sample(self, record: dict, rng: np.random.Generator) -> TrainSample:
        d = self.data
        image = read_image(record["fpath_img"])
        label = read_label(record["fpath_segm"], d.num_class, size=image.shape[:2])
        h, w = rescaled_size(*image.shape[:2], d.crop_scale, rng.uniform(*d.crop_ratio_range))
        image, label = resize_image(image, h, w), resize_label(label, h, w)
        top, left, bottom, right = crop_box(label, d.crop_size, d.cat_max_ratio, rng)
        image, label = image[top:bottom, left:right], label[top:bottom, left:right]
        if d.random_flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if d.photometric:
            image = photometric_distortion(image, rng)
        ch, cw = d.crop_size
        padded_image = np.zeros((ch, cw, 3), np.uint8)
        padded_label = np.zeros((ch, cw), label.dtype)
        padded_image[: image.shape[0], : image.shape[1]] = image
        padded_label[: label.shape[0], : label.shape[1]] = label
        return TrainSample(padded_image, padded_label)


def build_crop_loader(records: Sequence[dict], cfg, request: LoaderRequest):
    """A loader of the requested crop-pipeline batch dicts."""
    data = cfg.DATASET
    sampler = SeededBatchSampler([0] * len(records), cfg.TRAIN.batch_size_per_gpu, seeded_keys, cfg.TRAIN.seed, request)
    collate = TrainCollate(data.padding_constant, data.segm_downsampling_rate)
    return train_loader(CropDataset(records, data), sampler, collate, cfg, request)
