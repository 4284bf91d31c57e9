"""Neural-network building blocks shared by the models."""
from .batchnorm import DistributedBatchNorm2d, SynchronizedBatchNorm2d, link_replicas, to_distributed

__all__ = ["DistributedBatchNorm2d", "SynchronizedBatchNorm2d", "link_replicas", "to_distributed"]
