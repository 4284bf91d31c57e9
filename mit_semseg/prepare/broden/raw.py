"""What every Broden+ source reader shares: the raw source and item, folder, size and `.mat` checks."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.records import DataError
from .tables import Vocabulary


class MissingSource(DataError):
    """A source's raw folder (or its index) is not there: the whole source is left out."""


@dataclass(frozen=True)
class RawItem:
    """One image of a source dataset, with what its reader needs to label it."""

    dataset: str  # ade20k, pascal, os or dtd
    file_index: int  # position in the dataset's own order (the split lists' file_index)
    stem: str  # output name, relative to the prepared folder, without extension
    image: str  # the raw image
    annotations: tuple[str, ...] = ()  # the raw annotation files, in the reader's order ("" when absent)
    scene: str = ""  # raw scene name (ADE20K)
    textures: tuple[str, ...] = ()  # texture names (DTD)
    split: str = ""  # the dataset's own split, where the original's lists do not give one

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.file_index}"


@dataclass(frozen=True)
class RawSource:
    """A source dataset's images in its own order, and the vocabulary of each category its labels use."""

    items: list[RawItem]
    vocabularies: dict[str, Vocabulary]


def require(path: Path, what: str) -> Path:
    """`path`, or MissingSource naming it."""
    if not path.exists():
        raise MissingSource(f"{what} not found: {path}")
    return path


def check_size(label: np.ndarray, image: np.ndarray, path: str) -> None:
    if label.shape[:2] != image.shape[:2]:
        raise DataError(
            f"{path} is {label.shape[1]}x{label.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}"
        )


def load_mat(path: str, variable: str):
    """`variable` of a MATLAB v5 file, structs as attribute objects; a missing or unreadable file names it."""
    from scipy.io import loadmat  # an optional extra: pip install 'mit_semseg[broden]'

    if not os.path.isfile(path):
        raise DataError(f"annotation not found: {path}")
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except (ValueError, TypeError, OSError, NotImplementedError, EOFError) as err:
        raise DataError(f"{path}: cannot read the .mat file ({type(err).__name__}: {err})") from None
    if variable not in mat:
        raise DataError(f"{path}: no variable {variable!r} in the .mat file")
    return mat[variable]


def strings(values) -> list[str]:
    """A MATLAB cell array of strings (squeezed by scipy) as a list of str."""
    return [str(v) for v in np.atleast_1d(values).tolist()]
