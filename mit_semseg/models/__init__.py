"""Encoders, decoders and the segmentation module."""

from .builder import DECODERS, ENCODERS, ModelBuilder
from .checkpoint import CheckpointError, load_weights, read_state_dict
from .segmentation import SegmentationModule

__all__ = [
    "DECODERS",
    "ENCODERS",
    "CheckpointError",
    "ModelBuilder",
    "SegmentationModule",
    "load_weights",
    "read_state_dict",
]
