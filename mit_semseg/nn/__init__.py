"""Neural-network building blocks shared by the models."""

from .batchnorm import DistributedBatchNorm2d, SynchronizedBatchNorm2d, link_replicas, to_distributed
from .pooling import AdaptiveAvgPool2d, adaptive_avg_pool2d
from .prroi_pool import PrRoIPool2D, prroi_pool2d

__all__ = [
    "AdaptiveAvgPool2d",
    "DistributedBatchNorm2d",
    "PrRoIPool2D",
    "SynchronizedBatchNorm2d",
    "adaptive_avg_pool2d",
    "link_replicas",
    "prroi_pool2d",
    "to_distributed",
]
