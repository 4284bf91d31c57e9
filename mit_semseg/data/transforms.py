"""Sizes, normalisation and label downsampling shared by training, evaluation and inference."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (102.9801, 115.9465, 122.7717)
# TEST.pipeline: how an image is predicted. original: the original's (each scale's size rounded up to
# DATASET.padding_constant, resized antialiased; logits resized once, to the image; sliding windows averaged at the
# decoder's resolution). mmseg: mmsegmentation's test pipeline (the size kept in ratio and rounded, OpenCV's bilinear,
# no padding; logits resized to the resized image, windows averaged there, then resized to the image; see inference)
TEST_PIPELINES = ("original", "mmseg")


@dataclass(frozen=True)
class Normalisation:
    """Network input channel c = RGB channel `order[c]` (0..255) * `scale[c]` + `offset[c]`."""

    order: tuple[int, int, int]
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]


NORMALISATIONS = {
    # the segmentation models': RGB, (v / 255 - mean) / std with ImageNet's mean and std
    "imagenet": Normalisation(
        (0, 1, 2),
        tuple(1 / (255 * s) for s in IMAGENET_STD),
        tuple(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)),
    ),
    # Unified Perceptual Parsing's: BGR, 0..255 minus the caffe mean, std 1
    "caffe": Normalisation((2, 1, 0), (1.0, 1.0, 1.0), tuple(-m for m in CAFFE_MEAN_BGR)),
}


def round_up(x: int, multiple: int) -> int:
    return ((x - 1) // multiple + 1) * multiple


def scaled_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(height, width) with the short side at `short_side`, scaled down if the long side exceeds `max_size`."""
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return max(1, int(height * scale)), max(1, int(width * scale))


def rescaled_size(height: int, width: int, short_side: int, long_side: int) -> tuple[int, int]:
    """mmcv's `rescale_size`: (height, width) scaled, keeping the ratio, to fit `long_side` x `short_side`, rounded
    half up (mmsegmentation's Resize with keep_ratio)."""
    scale = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def normalisation(kind: str) -> Normalisation:
    """The input normalisation named by MODEL.input_normalisation."""
    if kind not in NORMALISATIONS:
        raise ValueError(f"unknown input normalisation '{kind}'; valid: {', '.join(NORMALISATIONS)}")
    return NORMALISATIONS[kind]


def normalise(images: torch.Tensor, kind: str = "imagenet") -> torch.Tensor:
    """Normalised float32 network input from N x 3 x H x W uint8 RGB images."""
    n = normalisation(kind)
    scale = torch.tensor(n.scale, device=images.device).view(3, 1, 1)
    offset = torch.tensor(n.offset, device=images.device).view(3, 1, 1)
    return images[:, list(n.order)].float().mul_(scale).add_(offset)


def normalise_batch(images: torch.Tensor, sizes: torch.Tensor, kind: str = "imagenet") -> torch.Tensor:
    """N x 3 x H x W float32 from an N x H x W x 3 uint8 RGB CPU batch; beyond each image's (h, w) it is 0.

    Done in numpy, on one thread: the step is memory-bound and must not take the cores the
    data-loader workers run on. The result keeps the input's channels-last memory layout.
    """
    n = normalisation(kind)
    pixels = images.numpy() if n.order == (0, 1, 2) else images.numpy()[..., list(n.order)]
    out = np.multiply(pixels, np.array(n.scale, np.float32), dtype=np.float32)
    out += np.array(n.offset, np.float32)
    for i, (h, w) in enumerate(sizes.tolist()):
        out[i, h:] = 0
        out[i, :h, w:] = 0
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    if label.shape[:2] == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


def label_cells(label: np.ndarray, rate: int) -> np.ndarray:
    """One value per `rate` x `rate` cell: the pixel at the cell's centre (the decoder's sample point).

    A cell whose centre falls outside the label (a partial last cell) is left out; the caller pads with -1.
    """
    return label[rate // 2 :: rate, rate // 2 :: rate]


def prediction_scales(data, test) -> list[tuple[int, int]]:
    """(short side, long-side cap) of every scale an image is predicted at: the original's DATASET.imgSizes under
    imgMaxSize, or with TEST.ratios, imgSizes[0] and imgMaxSize times each ratio (mmsegmentation's multi-scale)."""
    if not test.ratios:
        return [(int(short), data.imgMaxSize) for short in data.imgSizes]
    return [(round(data.imgSizes[0] * r), round(data.imgMaxSize * r)) for r in test.ratios]


def prediction_images(image: np.ndarray, cfg) -> list[torch.Tensor]:
    """The image as prediction takes it (1 x 3 x h x w each, normalised): at every test scale (`prediction_scales`),
    rounded up to DATASET.padding_constant; with TEST.mode slide, at its own size unless TEST.ratios are set. With
    TEST.pipeline mmseg, at every test scale as mmsegmentation resizes (`rescaled_size`, OpenCV's bilinear), whatever
    the mode."""
    d, t, kind = cfg.DATASET, cfg.TEST, cfg.MODEL.input_normalisation
    if t.pipeline == "mmseg":
        resized = [resize_image(image, *rescaled_size(*image.shape[:2], *s)) for s in prediction_scales(d, t)]
        return [normalise(torch.from_numpy(r).permute(2, 0, 1)[None], kind) for r in resized]
    if t.mode == "slide":
        if not t.ratios:
            return [normalise(torch.from_numpy(image).permute(2, 0, 1)[None], kind)]
        return multi_scale_images(image, prediction_scales(d, t), 1, kind)
    return multi_scale_images(image, prediction_scales(d, t), d.padding_constant, kind)


def multi_scale_images(image: np.ndarray, scales, padding: int, kind: str = "imagenet") -> list[torch.Tensor]:
    """The image at every (short side, long-side cap) of `scales` (see `prediction_scales`), each side rounded up to a
    multiple of `padding`, 1 x 3 x h x w.

    Resized as the original evaluation does (PIL's bilinear, antialiased when shrinking), through
    torch's uint8 antialiased bilinear, which matches it to within one grey level, so the
    metrics match the original's.
    """
    height, width = image.shape[:2]
    source = torch.from_numpy(image).permute(2, 0, 1)[None]
    out = []
    for short, max_size in scales:
        h, w = scaled_size(height, width, short, max_size)
        h, w = round_up(h, padding), round_up(w, padding)
        resized = (
            source
            if (h, w) == (height, width)
            else F.interpolate(source, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
        )
        out.append(normalise(resized, kind))
    return out
