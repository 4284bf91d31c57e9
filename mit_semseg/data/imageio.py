"""Reading images as RGB uint8 and labels as class-index maps, with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np

from .records import DataError

cv2.setNumThreads(1)  # the data loader parallelises over samples


class UnreadableImage(DataError):
    """A file OpenCV cannot decode (missing, truncated or corrupt)."""


def _decode_bytes(data: np.ndarray, source: str) -> np.ndarray:
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UnreadableImage(f"cannot read image {source}: unreadable or corrupt")
    return image


def _decode(path: str) -> np.ndarray:
    if not path:
        raise UnreadableImage("cannot read image: no path")
    return _decode_bytes(np.fromfile(path, dtype=np.uint8), path)


def read_image(path: str) -> np.ndarray:
    """An H x W x 3 RGB uint8 array; grayscale, RGBA, palette and 16-bit files are converted."""
    try:
        image = _decode(path)
    except FileNotFoundError as err:
        raise UnreadableImage(f"cannot read image {path}: file not found") from err
    return _as_rgb(image, path)


def decode_image(data: bytes, source: str) -> np.ndarray:
    """`read_image` of a file's bytes (`source` names it in errors)."""
    return _as_rgb(_decode_bytes(np.frombuffer(data, np.uint8), source), source)


def _as_rgb(image: np.ndarray, path: str) -> np.ndarray:
    if image.dtype == np.uint16:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"image {path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise DataError(f"image {path}: unsupported number of channels ({channels})")


def read_label(
    path: str, num_class: int | None, size: tuple[int, int] | None = None, limit: str = "DATASET.num_class"
) -> np.ndarray:
    """An H x W uint8 or uint16 map of class indices, 0 = unlabelled, 1..num_class the classes.

    `size` is the (height, width) the label must have, its image's; `num_class` None skips the
    check of the values; `limit` names where `num_class` comes from, for the error.
    """
    try:
        label = _decode(path)
    except FileNotFoundError as err:
        raise UnreadableImage(f"cannot read label {path}: file not found") from err
    if label.ndim == 3 and label.shape[2] != 1:
        raise DataError(
            f"label {path} has {label.shape[2]} channels; a label must be a single-channel map of "
            "class indices (0 = unlabelled, 1..num_class)"
        )
    label = label.reshape(label.shape[:2])
    if label.dtype not in (np.uint8, np.uint16):
        raise DataError(f"label {path}: unsupported pixel type {label.dtype}; use 8- or 16-bit PNG")
    if size is not None and label.shape != tuple(size):
        raise DataError(f"label {path} is {label.shape[1]}x{label.shape[0]} but its image is {size[1]}x{size[0]}")
    top = int(label.max()) if label.size else 0
    if num_class is not None and top > num_class:
        raise DataError(f"label {path} has value {top}, above {limit} ({num_class})")
    return label
