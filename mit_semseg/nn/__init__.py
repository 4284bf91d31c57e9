"""Neural-network building blocks shared by the models."""
from .batchnorm import SynchronizedBatchNorm2d

__all__ = ["SynchronizedBatchNorm2d"]
